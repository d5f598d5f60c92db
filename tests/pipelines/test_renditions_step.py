"""The `renditions` step on its own: its renders run on the render threads, and none of
them is still running (or writing) once the step has ended."""

from __future__ import annotations

import hashlib
from hashlib import sha256
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from darkroom.config import Settings
from darkroom.errors import BadRequest, Conflict, StorageError
from darkroom.pipelines import steps
from darkroom.pipelines import context
from darkroom.pipelines.context import Ending, Runtime, Source, StepContext

from corpus_files import CORPUS
from server.helpers import PHOTO


@pytest.fixture
def runtime(tmp_path: Path):
    runtime = Runtime(Settings(data_dir=tmp_path), engine=None)  # no catalogue reached
    yield runtime
    runtime.close()


def stored_photo(runtime: Runtime, **known) -> tuple[bytes, str, Source]:
    """The corpus photo stored at `photo.jpg` in `runtime`'s storage, its checksum, and a
    job's source of it (with what the catalog knows of it: `known`)."""
    data = (CORPUS / PHOTO["path"]).read_bytes()
    etag = runtime.storage.blocking.put("photo.jpg", data).etag
    sha = hashlib.sha256(data).hexdigest()
    return data, sha, Source(**{
        "image_id": "img", "key": "photo.jpg", "version": 1, "version_id": 1,
        "sha256": sha, "format": "jpeg", "width": 1, "height": 1, "bytes": len(data),
        "storage_key": "photo.jpg", "etag": etag, **known})


def catalogued_photo(runtime: Runtime) -> tuple:
    """The corpus photo's header, and a job's source of it whose whole header the catalog
    knows (format, size, pages, alpha, orientation, ICC)."""
    header = steps.probe((CORPUS / PHOTO["path"]).read_bytes())
    return header, stored_photo(runtime, **{f: getattr(header, f) for f in (
        "format", "width", "height", "pages", "alpha", "orientation", "icc")})[2]


def _context(runtime: Runtime) -> StepContext:
    return StepContext(runtime, "job", 1, "p", "sizes", stored_photo(runtime)[2])


def _stored(runtime: Runtime) -> list[str]:
    folder = runtime.storage.root / "_renditions" / "img"
    return sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []


@pytest.mark.parametrize("etag", [True, False])
def test_a_step_reads_its_version_only_while_storage_holds_it(runtime, etag, monkeypatch):
    """Checked by the etag its upload's write answered, without hashing, while the object
    is that one; else (no etag: a job queued before they were carried; the same bytes
    written again, as a failed replace puts them back) by the bytes' checksum."""
    data, _, source = stored_photo(runtime, **({} if etag else {"etag": None}))
    ctx = StepContext(runtime, "job", 1, "p", "sizes", source)
    hashed = []
    monkeypatch.setattr(context.hashlib, "sha256", lambda b: hashed.append(1) or sha256(b))
    assert ctx.read_source() == data and len(hashed) == (0 if etag else 1)
    runtime.storage.blocking.put("photo.jpg", data)  # the same bytes, written again
    assert ctx.read_source() == data
    runtime.storage.blocking.put("photo.jpg", data[:-1])  # another version
    with pytest.raises(Conflict) as changed:
        ctx.read_source()
    assert changed.value.code == "source_changed"


def test_a_failed_rendition_waits_for_the_others_and_nothing_is_written_after(
        runtime, monkeypatch):
    real, slow_done = steps.render, threading.Event()

    def render(plan, *args, **kwargs):
        out = real(plan, *args, **kwargs)
        if out.width == 10:
            raise BadRequest("injected render failure", "bad_param")
        time.sleep(0.5)  # still rendering when the other one fails
        slow_done.set()
        return out

    monkeypatch.setattr(steps, "render", render)
    params = steps.RenditionsParams(renditions={"a": "w=10&fm=png", "b": "w=20&fm=png"})
    with pytest.raises(BadRequest):
        steps.renditions(_context(runtime), params)
    assert slow_done.is_set()  # the step ended after its other render, not before
    at_end = _stored(runtime)
    assert len(at_end) == 1  # b is stored (a retry finds it), a is not
    time.sleep(0.6)
    assert _stored(runtime) == at_end


def test_renditions_found_stored_are_not_rendered_again(runtime, monkeypatch):
    ctx = _context(runtime)
    params = steps.RenditionsParams(renditions={"a": "w=10&fm=png", "b": "w=20&fm=webp"})
    made = {name: steps.render(plan, (CORPUS / PHOTO["path"]).read_bytes(), runtime.limits)
            for name, plan in params.plans.items()}
    key = steps.rendition_key("img", ctx.source.sha256, params.plans["a"], "png")
    runtime.storage.blocking.put(key, made["a"].data)
    rendered = []
    real = steps.render
    monkeypatch.setattr(steps, "render", lambda plan, *a, **k: rendered.append(plan) or
                        real(plan, *a, **k))
    output = steps.renditions(ctx, params)
    assert rendered == [params.plans["b"]]
    assert (output["a"]["written"], output["b"]["written"]) == (False, True)
    assert (output["a"]["width"], output["b"]["width"]) == (10, 20)
    assert output["a"]["bytes"] == len(made["a"].data)


