"""What the catalog forgets once only history needs it, so that its tables do not grow
for ever: outbox events delivered, given up on (dead letters) or taken by no sink, after
`retention.events_days`; and DBOS's records of finished runs (the workflow, its inputs
and outputs), after `retention.workflows_days`. The jobs, their steps and attempts stay
in the catalog until their image goes. An event a sink is still trying is never deleted.

Every server process and standalone worker purges `FIRST_AFTER_S` after it starts, then
every `retention.interval_s`; purges by two processes at once delete nothing twice. Rows
go in batches of `BATCH`, a transaction each, so that no writer waits long behind one.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import Engine, and_, delete, exists, or_, select
from sqlalchemy.orm import Session

from darkroom.catalog.models import OutboxDelivery as D
from darkroom.catalog.models import OutboxEvent as E
from darkroom.catalog.models import utcnow

if TYPE_CHECKING:
    from darkroom.config import Retention
    from darkroom.pipelines.queue import JobQueue

log = structlog.get_logger("darkroom.retention")
BATCH = 500
FIRST_AFTER_S = 10.0  # not in the way of a process's start


def purge_events(engine: Engine, before: datetime, batch: int = BATCH) -> int:
    """Delete the events (with their deliveries) delivered or given up on before `before`,
    and those written before it that no sink took; never one a sink is still trying."""
    old = or_(E.delivered_at < before, E.dead_at < before,
              and_(E.delivered_at.is_(None), E.dead_at.is_(None), E.created_at < before))
    trying = exists().where(D.event_id == E.id, D.delivered_at.is_(None), D.dead_at.is_(None))
    deleted = 0
    while True:
        with Session(engine) as session, session.begin():
            ids = session.scalars(select(E.id).where(old, ~trying).limit(batch)).all()
            if ids:
                session.execute(delete(D).where(D.event_id.in_(ids)))
                session.execute(delete(E).where(E.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch:
            return deleted


def purge_workflows(queue: JobQueue, before: datetime, batch: int = BATCH) -> int:
    """Delete DBOS's records of the job runs that started before `before` and ended."""
    deleted = 0
    while ids := queue.ended(before, batch):
        queue.forget(ids)
        deleted += len(ids)
        if len(ids) < batch:
            break
    return deleted


def purge(engine: Engine, queue: JobQueue | None, settings: Retention,
          now: datetime | None = None) -> dict[str, int]:
    """One purge of everything due at `now` (default: the clock); how many of each went."""
    now = now or utcnow()
    done = {"events": purge_events(engine, now - timedelta(days=settings.events_days))}
    if queue is not None:
        done["workflows"] = purge_workflows(queue, now - timedelta(days=settings.workflows_days))
    if any(done.values()):
        log.info("retention_purged", **done)
    return done


async def keep_purging(engine: Engine, queue: JobQueue | None, settings: Retention,
                       stop: asyncio.Event) -> None:
    """`purge` in a thread, `FIRST_AFTER_S` from now and then every `interval_s`, until
    `stop` is set; a failed purge is logged and tried again at the next turn."""
    wait = min(FIRST_AFTER_S, settings.interval_s)
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(purge, engine, queue, settings)
        except Exception as error:  # the database may be away for a while
            log.error("retention_failed", error=f"{type(error).__name__}: {error}")
        wait = settings.interval_s
