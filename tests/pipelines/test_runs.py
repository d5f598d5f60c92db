"""Pipeline runs through the HTTP API with the server's in-process worker: retry, catch,
timeout and fail as in Step Functions; the jobs API (show, retry, cancel); replace and
delete; webhook steps; a step kind plugged in through the registry."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from dbos._serialization import DefaultSerializer
from dbos import DBOS
from dbos._sys_db import SystemDatabase
from pydantic import BaseModel
from sqlalchemy import text

from darkroom.catalog import make_engine
from darkroom.config import Settings
from darkroom.errors import DarkroomError
from darkroom.grammars import native
from darkroom.pipelines import admin, dbos_sqlite, definition, sealing, steps
from darkroom.pipelines.definition import parse
from darkroom.pipelines.queue import JobQueue
from darkroom.pipelines.registry import register
from darkroom.pipelines.store import run
from darkroom.server.app import create_app

from corpus_files import CORPUS
from events.conftest import serve_receiver
from server.helpers import PHOTO, TestClient, metric

RAW = {"content-type": "application/octet-stream"}
ATTEMPTS: Counter = Counter()  # (job id, step) -> attempts seen by the `flaky` kind


class FlakyParams(BaseModel):
    fail_times: int = 0
    error: str = "storage_unavailable"
    sleep_s: float = 0.0


@register("flaky", FlakyParams)
def flaky(ctx, params: FlakyParams) -> dict:
    """Fails its first `fail_times` attempts of a job with `error`, sleeping first."""
    ATTEMPTS[(ctx.job_id, ctx.step)] += 1
    time.sleep(params.sleep_s)
    if ATTEMPTS[(ctx.job_id, ctx.step)] <= params.fail_times:
        raise DarkroomError(f"planned failure {ATTEMPTS[(ctx.job_id, ctx.step)]}",
                            params.error)
    return {"attempt": ATTEMPTS[(ctx.job_id, ctx.step)], "caught": ctx.error}


GATE = threading.Event()  # the `gate` kind's steps wait for it


class GateParams(BaseModel):
    pass


@register("gate", GateParams)
def gate(ctx, params: GateParams) -> dict:
    """Holds its worker's run slot until the test opens the gate."""
    assert GATE.wait(60)
    return {}


@pytest.fixture
def client(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", allow_unsigned=True, access_log=False,
                        pipelines={"poll_s": 0.05, "webhook_hosts": ["127.0.0.1"]})
    with TestClient(create_app(settings)) as client:
        client.settings = settings
        yield client


def _upload(client, key: str = "shop/a.jpg") -> dict:
    response = client.post(f"/v1/images?key={key}", headers=RAW,
                           content=(CORPUS / PHOTO["path"]).read_bytes())
    assert response.status_code == 201, response.text
    return response.json()


def _finished(client, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} still {job['status']}")


def _pipeline(client, steps: list[dict], **extra) -> None:
    response = client.put("/v1/pipelines/p", json={"steps": steps, **extra})
    assert response.status_code in (200, 201), response.text


def _events(client) -> list:
    engine = make_engine(client.settings.database_url)
    with engine.connect() as connection:
        rows = list(connection.execute(text("SELECT type, payload FROM outbox")))
    engine.dispose()
    return rows


def _steps(job: dict) -> dict:
    return {s["name"]: s for s in job["steps"]}


def test_an_upload_runs_its_pipeline_and_catalogues_the_renditions(client):
    _pipeline(client, [
        {"name": "meta", "type": "metadata"},
        {"name": "sizes", "type": "renditions", "params": {"renditions": {
            "thumb": "w=100&fm=webp", "square": "w=64&h=64&fit=cover&fm=png"}}},
        {"name": "tell", "type": "notify"}], trigger={"prefix": "shop/"})
    image = _upload(client)
    assert _upload(client, "blog/b.jpg")["jobs"] == []  # outside the trigger's prefix
    (queued,) = image["jobs"]
    job = _finished(client, queued["id"])
    assert job["status"] == "succeeded" and job["trigger"] == "uploaded"
    steps = _steps(job)
    assert steps["meta"]["output"]["width"] == PHOTO["width"]
    thumb = steps["sizes"]["output"]["thumb"]
    assert (thumb["format"], thumb["width"]) == ("webp", 100)
    assert steps["sizes"]["output"]["square"]["height"] == 64
    detail = client.get(f"/v1/images/{image['id']}").json()
    assert {r["name"]: (r["width"], r["height"]) for r in detail["renditions"]} == {
        "thumb": (100, thumb["height"]), "square": (64, 64)}
    served = client.get(f"/img/{thumb['key']}")  # renditions are objects like any other
    assert served.status_code == 200 and served.headers["content-type"] == "image/webp"
    kinds = Counter(e.type for e in _events(client))
    assert kinds["job.started"] == kinds["job.succeeded"] == kinds["image.processed"] == 1
    assert metric(client, "darkroom_jobs_total", pipeline="p", status="succeeded") >= 1
    assert metric(client, "darkroom_step_seconds_count", type="renditions",
                  outcome="succeeded") >= 1


