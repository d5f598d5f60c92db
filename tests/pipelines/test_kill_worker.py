"""`kill -9` of the worker in the middle of runs, again and again: nothing is lost or doubled.

Uploads keep coming while a `darkroom worker` process is killed (SIGKILL) as soon as it is
busy, then restarted with the same executor id. At the end every job has succeeded, every
rendition exists once (catalogued once, stored once, written at most once by any process),
every event reached the webhook, and no object, temporary file or row is left over.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from darkroom.pipelines import admin, sweep
from darkroom.pipelines.store import run

from corpus_files import CORPUS, OK_FILES

from .conftest import Deployment, log_events
from events.conftest import serve_receiver

# bench/soak-pipelines sets DARKROOM_SOAK_KILLS for a longer run of the same test.
SOAK = int(os.environ.get("DARKROOM_SOAK_KILLS", "0"))
KILLS = {"sqlite": SOAK or 20, "postgresql": SOAK or 10}
RENDITIONS = {"thumb": "w=160&fm=webp", "card": "w=480&h=320&fit=cover", "gray": "w=320&gray=1&fm=png"}
PHOTOS = [f for f in OK_FILES if f["container"] == "jpeg" and f["frames"] == 1
          and f["width"] * f["height"] >= 400_000][:6]


def _pipeline() -> dict:
    return {"name": "web", "steps": [
        {"name": "meta", "type": "metadata"},
        {"name": "sizes", "type": "renditions", "params": {"renditions": RENDITIONS},
         "retry": [{"errors": ["States.ALL"], "interval_s": 0.1, "max_attempts": 2}]},
        {"name": "export", "type": "copy", "params": {"prefix": "exports/", "renditions": True}},
        {"name": "tell", "type": "notify"}]}


def _busy(log: Path, seen: int) -> bool:
    """Whether the worker logged progress beyond the first `seen` lines."""
    return sum(1 for e in log_events(log) if e.get("event") in (
        "step_succeeded", "rendition_written")) > seen


def test_kill_9_mid_run_loses_and_doubles_nothing(deployment: Deployment, tmp_path: Path,
                                                  request):
    kills = KILLS[request.node.callspec.params["deployment"]]
    rng = random.Random(kills)
    with serve_receiver() as receiver:
        deployment.env.update({
            "DARKROOM_EVENTS__SINKS": json.dumps([{"type": "webhook", "url": receiver.url,
                                                   "signing_keys": receiver.keys,
                                                   "timeout_s": 5}]),
            "DARKROOM_EVENTS__LEASE_S": "2",
            "DARKROOM_EVENTS__DISPATCH_INTERVAL_S": "0.1",
            "DARKROOM_EVENTS__RETRY__BASE_DELAY_S": "0.1",
            "DARKROOM_EVENTS__RETRY__MAX_DELAY_S": "1",
            # a claim cut short by a kill counts as an attempt: let none go dead here
            "DARKROOM_EVENTS__RETRY__MAX_ATTEMPTS": "100"})
        deployment.save_pipeline(_pipeline())
        catalog = deployment.open_catalog()
        log = tmp_path / "worker.log"
        uploads = 0
        try:
            for kill in range(kills):
                for _ in range(2):
                    photo = PHOTOS[uploads % len(PHOTOS)]
                    deployment.upload(catalog, CORPUS / photo["path"], f"k{uploads}.jpg")
                    uploads += 1
                seen = sum(1 for e in log_events(log) if e.get("event") in (
                    "step_succeeded", "rendition_written")) if log.exists() else 0
                worker = deployment.start_worker("w1", log)
                deadline = time.monotonic() + 60
                while not _busy(log, seen) and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0, 0.25))
                worker.kill()  # SIGKILL: no cleanup of any kind
                worker.wait()
                assert worker.returncode == -9, f"kill {kill}: worker ended on its own"
            deployment.start_worker("w1", log)
            jobs = deployment.wait_jobs_finished(uploads)
            _wait_delivered(deployment)
        finally:
            deployment.stop_workers()
            catalog.pool.close()
            catalog.close()

    assert [j for j in jobs if j.status != "succeeded"] == []
    assert len(jobs) == uploads
    steps = deployment.query("SELECT state, COUNT(*) AS n FROM job_steps GROUP BY state")
    assert {s.state: s.n for s in steps} == {"succeeded": 4 * uploads}

    renditions = deployment.query("SELECT storage_key, bytes FROM renditions")
    assert len(renditions) == len(RENDITIONS) * uploads
    storage = deployment.data_dir / "storage"
    for row in renditions:
        assert (storage / row.storage_key).stat().st_size == row.bytes
    stored = {str(p.relative_to(storage)) for p in (storage / "_renditions").rglob("*")
              if p.is_file()}
    assert stored == {r.storage_key for r in renditions}  # no orphan, no temp file
    exports = [p for p in (storage / "exports").rglob("*") if p.is_file()]
    assert len(exports) == (1 + len(RENDITIONS)) * uploads
    assert not [p for p in storage.rglob(".*.tmp")]

    writes = Counter(e["key"] for e in log_events(log) if e.get("event") == "rendition_written")
    assert max(writes.values()) == 1  # each rendition written by one attempt only
    assert set(writes) <= stored

    events = deployment.query("SELECT id, type FROM outbox")
    kinds = Counter(e.type for e in events)
    assert kinds["image.uploaded"] == kinds["job.succeeded"] == kinds["image.processed"] == uploads
    assert kinds["job.started"] >= uploads and kinds["job.failed"] == 0
    received = {json.loads(r["body"])["id"] for r in receiver.requests if r["verdict"] == "ok"}
    assert received == {e.id for e in events}
    assert deployment.query("SELECT id, attempts, dead_at, last_error FROM outbox WHERE "
                            "delivered_at IS NULL") == []


def _kill_when_busy(deployment: Deployment, executor_id: str, log: Path) -> None:
    """Start a worker and SIGKILL it as soon as it logs progress."""
    worker = deployment.start_worker(executor_id, log)
    deadline = time.monotonic() + 60
    while not _busy(log, 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.kill()
    worker.wait()


def _wait_delivered(deployment: Deployment, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if deployment.query("SELECT COUNT(*) AS n FROM outbox WHERE delivered_at IS NULL "
                            "AND dead_at IS NULL")[0].n == 0:
            return
        time.sleep(0.2)
    pending = deployment.query("SELECT d.event_id, d.attempts, d.next_attempt_at, "
                               "d.last_error FROM outbox_deliveries d WHERE "
                               "d.delivered_at IS NULL")
    pytest.fail(f"events undelivered after {timeout_s} s: {pending}")


def test_a_dead_workers_runs_are_resumed_by_another_worker(deployment: Deployment,
                                                            tmp_path: Path):
    deployment.env["DARKROOM_PIPELINES__DEAD_AFTER_S"] = "2"
    deployment.save_pipeline(_pipeline())
    catalog = deployment.open_catalog()
    try:
        for n in range(6):
            photo = PHOTOS[n % len(PHOTOS)]
            deployment.upload(catalog, CORPUS / photo["path"], f"d{n}.jpg")
    finally:
        catalog.pool.close()
        catalog.close()
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    _kill_when_busy(deployment, "a", first)
    deployment.start_worker("b", second)  # another executor id: DBOS alone would not help
    jobs = deployment.wait_jobs_finished(6)
    assert [j.status for j in jobs] == ["succeeded"] * 6
    (recovered,) = [e for e in log_events(second) if e.get("event") == "dead_worker_recovered"]
    assert recovered["dead"] == "a" and recovered["runs"] >= 1
    (a,) = deployment.query("SELECT recovered_at FROM workers WHERE executor_id = 'a'")
    assert a.recovered_at is not None
    assert len(deployment.query("SELECT id FROM renditions")) == 6 * len(RENDITIONS)


def test_jobs_cancelled_after_a_kill_9_leave_no_rendition_behind(deployment: Deployment,
                                                                 tmp_path: Path):
    """A worker killed in the middle of its runs, then its jobs cancelled (the worker never
    comes back): what the killed runs wrote and the uploads' head starts are deleted; what
    the runs that ended catalogued stays, each object with its row."""
    deployment.save_pipeline({"name": "sizes", "steps": [
        {"name": "sizes", "type": "renditions", "params": {"renditions": RENDITIONS}}]})
    catalog = deployment.open_catalog()
    log = tmp_path / "worker.log"
    try:
        for n in range(6):
            deployment.upload(catalog, CORPUS / PHOTOS[n % len(PHOTOS)]["path"], f"c{n}.jpg")
        _kill_when_busy(deployment, "c", log)
        storage = deployment.data_dir / "storage"
        before = {str(p.relative_to(storage)) for p in (storage / "_renditions").rglob("*.*")}
        catalogued = {r.storage_key for r in deployment.query(
            "SELECT storage_key FROM renditions")}
        assert before - catalogued  # left behind: head starts, what the killed runs wrote
        unfinished = [j.id for j in deployment.query(
            "SELECT id FROM jobs WHERE status IN ('queued', 'running')")]
        assert unfinished
        for job_id in unfinished:  # as `POST /v1/jobs/{id}/cancel` does
            body, _workflow, left = run(catalog.engine, lambda s: admin.cancel_job(s, job_id))
            run(catalog.engine, lambda s: sweep.discard(s, job_id, body["run"], left,
                                                        catalog.storage.blocking.delete))
    finally:
        catalog.pool.close()
        catalog.close()
    rows = deployment.query("SELECT storage_key, bytes FROM renditions")
    for row in rows:
        assert (storage / row.storage_key).stat().st_size == row.bytes
    after = {str(p.relative_to(storage)) for p in (storage / "_renditions").rglob("*")
             if p.is_file()}
    assert after == {r.storage_key for r in rows}  # no orphan, no temp file
