"""SIH requests at the server root, through create_app, on corpus images: status, type,
headers, pixel sizes and colours at known points."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import pyvips

from darkroom.signing import sih_signature

from .helpers import ALPHA_PNG, CORPUS, PHOTO, image_size

FLAG = "png/16bit_flag-netherlands.png"  # red over white over blue
FACE = "photos/face_katherine-maher.jpg"  # 800x533, one face near (258, 147, 238, 238)
NO_FACE = "photos/progressive_puppies.jpg"
RED, BLUE = (174, 28, 40), (33, 70, 139)


def url(body: dict) -> str:
    return "/" + base64.b64encode(json.dumps(body).encode()).decode()


def colour_at(data: bytes, x: int, y: int) -> tuple[int, ...]:
    image = pyvips.Image.new_from_buffer(data, "")
    return tuple(round(v) for v in image.getpoint(x, y))


def near(found, expected, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(found, expected))


def sih_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "cache-control" not in response.headers
    body = response.json()
    assert list(body)[:3] == ["status", "code", "message"]
    assert body["status"] == status and body["code"] == code, body
    return body


@pytest.mark.parametrize(("edits", "size"), [
    ({"resize": {"width": 100, "height": 100}}, (100, 100)),
    ({"resize": {"width": 100}}, (100, round(100 * PHOTO["height"] / PHOTO["width"]))),
    ({"resize": {"width": 100, "height": 100, "fit": "contain"}}, (100, 100)),
    ({"resize": {"width": 5000, "withoutEnlargement": True, "fit": "inside"}},
     (PHOTO["width"], PHOTO["height"])),
    ({"extract": {"left": 10, "top": 10, "width": 50, "height": 40}}, (50, 40)),
    ({"extract": {"left": 0, "top": 0, "width": 80, "height": 40},
      "resize": {"width": 40}}, (40, 20)),
    ({"rotate": 90}, (PHOTO["height"], PHOTO["width"])),
])
def test_json_sizes(client, edits, size):
    response = client.get(url({"bucket": "darkroom", "key": PHOTO["path"], "edits": edits}))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "max-age=31536000,public"
    assert response.headers["access-control-allow-methods"] == "GET"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in response.headers
    assert image_size(response.content) == size


def test_contain_pads_with_opaque_black(client):
    response = client.get(url({"key": FLAG, "outputFormat": "png",
                               "edits": {"resize": {"width": 100, "height": 100,
                                                    "fit": "contain"}}}))
    assert response.status_code == 200, response.text
    assert colour_at(response.content, 50, 0)[:3] == (0, 0, 0)
    assert near(colour_at(response.content, 50, 45), (255, 255, 255))


def test_flip_and_filters_at_known_points(client):
    plain = client.get(url({"key": FLAG, "edits": {"resize": {"width": 90}}})).content
    assert near(colour_at(plain, 45, 2), RED) and near(colour_at(plain, 45, 57), BLUE)
    flipped = client.get(url({"key": FLAG, "edits": {"resize": {"width": 90}, "flip": True}}))
    assert near(colour_at(flipped.content, 45, 2), BLUE)
    grey = client.get(url({"key": FLAG, "edits": {"grayscale": True}})).content
    r, g, b = colour_at(grey, 5, 5)[:3]
    assert max(r, g, b) - min(r, g, b) <= 2
    negated = client.get(url({"key": FLAG, "outputFormat": "jpeg", "edits": {"negate": True}}))
    assert near(colour_at(negated.content, 5, 5), (255 - 174, 255 - 28, 255 - 40))


def test_output_format_names(client):
    response = client.get(url({"key": PHOTO["path"], "outputFormat": "jpg",
                               "edits": {"resize": {"width": 32}}}))
    assert response.headers["content-type"] == "image/jpg"  # as SIH names it
    response = client.get(url({"key": PHOTO["path"], "edits": {"webp": {"quality": 50}}}))
    assert response.headers["content-type"] == "image/webp"  # SIH would still say jpeg
    response = client.get(url({"key": PHOTO["path"], "outputFormat": "heif"}))
    sih_error(response, 400, "UnsupportedOutputImageFormatException")


def test_no_edits_answers_the_stored_bytes(client):
    response = client.get(url({"key": PHOTO["path"]}))
    assert response.status_code == 200
    assert response.content == (CORPUS / PHOTO["path"]).read_bytes()
    assert response.headers["content-type"] == "image/jpeg"
    again = client.get(url({"key": PHOTO["path"]}),
                       headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    response = client.get(f"/{PHOTO['path']}?unknown=1")  # dropped keys are no edits
    assert response.content == (CORPUS / PHOTO["path"]).read_bytes()


def test_thumbor_style_and_query_parameters(client):
    response = client.get(f"/fit-in/100x100/filters:grayscale()/{PHOTO['path']}")
    assert response.status_code == 200, response.text
    assert max(image_size(response.content)) == 100
    response = client.get(f"/fit-in/2000x2000/{PHOTO['path']}")  # SIH's fit-in enlarges
    assert max(image_size(response.content)) == 2000
    response = client.get(f"/fit-in/100x100/{PHOTO['path']}?width=50&format=webp")
    assert response.headers["content-type"] == "image/webp"
    assert image_size(response.content)[0] == 50
    response = client.get(f"/{PHOTO['path']}?width=50&width=60")  # last value wins
    assert image_size(response.content)[0] == 60


def test_overlay_with_alpha(client):
    mark = {"bucket": "darkroom", "key": ALPHA_PNG["path"], "wRatio": 50,
            "options": {"left": 0, "top": 0}}
    response = client.get(url({"key": FLAG, "outputFormat": "png", "edits": {
        "resize": {"width": 200}, "overlayWith": mark}}))
    assert response.status_code == 200, response.text
    assert image_size(response.content)[0] == 200
    response = client.get(url({"key": FLAG, "edits": {"overlayWith": {
        **mark, "bucket": "elsewhere"}}}))
    sih_error(response, 403, "ImageBucket::CannotAccessBucket")
    response = client.get(url({"key": FLAG, "edits": {"overlayWith": {
        **mark, "key": "missing.png"}}}))
    sih_error(response, 400, "OverlayImageException")


def test_smart_crop(client):
    response = client.get(url({"key": FACE, "edits": {"smartCrop": {"padding": 10}}}))
    assert response.status_code == 200, response.text
    width, height = image_size(response.content)
    assert 240 <= width <= 270 and 240 <= height <= 270  # the face box and its padding
    response = client.get(url({"key": FACE, "edits": {"smartCrop": {"faceIndex": 1}}}))
    sih_error(response, 400, "SmartCrop::FaceIndexOutOfRange")
    response = client.get(url({"key": NO_FACE, "edits": {"smartCrop": True}}))
    assert response.status_code == 200  # no face at all: the whole image, as SIH


def test_content_moderation_is_501(client):
    response = client.get(url({"key": PHOTO["path"], "edits": {"contentModeration": True}}))
    body = sih_error(response, 501, "ContentModeration::Unavailable")
    assert body["darkroom_code"] == "content_moderation_unavailable"
    response = client.get(url({"key": PHOTO["path"], "edits": {
        "contentModeration": {"minConfidence": "high"}}}))
    sih_error(response, 400, "ImageEdits::CannotParseEdits")


@pytest.mark.parametrize(("path", "status", "code"), [
    (url({"bucket": "other", "key": "a.jpg"}), 403, "ImageBucket::CannotAccessBucket"),
    ("/eyJrZXkiOiA", 400, "DecodeRequest::CannotDecodeRequest"),
    (url({"key": "nothing/here.jpg"}), 404, "NoSuchKey"),
    ("/nothing/here.jpg", 404, "NoSuchKey"),
    ("/a/../../etc/passwd", 404, "NoSuchKey"),
    ("/image.bmp", 400, "RequestTypeError"),
    (url({"key": "a.jpg", "edits": {"resize": {"width": 0}}}), 400, "InvalidResizeException"),
    (url({"key": "a.jpg", "edits": {"resize": {"width": -3}}}), 400, "InvalidResizeException"),
    (url({"key": "a.jpg", "edits": {"blur": "lots"}}), 400, "ImageEdits::CannotParseEdits"),
    (url({"key": PHOTO["path"], "edits": {"extract": {"left": 9000, "top": 0, "width": 5,
                                                      "height": 5}}}),
     400, "Crop::AreaOutOfBounds"),
])
def test_errors(client, path, status, code):
    sih_error(client.get(path), status, code)


def test_signature(make_client):
    client = make_client(sih={"enable_signature": True, "signing_key": "s3cret"})
    path = url({"key": PHOTO["path"], "edits": {"resize": {"width": 20}}})
    sih_error(client.get(path), 400, "AuthorizationQueryParametersError")
    sih_error(client.get(f"{path}?signature="), 400, "AuthorizationQueryParametersError")
    good = sih_signature("s3cret", path, {})
    assert client.get(f"{path}?signature={good}").status_code == 200
    sih_error(client.get(f"{path}?signature={good.upper()}"), 403, "SignatureDoesNotMatch")
    sih_error(client.get(f"{path}?signature={'0' * 64}"), 403, "SignatureDoesNotMatch")
    params = {"width": "30", "format": "webp"}
    signed = sih_signature("s3cret", path, params)
    response = client.get(f"{path}?width=30&format=webp&ignored=1&signature={signed}")
    assert response.status_code == 200 and image_size(response.content)[0] == 30


def test_sih_signing_vector():
    cases = json.loads((Path(__file__).parents[1] / "compat" / "sih_cases.json").read_text())
    for case in cases["signatures"]:  # from SIH's setup.spec.ts
        assert sih_signature(case["secret"], case["path"], {}) == case["signature"]


def test_expires(client):
    path = url({"key": PHOTO["path"], "edits": {"resize": {"width": 20}}})
    sih_error(client.get(f"{path}?expires=19700101T000000Z"), 400, "ImageRequestExpired")
    sih_error(client.get(f"{path}?expires=19700001T000000Z"), 400, "ImageRequestExpiryFormat")
    later = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + 3600))
    response = client.get(f"{path}?expires={later}")
    assert response.status_code == 200
    seconds = int(response.headers["cache-control"].split("=")[1].split(",")[0])
    assert 3500 <= seconds <= 3600 and response.headers["cache-control"].endswith(",public")


def test_custom_headers(client):
    response = client.get(url({"key": PHOTO["path"], "edits": {"resize": {"width": 20}},
                               "headers": {"Cache-Control": "max-age=60,public",
                                           "X-Custom": "yes", "Set-Cookie": "a=b",
                                           "Content-Type": "text/html",
                                           "Expires": "Wed, 21 Oct 2099 07:28:00 GMT"}}))
    assert response.headers["cache-control"] == "max-age=60,public"
    assert response.headers["x-custom"] == "yes"
    assert response.headers["expires"] == "Wed, 21 Oct 2099 07:28:00 GMT"
    assert "set-cookie" not in response.headers
    assert response.headers["content-type"] == "image/jpeg"
    response = client.get(url({"key": PHOTO["path"], "headers": {"X-Bad": "a\r\nb: c"}}))
    sih_error(response, 400, "ImageEdits::CannotParseEdits")


def test_auto_webp_and_cors(make_client):
    client = make_client(sih={"auto_webp": True, "cors_enabled": True,
                              "cors_origin": "https://example.com"})
    accept = {"Accept": "image/avif,image/webp,*/*"}
    response = client.get(url({"key": PHOTO["path"], "outputFormat": "png",
                               "edits": {"resize": {"width": 20}}}), headers=accept)
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["vary"] == "Accept"
    assert response.headers["access-control-allow-origin"] == "https://example.com"
    response = client.get(url({"key": PHOTO["path"], "edits": {"toFormat": "png"}}),
                          headers=accept)
    assert response.headers["content-type"] == "image/png"  # toFormat wins
    response = client.get(url({"key": "nothing.jpg"}))
    assert response.headers["access-control-allow-origin"] == "https://example.com"


def test_sih_environment_names(monkeypatch, tmp_path):
    from darkroom.config import Settings

    monkeypatch.setenv("SOURCE_BUCKETS", "photos, logos")
    monkeypatch.setenv("AUTO_WEBP", "Yes")
    monkeypatch.setenv("CORS_ENABLED", "No")
    settings = Settings(data_dir=tmp_path)
    assert settings.sih.source_buckets == ["photos", "logos"]
    assert settings.sih.auto_webp is True and settings.sih.cors_enabled is False
    monkeypatch.setenv("DARKROOM_SIH__SOURCE_BUCKETS", "mine")
    assert Settings(data_dir=tmp_path).sih.source_buckets == ["mine"]


def test_bucket_prefixes(make_client):
    client = make_client(sih={"source_buckets": ["main", "pics"],
                              "bucket_prefixes": {"pics": "photos/"}})
    name = PHOTO["path"].removeprefix("photos/")
    assert client.get(url({"bucket": "pics", "key": name,
                           "edits": {"grayscale": True}})).status_code == 200
    response = client.get(f"/s3:pics/{name}?width=10")
    assert response.status_code == 200 and image_size(response.content)[0] == 10
