"""Retention on both databases: old events go with their deliveries, in batches; an event
a sink is still trying stays, whatever its age."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from darkroom.catalog import outbox, retention
from darkroom.catalog.models import Job, OutboxDelivery, OutboxEvent, utcnow
from darkroom.config import Retention

from .databases import database_url, engine, pg_url  # noqa: F401

NOW = utcnow()
OLD, RECENT = NOW - timedelta(days=40), NOW - timedelta(days=10)


def _event(engine, name: str, created, delivered=None, dead=None,
           deliveries: tuple = ()) -> None:
    """An outbox event `name` and its deliveries: (sink, delivered_at, dead_at[, next
    attempt, default `created`]) each."""
    with Session(engine) as session, session.begin():
        session.execute(insert(OutboxEvent), [{
            "id": name.ljust(32, "0"), "type": "image.uploaded", "subject": name,
            "payload": {}, "created_at": created, "next_attempt_at": created,
            "delivered_at": delivered, "dead_at": dead}])
        for sink, sent, gave_up, *due in deliveries:
            session.execute(insert(OutboxDelivery), [{
                "event_id": name.ljust(32, "0"), "sink": sink, "attempts": 1,
                "next_attempt_at": due[0] if due else created, "delivered_at": sent,
                "dead_at": gave_up}])


def _left(engine) -> tuple[list[str], list[str]]:
    with Session(engine) as session:
        events = session.scalars(select(OutboxEvent.subject)).all()
        deliveries = session.scalars(select(OutboxDelivery.event_id)).all()
    return sorted(events), sorted(d.rstrip("0") for d in deliveries)


def test_old_events_go_with_their_deliveries_and_a_sink_still_trying_keeps_one(engine):  # noqa: F811
    """A delivery nobody tried since before the cutoff (its sink removed) is not being
    tried; one due since, or leased, is."""
    _event(engine, "delivered1", OLD, delivered=OLD, deliveries=[("log", OLD, None)])
    _event(engine, "delivered2", OLD, delivered=OLD + timedelta(hours=1))
    _event(engine, "deadletter", OLD, dead=OLD, deliveries=[("hook", None, OLD),
                                                             ("log", OLD, None)])
    _event(engine, "nosink", OLD)
    _event(engine, "recent", RECENT, delivered=RECENT, deliveries=[("log", RECENT, None)])
    _event(engine, "trying", OLD, deliveries=[("hook", None, None, NOW)])
    _event(engine, "deadbut", OLD, dead=OLD, deliveries=[("hook", None, OLD),
                                                         ("mail", None, None, RECENT)])
    _event(engine, "abandoned", OLD, deliveries=[("removed", None, None, OLD)])
    _event(engine, "new", NOW)
    assert retention.purge_events(engine, NOW - timedelta(days=30), batch=2) == 5
    assert _left(engine) == (["deadbut", "new", "recent", "trying"],
                             ["deadbut", "deadbut", "recent", "trying"])
    assert retention.purge_events(engine, NOW - timedelta(days=30)) == 0


def test_purge_counts_and_logs_what_went(engine, capsys):  # noqa: F811
    _event(engine, "gone", OLD, delivered=OLD)
    done = retention.purge(engine, None, Retention(events_days=30), now=NOW)
    assert done == {"events": 1}
    assert "retention_purged" in capsys.readouterr().out


@pytest.mark.anyio
async def test_the_loop_purges_until_stopped(engine, monkeypatch):  # noqa: F811
    monkeypatch.setattr(retention, "FIRST_AFTER_S", 0.01)
    _event(engine, "gone", OLD, delivered=OLD)
    stop = asyncio.Event()
    task = asyncio.create_task(retention.keep_purging(
        engine, None, Retention(events_days=30, interval_s=0.05), stop))
    for _ in range(200):
        if _left(engine) == ([], []):
            break
        await asyncio.sleep(0.05)
    assert _left(engine) == ([], [])
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.mark.anyio
async def test_stale_multipart_uploads_are_aborted_at_each_turn(engine, s3_settings,  # noqa: F811
                                                                monkeypatch):
    """The loop aborts the S3 multipart uploads begun `multipart_hours` ago; 0 hours keeps
    them; a store that fails is logged and the loop goes on."""
    from contracts.test_storage import MOTO_BEGAN, _begin_upload, _uploads

    from darkroom.errors import StorageError
    from darkroom.storage import ObjectStorage

    storage = ObjectStorage(s3_settings)
    _begin_upload(s3_settings, "photos/big.jpg")
    assert await retention.abort_uploads(storage, Retention(multipart_hours=0)) == 0
    soon = MOTO_BEGAN + timedelta(minutes=30)  # begun half an hour before
    assert await retention.abort_uploads(storage, Retention(multipart_hours=1), soon) == 0
    assert _uploads(s3_settings) == {"photos/big.jpg"}
    monkeypatch.setattr(retention, "FIRST_AFTER_S", 0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(retention.keep_purging(
        engine, None, Retention(multipart_hours=1, interval_s=0.05), stop, storage))
    for _ in range(200):
        if not _uploads(s3_settings):
            break
        await asyncio.sleep(0.05)
    assert _uploads(s3_settings) == set()
    stop.set()
    await asyncio.wait_for(task, 10)

    async def down(_before, _going_on):
        raise StorageError("bucket unreachable")

    calls = []

    async def unset(_before, _going_on):  # e.g. botocore's ProfileNotFound: no DarkroomError
        calls.append(1)
        raise RuntimeError("The config profile (missing) could not be found")

    for failing in (down, unset):
        monkeypatch.setattr(storage, "abort_stale_uploads", failing)
        assert await retention.abort_uploads(storage, Retention(multipart_hours=1)) == 0
    stop = asyncio.Event()  # logged, and the loop goes on to its next turns
    task = asyncio.create_task(retention.keep_purging(
        engine, None, Retention(multipart_hours=1, interval_s=0.05), stop, storage))
    for _ in range(200):
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.05)
    assert len(calls) >= 3 and not task.done()
    stop.set()
    await asyncio.wait_for(task, 10)


def test_a_stop_ends_a_purge_between_batches(engine):  # noqa: F811
    for i in range(5):
        _event(engine, f"gone{i}", OLD, delivered=OLD)
    turns = iter([True, False])
    assert retention.purge_events(engine, NOW - timedelta(days=30), lambda: next(turns),
                                  batch=2) == 2
    assert len(_left(engine)[0]) == 3


def test_an_event_a_dispatcher_fans_out_meanwhile_is_kept(engine):  # noqa: F811
    """A dispatcher giving an old event its deliveries while a purge runs: the purge
    skips it (PostgreSQL: locked) or sees its deliveries (SQLite: one writer)."""
    _event(engine, "backlog", OLD)
    fanned, release, purged = threading.Event(), threading.Event(), []

    def fan_out() -> None:
        with Session(engine) as session, session.begin():
            assert outbox.fan_out(session, ["hook"], utcnow(), 10) == 1
            fanned.set()
            release.wait(30)

    dispatcher = threading.Thread(target=fan_out)
    dispatcher.start()
    assert fanned.wait(30)
    purger = threading.Thread(target=lambda: purged.append(
        retention.purge_events(engine, NOW - timedelta(days=30))))
    purger.start()
    purger.join(0.5)
    release.set()
    for thread in (dispatcher, purger):
        thread.join(30)
    assert purged == [0] and _left(engine) == (["backlog"], ["backlog"])


class _Runs:
    """DBOS's ended runs as `JobQueue.ended` and `forget` see them, in a list."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def ended(self, before, limit: int, offset: int = 0) -> list[str]:
        return self.ids[offset:offset + limit]

    def forget(self, ids: list[str]) -> None:
        self.ids = [i for i in self.ids if i not in ids]


