"""Pre-renders: an upload whose jobs begin with a renditions step has an idle in-process
worker render the other renditions at once, in memory; the step takes them and stores
them itself, so each is rendered once and written once, by its job. A pre-render that
fails, or that no step takes, changes nothing."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from darkroom.config import Settings
from darkroom.engine import probe
from darkroom.errors import Conflict, Unprocessable
from darkroom.pipelines import context, prerender, steps
from darkroom.pipelines.context import Runtime, StepContext
from darkroom.pipelines.definition import Pipeline
from darkroom.storage.local import LocalStorage

from corpus_files import CORPUS
from server.helpers import PHOTO, metric

from .test_head_start import SIZES, _finished, _pipeline, _stored, _upload, serving
from .test_renditions_step import stored_photo


@pytest.fixture
def client(tmp_path: Path):
    with serving(tmp_path, 0.5) as client:  # as by default: jobs start after pre-renders
        yield client


def _counting(monkeypatch, module) -> Counter:
    """Count the renders `module` makes, by output width."""
    real, made = module.render, Counter()

    def render(plan, *args, **kwargs):
        out = real(plan, *args, **kwargs)
        made[out.width] += 1
        return out

    monkeypatch.setattr(module, "render", render)
    return made


def test_an_idle_worker_prerenders_and_the_step_stores_each_once(client, monkeypatch):
    _pipeline(client, [SIZES])
    early, late = _counting(monkeypatch, prerender), _counting(monkeypatch, steps)
    reads = _calls(monkeypatch, StepContext, "read_source")
    lookups = _calls(monkeypatch, steps, "_stored_rendition")
    before = {o: metric(client, "darkroom_prerenders_total", outcome=o)
              for o in ("started", "taken")}
    upload = _upload(client)
    assert upload.status_code == 201, upload.text
    job = _finished(client, upload.json()["jobs"][0]["id"])
    assert job["status"] == "succeeded"
    assert all(metric(client, "darkroom_prerenders_total", outcome=o) - n == 2
               for o, n in before.items())
    output = job["steps"][0]["output"]
    assert early == Counter({400: 1, 200: 1}) and not late  # large and card, once each
    assert output["large"]["written"] and output["card"]["written"]
    assert not output["thumb"]["written"]  # the head start, handed over by the upload
    assert not reads and not lookups  # the step read neither the source nor the head start
    renditions = [k for k in _stored(client) if k.startswith("_renditions/")]
    assert sorted(renditions) == sorted(o["key"] for o in output.values())
    detail = client.get(f"/v1/images/{upload.json()['id']}").json()
    assert {r["name"]: r["width"] for r in detail["renditions"]} == {
        "large": 400, "card": 200, "thumb": 64}


def _calls(monkeypatch, owner, name: str) -> list:
    """The calls made to `owner.name` (their arguments)."""
    real, calls = getattr(owner, name), []

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_failed_prerender_is_the_steps_to_render(client, monkeypatch):
    _pipeline(client, [SIZES])
    tried = []

    def fail(plan, *args, **kwargs):
        tried.append(plan)
        raise Unprocessable("injected render failure", "corrupt_image")

    monkeypatch.setattr(prerender, "render", fail)
    late = _counting(monkeypatch, steps)
    upload = _upload(client)
    job = _finished(client, upload.json()["jobs"][0]["id"])
    assert job["status"] == "succeeded"
    assert len(tried) == 2 and late == Counter({400: 1, 200: 1})
    assert job["steps"][0]["output"]["large"]["width"] == 400


def test_every_pipeline_fired_is_prerendered_once(client, monkeypatch):
    _pipeline(client, [SIZES])
    other = {"name": "more", "type": "renditions", "params": {"renditions": {
        "small": "w=100&fm=webp", "wide": "w=250"}}}
    assert client.put("/v1/pipelines/q", json={"steps": [other]}).status_code == 201
    early, late = _counting(monkeypatch, prerender), _counting(monkeypatch, steps)
    upload = _upload(client).json()
    jobs = [_finished(client, job["id"]) for job in upload["jobs"]]
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"]
    assert early == Counter({400: 1, 200: 1, 100: 1, 250: 1}) and not late  # 4 threads free


def test_a_step_waits_for_a_prerender_under_way_and_takes_it(tmp_path: Path, monkeypatch):
    runtime = Runtime(Settings(data_dir=tmp_path), engine=None)
    try:
        data, sha, source = stored_photo(runtime)
        params = steps.RenditionsParams(renditions={"a": "w=30&fm=png"})
        plans = prerender.upcoming([Pipeline(name="p", steps=[{
            "name": "s", "type": "renditions", "params": params.model_dump()}])],
            "img", sha, probe(data), None)
        work = prerender.works(runtime.storage, "photo.jpg", (source.etag, sha),
                               probe(data), runtime.limits, plans)
        [(key, render)] = work.items()
        started = threading.Event()

        def slow():
            started.set()
            time.sleep(0.5)  # still rendering when the step looks
            return render()

        assert runtime.prerender({key: slow}) == 1 and started.wait(5)
        late = _counting(monkeypatch, steps)
        output = steps.renditions(StepContext(runtime, "job", 1, "p", "s", source), params)
        assert not late and output["a"]["key"] == key
        assert output["a"]["written"] and output["a"]["width"] == 30
        assert runtime.storage.blocking.get(key)  # stored by the step
    finally:
        runtime.close()


@pytest.mark.parametrize("alpha", [False, None])
def test_a_step_reads_the_source_only_when_its_alpha_is_unknown(tmp_path: Path, alpha,
                                                                 monkeypatch):
    """With every rendition handed over, a step whose version's alpha is catalogued
    names them from the catalog alone; one catalogued before alpha was (None) reads the
    source's header for their formats."""
    runtime = Runtime(Settings(data_dir=tmp_path), engine=None)
    try:
        data, sha, source = stored_photo(runtime, alpha=alpha)
        params = steps.RenditionsParams(renditions={"a": "w=30", "b": "w=20&fm=png"})
        pipeline = Pipeline(name="p", steps=[{"name": "s", "type": "renditions",
                                              "params": params.model_dump()}])
        work = prerender.works(runtime.storage, "photo.jpg", (source.etag, sha),
                               probe(data), runtime.limits, prerender.upcoming(
                                   [pipeline], "img", sha, probe(data), None))
        assert _start(runtime, work) == 2
        reads = _calls(monkeypatch, StepContext, "read_source")
        output = steps.renditions(StepContext(runtime, "job", 1, "p", "s", source), params)
        assert {n: (o["format"], o["width"]) for n, o in output.items()} == {
            "a": ("jpeg", 30), "b": ("png", 20)}
        assert set(work) == {o["key"] for o in output.values()}
        assert len(reads) == (1 if alpha is None else 0)
    finally:
        runtime.close()


