"""Job state changes on both databases: a cancel and a finishing run never both win, a
stopped run writes no rendition and no copy, masked secrets are never saved."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import SimpleNamespace
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from darkroom.catalog.metadata import describe
from darkroom.catalog.models import Job, OutboxEvent, new_id, utcnow
from darkroom.catalog.pipeline_models import JobStep
from darkroom.catalog import Catalog, Staged, repository
from darkroom.config import Limits
from darkroom.errors import BadRequest, Conflict, StorageError
from darkroom.grammars import native
from darkroom.pipelines import admin, steps, store, sweep
from darkroom.pipelines.definition import parse
from darkroom.server.pool import RenderPool
from darkroom.storage.local import LocalStorage

from catalog.databases import database_url, engine, pg_url  # noqa: F401
from corpus_files import CORPUS

from .test_kill_worker import PHOTOS

PIPELINE = parse({"name": "p", "steps": [{"name": "meta", "type": "metadata"}]})


def _job(engine, key: str = "a.jpg") -> str:
    path = CORPUS / PHOTOS[0]["path"]
    facts = describe(path, Limits())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    def make(session):
        image = repository.claim_new(session, key, [], new_id())
        version = repository.add_version(session, image, facts, digest, 1, "etag",
                                           first=True)
        return store.new_job(session, PIPELINE, image, version, "uploaded").id

    return store.run(engine, make)


def _start(engine, job_id: str, run: int = 1, first: bool = True, seq: int = 0
           ) -> int | dict:
    """Begin attempt `seq`: the step's attempts so far once it began, else the outcome
    that stands for it."""
    standing = store.run_plain(engine, lambda c: store.begin_attempt(
        c, job_id, run, seq, "meta", utcnow(), first))
    if standing is not None:
        return standing
    return store.run(engine, lambda s: s.get(JobStep, (job_id, "meta"))).attempts


def test_a_cancelled_run_neither_starts_nor_finishes(engine):
    job_id = _job(engine)
    assert store.run(engine, lambda s: admin.cancel_job(s, job_id))[2] == set()  # none made
    assert _start(engine, job_id) == store.STOPPED
    assert store.run(engine, lambda s: store.finish_run(s, job_id, 1, None)) is False
    with pytest.raises(Conflict):
        store.run(engine, lambda s: admin.cancel_job(s, job_id))
    status = store.run(engine, lambda s: s.get(Job, job_id).status)
    assert status == "cancelled"


def test_a_run_finishes_once_and_a_cancel_after_it_is_refused(engine):
    job_id = _job(engine)
    start = store.run(engine, lambda s: store.job_start(s, s.get(Job, job_id)))
    assert start["definition"]["name"] == "p" and start["done"] == {}
    assert _start(engine, job_id) == 1
    assert _start(engine, job_id) == 2  # a run resumed after a crash
    assert _start(engine, job_id, run=2) == store.STOPPED  # not its run
    assert store.run(engine, lambda s: store.finish_job(s, job_id, 1, None)) is True
    assert store.run(engine, lambda s: store.finish_job(s, job_id, 1, None)) is False
    with pytest.raises(Conflict) as refused:
        store.run(engine, lambda s: admin.cancel_job(s, job_id))
    assert refused.value.code == "job_not_cancellable"
    kinds = store.run(engine, lambda s: sorted(s.scalars(select(OutboxEvent.type))))
    assert kinds == ["job.started", "job.succeeded"]  # each once


def test_a_run_no_attempt_started_still_starts_and_ends_its_job(engine):
    """A retried job whose steps all succeeded before runs no attempt: its end starts it."""
    job_id = _job(engine)
    assert store.run(engine, lambda s: store.finish_run(s, job_id, 1, None)) is True
    job = store.run(engine, lambda s: s.get(Job, job_id))
    assert job.status == "succeeded" and job.started_at is not None


SIZES = parse({"name": "sizes", "steps": [{"name": "s", "type": "renditions", "params": {
    "renditions": {"t": "w=50", "u": "w=60&fm=png"}}}]})
THUMB = parse({"name": "thumb", "steps": [{"name": "meta", "type": "metadata"}, {
    "name": "s", "type": "renditions", "params": {"renditions": {"t": "w=50"}}}]})


def _image_with_jobs(engine, key: str, pipelines) -> tuple:
    """A new image at `key` with a job of each of `pipelines`: its id, its version's, the
    jobs', the keys of SIZES's renditions `t` and `u`, and its facts."""
    path = CORPUS / PHOTOS[0]["path"]
    facts = describe(path, Limits())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    def make(session):
        image = repository.claim_new(session, key, [], new_id())
        version = repository.add_version(session, image, facts, digest, 1, "etag",
                                         first=True)
        jobs = [store.new_job(session, p, image, version, "uploaded").id for p in pipelines]
        return image.id, version.id, jobs

    image_id, version_id, jobs = store.run(engine, make)
    keys = {name: steps.rendition_key(image_id, digest, native.parse("x", parse_qsl(q)), fmt)
            for name, q, fmt in (("t", "w=50", facts.header.format),
                                 ("u", "w=60&fm=png", "png"))}
    return image_id, version_id, jobs, keys, facts


def test_a_stopped_job_leaves_behind_what_no_catalogue_or_live_job_holds(engine):
    """A job cancelled (or failed) names, to delete, the renditions of its version that it
    would have catalogued (an upload's head start, what a killed worker wrote), but not
    those another live job of the image makes too (its to catalogue), nor catalogued
    ones."""
    image_id, version_id, (first, other, third), key, facts = _image_with_jobs(
        engine, "b.jpg", (SIZES, THUMB, SIZES))
    every = set(key.values())
    assert store.run_plain(engine, lambda c: sweep.held(c, first, 1, image_id, every)) == every
    # `t`: the two others make it; `u`: the third does
    assert store.run(engine, lambda s: admin.cancel_job(s, first))[2] == set()
    # `t` is still the live `thumb` job's
    assert store.run(engine, lambda s: admin.cancel_job(s, third))[2] == {key["u"]}
    store.run_plain(engine, lambda c: store.add_renditions(c, [{
        "version_id": version_id, "plan_hash": "h", "name": "t", "storage_key": key["t"],
        "format": facts.header.format, "bytes": 1, "width": 1, "height": 1}]))
    assert _start(engine, other) == 1
    failed = {"error": "corrupt_image", "message": "planned", "step": "s"}
    assert store.run_plain(engine, lambda c: store.finish_run(c, other, 1, failed))
    assert store.run_plain(engine, lambda c: store.failed_run(c, other, 1))
    assert store.run_plain(engine, lambda c: sweep.leftovers(c, other)) == set()  # catalogued
    assert store.run_plain(engine, lambda c: sweep.leftovers(c, first)) == {key["u"]}
    # retried, `first` runs again: its run 1's late attempt must leave its run 2's keys
    store.run_plain(engine, lambda c: store.set_job(c, first, ("cancelled",), 1, run=2,
                                                    status="queued"))
    assert store.run_plain(engine, lambda c: sweep.held(c, first, 1, image_id, every)) == every
    assert store.run_plain(engine, lambda c: sweep.held(c, first, 2, image_id, every)) == {
        key["t"]}  # catalogued


def test_leftovers_are_removed_best_effort():
    tried: list[str] = []

    def delete(key: str) -> None:
        tried.append(key)
        if key == "_renditions/a":
            raise StorageError(f"cannot delete {key!r}: storage down")

    assert sweep.remove({"_renditions/b", "_renditions/a"}, delete, "j") == {"_renditions/b"}
    assert tried == ["_renditions/a", "_renditions/b"]


_NO_QUEUE = SimpleNamespace(enqueue=lambda db, job, source=None: None)  # (DBOS: elsewhere)


def test_what_a_stopped_job_left_stays_if_it_is_made_live_before_the_sweep(engine):
    """The sweep after a cancel asks again, under the image's lock, what holds the keys:
    the job retried in between holds them (its new run finds them stored and catalogues
    them), so none goes; once it is stopped again, they go."""
    _image, _version, (job_id,), named, _facts = _image_with_jobs(engine, "c.jpg", (SIZES,))
    keys = set(named.values())
    deleted: list[str] = []
    _body, _workflow, left = store.run(engine, lambda s: admin.cancel_job(s, job_id))
    assert left == keys  # nothing catalogued, no other job
    assert store.run(engine, lambda s: admin.retry_job(s, _NO_QUEUE, job_id))["run"] == 2
    assert store.run(engine, lambda s: sweep.discard(s, job_id, 1, left, deleted.append)
                     ) == set()
    assert deleted == []
    _body, _workflow, left = store.run(engine, lambda s: admin.cancel_job(s, job_id))
    assert store.run(engine, lambda s: sweep.discard(s, job_id, 2, left, deleted.append)
                     ) == keys
    assert sorted(deleted) == sorted(keys)


def test_nothing_is_swept_while_the_run_that_left_it_is_live(engine):
    """An attempt that does not stand while its run goes on (another execution of the run
    recorded it first, or it ended past its timeout) leaves what it wrote: the run may
    still catalogue it, and its own end sweeps what it leaves."""
    _image, _version, (job_id,), named, _facts = _image_with_jobs(engine, "d.jpg", (SIZES,))
    keys, deleted = set(named.values()), []
    assert store.run_plain(engine, lambda c: store.begin_attempt(
        c, job_id, 1, 0, "s", utcnow(), True)) is None  # running
    assert store.run(engine, lambda s: sweep.discard(s, job_id, 1, keys, deleted.append)
                     ) == set()
    failed = {"error": "corrupt_image", "message": "planned", "step": "s"}
    assert store.run_plain(engine, lambda c: store.finish_run(c, job_id, 1, failed))
    assert store.run(engine, lambda s: sweep.discard(s, job_id, 1, keys, deleted.append)
                     ) == keys


def test_a_sweep_that_fails_is_logged_and_deletes_nothing(caplog):
    def broken(_work):
        raise OperationalError("UPDATE images", {}, Exception("database is locked"))

    deleted: list[str] = []
    assert sweep.sweep_left(broken, "j", 1, {"_renditions/a"}, deleted.append) == set()
    assert deleted == []
    assert sweep.sweep_left(broken, "j", 1, set(), deleted.append) == set()  # no work


def test_a_retry_waits_for_the_sweep_of_its_images_leftovers(engine):
    """A retry that comes while a sweep deletes the job's leftovers commits only after the
    deletes (its run then makes them again), never between the sweep's check and its
    deletes: the sweep holds the image's row, and the retry takes it first."""
    _image, _version, (job_id,), named, _facts = _image_with_jobs(engine, "c.jpg", (SIZES,))
    keys = set(named.values())
    _body, _workflow, left = store.run(engine, lambda s: admin.cancel_job(s, job_id))
    order: list[str] = []
    deleting, go = threading.Event(), threading.Event()

    def delete(key: str) -> None:
        deleting.set()
        assert go.wait(30)
        order.append(f"deleted {key}")

    def sweep_it() -> set[str]:
        return store.run(engine, lambda s: sweep.discard(s, job_id, 1, left, delete))

    def retry() -> None:
        store.run(engine, lambda s: admin.retry_job(s, _NO_QUEUE, job_id))
        order.append("retried")

    with ThreadPoolExecutor(2) as threads:
        swept = threads.submit(sweep_it)
        try:
            assert deleting.wait(30)
            retried = threads.submit(retry)
            with pytest.raises(FutureTimeout):  # held back by the sweep's lock
                retried.result(timeout=1.0)
        finally:
            go.set()
        assert swept.result(timeout=30) == keys
        retried.result(timeout=30)
    assert order == [f"deleted {k}" for k in sorted(keys)] + ["retried"]


def _running_with_a_rendition(engine) -> tuple[str, str, dict]:
    """A job started, its image's id, and the row of a rendition of its version."""
    job_id = _job(engine)
    _start(engine, job_id)
    source = store.run(engine, lambda s: store.job_start(s, s.get(Job, job_id)))["source"]
    return job_id, source["image_id"], {
        "version_id": source["version_id"], "plan_hash": "h", "name": "t",
        "storage_key": "_renditions/x", "format": "png", "bytes": 1, "width": 1, "height": 1}


def test_a_stopped_run_may_not_catalogue_renditions_or_write_copies(engine):
    job_id, image_id, row = _running_with_a_rendition(engine)
    assert store.run(engine, lambda s: store.claim_copy(s, job_id, 1, "cdn/a.jpg"))
    assert not store.run(engine, lambda s: store.claim_copy(s, job_id, 1, "a.jpg"))
    assert _end(engine, job_id, 0, {"ok": True, "output": {}}, writes=[
        lambda c: store.add_renditions(c, [row])])[0]["ok"]
    assert _start(engine, job_id, first=False, seq=1) == 2
    store.run(engine, lambda s: repository.stop_jobs(s, image_id, "x"))
    late = {**row, "plan_hash": "h2", "storage_key": "_renditions/y"}
    refused = _end(engine, job_id, 1, {"ok": True, "output": {}}, writes=[
        lambda c: store.add_renditions(c, [late])])[0]
    assert (refused["ok"], refused["error"]) == (False, "image_gone")
    assert store.run_plain(engine, lambda c: store.catalogued(c, {
        "_renditions/x", "_renditions/y"})) == {"_renditions/x"}  # a stopped step keeps it
    assert not store.run(engine, lambda s: store.claim_copy(s, job_id, 1, "cdn/a.jpg"))


@pytest.mark.parametrize("first", ["copy", "upload"])
def test_a_copy_and_an_upload_of_its_key_never_interleave(engine, first):
    """A copy's check holds its key until its transaction (which writes the copy) ends,
    and an upload's claim holds it too: whichever comes second waits, so a copy never
    lands over an image uploaded after its check, and refuses one uploaded before."""
    job_id, _, _ = _running_with_a_rendition(engine)
    inside, release, done = threading.Event(), threading.Event(), []

    def copy(session) -> None:
        allowed = store.claim_copy(session, job_id, 1, "cdn/a.jpg")
        inside.set()
        assert first == "upload" or release.wait(30)
        done.append(("copy", allowed))

    def upload(session) -> None:
        repository.claim_new(session.connection(), "cdn/a.jpg", [], new_id())
        inside.set()
        assert first == "copy" or release.wait(30)
        done.append(("upload", True))

    works = {"copy": copy, "upload": upload}
    second = "upload" if first == "copy" else "copy"
    threads = [threading.Thread(target=store.run, args=(engine, works[name]))
               for name in (first, second)]
    threads[0].start()
    assert inside.wait(30)
    inside.clear()
    threads[1].start()
    threads[1].join(0.5)
    assert threads[1].is_alive() and not inside.is_set()  # held off by the first
    release.set()
    for thread in threads:
        thread.join(30)
    assert done == ([("copy", True), ("upload", True)] if first == "copy"
                    else [("upload", True), ("copy", False)])


def test_a_failed_upload_undoes_its_write_before_a_waiting_copy_writes(engine, tmp_path,
                                                                        monkeypatch):
    """An upload that wrote its object and then failed deletes it again while it still
    holds the key: a copy to that key, waiting for it, writes afterwards and stands."""
    job_id, _, _ = _running_with_a_rendition(engine)
    storage = LocalStorage(tmp_path / "storage")
    pool = RenderPool(2, 8)
    catalog = Catalog(engine, storage, pool, Limits())
    written, copied, outcome = threading.Event(), threading.Event(), {}
    real_add_event, real_delete = repository.add_event, storage.blocking.delete

    def add_event(db, kind, *args, **kwargs):
        if kind == "image.uploaded":  # the object is written: fail once the copy waits
            written.set()
            time.sleep(0.5)
            raise RuntimeError("planned failure after the write")
        return real_add_event(db, kind, *args, **kwargs)

    def delete(key):
        copied.wait(2)  # a slow delete: an undo not holding the key lets the copy in first
        real_delete(key)

    def copy() -> None:
        assert written.wait(30)

        def write(session) -> None:
            outcome["allowed"] = store.claim_copy(session, job_id, 1, "cdn/a.jpg")
            storage.blocking.put("cdn/a.jpg", b"the copy", "image/jpeg")
        store.run(engine, write)
        copied.set()

    monkeypatch.setattr(repository, "add_event", add_event)
    monkeypatch.setattr(storage.blocking, "delete", delete)
    copier = threading.Thread(target=copy)
    copier.start()
    path = CORPUS / PHOTOS[0]["path"]
    staged = Staged(path, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)
    try:
        with pytest.raises(RuntimeError):
            asyncio.run(catalog.upload(staged, "cdn/a.jpg", []))
        copier.join(30)
    finally:
        catalog.close()
        pool.close()
    assert outcome["allowed"]
    assert (storage.root / "cdn/a.jpg").read_bytes() == b"the copy"


def test_an_attempt_whose_writes_are_refused_ends_as_image_gone(engine):
    """A step's catalogue writes go in the transaction that ends its attempt; once its job
    stopped they are refused, and the attempt is recorded failed, `image_gone`."""
    job_id, image_id, row = _running_with_a_rendition(engine)
    store.run(engine, lambda s: repository.stop_jobs(s, image_id, "x"))
    done = {"ok": True, "output": {"t": {}}, "finished": True}
    standing, ended = _end(engine, job_id, 0, done,
                           writes=[lambda c: store.add_renditions(c, [row])])
    assert (standing["ok"], standing["error"], ended) == (False, "image_gone", False)
    assert _recorded(engine, job_id, 0) == standing
    assert store.run_plain(engine, lambda c: store.catalogued(c, {row["storage_key"]})) == set()


def _end(engine, job_id: str, seq: int, outcome: dict, name: str = "meta",
         run: int = 1, writes: tuple = ()) -> tuple[dict, bool]:
    return store.end_attempt(engine, job_id, run, seq, name, utcnow(), outcome, writes)


def _recorded(engine, job_id: str, seq: int, name: str = "meta", run: int = 1):
    return store.run_plain(engine, lambda c: store.recorded(c, job_id, run, seq, name))


def test_an_attempt_that_ended_answers_its_recorded_outcome_on_a_replay(engine):
    """An attempt's end records its outcome in the same transaction (and the last step's
    ends the job too): a run replayed after its process died answers the attempts that
    ended from their records, never running a step again nor taking the job it ended for
    stopped (which made a renditions step delete what it catalogued)."""
    job_id = _job(engine)
    failed = {"ok": False, "error": "storage_unavailable", "message": "planned"}
    done = {"ok": True, "output": {"made": 1}, "finished": True}
    assert _start(engine, job_id) == 1
    assert _end(engine, job_id, 0, failed) == (failed, False)
    assert _start(engine, job_id, first=False, seq=1) == 2  # a retry
    assert _end(engine, job_id, 1, done) == (done, True)  # ... that ends the job
    for seq, outcome in enumerate((failed, done, None)):
        assert _recorded(engine, job_id, seq) == outcome
    assert _recorded(engine, job_id, 0, run=2) is None
    with pytest.raises(RuntimeError, match="attempt 1 was of step 'meta'"):
        _recorded(engine, job_id, 1, name="other")  # a replay that took another path
    assert _start(engine, job_id) == failed  # a replay begins neither attempt again
    assert _start(engine, job_id, first=False, seq=1) == done
    step = store.run(engine, lambda s: s.scalars(select(JobStep).where(
        JobStep.job_id == job_id)).one())
    assert (step.state, step.attempts, step.output) == ("succeeded", 2, {"made": 1})
    assert store.run(engine, lambda s: s.get(Job, job_id).status) == "succeeded"
    kinds = store.run(engine, lambda s: sorted(s.scalars(select(OutboxEvent.type))))
    assert kinds == ["job.started", "job.succeeded"]  # each once
    history = store.run(engine, lambda s: admin.job_detail(s, job_id))["history"]
    assert [(h["run"], h["step"], h["status"], h["error"]) for h in history] == [
        (1, "meta", "failed", "storage_unavailable: planned"), (1, "meta", "succeeded", None)]


def test_a_second_execution_of_a_run_takes_the_first_ones_outcome_and_changes_nothing(
        engine):
    """A worker wrongly presumed dead and the one that resumed its run may both end the
    same attempt: the second finds it ended and takes that outcome; what it wrote is
    rolled back (step row untouched, renditions not catalogued)."""
    job_id, _, row = _running_with_a_rendition(engine)
    first = {"ok": False, "error": "storage_unavailable", "message": "first"}
    assert _end(engine, job_id, 0, first) == (first, False)
    before = store.run(engine, lambda s: s.get(JobStep, (job_id, "meta")))
    second = {"ok": True, "output": {"by": "second"}, "finished": True}
    assert _end(engine, job_id, 0, second, writes=[
        lambda c: store.add_renditions(c, [row])]) == (first, False)
    after = store.run(engine, lambda s: s.get(JobStep, (job_id, "meta")))
    assert (after.state, after.output, after.error, after.finished_at) == (
        before.state, before.output, before.error, before.finished_at)
    assert store.run_plain(engine, lambda c: store.catalogued(c, {row["storage_key"]})) == set()
    assert store.run(engine, lambda s: s.get(Job, job_id).status) == "running"


def test_an_attempt_whose_job_was_deleted_ends_as_stopped(engine):
    job_id = _job(engine)
    _start(engine, job_id)
    store.run(engine, lambda s: s.delete(s.get(Job, job_id)))
    assert _end(engine, job_id, 0, {"ok": True, "output": {}}) == (store.STOPPED, False)
    assert _recorded(engine, job_id, 0) is None


def test_a_masked_secret_is_never_saved(engine):
    hook = {"name": "h", "steps": [{"name": "w", "type": "webhook", "params": {
        "url": "https://hooks.example.org/", "signing_keys": ["real"]}}]}
    shown, _ = store.run(engine, lambda s: admin.save_pipeline(s, parse(hook)))
    assert shown["steps"][0]["params"]["signing_keys"] == admin.MASK
    shown.pop("created_at"), shown.pop("updated_at")
    shown["steps"][0]["params"]["signing_keys"] = [admin.MASK]
    with pytest.raises(BadRequest, match="masked secret"):
        store.run(engine, lambda s: admin.save_pipeline(s, parse(shown)))


def test_a_change_that_does_not_happen_leaves_the_loaded_job_alone(engine):
    job_id = _job(engine)

    def refused_cancel(session):
        loaded = session.get(Job, job_id)
        assert loaded.status == "queued"
        store.run(engine, lambda other: store.set_job(other, job_id, ("queued",), None,
                                                      status="succeeded"))  # another writer
        assert store.set_job(session, job_id, ("queued", "running"), None,
                             status="cancelled") is None
        return loaded.status

    assert store.run(engine, refused_cancel) == "queued"  # not claimed "cancelled" in memory


def test_bookkeeping_rides_out_database_errors_then_gives_up(engine):
    calls = []

    def flaky(connection):
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))
        return connection.scalar(select(1))

    assert store.run_steadily(engine, flaky, wait_s=0.001) == 1 and len(calls) == 3
    calls.clear()
    with pytest.raises(OperationalError):
        store.run_steadily(engine, flaky, tries=2, wait_s=0.001)
    assert len(calls) == 2  # tried twice, the last error raised
    calls.clear()

    def wrong(connection):
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("constraint failed"))

    with pytest.raises(IntegrityError):
        store.run_steadily(engine, wrong, wait_s=0.001)
    assert len(calls) == 1  # the statement's own fault: not tried again
