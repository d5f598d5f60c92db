"""The outbox's delivery bookkeeping, as functions over a `Session` (the dispatcher's SQL).

Each (event, sink) pair has an `outbox_deliveries` row. Claiming takes due rows with
`FOR UPDATE SKIP LOCKED` (SQLite has no row locks and ignores it: one writer at a time)
and leases them: `attempts` goes up and `next_attempt_at` moves `lease_s` ahead, so the
claims of a dispatcher that died are taken again once the lease ends. `attempts` is also
the claim's token: an outcome is written only while the row holds the claimed number.

The outbox row sums up its deliveries: `attempts` is their total, `last_error` the latest
failure, `dead_at` is set when a first sink gives up and `delivered_at` when every sink
delivered; `next_attempt_at` stays the time the event was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from darkroom.catalog.models import OutboxDelivery as D
from darkroom.catalog.models import OutboxEvent as E


@dataclass(frozen=True)
class Claim:
    """One leased delivery: the event's row, the sink, and this attempt's number (from 1)."""

    event_id: str
    type: str
    subject: str
    payload: dict
    created_at: datetime
    sink: str
    attempt: int


@dataclass(frozen=True)
class Result:
    """How a claim went: delivered, or failed and retried at `retry_at`, or (None) dead."""

    claim: Claim
    delivered: bool
    retry_at: datetime | None = None
    error: str | None = None


def fan_out(session: Session, sinks: list[str], now: datetime, limit: int) -> int:
    """Give events that have no delivery rows yet one per sink, due at `now`; how many.
    The events are locked, and those a purge holds skipped (`catalog.retention`)."""
    ids = session.scalars(
        select(E.id).where(E.delivered_at.is_(None), E.dead_at.is_(None),
                           ~exists().where(D.event_id == E.id))
        .order_by(E.created_at).limit(limit).with_for_update(skip_locked=True)).all()
    if ids and sinks:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        rows = [{"event_id": i, "sink": s, "attempts": 0, "next_attempt_at": now}
                for i in ids for s in sinks]
        session.execute(dialect.insert(D).values(rows).on_conflict_do_nothing())
    return len(ids)


def claim(session: Session, sinks: list[str], now: datetime, lease_s: float,
          limit: int) -> list[Claim]:
    """Lease up to `limit` deliveries to `sinks` that are due at `now`, oldest first."""
    due = session.execute(
        select(D.event_id, D.sink, D.attempts, E.type, E.subject, E.payload, E.created_at)
        .join(E, E.id == D.event_id)
        .where(D.delivered_at.is_(None), D.dead_at.is_(None), D.next_attempt_at <= now,
               D.sink.in_(sinks))
        .order_by(D.next_attempt_at, D.event_id, D.sink).limit(limit)
        .with_for_update(skip_locked=True, of=D)).all()
    claims = []
    for row in due:
        leased = session.execute(
            update(D).where(D.event_id == row.event_id, D.sink == row.sink,
                            D.attempts == row.attempts)
            .values(attempts=row.attempts + 1, next_attempt_at=now + timedelta(seconds=lease_s))
            .execution_options(synchronize_session=False))
        if leased.rowcount == 1:
            claims.append(Claim(row.event_id, row.type, row.subject, row.payload,
                                row.created_at, row.sink, row.attempts + 1))
    return claims


def record(session: Session, results: list[Result], now: datetime) -> int:
    """Write the outcome of each claim that still stands, then sum up the events' rows;
    how many outcomes were written (a claim taken again after its lease is not)."""
    ids = sorted({r.claim.event_id for r in results})
    locked = session.execute(select(E.id, E.dead_at).where(E.id.in_(ids)).order_by(E.id)
                             .with_for_update(key_share=True))
    dead_at = {row.id: row.dead_at for row in locked}
    written = 0
    errors: dict[str, str] = {}
    for result in results:
        written += _write(session, result, now)
        if result.error is not None:
            errors[result.claim.event_id] = result.error
    for event_id in ids:
        states = session.execute(select(D.attempts, D.delivered_at, D.dead_at)
                                 .where(D.event_id == event_id)).all()
        values: dict = {"attempts": sum(s.attempts for s in states)}
        if event_id in errors:
            values["last_error"] = errors[event_id]
        if all(s.delivered_at is not None for s in states):
            values["delivered_at"] = now
        if dead_at.get(event_id) is None and any(s.dead_at is not None for s in states):
            values["dead_at"] = now
        session.execute(update(E).where(E.id == event_id).values(**values)
                        .execution_options(synchronize_session=False))
    return written


def _write(session: Session, result: Result, now: datetime) -> int:
    claim = result.claim
    if result.delivered:
        values: dict = {"delivered_at": now}
    elif result.retry_at is not None:
        values = {"next_attempt_at": result.retry_at, "last_error": result.error}
    else:
        values = {"dead_at": now, "last_error": result.error}
    written = session.execute(
        update(D).where(D.event_id == claim.event_id, D.sink == claim.sink,
                        D.attempts == claim.attempt, D.delivered_at.is_(None),
                        D.dead_at.is_(None))
        .values(**values).execution_options(synchronize_session=False))
    return written.rowcount
