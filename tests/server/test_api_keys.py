"""API keys with scopes on `/v1/`: read, write and admin; every route guarded; the key's
name in the access log; the signing keys as before when no API key is set."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs
from typer.testing import CliRunner

from darkroom.cli import app
from darkroom.config import Settings

from .helpers import CORPUS, PHOTO, assert_error

KEYS = {"reader": ("read", "r" * 20), "shop": ("write", "w" * 20), "ops": ("admin", "a" * 20)}
API_KEYS = [{"name": n, "scope": scope, "key": key} for n, (scope, key) in KEYS.items()]
RAW = {"content-type": "application/octet-stream"}
DEFINITION = {"steps": [{"name": "meta", "type": "metadata"}]}


def bearer(name: str) -> dict:
    return {"Authorization": f"Bearer {KEYS[name][1]}"}


@pytest.fixture
def client(make_client):
    return make_client(api_keys=API_KEYS, signing_keys=["s" * 20], allow_unsigned=True)


def _upload(client, name: str, key: str = "k/a.jpg"):
    return client.post("/v1/images", params={"key": key}, headers={**RAW, **bearer(name)},
                       content=(CORPUS / PHOTO["path"]).read_bytes())


def test_each_scope_includes_the_ones_before_it_and_no_more(client):
    for name in KEYS:
        assert client.get("/v1/images", headers=bearer(name)).status_code == 200
    narrow = _upload(client, "reader")
    assert_error(narrow, 403, "insufficient_scope")
    assert narrow.headers["www-authenticate"] == (
        'Bearer realm="darkroom", error="insufficient_scope"')
    image = _upload(client, "shop").json()
    assert client.get(f"/v1/images/{image['id']}", headers=bearer("reader")).status_code == 200
    assert_error(client.put("/v1/pipelines/p", json=DEFINITION, headers=bearer("shop")),
                 403, "insufficient_scope")
    assert client.put("/v1/pipelines/p", json=DEFINITION,
                      headers=bearer("ops")).status_code == 201
    assert client.get("/v1/pipelines/p", headers=bearer("reader")).status_code == 200
    assert_error(client.delete(f"/v1/images/{image['id']}", headers=bearer("reader")),
                 403, "insufficient_scope")
    assert client.delete(f"/v1/images/{image['id']}", headers=bearer("shop")).status_code == 204
    assert client.get("/v1/images", headers=bearer("ops")).json()["items"] == []


def test_the_signing_keys_and_allow_unsigned_no_longer_open_the_api(client):
    assert_error(client.get("/v1/images"), 401, "token_required")
    assert_error(client.get("/v1/images", headers={"Authorization": "Bearer " + "s" * 20}),
                 403, "bad_token")
    assert_error(client.get("/v1/images", headers={"Authorization": "Basic " + "r" * 20}),
                 401, "token_required")
    assert client.get("/v1/images", headers={
        "Authorization": "bearer  " + "r" * 20}).status_code == 200  # RFC 6750: any case
    assert client.get("/img/" + PHOTO["path"], params={"w": "20"}).status_code == 200


def _routes(client) -> list[tuple[str, str, dict]]:
    """Every `/v1/` operation of the OpenAPI spec, with valid path and query values."""
    values = {"image_id": "0" * 32, "job_id": "0" * 32, "name": "p", "key": "a.jpg"}
    found = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                query = {p["name"]: values[p["name"]] for p in operation.get("parameters", [])
                         if p["in"] == "query" and p.get("required")}
                url = re.sub(r"\{(\w+)(:path)?\}", lambda m: values[m.group(1)], path)
                found.append((method.upper(), url, query))
    return found


def test_every_v1_route_needs_a_key_and_says_so_in_the_spec(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    v1 = [op for path, ops in spec["paths"].items() if path.startswith("/v1/")
          for op in ops.values()]
    assert all(op["security"] == [{"bearer": []}] for op in v1)
    assert {op["x-scope"] for op in v1} == {"read", "write", "admin"}
    assert spec["paths"]["/v1/pipelines/{name}"]["put"]["x-scope"] == "admin"
    assert "Needs a key of scope `read`." in spec["paths"]["/v1/jobs"]["get"]["description"]
    routes = _routes(client)
    assert len(routes) >= 17
    for method, url, query in routes:
        answer = client.request(method, url, params=query, content=b"{}",
                                headers={"content-type": "application/json"})
        assert_error(answer, 401, "token_required")
    # the key is checked first: a bad parameter tells nothing to who has none
    assert_error(client.get("/v1/images", params={"limit": "100000"}), 401, "token_required")
    assert_error(client.get("/v1/images/not-an-id"), 401, "token_required")


def test_the_access_log_names_the_key(make_client):
    logged = make_client(api_keys=API_KEYS, access_log=True)
    with capture_logs() as records:
        logged.get("/v1/images", headers=bearer("reader"))
        logged.get("/v1/images")
    assert [(r["status"], r.get("api_key")) for r in records if r["event"] == "request"] == [
        (200, "reader"), (401, None)]


@pytest.mark.parametrize("allow_unsigned", [False, True])
def test_without_api_keys_a_signing_key_grants_everything(make_client, allow_unsigned):
    client = make_client(signing_keys=["s" * 20], allow_unsigned=allow_unsigned)
    headers = {"Authorization": "Bearer " + "s" * 20}
    assert client.put("/v1/pipelines/p", json=DEFINITION, headers=headers).status_code == 201
    refused = client.get("/v1/pipelines")  # allow_unsigned is about image URLs only
    assert_error(refused, 401, "token_required")
    assert refused.headers["www-authenticate"] == 'Bearer realm="darkroom"'


def _key(**given) -> dict:
    return {"name": "a", "key": "x" * 16, "scope": "read", **given}


@pytest.mark.parametrize(("keys", "message"), [
    ([_key(key="short-secret")], "16 or more"),
    ([_key(key="clé-secrète-très-longue")], "16 or more"),
    ([_key(key=" padded-key-with-space ")], "16 or more"),
    ([_key(), _key(key="y" * 16)], "same name"),
    ([_key(), _key(name="b")], "same key"),
    ([_key(name="a b")], "pattern"),
    ([_key(scope="root")], "read"),
    ([{"name": "a", "key": "x" * 16}], "scope"),  # no default: a forgotten scope is no admin
    ([_key(Key="y" * 16)], "Extra inputs"),
])
def test_bad_api_keys_are_refused_at_start_without_showing_the_key(keys, message):
    with pytest.raises(ValidationError, match=message) as refused:
        Settings(api_keys=keys)
    secrets = [v for k in keys for n, v in k.items() if n.lower() == "key"]
    assert not any(secret in str(refused.value) for secret in secrets)


def test_an_api_key_may_not_be_a_signing_key():
    with pytest.raises(ValidationError, match="also a signing key") as refused:
        Settings(api_keys=[_key()], signing_keys=["x" * 16])
    assert "x" * 16 not in str(refused.value)


def test_the_environment_takes_keys_as_json_and_config_show_masks_them(monkeypatch):
    monkeypatch.setenv("DARKROOM_API_KEYS", json.dumps(API_KEYS))
    assert [(k.name, k.scope) for k in Settings().api_keys] == [
        (n, scope) for n, (scope, _) in KEYS.items()]
    shown = CliRunner().invoke(app, ["config", "show"]).output
    assert "r" * 20 not in shown and "**********" in shown


def test_the_cli_sends_its_api_token_else_the_narrowest_key_that_will_do():
    from darkroom.cli_catalog import _headers

    token = {"Authorization": "Bearer " + "t" * 16}
    assert _headers(Settings(api_token="t" * 16, api_keys=API_KEYS), "write") == token
    mixed = Settings(api_keys=API_KEYS[::-1], signing_keys=["s" * 20])
    assert (_headers(mixed, "read"), _headers(mixed, "write")) == (bearer("reader"),
                                                                    bearer("shop"))
    assert _headers(Settings(api_keys=API_KEYS[:1]), "write") == {}  # none will do
    assert _headers(Settings(signing_keys=["s" * 20]), "read") == {
        "Authorization": "Bearer " + "s" * 20}
    assert _headers(Settings(), "write") == {}


def test_webhook_urls_are_shown_only_as_far_as_their_host(client):
    step = {"name": "hook", "type": "webhook", "params": {
        "url": "https://user:pass@hooks.example.org/services/T0/B0/XYZ?token=abc",
        "signing_keys": ["k" * 20]}}
    plain = {"name": "plain", "type": "webhook", "params": {"url": "https://example.org/",
                                                             "signing_keys": ["k" * 20]}}
    assert client.put("/v1/pipelines/p", json={"steps": [step, plain]},
                      headers=bearer("ops")).status_code == 201
    shown = client.get("/v1/pipelines/p", headers=bearer("ops")).json()
    params = [s["params"] for s in shown["steps"]]
    assert [p["url"] for p in params] == ["https://hooks.example.org/**********",
                                         "https://example.org/"]
    again = client.put("/v1/pipelines/p", json={"steps": shown["steps"]}, headers=bearer("ops"))
    assert_error(again, 400, "bad_pipeline")  # a masked answer is not saved back


def test_an_open_api_names_scopes_but_no_bearer_scheme_and_checks_on_the_loop(make_client):
    spec = make_client().get("/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})
    jobs = spec["paths"]["/v1/jobs"]["get"]
    assert jobs["x-scope"] == "read" and "security" not in jobs
    transform = spec["paths"]["/v1/transform"]["post"]["description"]
    assert transform.count("Needs a key of scope") == 1
    from darkroom.server.auth import Access

    check = Access(Settings()).need("read").dependency
    assert asyncio.iscoroutinefunction(check)  # FastAPI runs it on the loop, not a thread