def test_a_failed_lookup_waits_for_the_renders_already_started(runtime, monkeypatch):
    """Stored renditions are looked up on the step's thread while the others render: a
    storage failure there still lets the renders started end before the step does."""
    real_render, real_get = steps.render, runtime.storage.blocking.get
    rendering, slow_done = threading.Event(), threading.Event()

    def render(plan, *args, **kwargs):
        rendering.set()
        out = real_render(plan, *args, **kwargs)
        time.sleep(0.5)  # still rendering when the lookup fails
        slow_done.set()
        return out

    def get(key):
        if key.endswith(".webp"):  # the second rendition's lookup
            assert rendering.wait(5)
            raise StorageError("injected storage failure")
        return real_get(key)

    monkeypatch.setattr(steps, "render", render)
    monkeypatch.setattr(runtime.storage.blocking, "get", get)
    params = steps.RenditionsParams(renditions={"a": "w=10&fm=png", "b": "w=20&fm=webp"})
    with pytest.raises(StorageError):
        steps.renditions(_context(runtime), params)
    assert slow_done.is_set()  # the step ended after the render it had started
    at_end = _stored(runtime)
    time.sleep(0.6)
    assert _stored(runtime) == at_end


def test_what_a_step_leaves_once_its_attempt_ended_is_taken_back_at_once():
    """A step that ran past its timeout ends after its attempt did: its catalogue writes
    can no longer be made, so their undo runs at once, on the step's own thread."""
    ending, undone = Ending(), []
    ending.add(lambda _db: True, lambda: undone.append("in time"))
    assert len(ending.close()) == 1 and not undone  # for the attempt's end to make
    ending.add(lambda _db: True, lambda: undone.append("late"))
    assert undone == ["late"] and ending.close() == ending.close()


def test_a_version_whose_header_is_catalogued_is_rendered_without_a_probe(runtime,
                                                                          monkeypatch):
    """The catalog keeps a version's whole header (format, size, pages, alpha, orientation,
    ICC): a step renders from it, and still reads (and checks) the source's bytes."""
    header, source = catalogued_photo(runtime)
    assert source.header() == header
    probes, reads = [], []
    monkeypatch.setattr(steps, "probe", lambda d: probes.append(d) or header)
    real_read = StepContext.read_source
    monkeypatch.setattr(StepContext, "read_source", lambda ctx: reads.append(1) or
                        real_read(ctx))
    params = steps.RenditionsParams(renditions={"a": "w=10&fm=png", "b": "w=20"})
    output = steps.renditions(StepContext(runtime, "job", 1, "p", "sizes", source), params)
    assert (output["a"]["width"], output["b"]["width"]) == (10, 20)
    assert not probes and len(reads) == 1



class _Counted(threading.BoundedSemaphore):
    """A semaphore that counts the slots held, and the most held at once."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.held = self.most = 0
        self._count = threading.Lock()

    def acquire(self, *args, **kwargs) -> bool:
        taken = super().acquire(*args, **kwargs)
        if taken:
            with self._count:
                self.held += 1
                self.most = max(self.most, self.held)
        return taken

    def release(self, n: int = 1) -> None:
        with self._count:
            self.held -= n
        super().release(n)


def test_sources_in_memory_are_bounded_however_many_steps_run(runtime, monkeypatch):
    """Steps hold a `sources` slot from their read to their end: the others wait for one
    before reading (a slot is freed again whether the step succeeds or fails)."""
    header, source = catalogued_photo(runtime)
    params = steps.RenditionsParams(renditions={"a": "w=10&fm=png", "b": "w=20&fm=png"})
    slots = 2 * runtime.render_threads
    reading, most = [0], [0]
    lock = threading.Lock()
    real_read = StepContext.read_source

    def read(ctx):
        with lock:
            reading[0] += 1
            most[0] = max(most[0], reading[0])
        try:
            time.sleep(0.05)
            return real_read(ctx)
        finally:
            with lock:
                reading[0] -= 1

    monkeypatch.setattr(StepContext, "read_source", read)
    runtime.sources = counted = _Counted(slots)
    gate = threading.Barrier(3 * slots)

    def one(job: int) -> dict:
        gate.wait()
        return steps.renditions(StepContext(runtime, f"job{job}", 1, "p", "sizes", source),
                                params)

    with ThreadPoolExecutor(3 * slots) as pool:
        outputs = list(pool.map(one, range(3 * slots)))
    assert all(o["a"]["width"] == 10 for o in outputs)
    assert 1 <= most[0] <= slots
    # every step looked its renditions up before any was stored: all wanted a source,
    # every slot was taken at once, and none is held now
    assert (counted.most, counted.held) == (slots, 0)
    for _ in range(slots):  # every slot is free again
        assert runtime.sources.acquire(timeout=1)
    runtime.storage.blocking.put("photo.jpg", b"newer bytes")  # a failed read frees its own
    for _ in range(slots):
        runtime.sources.release()
    others = steps.RenditionsParams(renditions={"c": "w=30&fm=png"})  # none stored yet
    with pytest.raises(Conflict):
        steps.renditions(StepContext(runtime, "job", 1, "p", "sizes", source), others)
    for _ in range(slots):
        assert runtime.sources.acquire(timeout=1)


def test_a_source_replaced_before_its_renders_start_fails_the_step_and_stores_nothing(
        runtime):
    ctx = _context(runtime)
    runtime.storage.blocking.put("photo.jpg", b"newer bytes")  # a newer version's
    params = steps.RenditionsParams(renditions={"a": "w=10&fm=png", "b": "w=20&fm=png"})
    with pytest.raises(Conflict) as changed:
        steps.renditions(ctx, params)
    assert changed.value.code == "source_changed"
    assert _stored(runtime) == []
