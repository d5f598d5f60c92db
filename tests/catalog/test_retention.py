"""Retention on both databases: old events go with their deliveries, in batches; an event
a sink is still trying stays, whatever its age."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from darkroom.catalog import retention
from darkroom.catalog.models import OutboxDelivery, OutboxEvent, utcnow
from darkroom.config import Retention

from .databases import database_url, engine, pg_url  # noqa: F401

NOW = utcnow()
OLD, RECENT = NOW - timedelta(days=40), NOW - timedelta(days=10)


def _event(engine, name: str, created, delivered=None, dead=None,
           deliveries: tuple = ()) -> None:
    """An outbox event `name` and its deliveries: (sink, delivered_at, dead_at) each."""
    with Session(engine) as session, session.begin():
        session.execute(insert(OutboxEvent), [{
            "id": name.ljust(32, "0"), "type": "image.uploaded", "subject": name,
            "payload": {}, "created_at": created, "next_attempt_at": created,
            "delivered_at": delivered, "dead_at": dead}])
        for sink, sent, gave_up in deliveries:
            session.execute(insert(OutboxDelivery), [{
                "event_id": name.ljust(32, "0"), "sink": sink, "attempts": 1,
                "next_attempt_at": created, "delivered_at": sent, "dead_at": gave_up}])


def _left(engine) -> tuple[list[str], list[str]]:
    with Session(engine) as session:
        events = session.scalars(select(OutboxEvent.subject)).all()
        deliveries = session.scalars(select(OutboxDelivery.event_id)).all()
    return sorted(events), sorted(d.rstrip("0") for d in deliveries)


def test_old_events_go_with_their_deliveries_and_a_sink_still_trying_keeps_one(engine):  # noqa: F811
    _event(engine, "delivered1", OLD, delivered=OLD, deliveries=[("log", OLD, None)])
    _event(engine, "delivered2", OLD, delivered=OLD + timedelta(hours=1))
    _event(engine, "deadletter", OLD, dead=OLD, deliveries=[("hook", None, OLD),
                                                             ("log", OLD, None)])
    _event(engine, "nosink", OLD)
    _event(engine, "recent", RECENT, delivered=RECENT, deliveries=[("log", RECENT, None)])
    _event(engine, "trying", OLD, deliveries=[("hook", None, None)])
    _event(engine, "deadbut", OLD, dead=OLD, deliveries=[("hook", None, OLD),
                                                         ("mail", None, None)])
    _event(engine, "new", NOW)
    assert retention.purge_events(engine, NOW - timedelta(days=30), batch=2) == 4
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
