"""SIH's own test cases (tests/compat/sih_cases.json) against darkroom's SIH parser, and
the compiled plans of what SIH's edits mean."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from darkroom.errors import BadRequest, DarkroomError, Forbidden, NotImplementedYet
from darkroom.grammars import sih
from darkroom.grammars.sih_query import kept_params, query_edits
from darkroom.plan import (
    Blur, Convolve, Extract, FaceCrop, Flatten, Flip, Grayscale, Negate, Normalize, Resize,
    Rotate, Scale, Sharpen, Tint, Watermark,
)

CASES = json.loads((Path(__file__).parents[1] / "compat" / "sih_cases.json").read_text())
BUCKETS = ["darkroom", "other-bucket", "bucket", "bucket-name-here", "my-sample-bucket",
           "elasticbeanstalk-us-east-2-066784885518", "validBucket", "test"]


def _plain(value):
    """NaN as the string "NaN", so that expected and found compare equal."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def _resolve(bucket, key):
    return key


@pytest.mark.parametrize("case", CASES["thumbor_paths"], ids=lambda c: c["path"][:60])
def test_thumbor_paths(case):
    request = sih.parse(case["path"], {}, BUCKETS)
    assert request.style == "thumbor"
    assert request.key == case["key"]
    assert request.bucket == case.get("bucket", BUCKETS[0])
    assert _plain(request.edits) == case["edits"]
    if "compile_error" in case:
        with pytest.raises(BadRequest) as caught:
            sih.to_plan(request, request.key, _resolve)
        assert caught.value.code == case["compile_error"]


@pytest.mark.parametrize("case", CASES["request_types"], ids=lambda c: c["path"][:40])
def test_request_types(case):
    if "error" in case:
        with pytest.raises(BadRequest) as caught:
            sih.parse(case["path"], {}, BUCKETS)
        assert caught.value.code == case["error"]
    else:
        assert sih.parse(case["path"], {}, BUCKETS).style == case["style"]


@pytest.mark.parametrize("case", CASES["query_params"], ids=lambda c: c["query"])
def test_query_params(case):
    assert query_edits(kept_params(case["query"])) == case["edits"]


@pytest.mark.parametrize("case", CASES["default_requests"], ids=lambda c: c["path"][:50])
def test_default_requests(case):
    buckets = case.get("buckets", BUCKETS)
    params = kept_params(case.get("query", ""))
    if "error" in case:
        with pytest.raises(DarkroomError) as caught:
            sih.parse(case["path"], params, buckets)
        assert caught.value.code == case["error"]
        return
    request = sih.parse(case["path"], params, buckets)
    assert request.style == case.get("style", "default")
    if "key" in case:
        assert request.key == case["key"]
    if "bucket" in case:
        assert request.bucket == case["bucket"]
    if "edits" in case:
        assert request.edits == case["edits"]
    assert request.output_format == case.get("output_format")
    if "headers" in case:
        assert [list(h) for h in request.headers] == case["headers"]


def test_every_ported_case_compiles_or_is_refused_on_purpose():
    for case in CASES["thumbor_paths"]:
        request = sih.parse(case["path"], {}, BUCKETS)
        try:
            sih.to_plan(request, "k.jpg", _resolve)
        except BadRequest as error:
            assert error.code in ("bad_edit", "unsupported_output_format"), case
            assert "compile_error" in case or "NaN" in json.dumps(_plain(request.edits)), case


def _plan(edits, auto=None, style="default", **request):
    req = sih.SihRequest(style, "darkroom", "a.jpg", edits, **request)
    return sih.to_plan(req, "a.jpg", lambda b, k: f"{b}/{k}", auto)


def test_resize_defaults_are_sharps():
    plan, _ = _plan({"resize": {"width": 100, "height": 50}})
    assert plan.ops == (Resize(width=100, height=50, fit="cover", gravity="center",
                               background=(0, 0, 0, 255)),)
    plan, _ = _plan({"resize": {"width": "99.6", "position": "right top", "fit": "contain",
                                "background": {"r": 255, "g": 0, "b": 0, "alpha": 0.5},
                                "withoutEnlargement": True}})
    assert plan.ops[0] == Resize(width=100, fit="contain", gravity="northeast",
                                 background=(255, 0, 0, 128), upscale=False)
    assert _plan({"resize": {"width": 10, "position": 17}})[0].ops[0].gravity == "attention"


@pytest.mark.parametrize("size", [0, -5, "abc", 70000, True, [1]])
def test_bad_sizes_are_invalid_resize(size):
    with pytest.raises(BadRequest) as caught:
        _plan({"resize": {"width": size}})
    assert caught.value.code == "invalid_resize"


def test_geometry_follows_key_order_and_filters_follow_sharp():
    edits = {"blur": 2, "extract": {"left": 1, "top": 2, "width": 30, "height": 40},
             "resize": {"width": 10}, "tint": "#ff0000", "grayscale": True, "flip": True,
             "flop": "true", "rotate": 90, "negate": True, "flatten": {"background": "#fff"},
             "normalise": {"lower": 2, "upper": 98}, "sharpen": {"sigma": 2},
             "convolve": {"width": 3, "height": 1, "kernel": [1, 2, 1]}}
    plan, _ = _plan(edits)
    assert plan.ops == (
        Extract(left=1, top=2, width=30, height=40),
        Resize(width=10, fit="cover", background=(0, 0, 0, 255)),
        Flip(vertical=True), Flip(horizontal=True),
        Rotate(angle=90, background=(0, 0, 0, 255)),
        Flatten(background=(255, 255, 255, 255)), Negate(alpha=True), Grayscale(),
        Blur(sigma=2), Convolve(matrix=(1, 2, 1), columns=3), Sharpen(sigma=2),
        Normalize(lower=2, upper=98), Tint(color=(255, 0, 0, 255)),
    )


