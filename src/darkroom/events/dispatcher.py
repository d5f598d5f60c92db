"""The outbox dispatcher: every outbox event to every configured sink, at least once.

A round fans new events out to one delivery row per sink, claims the due ones (leased, see
`darkroom.catalog.outbox`), delivers them concurrently with `deliver_once`, and records
every outcome in one transaction. A crash between delivering and recording leaves the
claims to expire: they are sent again with the same event id, for receivers to drop.
Without sinks nothing happens: events wait in the outbox, and go to the sinks configured
when a dispatcher first sees them. Several processes may dispatch from one PostgreSQL
database; on SQLite, one should.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta

import structlog
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from darkroom.catalog import outbox
from darkroom.catalog.models import utcnow
from darkroom.events.base import Notifier
from darkroom.events.delivery import Outcome, deliver_once, next_attempt
from darkroom.events.factory import build_notifiers
from darkroom.events.model import Event
from darkroom.events.settings import Events, RetryPolicy

log = structlog.get_logger("darkroom")
LEASE_S = 300.0
BATCH = 100
CONCURRENCY = 8


def to_event(claim: outbox.Claim) -> Event:
    """The `Event` of an outbox row (its `payload` is the data, `created_at` the time)."""
    return Event(id=claim.event_id, type=claim.type, subject=claim.subject,
                 occurred_at=claim.created_at, data=claim.payload)


class Dispatcher:
    """Delivers the outbox through `notifiers` (by name) on the schedule of `policy`, with
    at most `concurrency[name]` (default `CONCURRENCY`) deliveries in flight per sink."""

    def __init__(self, engine: Engine, notifiers: Sequence[Notifier], policy: RetryPolicy,
                 rng: random.Random | None = None, lease_s: float = LEASE_S,
                 batch: int = BATCH, concurrency: Mapping[str, int] | None = None) -> None:
        self.engine = engine
        self.notifiers = {n.name: n for n in notifiers}
        self.concurrency = {n: (concurrency or {}).get(n, CONCURRENCY) for n in self.notifiers}
        self.policy = policy
        self.rng = rng or random.Random()
        self.lease_s = lease_s
        self.batch = batch

    async def run_once(self, now: datetime | None = None) -> int:
        """One round at `now` (default: the clock); how many deliveries it attempted."""
        if not self.notifiers:
            return 0
        now = now or utcnow()
        claims = await asyncio.to_thread(self._claim, now)
        slots = {n: asyncio.Semaphore(k) for n, k in self.concurrency.items()}
        outcomes = await asyncio.gather(*(self._attempt(c, slots[c.sink]) for c in claims))
        results = [outbox.Result(c, o.delivered, None if o.retry_in_s is None else
                                 now + timedelta(seconds=o.retry_in_s), o.error)
                   for c, o in zip(claims, outcomes)]
        if results:
            await asyncio.to_thread(self._record, results, now)
        return len(claims)

    async def run_forever(self, stop: asyncio.Event, interval_s: float) -> None:
        """Rounds until `stop` is set, `interval_s` apart unless a round was full."""
        while not stop.is_set():
            try:
                full = await self.run_once() >= self.batch
            except Exception as error:  # the database may be away for a while: keep trying
                log.error("outbox_dispatch_failed", error=f"{type(error).__name__}: {error}")
                full = False
            if not full:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)

    async def aclose(self) -> None:
        """Close every notifier."""
        for notifier in self.notifiers.values():
            await notifier.aclose()

    async def _attempt(self, claim: outbox.Claim, slot: asyncio.Semaphore) -> Outcome:
        try:
            event = to_event(claim)
        except ValidationError as error:
            return Outcome(delivered=False, error=f"not a valid event: {error}")
        notifier = self.notifiers[claim.sink]
        try:
            async with slot:
                return await deliver_once(notifier, event, claim.attempt, self.policy, self.rng)
        except Exception as error:  # a sink's bug is retried like a failure, not fatal
            log.error("event_delivery_crashed", sink=claim.sink, event_id=claim.event_id,
                      error=f"{type(error).__name__}: {error}")
            return Outcome(delivered=False, error=f"{type(error).__name__}: {error}",
                           retry_in_s=next_attempt(claim.attempt, self.policy, self.rng))

    def _claim(self, now: datetime) -> list[outbox.Claim]:
        sinks = list(self.notifiers)
        with Session(self.engine) as session, session.begin():
            outbox.fan_out(session, sinks, now, self.batch)
            return outbox.claim(session, sinks, now, self.lease_s, self.batch)

    def _record(self, results: list[outbox.Result], now: datetime) -> None:
        with Session(self.engine) as session, session.begin():
            written = outbox.record(session, results, now)
        if written < len(results):
            log.warning("outbox_claims_lost", lost=len(results) - written)


@contextlib.asynccontextmanager
async def dispatching(engine: Engine, settings: Events) -> AsyncIterator[Dispatcher | None]:
    """A dispatcher running in the background for the block, if any sink is configured;
    leaving the block lets its round finish, then closes the notifiers."""
    if not settings.sinks:
        yield None
        return
    dispatcher = Dispatcher(engine, build_notifiers(settings), settings.retry,
                            lease_s=settings.lease_s,
                            concurrency={s.name: s.concurrency for s in settings.sinks})
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run_forever(stop, settings.dispatch_interval_s))
    try:
        yield dispatcher
    finally:
        stop.set()
        await task
        await dispatcher.aclose()