def test_retries_back_off_then_succeed(client):
    _pipeline(client, [{"name": "f", "type": "flaky", "params": {"fail_times": 2},
                        "retry": [{"errors": ["storage_unavailable"], "interval_s": 0.05,
                                   "max_attempts": 3}]}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    assert job["status"] == "succeeded"
    assert _steps(job)["f"]["attempts"] == 3 and _steps(job)["f"]["output"]["attempt"] == 3


def test_an_exhausted_retry_goes_to_the_catcher_with_the_error(client):
    _pipeline(client, [
        {"name": "f", "type": "flaky", "params": {"fail_times": 9},
         "retry": [{"errors": ["States.ALL"], "interval_s": 0.01, "max_attempts": 1}],
         "catch": [{"errors": ["corrupt_image"], "next": "never"},
                   {"errors": ["States.TaskFailed"], "next": "fallback"}]},
        {"name": "never", "type": "flaky", "end": True},
        {"name": "fallback", "type": "flaky"}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    steps = _steps(job)
    assert job["status"] == "succeeded"
    assert (steps["f"]["state"], steps["f"]["attempts"]) == ("caught", 2)
    assert steps["never"]["state"] == "pending"
    caught = steps["fallback"]["output"]["caught"]
    assert caught == {"error": "storage_unavailable", "message": "planned failure 2",
                      "step": "f"}


def test_an_error_no_rule_covers_fails_the_run_at_once(client):
    _pipeline(client, [
        {"name": "f", "type": "flaky", "params": {"fail_times": 1, "error": "corrupt_image"},
         "retry": [{"errors": ["storage_unavailable"], "max_attempts": 5}]},
        {"name": "after", "type": "flaky"}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    assert job["status"] == "failed"
    assert job["error"] == "corrupt_image: planned failure 1"
    assert _steps(job)["f"]["attempts"] == 1 and _steps(job)["after"]["state"] == "pending"
    (failed,) = [e for e in _events(client) if e.type == "job.failed"]
    assert json.loads(failed.payload)["error"]["step"] == "f"


def test_the_last_step_ends_a_good_run_itself_and_a_failed_run_has_a_finish_step(client):
    counted = metric(client, "darkroom_jobs_total", pipeline="p", status="succeeded")
    _pipeline(client, [{"name": "only", "type": "flaky", "params": {"fail_times": 1},
                        "retry": [{"errors": ["storage_unavailable"], "interval_s": 0.01,
                                   "max_attempts": 1}]}])
    good = _finished(client, _upload(client)["jobs"][0]["id"])
    _pipeline(client, [{"name": "only", "type": "flaky", "params": {"fail_times": 1,
                                                                    "error": "corrupt_image"}}])
    bad = _finished(client, _upload(client, "shop/b.jpg")["jobs"][0]["id"])
    assert (good["status"], bad["status"]) == ("succeeded", "failed")
    queue = JobQueue(client.settings.database_url)
    try:  # DBOS records a step once its function has returned, after the job's row ended
        deadline = time.monotonic() + 30
        while True:
            names = {job["status"]: [s["function_name"] for s in queue.steps(f"{job['id']}.1")]
                     for job in (good, bad)}
            if names["failed"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        queue.close()
    good_steps, bad_steps = names["succeeded"], names["failed"]
    # attempts are checkpointed in the catalog, not as DBOS steps: the good run's only
    # DBOS steps are its retry's wait, and it has no finish step
    assert good_steps == ["jitter", "DBOS.sleep"]
    assert bad_steps == ["finish"]
    assert [(h["step"], h["status"]) for h in good["history"]] == [
        ("only", "failed"), ("only", "succeeded")]
    assert [h["error"] for h in bad["history"]] == ["corrupt_image: planned failure 1"]
    assert _steps(good)["only"]["state"] == "succeeded" and good["finished_at"]
    kinds = Counter(e.type for e in _events(client))
    assert kinds["job.succeeded"] == kinds["job.failed"] == 1
    assert metric(client, "darkroom_jobs_total", pipeline="p",
                  status="succeeded") == counted + 1


def _workflow_rows(client, workflow_id: str) -> dict:
    """What DBOS's tables say of a workflow's end."""
    engine = make_engine(client.settings.database_url)
    with engine.connect() as db:
        row = db.execute(text(
            "SELECT s.status, s.deduplication_id, s.owner_xid, s.completed_at IS NOT NULL, "
            "s.completed_at >= s.updated_at, s.queue_name, s.serialization, o.output, "
            "o.error FROM workflow_status s JOIN workflow_output o USING (workflow_uuid) "
            "WHERE workflow_uuid = :id"), {"id": workflow_id}).one()
    engine.dispose()
    return dict(row._mapping)


def _until(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _outcomes(monkeypatch) -> tuple[list, list]:
    """The outcomes written (workflow, status, by `Success`), whether each landed, and
    the workflows whose outcome DBOS came to write (each once its workflow returned)."""
    writes, results, asked = [], [], []
    real = dbos_sqlite._write_outcome

    def write(*args, **kwargs):
        writes.append((args[2], args[3], kwargs.get("serialize", False)))
        written = real(*args, **kwargs)
        results.append((args[2], written is not dbos_sqlite._NOT_OURS))
        return written

    class Marks(type(dbos_sqlite._ended)):
        def pop(self, key, *default):
            asked.append(key)
            return super().pop(key, *default)

    monkeypatch.setattr(dbos_sqlite, "_write_outcome", write)
    monkeypatch.setattr(dbos_sqlite, "_ended", Marks())
    return writes, results, asked


def test_a_good_runs_last_transaction_also_ends_its_workflow(client, monkeypatch):
    """On SQLite the transaction that ends a good job also records its DBOS workflow's
    success, as DBOS itself writes it, and DBOS does not write it a second time."""
    writes, _, asked = _outcomes(monkeypatch)
    _pipeline(client, [{"name": "only", "type": "flaky"}])
    good = _finished(client, _upload(client)["jobs"][0]["id"])["id"] + ".1"
    monkeypatch.setattr(dbos_sqlite.Success, "of", classmethod(lambda cls, *_: None))
    plain = _finished(client, _upload(client, "shop/b.jpg")["jobs"][0]["id"])["id"] + ".1"
    _until(lambda: good in asked and plain in asked)
    assert DBOS.retrieve_workflow(good).get_result() == "succeeded"
    assert DBOS.retrieve_workflow(plain).get_result() == "succeeded"  # DBOS's own write
    assert [w for w in writes if w[0] == good] == [(good, "SUCCESS", True)]
    assert [w for w in writes if w[0] == plain] == [(plain, "SUCCESS", False)]
    assert _workflow_rows(client, good) == _workflow_rows(client, plain)
    assert _workflow_rows(client, good)["status"] == "SUCCESS"
    assert not dbos_sqlite._ended  # each skipped write took its mark away


def test_a_forgotten_mark_has_dbos_read_the_written_outcome_back(client, monkeypatch):
    writes, results, asked = _outcomes(monkeypatch)
    monkeypatch.setattr(dbos_sqlite, "ENDED_KEPT", 0)
    _pipeline(client, [{"name": "only", "type": "flaky"}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    workflow = job["id"] + ".1"
    _until(lambda: workflow in asked)
    assert DBOS.retrieve_workflow(workflow).get_result() == "succeeded"
    assert [w for w in writes if w[0] == workflow] == [
        (workflow, "SUCCESS", True), (workflow, "SUCCESS", False)]
    assert [r for r in results if r[0] == workflow] == [(workflow, True), (workflow, False)]
    assert _workflow_rows(client, workflow)["status"] == "SUCCESS"
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"


def test_an_outcome_that_cannot_be_written_with_the_job_is_left_to_dbos(client, monkeypatch):
    """A failure of the workflow's part of the job's last transaction (here its output's
    serialization) leaves the job to end as it would, and DBOS writes the outcome."""
    writes, results, asked = _outcomes(monkeypatch)

    def unusable(*_args):
        raise TypeError("Serialization x is not available")

    monkeypatch.setattr(dbos_sqlite, "serialize_value_as", unusable)
    _pipeline(client, [{"name": "only", "type": "flaky"}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    workflow = job["id"] + ".1"
    _until(lambda: workflow in asked)
    assert job["status"] == "succeeded" and _steps(job)["only"]["state"] == "succeeded"
    assert DBOS.retrieve_workflow(workflow).get_result() == "succeeded"
    assert [w for w in writes if w[0] == workflow] == [
        (workflow, "SUCCESS", True), (workflow, "SUCCESS", False)]
    assert [r for r in results if r[0] == workflow] == [(workflow, True)]  # DBOS's landed
    assert _workflow_rows(client, workflow)["output"]


def test_outside_a_workflow_or_on_another_file_dbos_writes_its_outcome(client, tmp_path,
                                                                      monkeypatch):
    _pipeline(client, [{"name": "only", "type": "flaky"}])  # DBOS up, with its worker
    _finished(client, _upload(client)["jobs"][0]["id"])
    database = Path(make_engine(client.settings.database_url).url.database)
    (tmp_path / "link").symlink_to(database.parent)
    engines = [make_engine(f"sqlite:///{path}") for path in (
        database, tmp_path / "link" / database.name, tmp_path / "other.sqlite")]
    try:
        assert dbos_sqlite.Success.of(engines[0], "succeeded") is None  # not in a workflow
        assert dbos_sqlite._same_file(engines[0], engines[1])
        assert not dbos_sqlite._same_file(engines[0], engines[2])
        running = type("Running", (), {"workflow_id": "wf-1"})  # as if in a workflow
        monkeypatch.setattr(dbos_sqlite, "DBOS", running)
        assert dbos_sqlite.Success.of(engines[1], "succeeded") is not None
        assert dbos_sqlite.Success.of(engines[2], "succeeded") is None  # another file
        monkeypatch.setattr(SystemDatabase, "_update_workflow_outcome_in_transaction",
                            lambda *args, **kwargs: True)  # DBOS's own path, not `_outcome`
        assert dbos_sqlite.Success.of(engines[1], "succeeded") is None
    finally:
        for engine in engines:
            engine.dispose()


def test_a_replayed_run_answers_its_ended_attempts_from_their_records(client):
    """DBOS replays a run after a crash: here a fork of a finished run with every DBOS
    checkpoint (its retry's jitter and wait) replays all of it. Each attempt answers from
    its record, so no step runs again and the job is left as it was."""
    _pipeline(client, [
        {"name": "f", "type": "flaky", "params": {"fail_times": 1},
         "retry": [{"errors": ["storage_unavailable"], "interval_s": 0.01}]},
        {"name": "g", "type": "flaky"}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    assert [(h["step"], h["status"]) for h in job["history"]] == [
        ("f", "failed"), ("f", "succeeded"), ("g", "succeeded")]
    seen = {step: ATTEMPTS[(job["id"], step)] for step in ("f", "g")}
    replay = DBOS.fork_workflow(f"{job['id']}.1", start_step=1000)
    assert replay.get_result() == "succeeded"
    assert {step: ATTEMPTS[(job["id"], step)] for step in ("f", "g")} == seen == {
        "f": 2, "g": 1}
    assert client.get(f"/v1/jobs/{job['id']}").json() == job


def test_a_timeout_is_states_timeout_which_task_failed_does_not_cover(client):
    _pipeline(client, [
        {"name": "slow", "type": "flaky", "params": {"sleep_s": 1.0}, "timeout_s": 0.1,
         "retry": [{"errors": ["States.TaskFailed"], "max_attempts": 3}],
         "catch": [{"errors": ["States.Timeout"], "next": "fallback"}]},
        {"name": "fallback", "type": "flaky"}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    steps = _steps(job)
    assert steps["slow"]["attempts"] == 1 and "States.Timeout" in steps["slow"]["error"]
    assert steps["fallback"]["output"]["caught"]["error"] == "States.Timeout"


def test_a_fail_step_ends_the_run_with_its_error(client):
    _pipeline(client, [
        {"name": "f", "type": "flaky", "params": {"fail_times": 1},
         "catch": [{"next": "stop"}]},
        {"name": "stop", "type": "fail", "params": {"error": "giving_up"}}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    assert job["status"] == "failed"
    assert job["error"] == "giving_up: planned failure 1"


def test_retry_runs_a_failed_job_again_keeping_what_succeeded(client):
    _pipeline(client, [
        {"name": "first", "type": "flaky"},
        {"name": "second", "type": "flaky", "params": {"fail_times": 1}}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    assert job["status"] == "failed"
    retried = client.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 202 and retried.json()["run"] == 2
    again = _finished(client, job["id"])
    assert (again["status"], again["run"]) == ("succeeded", 2)
    assert _steps(again)["first"]["attempts"] == 1  # not run again
    assert _steps(again)["second"]["attempts"] == 2
    conflict = client.post(f"/v1/jobs/{job['id']}/retry")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "job_not_retryable"


def test_cancel_stops_a_running_job_before_its_next_step(client):
    _pipeline(client, [{"name": "slow", "type": "flaky", "params": {"sleep_s": 1.0}},
                       {"name": "next", "type": "flaky"}])
    job_id = _upload(client)["jobs"][0]["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    time.sleep(1.5)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and _steps(job)["next"]["state"] == "pending"
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409


def test_a_job_cancelled_as_its_last_step_succeeded_is_retried_to_success(client):
    """Cancelled while its last step ran, the job keeps that step's success; its retry
    has no step left to run, and still starts, ends and tells of its end."""
    _pipeline(client, [{"name": "slow", "type": "flaky", "params": {"sleep_s": 1.0}}])
    job_id = _upload(client)["jobs"][0]["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    while _steps(client.get(f"/v1/jobs/{job_id}").json())["slow"]["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stopped = client.get(f"/v1/jobs/{job_id}").json()
    assert stopped["status"] == "cancelled" and _steps(stopped)["slow"]["state"] == "succeeded"
    assert client.post(f"/v1/jobs/{job_id}/retry").status_code == 202
    again = _finished(client, job_id)
    assert (again["status"], again["run"]) == ("succeeded", 2)
    assert _steps(again)["slow"]["attempts"] == 1  # not run again
    payloads = [(e.type, json.loads(e.payload) if isinstance(e.payload, str) else e.payload)
                for e in _events(client)]
    kinds = Counter(kind for kind, data in payloads
                    if data.get("job_id") == job_id and data.get("run") == 2)
    assert kinds == {"job.started": 1, "job.succeeded": 1}


def test_a_job_cancelled_while_its_renditions_render_keeps_none(client, monkeypatch):
    """The renditions are catalogued in the transaction that ends the step's attempt; a
    job stopped meanwhile refuses them, the attempt fails `image_gone`, and what the step
    wrote is deleted: nothing stored, nothing catalogued."""
    real, rendering, cancelled = steps.render, threading.Event(), threading.Event()

    def slow(plan, *args, **kwargs):
        rendering.set()
        assert cancelled.wait(30)  # still rendering when the job is cancelled
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(steps, "render", slow)  # the step's own renders (no pre-renders:
    _pipeline(client, [{"name": "first", "type": "flaky"},  # it is not the first step)
                       {"name": "sizes", "type": "renditions",
                        "params": {"renditions": {"t": "w=50", "u": "w=60&fm=png"}}}])
    image = _upload(client)
    job_id = image["jobs"][0]["id"]
    assert rendering.wait(30)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    cancelled.set()
    deadline = time.monotonic() + 30
    while _steps(client.get(f"/v1/jobs/{job_id}").json())["sizes"]["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert _steps(job)["sizes"]["state"] == "failed"
    assert _steps(job)["sizes"]["error"].startswith("image_gone: ")
    assert _swept(client) == []
    assert client.get(f"/v1/images/{image['id']}").json()["renditions"] == []


SIZES = [{"name": "sizes", "type": "renditions",
          "params": {"renditions": {"t": "w=50", "u": "w=60&fm=png"}}}]


def _stored_renditions(client) -> list[str]:
    return sorted(p.name for p in (client.settings.storage_dir / "_renditions").rglob("*.*"))


def _swept(client) -> list[str]:
    """What is stored once a run's sweep, which follows the commit of its end, is done:
    [] as soon as it is (30 s at most)."""
    deadline = time.monotonic() + 30
    while (stored := _stored_renditions(client)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return stored


@contextmanager
def _queued_only(tmp_path: Path) -> Iterator[TestClient]:
    """A server with the SIZES pipeline and no worker: its jobs stay queued."""
    settings = Settings(data_dir=tmp_path / "data", allow_unsigned=True, access_log=False,
                        pipelines={"in_process": False})
    with TestClient(create_app(settings)) as client:
        client.settings = settings
        _pipeline(client, SIZES)
        yield client


def test_a_queued_job_cancelled_leaves_no_rendition_behind(tmp_path: Path):
    """The rendition an upload makes for its job (its head start) is catalogued by the
    job, and so is one a worker wrote before it was killed: a job cancelled deletes them."""
    with _queued_only(tmp_path) as client:
        settings = client.settings
        image = _upload(client)
        assert len(_stored_renditions(client)) == 1  # the head start
        # ... and `u` as a worker killed after writing it (before cataloguing it) left it
        plan = native.parse("u", parse_qsl("w=60&fm=png"))
        left = settings.storage_dir / steps.rendition_key(image["id"], image["sha256"], plan,
                                                          "png")
        left.write_bytes(b"\x89PNG written by a worker killed since")
        cancelled = client.post(f"/v1/jobs/{image['jobs'][0]['id']}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        assert _stored_renditions(client) == []
        assert client.get(f"/v1/images/{image['id']}").json()["renditions"] == []


def test_a_cancel_whose_sweep_fails_still_answers_and_stops_the_run(tmp_path: Path,
                                                                    monkeypatch):
    """The cancel is committed before its sweep: a sweep that fails (the database locked)
    is logged, leaves the renditions to the image's next replace or delete, and the
    answer and DBOS's cancel of the run come all the same."""
    from darkroom.pipelines import sweep
    from sqlalchemy.exc import OperationalError

    def locked(*_args, **_kwargs):
        raise OperationalError("UPDATE images", {}, Exception("database is locked"))

    with _queued_only(tmp_path) as client:
        settings = client.settings
        image = _upload(client)
        monkeypatch.setattr(sweep, "discard", locked)
        job_id = image["jobs"][0]["id"]
        cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        assert len(_stored_renditions(client)) == 1  # the head start, left for later
        engine = make_engine(settings.database_url)
        try:
            with engine.connect() as db:
                status = db.execute(text("SELECT status FROM workflow_status WHERE "
                                         "workflow_uuid = :id"), {"id": f"{job_id}.1"})
                assert status.scalar() == "CANCELLED"
        finally:
            engine.dispose()
        monkeypatch.undo()
        assert client.delete(f"/v1/images/{image['id']}").status_code == 204
        assert _stored_renditions(client) == []  # the delete's folder sweep took it


def test_a_failed_run_deletes_its_head_start_and_a_retry_makes_it_again(client, monkeypatch):
    from darkroom.pipelines import prerender

    seen: list[list[str]] = []  # what was stored when the step's render of `u` failed

    def failing(real, step: bool):
        def render(plan, *args, **kwargs):
            if plan.output.format == "png":  # `u`; `t` is the upload's head start
                if step:
                    seen.append(_stored_renditions(client))
                raise DarkroomError("planned failure", "corrupt_image")
            return real(plan, *args, **kwargs)
        return render

    monkeypatch.setattr(steps, "render", failing(steps.render, True))
    monkeypatch.setattr(prerender, "render", failing(prerender.render, False))
    _pipeline(client, SIZES)
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    assert job["status"] == "failed" and _steps(job)["sizes"]["error"].startswith(
        "corrupt_image: ")
    assert len(seen) == 1 and len(seen[0]) == 1  # the head start was there
    assert _swept(client) == []  # ... and went with the failure
    monkeypatch.undo()
    assert client.post(f"/v1/jobs/{job['id']}/retry").status_code == 202
    assert _finished(client, job["id"])["status"] == "succeeded"
    image = client.get(f"/v1/images/{job['image_id']}").json()
    assert sorted(r["name"] for r in image["renditions"]) == ["t", "u"]
    assert len(_stored_renditions(client)) == 2


def test_retention_forgets_ended_runs_in_dbos_and_keeps_the_jobs(client, request):
    """Once old, DBOS's records of an ended run go, those of a run under way stay, and the
    job keeps its steps and history: a failed one can still be retried."""
    from darkroom.catalog import retention
    from darkroom.catalog.models import utcnow
    from darkroom.config import Retention

    GATE.clear()
    request.addfinalizer(GATE.set)
    _pipeline(client, [{"name": "only", "type": "flaky", "params": {"fail_times": 1,
                                                                    "error": "corrupt_image"}}],
              trigger={"prefix": "shop/"})
    hold = {"trigger": {"prefix": "hold/"}, "steps": [{"name": "wait", "type": "gate"}]}
    assert client.put("/v1/pipelines/hold", json=hold).status_code == 201
    bad = _finished(client, _upload(client)["jobs"][0]["id"])
    holding = _upload(client, "hold/a.jpg")["jobs"][0]["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{holding}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    queue = JobQueue(client.settings.database_url)
    engine = make_engine(client.settings.database_url)
    try:
        later = utcnow() + timedelta(days=2)
        done = retention.purge(engine, queue, Retention(workflows_days=1), now=later)
        assert (bad["status"], done["workflows"]) == ("failed", 1)
        assert queue.ended(later, 10) == []
        assert [w.workflow_id for w in queue._client.list_workflows()] == [f"{holding}.1"]
    finally:
        queue.close()
        engine.dispose()
    assert client.post(f"/v1/jobs/{bad['id']}/retry").status_code == 202
    job = _finished(client, bad["id"])
    assert (job["status"], job["run"]) == ("succeeded", 2)
    assert [(h["step"], h["status"]) for h in job["history"]] == [
        ("only", "failed"), ("only", "succeeded")]
    GATE.set()
    assert _finished(client, holding)["status"] == "succeeded"


def test_a_job_cancelled_while_queued_then_retried_writes_its_head_start_again(tmp_path,
                                                                               request):
    """The worker keeps an upload's head start in memory for its job, as stored; once a
    cancel deleted it, the retried run finds it gone and writes it again rather than
    catalogue a missing object."""
    settings = Settings(data_dir=tmp_path / "data", allow_unsigned=True, access_log=False,
                        pipelines={"poll_s": 0.05, "concurrency": 1})
    GATE.clear()
    request.addfinalizer(GATE.set)  # a failure below must not leave the worker waiting
    with TestClient(create_app(settings)) as client:
        client.settings = settings
        hold = {"trigger": {"prefix": "hold/"}, "steps": [{"name": "wait", "type": "gate"}]}
        assert client.put("/v1/pipelines/hold", json=hold).status_code == 201
        _pipeline(client, SIZES, trigger={"prefix": "shop/"})
        holding = _upload(client, "hold/a.jpg")["jobs"][0]["id"]  # takes the only slot
        deadline = time.monotonic() + 30
        while client.get(f"/v1/jobs/{holding}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        job_id = _upload(client)["jobs"][0]["id"]  # queued behind it, head start in memory
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        assert _stored_renditions(client) == []
        assert client.post(f"/v1/jobs/{job_id}/retry").status_code == 202
        GATE.set()
        job = _finished(client, job_id)
        assert (job["status"], job["run"]) == ("succeeded", 2)
        made = _steps(job)["sizes"]["output"]
        assert made["t"]["written"] is True  # the head start, written again
        image = client.get(f"/v1/images/{job['image_id']}").json()
        storage = settings.storage_dir
        assert sorted(r["name"] for r in image["renditions"]) == ["t", "u"]
        for rendition in image["renditions"]:
            assert (storage / rendition["key"]).stat().st_size == rendition["bytes"]


def test_an_image_uploaded_while_a_copy_is_written_is_not_overwritten(client, monkeypatch):
    """The copy step checks its target and writes it in one transaction: an upload of the
    target key that arrives meanwhile waits for it and then replaces the copy, never the
    other way round (the copy would have overwritten a catalogued image)."""
    from darkroom.pipelines.context import Runtime

    writing, uploaded, real_put = threading.Event(), threading.Event(), Runtime.put

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if key.startswith("cdn/"):
            writing.set()
            uploaded.wait(1.0)  # an upload not held off lands in this second
        real_put(self, key, data, content_type)

    monkeypatch.setattr(Runtime, "put", put)
    _pipeline(client, [{"name": "export", "type": "copy", "params": {"prefix": "cdn/"}}],
              trigger={"prefix": "shop/"})
    job = _upload(client)["jobs"][0]
    assert writing.wait(30)
    other = next(p for p in sorted((CORPUS / "photos").glob("*.jpg"))
                 if p.name != Path(PHOTO["path"]).name).read_bytes()
    image = client.post("/v1/images?key=cdn/shop/a.jpg", headers=RAW, content=other).json()
    uploaded.set()
    assert _finished(client, job["id"])["status"] == "succeeded"  # the copy came first
    stored = client.settings.storage_dir / "cdn/shop/a.jpg"
    assert stored.read_bytes() == other and image["sha256"] == hashlib.sha256(other).hexdigest()
    assert client.get("/img/cdn/shop/a.jpg?w=40").status_code == 200


def test_replace_reruns_the_pipeline_and_drops_the_old_renditions(client):
    _pipeline(client, [{"name": "sizes", "type": "renditions",
                        "params": {"renditions": {"t": "w=50"}}}])
    image = _upload(client)
    first = _finished(client, image["jobs"][0]["id"])
    old_key = _steps(first)["sizes"]["output"]["t"]["key"]
    other = next(p for p in sorted((CORPUS / "photos").glob("*.jpg"))
                 if p.name != Path(PHOTO["path"]).name)
    replaced = client.put(f"/v1/images/{image['id']}", content=other.read_bytes(),
                          headers=RAW).json()
    (new_job,) = [j for j in replaced["jobs"] if j["version"] == 2]
    second = _finished(client, new_job["id"])
    new_key = _steps(second)["sizes"]["output"]["t"]["key"]
    assert second["trigger"] == "replaced" and new_key != old_key
    storage = client.settings.storage_dir
    assert not (storage / old_key).exists() and (storage / new_key).exists()
    detail = client.get(f"/v1/images/{image['id']}").json()
    assert [r["key"] for r in detail["renditions"]] == [new_key]
    client.delete(f"/v1/images/{image['id']}")
    assert not (storage / new_key).exists()
    assert not (storage / "_renditions").exists()  # no empty folder left either
    assert client.get(f"/v1/jobs/{new_job['id']}").status_code == 404


def test_a_webhook_step_posts_a_signed_event_with_the_outputs(client):
    with serve_receiver() as receiver:
        _pipeline(client, [
            {"name": "meta", "type": "metadata"},
            {"name": "hook", "type": "webhook",
             "params": {"url": receiver.url, "signing_keys": receiver.keys}}])
        job = _finished(client, _upload(client)["jobs"][0]["id"])
    assert job["status"] == "succeeded"
    (request,) = receiver.requests
    assert request["verdict"] == "ok"
    assert request["headers"]["Darkroom-Event-Type"] == "image.processed"
    shown = client.get("/v1/pipelines/p").json()
    assert shown["steps"][1]["params"]["signing_keys"] == "**********"
    assert shown["steps"][1]["params"]["url"] == "http://" + receiver.url.split("/")[2] + \
        "/**********"
    # stored sealed (`pipelines.sealing`): the pipeline, the job's copy, the run's inputs
    engine = make_engine(client.settings.database_url)
    with engine.connect() as connection:
        stored = [row[0] for query in ("SELECT definition FROM pipelines",
                                       "SELECT definition FROM jobs")
                  for row in connection.execute(text(query))]
        kept = [str(row[0]) for query in ("SELECT output FROM job_steps",
                                          "SELECT payload FROM outbox")
                for row in connection.execute(text(query))]
        stored += [str(DefaultSerializer().deserialize(row[0])) for row in
                   connection.execute(text("SELECT inputs FROM workflow_input"))]
    engine.dispose()
    assert len(stored) == 3 and all("sealed:" in row for row in stored)
    path = urlsplit(receiver.url).path
    assert not any(key in row for key in receiver.keys for row in stored)
    assert not any(path in row for row in stored + kept)  # the step's output shows its host
    assert job["steps"][1]["output"]["url"] == shown["steps"][1]["params"]["url"]
    key_file = client.settings.data_dir / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_a_job_whose_secrets_no_key_opens_fails_and_is_not_left_queued(client):
    _pipeline(client, [{"name": "hook", "type": "webhook", "params": {
        "url": "http://localhost:9/internal", "signing_keys": ["k"]}}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    assert job["error"].startswith("webhook_blocked")
    sealing.use([sealing.new_key()])  # the key that sealed its copy is gone
    definition._validated.cache_clear()
    assert client.post(f"/v1/jobs/{job['id']}/retry").status_code in (200, 202)
    job = _finished(client, job["id"])
    assert job["status"] == "failed" and job["error"].startswith("definition_unreadable")
    assert "no key of `secret_keys` opens" in job["error"]


def test_a_webhook_step_may_not_reach_private_addresses_unless_allowed(client):
    _pipeline(client, [{"name": "hook", "type": "webhook", "params": {
        "url": "http://localhost:9/internal", "signing_keys": ["k"]}}])
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    assert job["status"] == "failed" and job["error"].startswith("webhook_blocked")
    _pipeline(client, [{"name": "hook", "type": "webhook", "params": {
        "url": "http://169.254.169.254/latest/meta-data/", "signing_keys": ["k"]}}])
    job = _finished(client, _upload(client, "shop/b.jpg")["jobs"][0]["id"])
    assert "169.254.169.254" in job["error"] and "webhook_blocked" in job["error"]


def test_pipeline_api_validates_and_lists(client):
    bad = client.put("/v1/pipelines/p", json={"steps": [{"name": "a", "type": "nope"}]})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_pipeline"
    yaml_body = "steps:\n  - {name: a, type: metadata}\n"
    created = client.put("/v1/pipelines/y", content=yaml_body,
                         headers={"content-type": "application/yaml"})
    assert created.status_code == 201 and created.json()["name"] == "y"
    assert client.put("/v1/pipelines/y", content=yaml_body,
                      headers={"content-type": "application/yaml"}).status_code == 200
    mismatch = client.put("/v1/pipelines/z", json={"name": "y", "steps": []})
    assert mismatch.status_code == 400
    assert [p["name"] for p in client.get("/v1/pipelines").json()["items"]] == ["y"]
    types = {t["type"] for t in client.get("/v1/step-types").json()["items"]}
    assert {"metadata", "renditions", "copy", "notify", "webhook", "fail"} <= types
    assert client.delete("/v1/pipelines/y").status_code == 204
    assert client.get("/v1/pipelines/y").status_code == 404
    assert client.get("/v1/jobs?status=bogus").status_code == 400


def test_a_pipeline_runs_on_demand_on_an_image_its_trigger_skipped(client):
    _pipeline(client, [{"name": "meta", "type": "metadata"}], trigger={"prefix": "other/"})
    image = _upload(client)
    assert image["jobs"] == []
    started = client.post(f"/v1/pipelines/p/runs?image_id={image['id']}")
    assert started.status_code == 202 and started.json()["trigger"] == "manual"
    job = _finished(client, started.json()["id"])
    assert job["status"] == "succeeded" and job["version"] == 1
    assert client.post(f"/v1/pipelines/p/runs?image_id={'0' * 32}").status_code == 404
    assert client.post(f"/v1/pipelines/x/runs?image_id={image['id']}").status_code == 404


def test_a_pipeline_declared_elsewhere_starts_the_servers_worker(client):
    engine = make_engine(client.settings.database_url)
    run(engine, lambda s: admin.save_pipeline(s, parse(  # as `darkroom pipelines apply`
        {"name": "cli", "steps": [{"name": "meta", "type": "metadata"}]})))
    engine.dispose()
    job = _finished(client, _upload(client)["jobs"][0]["id"])
    assert job["status"] == "succeeded" and job["pipeline"] == "cli"