@pytest.mark.parametrize("stored", [True, False])
def test_a_step_takes_the_head_start_handed_over_unless_it_is_gone(
        tmp_path: Path, stored, monkeypatch):
    """An upload hands over the head start its transaction stored: the step takes it
    without rendering it, and stores it again if it is gone (a stopped job's sweep
    deleted it before a retry)."""
    runtime = Runtime(Settings(data_dir=tmp_path), engine=None)
    try:
        data, sha, source = stored_photo(runtime, alpha=False)
        params = steps.RenditionsParams(renditions={"t": "w=40&fm=webp"})
        key = steps.rendition_key("img", sha, params.plans["t"], "webp")
        made = steps.render(params.plans["t"], data, runtime.limits)  # the upload's
        if stored:
            runtime.storage.blocking.put(key, made.data)
        assert runtime.prerender({}, {key: made}) == 0
        late = _counting(monkeypatch, steps)
        output = steps.renditions(StepContext(runtime, "job", 1, "p", "s", source), params)
        assert output["t"]["written"] is not stored and output["t"]["width"] == 40
        assert late == Counter()  # not rendered again
        assert runtime.storage.blocking.get(key) == made.data
    finally:
        runtime.close()


def test_a_source_replaced_since_is_not_prerendered(tmp_path: Path):
    storage = LocalStorage(tmp_path)
    data = (CORPUS / PHOTO["path"]).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    etag = storage.blocking.put("a.jpg", data).etag
    plans = {"k": steps.RenditionsParams(renditions={"x": "w=20&fm=png"}).plans["x"]}
    limits = Settings(data_dir=tmp_path).limits
    for written in ((etag, sha), (None, sha)):  # by etag; by checksum when none is known
        assert prerender.works(storage, "a.jpg", written, probe(data), limits, plans
                               )["k"]().width == 20
    storage.blocking.put("a.jpg", data)  # the same bytes, written again: by checksum
    assert prerender.works(storage, "a.jpg", (etag, sha), probe(data), limits, plans
                           )["k"]().width == 20
    storage.blocking.put("a.jpg", data[:-1])  # another version
    for written in ((etag, sha), (None, sha)):
        with pytest.raises(Conflict):
            prerender.works(storage, "a.jpg", written, probe(data), limits, plans)["k"]()


