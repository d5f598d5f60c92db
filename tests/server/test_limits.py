"""Overload (503 + Retry-After), the time budget (422) and size limits (413) over HTTP."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

import darkroom.server.renderer
from darkroom.config import Limits
from darkroom.server.app import create_app

from .helpers import PHOTO, ROTATED, assert_error, files_under, image_size, metric, settings_for

PATH = f"/img/{PHOTO['path']}"


async def _gauge(client: httpx.AsyncClient, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return 0.0


@pytest.mark.anyio
async def test_full_pool_answers_503_with_retry_after(tmp_path, monkeypatch):
    settings = settings_for(tmp_path / "data", threads=1, queue_size=0)
    app = create_app(settings)
    release, real_render = threading.Event(), darkroom.server.renderer.render

    def slow_render(*args, **kwargs):
        release.wait(30)
        return real_render(*args, **kwargs)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        warm = await client.get(f"{PATH}?w=33")  # cached before the pool fills up
        assert warm.status_code == 200
        monkeypatch.setattr(darkroom.server.renderer, "render", slow_render)
        idle = await _gauge(client, "darkroom_queue_depth")
        busy = asyncio.create_task(client.get(f"{PATH}?w=44"))
        for _ in range(3000):
            if await _gauge(client, "darkroom_queue_depth") >= idle + 1:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the slow render never started")
        try:
            for response in (
                await client.get(f"{PATH}?w=55"),
                await client.post("/v1/transform", json={"source": {"key": PHOTO["path"]}}),
                await client.get(f"/v1/info/{PHOTO['path']}"),
            ):
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "overloaded"
                assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
                assert int(response.headers["retry-after"]) >= 1
                assert response.headers["cache-control"] == "no-store"
            hit = await client.get(f"{PATH}?w=33")  # a cache hit needs no engine thread
            assert hit.status_code == 200 and hit.headers["x-cache"] == "HIT"
            assert (await client.get("/healthz")).status_code == 200
        finally:
            release.set()
        first = await busy
        assert first.status_code == 200
        assert image_size(first.content)[0] == 44
        after = await client.get(f"{PATH}?w=55")
        assert after.status_code == 200 and image_size(after.content)[0] == 55
    cached = files_under(settings.cache_dir)
    assert len(cached) == 3  # w=33, w=44, w=55: the refused attempt left nothing


def test_time_budget_over_http_is_422(make_client):
    client = make_client(limits=Limits(time_budget_s=0.001))
    url = f"/img/{ROTATED['path']}?blur=100"
    assert_error(client.get(url), 422, "time_budget_exceeded")
    plan = {"source": {"key": ROTATED["path"]}, "ops": [{"op": "blur", "sigma": 100}]}
    assert_error(client.post("/v1/transform", json=plan), 422, "time_budget_exceeded")
    assert files_under(client.settings.cache_dir) == []


@pytest.mark.parametrize("query", [
    "dpr=5&pad=5000", "w=5000&dpr=2", "w=9000", "h=8193", "pad=4000&dpr=2",
    "w=8100&h=100&fit=fill&pad=100", "w=8000&h=8000&fit=fill",
])
def test_outputs_past_the_caps_are_413(client, query):
    assert_error(client.get(f"{PATH}?{query}"), 413, "output_too_large")
    assert files_under(client.settings.cache_dir) == []


def test_configured_output_side(make_client):
    client = make_client(limits=Limits(max_output_side=256))
    assert image_size(client.get(f"{PATH}?w=256").content)[0] == 256
    assert_error(client.get(f"{PATH}?w=257"), 413, "output_too_large")
    assert_error(client.get(f"{PATH}?w=200&pad=40"), 413, "output_too_large")
    assert_error(client.get(f"{PATH}?w=100&dpr=3"), 413, "output_too_large")
    plan = {"source": {"key": PHOTO["path"]},
            "ops": [{"op": "resize", "width": 200}, {"op": "pad", "left": 100}]}
    assert_error(client.post("/v1/transform", json=plan), 413, "output_too_large")


def test_source_limits(make_client):
    small = make_client(limits=Limits(max_source_bytes=PHOTO["bytes"] - 1))
    assert_error(small.get(f"{PATH}?w=10"), 413, "source_too_large")
    assert_error(small.get(f"/v1/info/{PHOTO['path']}"), 413, "source_too_large")
    few = make_client(limits=Limits(max_megapixels=PHOTO["width"] * PHOTO["height"] / 2e6))
    assert_error(few.get(f"{PATH}?w=10"), 413, "too_many_pixels")


def test_rejections_are_counted(client):
    before = metric(client, "darkroom_rejections_total", code="output_too_large")
    client.get(f"{PATH}?w=9000")
    assert metric(client, "darkroom_rejections_total", code="output_too_large") == before + 1
