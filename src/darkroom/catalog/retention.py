"""What the catalog forgets once only history needs it, so that its tables do not grow
for ever: outbox events delivered, given up on (dead letters) or taken by no sink, after
`retention.events_days`; DBOS's records of a run (the workflow, its inputs and outputs),
`retention.workflows_days` after it ended, once its job has too (a job a run left
`running` keeps them: they tell why); and, on S3, multipart uploads that a process killed
mid-put left, `retention.multipart_hours` after they began (`abort_uploads`). The jobs,
their steps and attempts stay in the catalog until their image goes. An event a sink is
still trying is never deleted; one whose delivery nobody has tried since before the
cutoff (its sink removed) is no longer being tried.

Every server process and standalone worker purges `FIRST_AFTER_S` after it starts, then
every `retention.interval_s` (a tenth of it at random either way, so that processes
started together do not purge together). Rows go in batches of `BATCH`, a transaction
each, so that no writer waits long behind one, and a stop ends a purge between batches.
On PostgreSQL the rows a purge or a dispatcher works on are locked and skipped by the
other (`FOR UPDATE SKIP LOCKED`); on SQLite one write lock orders them, and the deletes
check again what they delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import Engine, and_, delete, exists, or_, select
from sqlalchemy.orm import Session

from darkroom.catalog.models import Job
from darkroom.catalog.models import OutboxDelivery as D
from darkroom.catalog.models import OutboxEvent as E
from darkroom.catalog.models import utcnow
from darkroom.errors import DarkroomError

if TYPE_CHECKING:
    from darkroom.config import Retention
    from darkroom.pipelines.queue import JobQueue
    from darkroom.storage import Storage

log = structlog.get_logger("darkroom.retention")
BATCH = 500
FIRST_AFTER_S = 10.0  # not in the way of a process's start
FINISHED = ("succeeded", "failed", "cancelled")


def _always() -> bool:
    return True


def purge_events(engine: Engine, before: datetime, going_on: Callable[[], bool] = _always,
                 batch: int = BATCH) -> int:
    """Delete the events (with their deliveries) delivered or given up on before `before`,
    and those written before it that no sink took; never one a sink is still trying. Each
    batch while `going_on()`; how many went."""
    trying = exists().where(D.event_id == E.id, D.delivered_at.is_(None), D.dead_at.is_(None),
                            D.next_attempt_at >= before)
    due = and_(or_(E.delivered_at < before, E.dead_at < before,
                   and_(E.delivered_at.is_(None), E.dead_at.is_(None), E.created_at < before)),
               ~trying)
    deleted = 0
    while going_on():
        with Session(engine) as session, session.begin():
            ids = session.scalars(select(E.id).where(due).limit(batch)
                                  .with_for_update(skip_locked=True)).all()
            if ids:  # checked again: on SQLite the select ran before the write lock;
                # on PostgreSQL a delivery claimed meanwhile is checked on its own row
                chosen = select(E.id).where(E.id.in_(ids), due).scalar_subquery()
                session.execute(delete(D).where(D.event_id.in_(chosen), or_(
                    D.delivered_at.is_not(None), D.dead_at.is_not(None),
                    D.next_attempt_at < before)))
                gone = session.execute(delete(E).where(E.id.in_(ids), due))
                deleted += gone.rowcount
        if len(ids) < batch:
            break
    return deleted


def purge_workflows(engine: Engine, queue: JobQueue, before: datetime,
                    going_on: Callable[[], bool] = _always, batch: int = BATCH) -> int:
    """Delete DBOS's records of the job runs that ended before `before` and whose job has
    ended too, or is gone; each batch while `going_on()`; how many went."""
    deleted, skipped = 0, 0
    while going_on() and (ids := queue.ended(before, batch, skipped)):
        jobs = {i.rpartition(".")[0] for i in ids}
        with engine.connect() as connection:
            open_ = set(connection.scalars(select(Job.id).where(
                Job.id.in_(jobs), Job.status.not_in(FINISHED))))
        done = [i for i in ids if i.rpartition(".")[0] not in open_]
        if done:
            queue.forget(done)
        deleted, skipped = deleted + len(done), skipped + len(ids) - len(done)
        if len(ids) < batch:
            break
    return deleted


def purge(engine: Engine, queue: JobQueue | None, settings: Retention,
          now: datetime | None = None, going_on: Callable[[], bool] = _always
          ) -> dict[str, int]:
    """One purge of everything due at `now` (default: the clock), while `going_on()`; how
    many of each went. A retention of 0 days keeps everything of its kind."""
    now = now or utcnow()
    done = {}
    if settings.events_days:
        done["events"] = purge_events(engine, now - timedelta(days=settings.events_days),
                                      going_on)
    if queue is not None and settings.workflows_days:
        done["workflows"] = purge_workflows(
            engine, queue, now - timedelta(days=settings.workflows_days), going_on)
    if any(done.values()):
        log.info("retention_purged", **done)
    return done


async def abort_uploads(storage: Storage, settings: Retention, now: datetime | None = None,
                        going_on: Callable[[], bool] = _always) -> int:
    """Abort the multipart uploads in `storage` begun `multipart_hours` before `now` (the
    clock) and never completed, while `going_on()`; how many. Best effort: a failure is
    logged (`multipart_not_aborted`) and the next turn tries again."""
    if not settings.multipart_hours:
        return 0
    before = (now or utcnow()) - timedelta(hours=settings.multipart_hours)
    try:
        aborted = await storage.abort_stale_uploads(before, going_on)
    except Exception as error:  # noqa: BLE001  (never the end of the retention loop)
        message = error.message if isinstance(error, DarkroomError) else repr(error)
        log.warning("multipart_not_aborted", error=message)
        return 0
    if aborted:
        log.info("multipart_uploads_aborted", count=aborted)
    return aborted


async def keep_purging(engine: Engine, queue: JobQueue | None, settings: Retention,
                       stop: asyncio.Event, storage: Storage | None = None) -> None:
    """`purge` in a thread (and `abort_uploads` in `storage`), `FIRST_AFTER_S` from now and
    then every `interval_s`, until `stop` is set (a purge under way ends after its batch);
    a failed purge is logged and tried again at the next turn."""
    wait = min(FIRST_AFTER_S, settings.interval_s)
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), wait * random.uniform(0.9, 1.1))
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(purge, engine, queue, settings, None,
                                    lambda: not stop.is_set())
        except Exception as error:  # the database may be away for a while
            log.error("retention_failed", error=f"{type(error).__name__}: {error}")
        if storage is not None and not stop.is_set():
            await abort_uploads(storage, settings, going_on=lambda: not stop.is_set())
        wait = settings.interval_s


@contextlib.asynccontextmanager
async def purging(engine: Engine, queue: JobQueue | None, settings: Retention,
                  storage: Storage | None = None) -> AsyncIterator[None]:
    """`keep_purging` in the background for the block; leaving it ends a purge under way
    after its batch."""
    stop = asyncio.Event()
    task = asyncio.create_task(keep_purging(engine, queue, settings, stop, storage))
    try:
        yield
    finally:
        stop.set()
        await task