@pytest.fixture
def runtime(tmp_path: Path):
    runtime = Runtime(Settings(data_dir=tmp_path, pipelines={"render_threads": 1}),
                      engine=None)
    yield runtime
    runtime.close()


def test_prerenders_start_only_on_free_render_threads_and_are_taken_once(runtime):
    release = threading.Event()
    busy = runtime.render(release.wait, 5)
    assert runtime.prerender({"k": lambda: "made"}) == 0  # the one render thread is taken
    release.set()
    busy.result(timeout=5)
    assert _start(runtime, {"k": lambda: "made", "j": lambda: "also"}) == 1  # one free
    assert runtime.prerendered("k")[0].result(timeout=5) == "made"
    assert runtime.prerendered("k") is None  # taken once
    assert runtime.prerendered("j") is None  # never started: the step renders it
    assert runtime.prerendered("other") is None


def test_prerenders_no_step_takes_are_bounded_and_dropped(runtime, monkeypatch):
    cap = context.PRERENDERS_PER_THREAD * runtime.render_threads
    now = [1000.0]
    monkeypatch.setattr(context, "_clock", lambda: now[0])
    for i in range(cap):
        assert _start(runtime, {f"k{i}": dict}) == 1
    assert _start(runtime, {"one more": dict}, tries=5) == 0  # held, none taken
    now[0] += context.PRERENDER_TTL_S + 1
    dropped = _dropped()
    assert _start(runtime, {"one more": dict}) == 1  # the old ones dropped
    assert _dropped() - dropped == cap
    assert runtime.prerendered("k0") is None


def test_prerenders_no_step_takes_are_dropped_by_one_timer_that_comes_back(runtime,
                                                                           monkeypatch):
    monkeypatch.setattr(context, "PRERENDER_TTL_S", 1.5)  # the timer: TTL + 1 s after arming
    rounds: list[set[str]] = []  # what each round of the timer left held
    timer = runtime._expire_now

    def watched() -> None:
        timer()
        rounds.append(set(runtime._prerenders))

    monkeypatch.setattr(runtime, "_expire_now", watched)
    dropped = _dropped()
    assert _start(runtime, {"a": dict}) == 1  # arms the timer, for 2.5 s from now
    time.sleep(1.9)
    assert _start(runtime, {"b": dict}) == 1  # drops "a" (stale); arms nothing new
    deadline = time.monotonic() + 15
    while len(rounds) < 2 and time.monotonic() < deadline:  # no other call in between
        time.sleep(0.05)
    assert rounds == [{"b"}, set()]  # the first round kept "b", and came back for it
    assert _dropped() - dropped == 2


def _dropped() -> float:
    return REGISTRY.get_sample_value("darkroom_prerenders_total", {"outcome": "dropped"}) or 0


def _start(runtime: Runtime, works: dict, tries: int = 100) -> int:
    for _ in range(tries):  # the previous task's end is counted just after its result
        if started := runtime.prerender(works):
            return started
        time.sleep(0.01)
    return 0
