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

from darkroom.config import Settings
from darkroom.engine import probe
from darkroom.errors import Unprocessable
from darkroom.pipelines import context, prerender, steps
from darkroom.pipelines.context import Runtime
from darkroom.storage.local import LocalStorage

from corpus_files import CORPUS
from server.helpers import PHOTO

from .test_head_start import SIZES, _finished, _pipeline, _stored, _upload, serving


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
    upload = _upload(client)
    assert upload.status_code == 201, upload.text
    job = _finished(client, upload.json()["jobs"][0]["id"])
    assert job["status"] == "succeeded"
    output = job["steps"][0]["output"]
    assert early == Counter({400: 1, 200: 1}) and not late  # large and card, once each
    assert output["large"]["written"] and output["card"]["written"]
    assert not output["thumb"]["written"]  # the head start
    renditions = [k for k in _stored(client) if k.startswith("_renditions/")]
    assert sorted(renditions) == sorted(o["key"] for o in output.values())
    detail = client.get(f"/v1/images/{upload.json()['id']}").json()
    assert {r["name"]: r["width"] for r in detail["renditions"]} == {
        "large": 400, "card": 200, "thumb": 64}


def test_a_failed_prerender_is_the_steps_to_render(client, monkeypatch):
    _pipeline(client, [SIZES])

    def fail(*args, **kwargs):
        raise Unprocessable("injected render failure", "corrupt_image")

    monkeypatch.setattr(prerender, "render", fail)
    late = _counting(monkeypatch, steps)
    upload = _upload(client)
    job = _finished(client, upload.json()["jobs"][0]["id"])
    assert job["status"] == "succeeded"
    assert late == Counter({400: 1, 200: 1})
    assert job["steps"][0]["output"]["large"]["width"] == 400


def test_a_source_replaced_since_is_not_prerendered(tmp_path: Path):
    storage = LocalStorage(tmp_path)
    data = (CORPUS / PHOTO["path"]).read_bytes()
    storage.blocking.put("a.jpg", data)
    plans = steps.RenditionsParams(renditions={"x": "w=20&fm=png"}).plans
    header = probe(data)
    limits = Settings(data_dir=tmp_path).limits
    made = prerender.render_upcoming(storage, "a.jpg", hashlib.sha256(data).hexdigest(),
                                     header, limits, {"k": plans["x"]})
    assert made["k"].width == 20
    assert prerender.render_upcoming(storage, "a.jpg", "0" * 64, header, limits,
                                     {"k": plans["x"]}) == {}


@pytest.fixture
def runtime(tmp_path: Path):
    runtime = Runtime(Settings(data_dir=tmp_path, pipelines={"render_threads": 1}),
                      engine=None)
    yield runtime
    runtime.close()


def test_prerenders_start_only_on_a_free_render_thread_and_are_taken_once(runtime):
    release = threading.Event()
    busy = runtime.render(release.wait, 5)
    assert not runtime.prerender(["k"], dict)  # the one render thread is taken
    release.set()
    busy.result(timeout=5)
    for _ in range(100):  # the task's end is counted just after its result
        if runtime.prerender(["k", "j"], lambda: {"k": "made"}):
            break
        time.sleep(0.01)
    else:
        pytest.fail("no pre-render started on an idle thread")
    assert runtime.prerendered("k").result(timeout=5) == {"k": "made"}
    assert runtime.prerendered("k") is None  # taken once
    assert runtime.prerendered("j") is not None
    assert runtime.prerendered("other") is None


def test_prerenders_no_step_takes_are_bounded_and_dropped(runtime, monkeypatch):
    cap = context.PRERENDERS_PER_THREAD * runtime.render_threads
    now = [1000.0]
    monkeypatch.setattr(context.time, "monotonic", lambda: now[0])
    keys = [f"k{i}" for i in range(cap)]
    assert not runtime.prerender([*keys, "one more"], dict)  # over the cap
    assert _start(runtime, keys)
    assert not _start(runtime, ["one more"], tries=5)  # held, none taken
    now[0] += context.PRERENDER_TTL_S + 1
    assert _start(runtime, ["one more"])  # the old ones dropped
    assert runtime.prerendered("k0") is None


def _start(runtime: Runtime, keys: list[str], tries: int = 100) -> bool:
    for _ in range(tries):  # the previous task's end is counted just after its result
        if runtime.prerender(keys, dict):
            return True
        time.sleep(0.01)
    return False
