"""Thumbor URLs at the server root, through create_app, on corpus images."""

from __future__ import annotations

import pytest
import pyvips
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libthumbor import CryptoURL

from darkroom.signing import thumbor_signature

from .helpers import (
    OK_FILES, PHOTO, ROTATED, assert_error, image_size, loader_of, raw_get,
)

FLAG = next(f for f in OK_FILES if f["path"] == "png/16bit_flag-netherlands.png")
KEY = "thumbor-secret"
OTHER_KEY = "old-secret"
RED, BLUE = (174, 28, 40), (33, 70, 139)  # the Dutch flag: red over white over blue


def _colour_at(data: bytes, x: int, y: int) -> tuple[int, ...]:
    image = pyvips.Image.new_from_buffer(data, "")
    return tuple(round(v) for v in image.getpoint(x, y)[:3])


def _near(colour, expected, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected))


def _scaled(width: int, height: int, box: int) -> tuple[int, int]:
    scale = min(box / width, box / height)
    return round(width * scale), round(height * scale)


@pytest.mark.parametrize(("options", "size"), [
    ("300x200", (300, 200)),
    ("120x0", (120, round(120 * PHOTO["height"] / PHOTO["width"]))),
    ("fit-in/100x100", _scaled(PHOTO["width"], PHOTO["height"], 100)),
    ("fit-in/3000x3000", (PHOTO["width"], PHOTO["height"])),  # fit-in never enlarges
    ("fit-in/1000x1000/filters:upscale()", _scaled(PHOTO["width"], PHOTO["height"], 1000)),
    ("full-fit-in/100x100", _scaled(PHOTO["width"], PHOTO["height"], 100)[::-1]
     if PHOTO["width"] < PHOTO["height"] else
     (round(100 * PHOTO["width"] / PHOTO["height"]), 100)),
    ("fit-in/100x100/filters:fill(red)", (100, 100)),
    ("10x10:110x60/50x25", (50, 25)),
    ("1000x900/smart", (1000, 900)),  # plain WxH enlarges
])
def test_sizes(client, options, size):
    response = client.get(f"/unsafe/{options}/{PHOTO['path']}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert image_size(response.content) == size


@pytest.mark.parametrize(("fmt", "mime", "loader"), [
    ("webp", "image/webp", "webpload"), ("png", "image/png", "pngload"),
    ("avif", "image/avif", "heifload"), ("gif", "image/gif", "gifload"),
])
def test_format_filter(client, fmt, mime, loader):
    response = client.get(f"/unsafe/64x64/filters:format({fmt}):quality(60)/{PHOTO['path']}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == mime
    assert loader_of(response.content).startswith(loader)
    assert image_size(response.content) == (64, 64)


def test_flag_upright_then_flipped_by_a_negative_height(client):
    upright = client.get(f"/unsafe/90x60/{FLAG['path']}")
    flipped = client.get(f"/unsafe/90x-60/{FLAG['path']}")
    assert upright.status_code == flipped.status_code == 200
    assert _near(_colour_at(upright.content, 45, 3), RED)
    assert _near(_colour_at(upright.content, 45, 56), BLUE)
    assert _near(_colour_at(flipped.content, 45, 3), BLUE)
    assert _near(_colour_at(flipped.content, 45, 56), RED)
    assert image_size(flipped.content) == (90, 60)


def test_rotate_90_turns_counter_clockwise(client):
    response = client.get(f"/unsafe/90x60/filters:rotate(90)/{FLAG['path']}")
    assert response.status_code == 200
    assert image_size(response.content) == (60, 90)
    assert _near(_colour_at(response.content, 3, 45), RED)  # the top went left
    assert _near(_colour_at(response.content, 56, 45), BLUE)


def test_grayscale_and_etag_revalidation(client):
    url = f"/unsafe/40x40/filters:grayscale()/{FLAG['path']}"
    first = client.get(url)
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    r, g, b = _colour_at(first.content, 20, 2)
    assert abs(r - g) <= 2 and abs(g - b) <= 2
    again = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert client.get(url).headers["x-cache"] == "HIT"


def test_unknown_filter_is_400_naming_it(client):
    error = assert_error(client.get(f"/unsafe/filters:frame(a.png)/{PHOTO['path']}"), 400,
                         "unknown_filter")
    assert "frame" in error["message"]
    error = assert_error(client.get(f"/unsafe/filters:blur(abc)/{PHOTO['path']}"), 400,
                         "bad_filter_arg")
    assert "blur" in error["message"]


def test_out_of_order_segment_is_part_of_the_path_so_404(client):
    assert_error(client.get(f"/unsafe/FIT-IN/300x200/{PHOTO['path']}"), 404,
                 "source_not_found")
    assert_error(client.get(f"/unsafe/smart/300x200/{PHOTO['path']}"), 404,
                 "source_not_found")


def test_unsafe_with_a_signature_after_it_is_404(client):
    signature = thumbor_signature(KEY, f"300x200/{PHOTO['path']}")
    assert_error(client.get(f"/unsafe/{signature}/300x200/{PHOTO['path']}"), 404,
                 "source_not_found")


def test_missing_watermark_is_400(client):
    assert_error(client.get(f"/unsafe/filters:watermark(nope.png,0,0,0)/{PHOTO['path']}"),
                 400, "watermark_not_found")


def test_watermark_renders(client):
    response = client.get(f"/unsafe/200x150/filters:watermark({FLAG['path']},-5,-5,20,30)/"
                          f"{PHOTO['path']}")
    assert response.status_code == 200, response.text
    assert image_size(response.content) == (200, 150)


def test_healthcheck_says_working(client):
    response = client.get("/healthcheck")
    assert response.status_code == 200 and response.text == "WORKING"
    assert response.headers["cache-control"] == "no-cache"  # as Thumbor's handler


def test_api_paths_still_reach_the_api(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get(f"/v1/info/{PHOTO['path']}").status_code == 200
    assert client.get(f"/img/{PHOTO['path']}?w=10").status_code == 200


def test_not_a_thumbor_url_is_404_no_route_without_sih(make_client):
    client = make_client(sih={"enabled": False})
    assert_error(client.get("/favicon.ico"), 404, "no_route")
    assert client.get(f"/unsafe/10x10/{PHOTO['path']}").status_code == 200


# --- signatures ---------------------------------------------------------------------------

@pytest.fixture
def signed(make_client):
    return make_client(signing_keys=[KEY, OTHER_KEY])


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
def test_libthumbor_signed_url_is_accepted_with_any_key(signed, key):
    url = CryptoURL(key=key).generate(width=120, height=80, smart=True,
                                      filters=["quality(70)", "format(webp)"],
                                      image_url=PHOTO["path"])
    response = signed.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    assert image_size(response.content) == (120, 80)


def test_tampered_and_foreign_signatures_are_403(signed):
    url = CryptoURL(key=KEY).generate(width=120, height=80, image_url=PHOTO["path"])
    assert_error(signed.get(url.replace("120x80", "121x80")), 403, "bad_signature")
    foreign = CryptoURL(key="someone-else").generate(width=120, height=80,
                                                     image_url=PHOTO["path"])
    assert_error(signed.get(foreign), 403, "bad_signature")


def test_malformed_signatures_are_400(signed):
    url = CryptoURL(key=KEY).generate(width=120, height=80, image_url=PHOTO["path"])
    signature, rest = url[1:].split("/", 1)
    assert_error(signed.get(f"/{signature.rstrip('=')}/{rest}"), 400, "bad_signature")
    plus = signature[:5] + "+" + signature[6:]  # the standard alphabet's `+`
    assert_error(signed.get(f"/{plus}/{rest}"), 400, "bad_signature")


def test_signature_covers_the_path_exactly_as_received(signed):
    """Signed over `%7C`, sent as `%7C`: accepted (then 404: no such file); signed over
    the decoded `|`, sent as `%7C`: refused."""
    raw_rest = "100x100/photos/a%7Cb.jpg"
    good = thumbor_signature(KEY, raw_rest)
    status, _, body = raw_get(signed.app, f"/{good}/{raw_rest}".encode())
    assert status == 404 and b"source_not_found" in body
    bad = thumbor_signature(KEY, "100x100/photos/a|b.jpg")
    status, _, body = raw_get(signed.app, f"/{bad}/{raw_rest}".encode())
    assert status == 403 and b"bad_signature" in body


def test_unsafe_with_keys_is_400_unless_allowed(signed, make_client):
    assert_error(signed.get(f"/unsafe/50x50/{PHOTO['path']}"), 400, "unsafe_not_allowed")
    relaxed = make_client(signing_keys=[KEY], allow_unsigned=True)
    assert relaxed.get(f"/unsafe/50x50/{PHOTO['path']}").status_code == 200


def test_signed_url_without_keys_is_403(client):
    url = CryptoURL(key=KEY).generate(width=50, height=50, image_url=PHOTO["path"])
    assert_error(client.get(url), 403, "bad_signature")


def test_meta_describes_the_operations_as_thumbor_json(client):
    response = client.get(f"/unsafe/meta/10x10:110x60/-50x50/{PHOTO['path']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()["thumbor"]
    assert body["source"]["url"] == PHOTO["path"]
    assert (body["source"]["width"], body["source"]["height"]) == (50, 50)
    assert body["operations"] == [
        {"type": "crop", "left": 10, "top": 10, "right": 110, "bottom": 60},
        {"type": "crop", "left": 25, "top": 0, "right": 75, "bottom": 50},
        {"type": "resize", "width": 50.0, "height": 50.0},
        {"type": "flip_horizontally"},
    ]
    assert body["target"] == {"width": 50, "height": 50}


def test_meta_with_a_callback_is_jsonp_and_bad_callbacks_are_400(client):
    url = f"/unsafe/meta/fit-in/100x100/{PHOTO['path']}"
    response = client.get(url, params={"callback": "handle.meta"})
    assert response.headers["content-type"] == "text/javascript"
    assert response.text.startswith("handle.meta({") and response.text.endswith("});")
    assert_error(client.get(url, params={"callback": "alert(1)//"}), 400, "bad_param")


def test_max_age_sets_cache_control(client):
    response = client.get(f"/unsafe/50x50/filters:max_age(120)/{PHOTO['path']}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=120"


def test_respect_orientation_follows_the_setting(make_client):
    on, off = make_client(), make_client(thumbor={"respect_orientation": False})
    upright = on.get(f"/unsafe/{ROTATED['path']}")
    raw = off.get(f"/unsafe/{ROTATED['path']}")
    assert image_size(upright.content) == image_size(raw.content)[::-1]


@pytest.mark.parametrize("filters", [
    "rgb(20,0,0)", "equalize()", "noise(20)", "convolution(1;2;1;2;4;2;1;2;1,3,true)",
    "round_corner(10|5,255,255,255)", "proportion(0.5)", "fill(blur)", "fill(auto)",
    "max_bytes(3000)", "autojpg()", "stretch()", "focal(0x0:40x40)",
    "watermark(png/face_astronaut.png,repeat,10p,30,10,none)",
])
def test_every_filter_renders(client, filters):
    response = client.get(f"/unsafe/fit-in/120x120/filters:{filters}/{PHOTO['path']}")
    assert response.status_code == 200, response.text
    width, height = image_size(response.content)
    assert width <= 120 and height <= 120
    if filters.startswith("fill"):
        assert (width, height) == (120, 120)
    if filters.startswith("max_bytes"):
        assert len(response.content) <= 3000


_PARTS = st.sampled_from([
    "unsafe", "meta", "trim:bottom-right:9", "0x0:10x10", "10x10:5x5", "adaptive-fit-in",
    "full-fit-in", "fit-in", "-0x-0", "99999x1", "origxorig", "40x30", "smart", "left", "bottom",
    "filters:fill(blur):noise(100)", "filters:watermark(png/face_astronaut.png,repeat,-1,0)",
    "filters:max_bytes(1):quality(1)", "filters:convolution(-1;-1;-1;-1;8;-1;-1;-1;-1,3,false)",
    "filters:extract_focal()", "filters:proportion(0.01)",
    "filters:rotate(270):round_corner(9|1,0,0,0)",
    "%00", "..", "%2e%2e", "photos", PHOTO["path"], "formats/animated_rotating-squares.gif",
    "nope.jpg",
])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_PARTS, min_size=1, max_size=7).map("/".join))
def test_fuzz_thumbor_urls_never_answer_5xx(client, path):
    response = client.get(f"/{path}")
    assert response.status_code < 500, (path, response.text)