def test_switches_off_and_ratio():
    plan, _ = _plan({"grayscale": False, "flip": "false", "rotate": None, "blur": False,
                     "smartCrop": False, "resize": {"ratio": 0.5}})
    assert plan.ops == (Scale(factor=0.5),)


def test_smart_crop_and_overlay():
    plan, _ = _plan({"smartCrop": {"faceIndex": 1, "padding": 20},
                     "overlayWith": {"bucket": "darkroom", "key": "logo.png", "alpha": "25",
                                     "wRatio": 30, "options": {"left": "-10p", "top": 5}}})
    assert plan.ops == (FaceCrop(index=1, padding=20), Watermark(
        key="darkroom/logo.png", gravity="center", opacity=0.75, width=0.3, x="-10p", y="5"))
    assert _plan({"smartCrop": True})[0].ops == (FaceCrop(),)


@pytest.mark.parametrize("overlay", [
    {"key": "a.png", "bucket": "darkroom", "options": {"left": 5}},
    {"key": "a.png", "bucket": "darkroom", "alpha": 101},
    {"key": "a.png", "bucket": "darkroom", "wRatio": 0},
    {"key": "a.png", "bucket": "darkroom", "options": {"left": "200p", "top": 0}},
    {"bucket": "darkroom"},
])
def test_bad_overlays(overlay):
    with pytest.raises(BadRequest):
        _plan({"overlayWith": overlay})


def test_output_formats():
    assert _plan({}, output_format="jpg")[0].output.format == "jpeg"
    assert _plan({}, output_format="jpg")[1] == "image/jpg"
    assert _plan({"toFormat": "png"}, output_format="webp")[0].output.format == "png"
    assert _plan({}, output_format="webp", auto="avif")[0].output.format == "avif"
    assert _plan({"toFormat": "png"}, auto="webp")[0].output.format == "png"
    plan, _ = _plan({"webp": {"quality": 90, "lossless": True}})  # sharp's last format call
    assert (plan.output.format, plan.output.quality, plan.output.lossless) == ("webp", 90, True)
    plan, _ = _plan({"jpeg": {"quality": 30}}, output_format="png")
    assert (plan.output.format, plan.output.quality) == ("png", None)
    plan, _ = _plan({"jpeg": {"quality": 30}, "toFormat": "webp"}, style="thumbor")
    assert (plan.output.format, plan.output.quality) == ("webp", 30)  # SIH's fixQuality
    for bad in ("heif", "bmp", "raw", 5):
        with pytest.raises(BadRequest) as caught:
            _plan({}, output_format=bad)
        assert caught.value.code == "unsupported_output_format"


def test_animation_follows_sih():
    assert _plan({})[0].output.animated is True
    assert _plan({"toFormat": "webp"})[0].output.animated is False  # GIF -> WebP: first frame
    assert _plan({"toFormat": "gif"})[0].output.animated is True
    assert _plan({"toFormat": "webp", "animated": True})[0].output.animated is True


@pytest.mark.parametrize("edits", [
    {"gamma": 2.2}, {"modulate": {"brightness": 2}}, {"resize": {"width": 5,
                                                                "withoutReduction": True}},
    {"extend": {"top": 2, "extendWith": "mirror"}},
])
def test_allow_listed_sharp_operations_without_a_darkroom_step(edits):
    with pytest.raises(BadRequest) as caught:
        _plan(edits)
    assert caught.value.code == "unsupported_edit"


def test_keys_outside_the_allow_list_are_ignored():
    assert _plan({"composite": [1], "toBuffer": True, "effort": 3})[0].ops == ()


@pytest.mark.parametrize("moderation", [True, {"minConfidence": 90, "blur": 50,
                                               "moderationLabels": ["Smoking"]}])
def test_content_moderation_is_validated_then_501(moderation):
    with pytest.raises(NotImplementedYet) as caught:
        _plan({"contentModeration": moderation})
    assert caught.value.status == 501
    with pytest.raises(BadRequest):
        _plan({"contentModeration": {"minConfidence": 400}})


def test_bucket_outside_the_allow_list():
    path = "/" + __import__("base64").b64encode(b'{"bucket":"x","key":"a.jpg"}').decode()
    with pytest.raises(Forbidden):
        sih.parse(path, {}, ["darkroom"])


@pytest.mark.parametrize("path", ["/eyJrZXkiOiJhLmpwZyJ9", "/eyJrZXkiOiJhLmpwZyJ9==",
                                  "/eyJrZXkiOiJhLmpwZyJ9"])
def test_unpadded_and_urlsafe_base64_are_json_requests(path):
    assert sih.claims(path)
    assert sih.parse(path, {}, ["darkroom"]).key == "a.jpg"


@pytest.mark.parametrize("path", ["/eyeball", "/photos/a.jpg", "/unsafe/a.jpg", "/ey"])
def test_other_paths_are_not_claimed(path):
    assert not sih.claims(path)


@pytest.mark.parametrize("path", ["/eyJrZXkiOiJhLmpwZyJ", "/eyJrZXk6IDF9", "/eyB9XQ", "/eyJ"])
def test_broken_json_is_a_decode_error_not_a_missing_key(path):
    with pytest.raises(BadRequest) as caught:
        sih.parse(path, {}, ["darkroom"])
    assert caught.value.code == "cannot_decode_request"
