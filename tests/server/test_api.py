"""The JSON API: `/v1/info/{key}` and `POST /v1/transform` (JSON plan or multipart upload)."""

from __future__ import annotations

import json

import pytest

from darkroom.config import Limits

from .helpers import (
    ALPHA_PNG, CORPUS, OK_FILES, PHOTO, REJECT_FILES, ROTATED, assert_error, files_under,
    image_size, loader_of, pick,
)

ANIMATED = pick(lambda f: f["expect"] == "ok" and "animated" in f["traits"])
BOMB = pick(lambda f: f["expect"] == "reject" and "bomb" in f["traits"])
TRUNCATED = pick(lambda f: f["expect"] == "reject" and "truncated" in f["traits"])


@pytest.mark.parametrize("entry", [PHOTO, ROTATED, ALPHA_PNG, ANIMATED],
                         ids=lambda f: f["path"])
def test_info_fields(client, entry):
    response = client.get(f"/v1/info/{entry['path']}")
    assert response.status_code == 200
    info = response.json()
    assert set(info) == {"key", "format", "width", "height", "pages", "alpha", "orientation",
                         "icc", "bytes", "mime"}
    assert info["key"] == entry["path"]
    assert (info["width"], info["height"]) == (entry["width"], entry["height"])
    assert info["pages"] == entry["frames"]
    assert info["bytes"] == entry["bytes"]
    assert info["mime"] == entry["mime"]
    assert info["alpha"] == ("alpha" in entry["traits"] or "transparency" in entry["traits"])
    assert info["icc"] == any(t.startswith("icc:") for t in entry["traits"])
    expected_orientation = next((int(t.rsplit("-", 1)[1]) for t in entry["traits"]
                                 if t.startswith("exif-orientation-")), 1)
    assert info["orientation"] == expected_orientation


def test_info_reads_only_the_header_of_a_bomb(client):
    info = client.get(f"/v1/info/{BOMB['path']}").json()
    assert (info["width"], info["height"]) == (BOMB["width"], BOMB["height"])


def test_info_errors(client):
    assert_error(client.get("/v1/info/photos/nope.jpg"), 404, "source_not_found")
    assert_error(client.get("/v1/info/..%2F..%2Fetc%2Fpasswd"), 400, "bad_key")
    empty = pick(lambda f: "zero-byte" in f["traits"])
    assert 400 <= client.get(f"/v1/info/{empty['path']}").status_code < 500


def _plan(**output) -> dict:
    return {"source": {"key": PHOTO["path"]}, "ops": [{"op": "resize", "width": 120}],
            "output": output}


