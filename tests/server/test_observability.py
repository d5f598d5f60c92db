"""Request ids, Prometheus metrics, health and readiness, the OpenAPI document and /docs."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from darkroom.grammars import native

from .helpers import PHOTO, assert_error, metric

PATH = f"/img/{PHOTO['path']}"
_GENERATED = re.compile(r"^[0-9a-f]{16}$")


@pytest.mark.parametrize("given", ["abc-123", "Req.42_x", "a" * 64])
def test_safe_request_id_is_echoed(client, given):
    response = client.get(f"{PATH}?w=10", headers={"X-Request-Id": given})
    assert response.headers["x-request-id"] == given
    error = client.get(f"{PATH}?bogus=1", headers={"X-Request-Id": given})
    assert assert_error(error, 400)["request_id"] == given
    assert client.get("/healthz", headers={"X-Request-Id": given}).headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["", "has space", "a" * 65, "<script>", "id\u00e9", "a/b"])
def test_unsafe_request_id_is_replaced(client, given):
    response = client.get("/img/photos/nope.jpg",
                          headers={"X-Request-Id": given.encode()})
    rid = response.headers["x-request-id"]
    assert rid != given and _GENERATED.match(rid)
    assert response.json()["error"]["request_id"] == rid


def test_request_id_is_generated_and_unique(client):
    ids = {client.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5 and all(_GENERATED.match(i) for i in ids)
    response = client.get("/v1/no/such/route")
    assert_error(response, 404, "no_route")


def test_metrics_move_with_traffic(client):
    def read():
        return {
            "ok": metric(client, "darkroom_requests_total", route="/img", status="200"),
            "bad": metric(client, "darkroom_requests_total", route="/img", status="400"),
            "info": metric(client, "darkroom_requests_total", route="/v1/info", status="200"),
            "latency": metric(client, "darkroom_request_seconds_count", route="/img"),
            "hit": metric(client, "darkroom_cache_total", result="hit"),
            "miss": metric(client, "darkroom_cache_total", result="miss"),
            "engine": metric(client, "darkroom_engine_seconds_count", format="webp"),
            "unknown": metric(client, "darkroom_rejections_total", code="unknown_param"),
            "missing": metric(client, "darkroom_rejections_total", code="source_not_found"),
        }

    before = read()
    url = f"{PATH}?w=77&fm=webp"
    assert client.get(url).headers["x-cache"] == "MISS"
    assert client.get(url).headers["x-cache"] == "HIT"
    client.get(f"{PATH}?nope=1")
    client.get("/img/photos/nope.jpg")
    client.get(f"/v1/info/{PHOTO['path']}")
    after = read()
    assert after["ok"] == before["ok"] + 2
    assert after["bad"] == before["bad"] + 1
    assert after["info"] == before["info"] + 1
    assert after["latency"] == before["latency"] + 4
    assert after["hit"] == before["hit"] + 1
    assert after["miss"] == before["miss"] + 1
    assert after["engine"] == before["engine"] + 1
    assert after["unknown"] == before["unknown"] + 1
    assert after["missing"] == before["missing"] + 1
    text = client.get("/metrics").text
    for name in ("darkroom_requests_total", "darkroom_request_seconds_bucket",
                 "darkroom_cache_total", "darkroom_engine_seconds_bucket",
                 "darkroom_queue_depth", "darkroom_rejections_total"):
        assert name in text, name
    assert metric(client, "darkroom_queue_depth") == 0  # nothing in flight now
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_metric_labels_stay_few(client):
    """Keys and unknown paths must not become label values (cardinality)."""
    for i in range(5):
        client.get(f"/img/photos/missing-{i}.jpg")
        client.get(f"/random/path/{i}")
    text = client.get("/metrics").text
    assert "missing-" not in text and "/random/path" not in text


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_readyz_is_503_when_the_data_dir_is_gone(client):
    shutil.rmtree(client.settings.data_dir)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable" and ready.json()["reason"]
    assert client.get("/healthz").status_code == 200  # alive, just not ready


def test_readyz_is_503_when_the_cache_dir_is_gone(client):
    shutil.rmtree(client.settings.cache_dir)
    client.settings.cache_dir.write_text("not a directory")
    assert client.get("/readyz").status_code == 503


def test_openapi_lists_every_native_parameter(client):
    document = client.get("/openapi.json").json()
    image = document["paths"]["/img/{key}"]["get"]
    names = {p["name"] for p in image["parameters"] if p["in"] == "query"}
    assert names == set(native.PARAMS) | {"s", "exp", "dl"}
    assert all(p.get("description") for p in image["parameters"] if p["in"] == "query")
    assert {p["name"] for p in image["parameters"] if p["in"] == "path"} == {"key"}
    assert {"200", "304", "400", "401", "403", "404", "413", "503"} <= set(image["responses"])
    assert "post" in document["paths"]["/v1/transform"]
    assert "get" in document["paths"]["/v1/info/{key}"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert path in document["paths"]


def test_docs_page(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text


def test_an_unexpected_failure_is_a_json_500_with_the_request_id(client, monkeypatch):
    from darkroom.storage.local import LocalStorage

    async def broken(self, key):
        raise RuntimeError("disk controller on fire")

    monkeypatch.setattr(LocalStorage, "head", broken)
    for path in (f"{PATH}?w=10", f"/v1/info/{PHOTO['path']}"):
        response = client.get(path, headers={"X-Request-Id": "trace-500"})
        error = assert_error(response, 500, "internal")
        assert error["request_id"] == "trace-500"
        assert "fire" not in response.text  # the cause is logged, not sent
    assert metric(client, "darkroom_requests_total", route="/img", status="500") >= 1


def test_a_forked_process_draws_other_request_ids():
    from darkroom.server.observability import _new_request_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, then out without pytest's cleanup
        os.write(write, _new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert _GENERATED.match(child) and child != _new_request_id()
