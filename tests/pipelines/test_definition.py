"""Pipeline definitions: YAML, validation errors that name the fault, Step Functions rules,
which rendition an upload makes as a head start, and how many renders a worker runs."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from darkroom.config import Settings
from darkroom.engine.load import Header
from darkroom.errors import BadRequest
from darkroom.grammars import native
from darkroom.pipelines.context import Runtime
from darkroom.pipelines.definition import Retrier, Trigger, load_yaml, matches, parse
from darkroom.pipelines.steps import head_start

YAML = """
pipelines:
  - name: web
    trigger: {prefix: "shop/", content_types: ["image/jpeg", "image/png"]}
    steps:
      - name: meta
        type: metadata
      - name: sizes
        type: renditions
        params: {renditions: {thumb: "w=160&fm=webp", large: "w=1600"}}
        retry: [{errors: [States.ALL], interval_s: 2, max_attempts: 4, jitter: full}]
        catch: [{errors: [States.ALL], next: alert}]
        timeout_s: 60
      - name: export
        type: copy
        params: {prefix: "exports/"}
        end: true
      - name: alert
        type: notify
"""


def test_yaml_declares_pipelines_with_their_flow():
    (web,) = load_yaml(YAML)
    assert web.trigger.prefix == "shop/" and [s.name for s in web.steps] == [
        "meta", "sizes", "export", "alert"]
    sizes = web.step("sizes")
    assert sizes.retry[0].max_attempts == 4 and sizes.catch[0].next == "alert"
    assert web.after(web.step("meta")) == "sizes"
    assert web.after(web.step("export")) is None  # end: true, the fallback is not run
    assert web.after(web.step("alert")) is None


@pytest.mark.parametrize("change, fault", [
    ({"steps": [{"name": "a", "type": "nope"}]}, "unknown step type 'nope'"),
    ({"steps": [{"name": "a", "type": "metadata", "next": "b"}]}, "unknown step 'b'"),
    ({"steps": [{"name": "a", "type": "metadata"}, {"name": "a", "type": "notify"}]},
     "step names must be unique"),
    ({"steps": [{"name": "a", "type": "metadata", "retry": [
        {"errors": ["States.ALL"]}, {"errors": ["corrupt_image"]}]}]},
     "States.ALL must be in the last retrier"),
    ({"steps": [{"name": "a", "type": "metadata", "catch": [
        {"errors": ["States.ALL", "corrupt_image"], "next": "a"}]}]},
     "States.ALL must be alone"),
    ({"steps": [{"name": "a", "type": "renditions", "params": {"renditions": {
        "x": "w=abc"}}}]}, "renditions params"),
    ({"steps": [{"name": "a", "type": "renditions", "params": {"renditions": {
        "x": "w=10", "y": "w=10"}}}]}, "repeats another's plan"),
    ({"steps": [{"name": "a", "type": "copy", "params": {"prefix": "_renditions/"}}]},
     "copy params"),
    ({"steps": [{"name": "a", "type": "copy", "params": {
        "prefix": f"b/.x.{'1' * 32}.tmp/"}}]}, "copy params"),
    ({"steps": [{"name": "a", "type": "webhook", "params": {"url": "ftp://x/"}}]},
     "webhook params"),
    ({"steps": [{"name": "a", "type": "metadata", "end": True, "next": "a"}]},
     "both next and end"),
    ({"steps": []}, "steps"),
    ({"name": "Bad Name"}, "name"),
])
def test_a_bad_definition_is_a_400_naming_the_fault(change, fault):
    definition = {"name": "p", "steps": [{"name": "a", "type": "metadata"}], **change}
    with pytest.raises(BadRequest) as error:
        parse(definition)
    assert error.value.code == "bad_pipeline" and fault in error.value.message


def test_bad_yaml_is_a_400():
    with pytest.raises(BadRequest, match="bad pipeline YAML"):
        load_yaml("pipelines: [")
    with pytest.raises(BadRequest, match="mapping"):
        load_yaml("- 3")


def test_error_names_match_as_in_step_functions():
    assert matches(["States.ALL"], "States.Timeout")
    assert matches(["States.TaskFailed"], "corrupt_image")
    assert not matches(["States.TaskFailed"], "States.Timeout")  # timeouts are apart
    assert matches(["corrupt_image", "States.Timeout"], "States.Timeout")
    assert not matches(["corrupt_image"], "storage_unavailable")


def test_retry_delays_back_off_cap_and_jitter():
    retrier = Retrier(interval_s=1, backoff_rate=2, max_delay_s=5)
    assert [retrier.delay(n, 0.5) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    full = Retrier(interval_s=1, backoff_rate=2, jitter="full")
    assert full.delay(3, 0.25) == 1.0 and full.delay(3, 0.0) == 0.0


def test_triggers_match_event_prefix_and_content_type():
    trigger = Trigger(prefix="shop/", content_types=["image/jpeg", "image/png"],
                      events=["uploaded"])
    assert trigger.fires("uploaded", "shop/a.jpg", "image/jpeg")
    assert not trigger.fires("replaced", "shop/a.jpg", "image/jpeg")
    assert not trigger.fires("uploaded", "blog/a.jpg", "image/jpeg")
    assert not trigger.fires("uploaded", "shop/a.gif", "image/gif")
    assert Trigger().fires("replaced", "any/key.webp", "image/webp")



def _sizes(name: str, first: str, renditions: dict):
    steps = [{"name": "sizes", "type": "renditions", "params": {"renditions": renditions}}]
    if first != "renditions":
        steps.insert(0, {"name": "first", "type": first})
    return parse({"name": name, "steps": steps})


def _plan(query: str):
    return native.parse("rendition", parse_qsl(query, keep_blank_values=True))


def test_a_head_start_is_the_first_steps_rendition_that_loads_the_source_smallest():
    photo = Header("jpeg", 4000, 3000, 1, False, 1, False, 1)
    web = _sizes("web", "renditions", {"large": "w=1600", "card": "w=480"})
    app = _sizes("app", "renditions", {"icon": "w=64&h=64&fit=cover"})
    later = _sizes("later", "notify", {"tiny": "w=16"})  # not its first step
    assert head_start([web, later], photo) == _plan("w=480")
    assert head_start([web, app, later], photo) == _plan("w=64&h=64&fit=cover")
    assert head_start([later], photo) is None


def test_a_head_start_sees_the_source_as_its_exif_orientation_stands_it():
    sides = _sizes("sides", "renditions", {"wide": "w=480", "tall": "h=480"})
    assert head_start([sides], Header("jpeg", 4000, 3000, 1, False, 1, False, 1)) == _plan("w=480")
    assert head_start([sides], Header("jpeg", 4000, 3000, 1, False, 6, False, 1)) == _plan("h=480")


def test_no_head_start_past_a_megapixel_as_loaded_nor_for_pages_or_svg():
    web = _sizes("web", "renditions", {"card": "w=480"})
    whole = _sizes("whole", "renditions", {"webp": "fm=webp"})
    assert head_start([whole], Header("jpeg", 4000, 3000, 1, False, 1, False, 1)) is None
    assert head_start([whole], Header("jpeg", 1000, 1000, 1, False, 1, False, 1)) is not None
    assert head_start([web], Header("gif", 4000, 3000, 5, False, 1, False, 1)) is None
    assert head_start([web], Header("svg", 4000, 3000, 1, True, 1, False, 1)) is None


@pytest.mark.parametrize("env, expected", [({}, 4), ({"DARKROOM_THREADS": "3"}, 6),
                                           ({"DARKROOM_PIPELINES__RENDER_THREADS": "1"}, 1)])
def test_a_worker_renders_on_twice_the_engine_threads_unless_told(tmp_path, monkeypatch,
                                                                  env, expected):
    for name, value in {"DARKROOM_DATA_DIR": str(tmp_path), **env}.items():
        monkeypatch.setenv(name, value)
    runtime = Runtime(Settings(), engine=None)
    try:
        assert runtime.renders._max_workers == expected
    finally:
        runtime.close()