def test_transform_json_plan_with_source_key(client):
    response = client.post("/v1/transform", json=_plan(format="png"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert image_size(response.content) == (120, round(120 * PHOTO["height"] / PHOTO["width"]))
    assert response.headers["x-image-width"] == "120"
    assert response.headers["x-image-height"] == str(image_size(response.content)[1])
    assert response.headers["cache-control"] == "no-store"
    assert files_under(client.settings.cache_dir) == []  # POST results are not cached


def test_transform_json_negotiates_auto(client):
    response = client.post("/v1/transform", json=_plan(format="auto"),
                           headers={"Accept": "image/webp"})
    assert response.headers["content-type"] == "image/webp"
    assert loader_of(response.content).startswith("webpload")


def test_transform_multipart_upload(client):
    data = (CORPUS / ALPHA_PNG["path"]).read_bytes()
    plan = {"ops": [{"op": "resize", "width": 50, "height": 50, "fit": "cover"}],
            "output": {"format": "webp"}}
    response = client.post("/v1/transform", files={"image": ("dice.png", data, "image/png")},
                           data={"plan": json.dumps(plan)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    assert image_size(response.content) == (50, 50)
    # Without a plan the upload comes back in its own (web) format.
    same = client.post("/v1/transform", files={"image": ("dice.png", data, "image/png")})
    assert same.status_code == 200 and same.headers["content-type"] == "image/png"
    assert image_size(same.content) == (ALPHA_PNG["width"], ALPHA_PNG["height"])


@pytest.mark.parametrize("entry", REJECT_FILES, ids=[f["path"] for f in REJECT_FILES])
def test_transform_upload_of_a_reject_file_is_4xx(client, entry):
    data = (CORPUS / entry["path"]).read_bytes()
    response = client.post("/v1/transform", files={"image": ("x", data, "application/octet-stream")},
                           data={"plan": json.dumps({"output": {"format": "png"}})})
    assert_error(response, response.status_code)
    assert 400 <= response.status_code < 500


def test_transform_upload_of_every_ok_file(client):
    plan = json.dumps({"ops": [{"op": "resize", "width": 40}], "output": {"format": "png"}})
    for entry in OK_FILES:
        data = (CORPUS / entry["path"]).read_bytes()
        response = client.post("/v1/transform", files={"image": ("x", data, "image/*")},
                               data={"plan": plan})
        assert response.status_code == 200, (entry["path"], response.text)
        assert image_size(response.content)[0] == 40


@pytest.mark.parametrize("body", [
    b"{bad json",
    b"[]",
    b'{"ops": [{"op": "explode"}]}',
    b'{"ops": [{"op": "resize"}], "source": {"key": "photos/x.jpg"}}',
    b'{"ops": [{"op": "resize", "width": 0}], "source": {"key": "photos/x.jpg"}}',
    b'{"ops": [{"op": "blur", "sigma": 1000}], "source": {"key": "photos/x.jpg"}}',
    b'{"output": {"format": "bmp"}, "source": {"key": "photos/x.jpg"}}',
    b'{"surprise": 1, "source": {"key": "photos/x.jpg"}}',
    b"{}",
    b'{"source": {"key": null}}',
])
def test_bad_plan_is_400(client, body):
    response = client.post("/v1/transform", content=body,
                           headers={"Content-Type": "application/json"})
    assert_error(response, 400, "bad_plan")


def test_bad_plan_in_multipart_is_400(client):
    data = (CORPUS / PHOTO["path"]).read_bytes()
    response = client.post("/v1/transform", files={"image": ("p.jpg", data, "image/jpeg")},
                           data={"plan": '{"ops": [{"op": "nope"}]}'})
    assert_error(response, 400, "bad_plan")


def test_transform_source_errors(client):
    missing = {"source": {"key": "photos/nope.jpg"}}
    assert_error(client.post("/v1/transform", json=missing), 404, "source_not_found")
    outside = {"source": {"key": "../../etc/passwd"}}
    assert_error(client.post("/v1/transform", json=outside), 400, "bad_key")
    truncated = {"source": {"key": TRUNCATED["path"]}}
    assert_error(client.post("/v1/transform", json=truncated), 422)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "image/jpeg", None])
def test_unsupported_content_type_is_400(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/transform", content=b'{"source": {"key": "a.jpg"}}',
                           headers=headers)
    assert_error(response, 400, "bad_content_type")


def test_media_types_are_case_insensitive(client):
    response = client.post("/v1/transform", content=json.dumps(_plan()).encode(),
                           headers={"Content-Type": "Application/JSON; charset=UTF-8"})
    assert response.status_code == 200


@pytest.mark.parametrize("kind", ["two files", "no boundary", "garbage"])
def test_malformed_multipart_is_400(client, kind):
    data = (CORPUS / PHOTO["path"]).read_bytes()
    if kind == "two files":
        response = client.post("/v1/transform", files=[("image", ("a.jpg", data, "image/jpeg")),
                                                       ("image", ("b.jpg", data, "image/jpeg"))])
    else:
        header = "multipart/form-data" + ("; boundary=zz" if kind == "garbage" else "")
        response = client.post("/v1/transform", content=b"garbage",
                               headers={"Content-Type": header})
    assert_error(response, 400)


def test_transform_is_post_only(client):
    assert_error(client.get("/v1/transform"), 405, "method_not_allowed")


@pytest.fixture
def small_body(make_client):
    return make_client(limits=Limits(max_body_bytes=4096))


def test_body_over_the_limit_with_content_length_is_413(small_body):
    body = json.dumps({"source": {"key": PHOTO["path"]}, "pad": "x" * 5000}).encode()
    response = small_body.post("/v1/transform", content=body,
                               headers={"Content-Type": "application/json"})
    assert_error(response, 413, "body_too_large")
    upload = (CORPUS / PHOTO["path"]).read_bytes()
    assert len(upload) > 4096
    response = small_body.post("/v1/transform", files={"image": ("p.jpg", upload, "image/jpeg")})
    assert_error(response, 413, "body_too_large")


def test_chunked_body_over_the_limit_is_413(small_body):
    def chunks(total: int):
        sent = 0
        while sent < total:
            yield b" " * 1000
            sent += 1000

    response = small_body.post("/v1/transform", content=chunks(20_000),
                               headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "body_too_large")


def test_chunked_multipart_over_the_limit_is_413(small_body):
    data = (CORPUS / PHOTO["path"]).read_bytes()
    request = small_body.build_request("POST", "/v1/transform",
                                       files={"image": ("p.jpg", data, "image/jpeg")})
    body = request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}

    def chunks():
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    response = small_body.post("/v1/transform", content=chunks(), headers=headers)
    assert_error(response, 413, "body_too_large")


def test_body_under_the_limit_works(small_body):
    response = small_body.post("/v1/transform", json=_plan(format="jpeg"))
    assert response.status_code == 200