def test_runs_are_forgotten_once_their_job_has_ended_or_gone(engine):  # noqa: F811
    """A job a run left `running` (its finish could not be written) keeps its runs'
    records: they tell why."""
    from pipelines.test_store import _job, _start

    stuck, done = _job(engine, "a.jpg"), _job(engine, "b.jpg")
    _start(engine, stuck)
    with Session(engine) as session, session.begin():
        session.get(Job, done).status = "failed"
    runs = _Runs([f"{stuck}.1", f"{done}.1", f"{'0' * 32}.1", f"{done}.2"])
    assert retention.purge_workflows(engine, runs, NOW, batch=2) == 3
    assert runs.ids == [f"{stuck}.1"]


def test_a_delivery_claimed_while_a_purge_deletes_is_kept(engine):  # noqa: F811
    """An old event whose delivery a dispatcher claims (back after an outage) while the
    purge runs: on PostgreSQL the purge's delete waits for the claim and then checks the
    delivery's own row again; on SQLite the one write lock orders them."""
    _event(engine, "stale", OLD, deliveries=[("hook", None, None, OLD)])
    claimed, purged = threading.Event(), []

    def claim() -> None:
        with Session(engine) as session, session.begin():
            assert len(outbox.claim(session, ["hook"], utcnow(), 300, 10)) == 1
            claimed.set()
            threading.Event().wait(1.0)  # the purge runs into the claim meanwhile

    dispatcher = threading.Thread(target=claim)
    dispatcher.start()
    assert claimed.wait(30)
    purged.append(retention.purge_events(engine, NOW - timedelta(days=30)))
    dispatcher.join(30)
    assert purged == [0] and _left(engine) == (["stale"], ["stale"])
