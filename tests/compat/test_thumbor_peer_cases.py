"""Thumbor's and libthumbor's own tests, ported as data (thumbor_cases.json), run on darkroom.

A case is a URL to parse, a signature to compute, or a request to answer; its expectation is
what Thumbor's test observes, in darkroom's terms: plan operations, status and error code,
content type, pixel size, colours at known points (with a tolerance), or a comparison with
another URL. Cases that do not apply carry a `skip` reason and are not run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pyvips
from libthumbor import Signer

from darkroom.errors import BadRequest
from darkroom.grammars import thumbor
from darkroom.signing import thumbor_signature
from server.helpers import CORPUS, TestClient, image_size

Case = dict[str, Any]
CASES: list[Case] = json.loads(Path(__file__).with_name("thumbor_cases.json").read_text())["cases"]


def _cases(kind: str) -> list[Any]:
    return [pytest.param(c, id=c["id"]) for c in CASES if "skip" not in c and c["kind"] == kind]


def test_every_case_runs_or_says_why_not() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert case["id"].startswith(("thumbor/tests/", "libthumbor/tests/")) and case["thumbor"]
        if "skip" in case:
            assert len(case["skip"]) >= 20, case["id"]
        else:
            assert case["kind"] in ("parse", "sign", "http") and case["expect"], case["id"]


@pytest.mark.parametrize("case", _cases("parse"))
def test_parse(case: Case) -> None:
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(BadRequest) as caught:
            thumbor.compile_options(case["path"])
        assert caught.value.code == expect["error"], caught.value.message
        assert expect.get("names", "") in caught.value.message
        return
    plan = thumbor.compile_options(case["path"])
    if "key" in expect:
        assert plan.source.key == expect["key"]
    expected_ops = expect.get("ops")
    if expected_ops is None:  # only that Thumbor's argument syntax is accepted
        return
    assert [type(op).__name__ for op in plan.ops] == [name for name, _ in expected_ops]
    for op, (_, fields) in zip(plan.ops, expected_ops):
        for name, value in fields.items():
            assert getattr(op, name) == pytest.approx(value), (op, name)
    for name, value in expect.get("output", {}).items():
        assert getattr(plan.output, name) == value


@pytest.mark.parametrize("case", _cases("sign"))
def test_sign(case: Case, make_client: Callable[..., TestClient]) -> None:
    assert thumbor_signature(case["key"], case["text"]) == case["signature"]
    client = _client(make_client, case, [case["key"]])
    _check(client, client.get(f"/{case['signature']}/{case['text']}"), case["expect"])


@pytest.mark.parametrize("case", _cases("http"))
def test_http(case: Case, make_client: Callable[..., TestClient]) -> None:
    url, keys = case["url"], case.get("settings", {}).get("signing_keys", [])
    if "sign" in case:
        keys = [case["sign"]["key"]]
        signature = Signer(keys[0]).signature(case["sign"]["text"]).decode()
        url = url.replace("{sig_quoted}", quote(signature, safe="")).replace("{sig}", signature)
    client = _client(make_client, case, keys)
    _check(client, client.request(case.get("method", "GET"), url), case["expect"])


def _client(make_client: Callable[..., TestClient], case: Case, keys: list[str]) -> TestClient:
    """A server (with these signing keys), with corpus files copied to the case's keys."""
    client = make_client(signing_keys=keys) if keys else make_client()
    for source, key in case.get("copy", {}).items():
        shutil.copyfile(CORPUS / source, client.settings.storage_dir / key)
    return client


def _check(client: TestClient, response: Any, expect: dict[str, Any]) -> None:
    assert response.status_code == expect["status"], response.content[:300]
    mime = response.headers.get("content-type", "").split(";")[0]
    if mime == "application/json" and response.status_code >= 400:
        body = response.json()
        # darkroom's {"error": {code, message}}, or SIH's {code, message, darkroom_code}
        code, message = ((body["error"]["code"], body["error"]["message"]) if "error" in body
                         else (body["darkroom_code"], body["message"]))
        assert code == expect.get("code", code), body
        assert expect.get("names", "") in message, body
    if "type" in expect:
        assert mime == expect["type"]
    if "body" in expect:
        assert response.text == expect["body"]
    for name, part in expect.get("header_contains", {}).items():
        assert part in response.headers.get(name, ""), response.headers
    for name in expect.get("headers_present", []):
        assert name in response.headers, response.headers
    for dotted in expect.get("json_keys", []):
        value = response.json()
        for part in dotted.split("."):
            assert part in value, (dotted, value)
            value = value[part]
    if mime.startswith("image/") and response.status_code == 200:
        _check_image(client, response.content, expect)


def _check_image(client: TestClient, data: bytes, expect: dict[str, Any]) -> None:
    raw = pyvips.Image.new_from_buffer(data, "")
    image = _srgb(data)
    if "size" in expect:
        assert image_size(data) == tuple(expect["size"])
    if "bands" in expect:
        assert raw.bands == expect["bands"]
    if "pages" in expect:
        assert (raw.get("n-pages") if "n-pages" in raw.get_fields() else 1) == expect["pages"]
    for point in expect.get("pixels", []):
        values = image.getpoint(*point["at"])
        rgb, alpha = values[:3], values[3] if len(values) > 3 else 255.0
        if "rgb" in point:
            assert max(abs(a - b) for a, b in zip(rgb, point["rgb"])) <= point["tol"], (point, values)
        if "alpha" in point:
            assert abs(alpha - point["alpha"]) <= point["tol"], (point, values)
    if "region_std_min" in expect:
        region = expect["region_std_min"]
        assert image.crop(*region["box"]).deviate() >= region["min"]
    if "smaller_than" in expect:
        assert len(data) < len(client.get(expect["smaller_than"]).content)
    if "same_as" in expect:
        other = _srgb(client.get(expect["same_as"]["url"]).content)
        assert (other.width, other.height) == (image.width, image.height)
        assert (image - other).abs().avg() <= expect["same_as"]["max_mean_diff"]
    if "mirror_of" in expect:
        other = _srgb(client.get(expect["mirror_of"]["url"]).content)
        for axis in expect["mirror_of"]["axes"]:
            other = other.fliphor() if axis == "h" else other.flipver()
        assert (image - other).abs().avg() <= 1
    if "compare" in expect:
        spec = expect["compare"]
        other = _srgb(client.get(spec["url"]).content)
        for key, differs in (("differ_at", True), ("same_at", False)):
            for x, y in spec[key]:
                delta = max(abs(a - b) for a, b in zip(image.getpoint(x, y), other.getpoint(x, y)))
                assert (delta > spec["tol"]) == differs, (key, x, y, delta)


def _srgb(data: bytes) -> pyvips.Image:
    """8-bit sRGB (alpha kept) whatever the encoded colour space and depth."""
    return pyvips.Image.new_from_buffer(data, "").colourspace("srgb")
