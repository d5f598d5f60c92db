"""The outbox dispatcher on SQLite and PostgreSQL, against real webhook receivers: once per
sink, retries on an explicit clock, dead letters, a failing sink beside a working one, a
crash before the outcome is recorded, and the server running it in the background."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from darkroom.catalog import Catalog, Staged, make_engine, repository
from darkroom.catalog.models import utcnow
from darkroom.catalog.outbox import Claim
from darkroom.config import Limits, Settings
from darkroom.events.dispatcher import LEASE_S, Dispatcher, to_event
from darkroom.events.settings import RetryPolicy, WebhookSink
from darkroom.events.webhook import WebhookNotifier
from darkroom.server.app import create_app
from darkroom.server.pool import RenderPool
from darkroom.storage import LocalStorage

from catalog.databases import database_url, engine, pg_url, rows  # noqa: F401
from corpus_files import CORPUS, OK_FILES
from server.helpers import TestClient

pytestmark = pytest.mark.anyio
POLICY = RetryPolicy(max_attempts=3, base_delay_s=1, max_delay_s=1)
SMALL = min((f for f in OK_FILES if f["container"] == "png"), key=lambda f: f["bytes"])
LATER = timedelta(seconds=10)  # past any retry delay of POLICY


def webhook(receiver, name: str = "hook") -> WebhookNotifier:
    return WebhookNotifier(WebhookSink(type="webhook", name=name, url=receiver.url,
                                       signing_keys=receiver.keys))


def dispatcher(engine, *receivers, policy: RetryPolicy = POLICY) -> Dispatcher:
    hooks = [webhook(r, f"hook{i}") for i, r in enumerate(receivers)]
    return Dispatcher(engine, hooks, policy, rng=random.Random(5))


def add_event(engine, kind: str = "image.uploaded", subject: str = "img-1") -> str:
    with Session(engine) as session, session.begin():
        return repository.add_event(session, kind, subject, {"key": "a.png"}).id


def deliveries(url: str) -> list:
    return rows(url, "SELECT sink, attempts, delivered_at IS NOT NULL, dead_at IS NOT NULL, "
                "last_error FROM outbox_deliveries ORDER BY sink")


def outbox_state(url: str) -> tuple:
    return tuple(rows(url, "SELECT attempts, delivered_at IS NOT NULL, dead_at IS NOT NULL "
                      "FROM outbox")[0])


def ids(receiver) -> list[str]:
    return [r["headers"]["Darkroom-Event-Id"] for r in receiver.requests]


async def test_an_upload_reaches_each_sink_once(engine, database_url, receiver,  # noqa: F811
                                                other_receiver, tmp_path: Path):
    (tmp_path / "storage").mkdir()
    catalog = Catalog(engine, LocalStorage(tmp_path / "storage"), RenderPool(2, 8), Limits())
    data = (CORPUS / SMALL["path"]).read_bytes()
    try:
        body, _ = await catalog.upload(Staged(CORPUS / SMALL["path"],
                                              hashlib.sha256(data).hexdigest(), len(data)),
                                       "a.png", [])
    finally:
        catalog.pool.close()
    [(event_id,)] = rows(database_url, "SELECT id FROM outbox")
    run = dispatcher(engine, receiver, other_receiver)
    now = utcnow()
    assert await run.run_once(now) == 2
    assert await run.run_once(now + LATER) == 0
    for each in (receiver, other_receiver):
        assert ids(each) == [event_id] and each.requests[0]["verdict"] == "ok"
        sent = json.loads(each.requests[0]["body"])
        assert (sent["type"], sent["subject"], sent["data"]["key"]) == (
            "image.uploaded", body["id"], "a.png")
    assert outbox_state(database_url) == (2, True, False)
    await run.aclose()


async def test_two_failures_then_delivered_on_the_third_attempt(engine, database_url,  # noqa: F811
                                                               receiver):
    event_id = add_event(engine)
    run = dispatcher(engine, receiver)
    receiver.status = 500
    now = utcnow()
    assert await run.run_once(now) == 1
    assert await run.run_once(now) == 0  # not due yet
    assert await run.run_once(now + LATER) == 1
    assert deliveries(database_url) == [("hook0", 2, False, False, "hook0: HTTP 500 from the "
                                                                   "webhook")]
    receiver.status = 200
    assert await run.run_once(now + 2 * LATER) == 1
    assert await run.run_once(now + 3 * LATER) == 0
    assert ids(receiver) == [event_id] * 3
    assert deliveries(database_url)[0][:4] == ("hook0", 3, True, False)
    assert outbox_state(database_url) == (3, True, False)
    await run.aclose()


async def test_a_refusal_is_dead_after_one_attempt(engine, database_url, receiver):  # noqa: F811
    add_event(engine)
    run = dispatcher(engine, receiver)
    receiver.status = 400
    now = utcnow()
    assert await run.run_once(now) == 1
    assert await run.run_once(now + LATER) == 0
    assert deliveries(database_url) == [("hook0", 1, False, True,
                                         "hook0: HTTP 400 from the webhook")]
    assert outbox_state(database_url) == (1, False, True)
    await run.aclose()


async def test_max_attempts_exhausted_is_dead(engine, database_url, receiver):  # noqa: F811
    add_event(engine)
    run = dispatcher(engine, receiver)
    receiver.status = 503
    now = utcnow()
    for n in range(POLICY.max_attempts + 1):
        await run.run_once(now + n * LATER)
    assert len(receiver.requests) == POLICY.max_attempts
    assert deliveries(database_url) == [("hook0", 3, False, True,
                                         "hook0: HTTP 503 from the webhook")]
    assert outbox_state(database_url) == (3, False, True)
    await run.aclose()


async def test_a_failing_sink_does_not_resend_to_the_other(engine, database_url,  # noqa: F811
                                                          receiver, other_receiver):
    event_id = add_event(engine)
    run = dispatcher(engine, receiver, other_receiver)
    other_receiver.status = 502
    now = utcnow()
    assert await run.run_once(now) == 2
    for n in range(1, POLICY.max_attempts + 1):
        await run.run_once(now + n * LATER)
    assert ids(receiver) == [event_id]
    assert ids(other_receiver) == [event_id] * POLICY.max_attempts
    assert [d[:4] for d in deliveries(database_url)] == [("hook0", 1, True, False),
                                                         ("hook1", 3, False, True)]
    assert outbox_state(database_url) == (4, False, True)
    await run.aclose()


async def test_a_crash_before_recording_sends_the_event_again(engine, database_url,  # noqa: F811
                                                              receiver, monkeypatch):
    event_id = add_event(engine)
    run = dispatcher(engine, receiver)

    def crash(*_args: object) -> None:
        raise RuntimeError("dispatcher died")

    monkeypatch.setattr(run, "_record", crash)
    now = utcnow()
    with pytest.raises(RuntimeError):
        await run.run_once(now)
    monkeypatch.undo()
    assert await run.run_once(now + LATER) == 0  # still leased to the dead dispatcher
    later = now + timedelta(seconds=LEASE_S + 1)
    assert await run.run_once(later) == 1
    assert await run.run_once(later + LATER) == 0
    assert ids(receiver) == [event_id, event_id]
    assert deliveries(database_url)[0][:4] == ("hook0", 2, True, False)
    await run.aclose()


async def test_dispatchers_side_by_side_send_each_event_once(engine, database_url,  # noqa: F811
                                                             receiver):
    sent = sorted(add_event(engine, subject=f"img-{n}") for n in range(12))
    runs = [Dispatcher(make_engine(database_url), [webhook(receiver)], POLICY, batch=5)
            for _ in range(3)]
    now = utcnow()
    for _ in range(3):
        await asyncio.gather(*(run.run_once(now) for run in runs))
    assert sorted(ids(receiver)) == sent
    assert rows(database_url, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL") == [(0,)]
    for run in runs:
        await run.aclose()
        run.engine.dispose()


async def test_a_sink_gets_at_most_its_concurrency_at_once(engine, database_url,  # noqa: F811
                                                            receiver):
    sent = sorted(add_event(engine, subject=f"img-{n}") for n in range(12))
    receiver.hold = True
    hook = webhook(receiver)
    run = Dispatcher(engine, [hook], POLICY, concurrency={hook.name: 3})
    round_ = asyncio.create_task(run.run_once(utcnow()))
    while len(receiver.requests) < 3:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # time for a fourth request, were it sent
    assert len(receiver.requests) == 3
    receiver.release.set()
    assert await round_ == 12
    assert sorted(ids(receiver)) == sent and receiver.peak == 3
    assert rows(database_url, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL") == [(0,)]
    await run.aclose()


async def test_no_sinks_leaves_the_outbox_alone(engine, database_url):  # noqa: F811
    add_event(engine)
    assert await Dispatcher(engine, [], POLICY).run_once(utcnow()) == 0
    assert deliveries(database_url) == [] and outbox_state(database_url) == (0, False, False)


def test_the_server_dispatches_in_the_background(database_url, receiver,  # noqa: F811
                                                 tmp_path: Path):
    sink = {"type": "webhook", "url": receiver.url, "signing_keys": receiver.keys}
    settings = Settings(data_dir=tmp_path, database_url=database_url, access_log=False,
                        events={"sinks": [sink], "dispatch_interval_s": 0.02})
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/images", params={"key": "a.png"},
                             content=(CORPUS / SMALL["path"]).read_bytes(),
                             headers={"content-type": "application/octet-stream"})
        assert answer.status_code == 201, answer.text
        assert receiver.arrived.wait(10)
    # leaving the client stopped the dispatcher after its round: the outcome is recorded
    assert ids(receiver) == [rows(database_url, "SELECT id FROM outbox")[0][0]]
    assert outbox_state(database_url) == (1, True, False)


def test_the_event_time_and_data_are_the_outbox_rows():
    created = datetime(2026, 12, 4, 19, 0, tzinfo=timezone.utc)
    event = to_event(Claim("ab" * 16, "job.failed", "job-1", {"error": "x"}, created, "h", 1))
    assert (event.occurred_at, event.subject, event.data) == (created, "job-1", {"error": "x"})


async def test_a_row_that_is_no_event_is_dead_at_once(engine, database_url, receiver):  # noqa: F811
    add_event(engine, kind="image.exploded")
    run = dispatcher(engine, receiver)
    assert await run.run_once(utcnow()) == 1
    [(sink, attempts, delivered, dead, error)] = deliveries(database_url)
    assert (attempts, delivered, dead, receiver.requests) == (1, False, True, [])
    assert error.startswith("not a valid event")
    await run.aclose()
