"""The Thumbor grammar: path -> EditPlan, and precise 400s.

Ported from thumbor/thumbor tests/test_url.py (test_parsing_complete_url,
test_parsing_invalid_url, test_can_generate_url*: the same option strings, parsed back),
and from the positional rules of thumbor/url.py's regular expression.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darkroom.errors import BadRequest, DarkroomError
from darkroom.grammars import thumbor
from darkroom.plan import (
    Blur, ChannelShift, Convolve, Equalize, Extract, Flatten, Flip, Grayscale, Modulate,
    Noise, Resize, Rotate, RoundCorners, Scale, Sharpen, Trim, Watermark,
)


def plan(path: str):
    return thumbor.parse(path)[2]


def test_parse_splits_signature_and_rest():
    first, rest, p = thumbor.parse("/abc/300x200/a.jpg")
    assert (first, rest, p.source.key) == ("abc", "300x200/a.jpg", "a.jpg")


# test_url.py: test_parsing_complete_url, minus debug/, meta/ and adaptive- (400 for now).
def test_complete_url_from_thumbor_tests():
    p = plan("/unsafe/trim/300x200:400x500/full-fit-in/-300x-400/left/top/smart/"
             "filters:brightness(100)/some/image.jpg")
    assert p.source.key == "some/image.jpg"
    assert p.ops == (
        Trim(threshold=0),
        Extract(left=300, top=200, width=100, height=300),
        Resize(width=300, height=400, fit="outside"),
        Flip(horizontal=True, vertical=True),
        ChannelShift(red=100, green=100, blue=100),
    )


# test_url.py: test_can_generate_url / _with_custom_trim option strings, parsed back.
@pytest.mark.parametrize(("path", "ops"), [
    ("trim/100x100:400x400/fit-in/-300x-200/left/top/smart/filters:brightness(100)/i.jpg",
     (Trim(threshold=0), Extract(left=100, top=100, width=300, height=300),
      Resize(width=300, height=200, fit="inside", upscale=False),
      Flip(horizontal=True, vertical=True), ChannelShift(red=100, green=100, blue=100))),
    ("fit-in/i.jpg", ()),  # test_can_generate_url_with_fitin: no size, nothing to do
    ("i.jpg", ()),  # test_can_generate_url_with_defaults
])
def test_generated_option_strings(path, ops):
    assert plan(f"/unsafe/{path}").ops == ops


@pytest.mark.parametrize(("path", "op"), [
    ("300x200/a.jpg", Resize(width=300, height=200, fit="cover")),
    ("300x0/a.jpg", Resize(width=300, fit="inside")),
    ("x200/a.jpg", Resize(height=200, fit="inside")),
    ("300x200/left/a.jpg", Resize(width=300, height=200, fit="cover", gravity="west")),
    ("300x200/right/bottom/a.jpg",
     Resize(width=300, height=200, fit="cover", gravity="southeast")),
    ("300x200/top/a.jpg", Resize(width=300, height=200, fit="cover", gravity="north")),
    ("300x200/smart/a.jpg", Resize(width=300, height=200, fit="cover", gravity="attention")),
    ("300x200/center/middle/a.jpg", Resize(width=300, height=200, fit="cover")),
    ("fit-in/300x200/a.jpg", Resize(width=300, height=200, fit="inside", upscale=False)),
    ("full-fit-in/300x200/a.jpg", Resize(width=300, height=200, fit="outside")),
    ("fit-in/300x200/filters:upscale()/a.jpg",
     Resize(width=300, height=200, fit="inside", upscale=True)),
    ("300x200/filters:no_upscale()/a.jpg",
     Resize(width=300, height=200, fit="cover", upscale=False)),
    ("origx200/a.jpg", Resize(width="source", height=200, fit="cover")),
    ("fit-in/300x200/filters:stretch()/a.jpg",
     Resize(width=300, height=200, fit="inside", upscale=False)),
    ("300x200/filters:stretch()/a.jpg", Resize(width=300, height=200, fit="fill")),
    ("adaptive-fit-in/300x200/a.jpg",
     Resize(width=300, height=200, fit="inside", upscale=False, adaptive=True)),
    ("300x200/filters:focal(10x20:30x60)/a.jpg",
     Resize(width=300, height=200, fit="cover", gravity="focal", focal_px=(20.0, 40.0))),
    ("300x200/smart/filters:focal(10x20:30x60)/a.jpg",  # explicit focal beats smart
     Resize(width=300, height=200, fit="cover", gravity="focal", focal_px=(20.0, 40.0))),
])
def test_sizes_and_alignment(path, op):
    assert plan(f"/unsafe/{path}").ops == (op,)


def test_no_size_is_no_resize_and_orig_both_sides_too():
    assert plan("/unsafe/a.jpg").ops == ()
    assert plan("/unsafe/0x0/a.jpg").ops == ()
    assert plan("/unsafe/origx0/a.jpg").ops == (Resize(width="source", fit="inside"),)


def test_negative_sizes_flip_after_resize():
    assert plan("/unsafe/-300x200/a.jpg").ops == (
        Resize(width=300, height=200, fit="cover"), Flip(horizontal=True))
    assert plan("/unsafe/300x-200/a.jpg").ops[-1] == Flip(vertical=True)
    assert plan("/unsafe/-0x-0/a.jpg").ops == (Flip(horizontal=True, vertical=True),)


@pytest.mark.parametrize(("text", "trim"), [
    ("trim", Trim(threshold=0)), ("trim:top-left", Trim(threshold=0)),
    ("trim:40", Trim(threshold=40)), ("trim:top-left:300", Trim(threshold=255)),
    ("trim:bottom-right:5", Trim(threshold=5, corner="bottom-right")),
])
def test_trim(text, trim):
    assert plan(f"/unsafe/{text}/a.jpg").ops == (trim,)


@pytest.mark.parametrize("path", [
    "FIT-IN/300x200/a.jpg",          # upper case
    "300X200/a.jpg",
    "smart/300x200/a.jpg",           # out of order
    "300x200/top/left/a.jpg",        # valign before halign
    "filters:blur(2):/a.jpg",        # trailing ':'
    "filters:blur(2/a.jpg",          # missing ')'
    "fit-in/trim/a.jpg",
    "filters:quality(80)/filters:blur(2)/a.jpg",  # the second filters: is image path
])
def test_out_of_order_segments_belong_to_the_image(path):
    p = plan(f"/unsafe/{path}")
    assert p.source.key.endswith("a.jpg") and "/" in p.source.key


def test_second_filters_segment_is_path():
    p = plan("/unsafe/filters:quality(80)/filters:blur(2)/a.jpg")
    assert p.source.key == "filters:blur(2)/a.jpg" and p.output.quality == 80


@pytest.mark.parametrize(("filters", "ops", "output"), [
    ("quality(80)", (), {"quality": 80}),
    ("quality(0)", (), {"quality": 1}),
    ("format(webp)", (), {"format": "webp"}),
    ("format(jpg)", (), {"format": "jpeg"}),
    ("format(avif):quality(50)", (), {"format": "avif", "quality": 50}),
    ("blur(4)", (Blur(sigma=2),), {}),
    ("blur(4,1)", (Blur(sigma=1),), {}),
    ("blur(0)", (), {}),
    ("brightness(40)", (ChannelShift(red=40, green=40, blue=40),), {}),
    ("contrast(-20)", (Modulate(contrast=-36),), {}),  # (1 - 0.2)² = 0.64
    ("contrast(100)", (Modulate(contrast=300),), {}),
    ("saturation(0)", (Modulate(saturation=-100),), {}),
    ("saturation(2.5)", (Modulate(saturation=150),), {}),
    ("saturation(1)", (), {}),
    ("blur(500)", (Blur(sigma=75),), {}),  # Thumbor caps the radius at 150
    ("grayscale()", (Grayscale(),), {}),
    ("rotate(90)", (Rotate(angle=270),), {}),
    ("rotate(-90)", (Rotate(angle=90),), {}),
    ("rotate(180)", (Rotate(angle=180),), {}),
    ("rotate(45)", (), {}),  # not a multiple of 90: ignored, as Thumbor does
    ("rotate(360)", (), {}),
    ("strip_exif():strip_icc()", (), {}),
    ("background_color(00ff00)", (Flatten(background=(0, 255, 0, 255)),),
     {"background": (0, 255, 0, 255)}),
    ("background_color(white)", (Flatten(background=(255, 255, 255, 255)),), {}),
    ("round_corner(20,255,0,0)",
     (RoundCorners(radius=20), Flatten(background=(255, 0, 0, 255))), {}),
    ("round_corner(20|20,0,0,0,1)", (RoundCorners(radius=20, radius_y=20),), {}),
    ("round_corner(10|20,0,0,0,true)", (RoundCorners(radius=10, radius_y=20),), {}),
    ("rgb(10,-20,0)", (ChannelShift(red=10, green=-20),), {}),
    ("rgb(0,0,0)", (), {}),
    ("equalize()", (Equalize(),), {}),
    ("noise(30)", (Noise(amount=30),), {}),
    ("noise(30,7)", (Noise(amount=30, seed=7),), {}),
    ("convolution(1;2;1;2;4;2;1;2;1,3,false)",
     (Convolve(matrix=(1, 2, 1, 2, 4, 2, 1, 2, 1), columns=3, normalize=False),), {}),
    ("proportion(0.5)", (Scale(factor=0.5),), {}),
    ("max_bytes(40000)", (), {"max_bytes": 40000}),
    ("autojpg()", (), {"opaque_png_as_jpeg": True}),
    ("autojpg(false)", (), {"opaque_png_as_jpeg": False}),
    ("cover()", (), {"animated": False}),
    ("sharpen(2,1.0,true)", (Sharpen(sigma=1.5),), {}),
    ("sharpen(0,1.0,true)", (), {}),
    ("watermark(marks/logo.png,-10,-10,50)",
     (Watermark(key="marks/logo.png", x="-10", y="-10", opacity=0.5),), {}),
    ("watermark(logo.png,center,center,0,25)",
     (Watermark(key="logo.png", x="center", y="center", width=0.25),), {}),
    ("watermark(logo.png,repeat,10p,100)",
     (Watermark(key="logo.png", x="repeat", y="10p", opacity=0.0),), {}),
    ("watermark(logo.png,5,5,30,none,40)",
     (Watermark(key="logo.png", x="5", y="5", opacity=0.7, height=0.4),), {}),
    ("grayscale():rotate(90):blur(2)", (Grayscale(), Rotate(angle=270), Blur(sigma=1)), {}),
])
def test_filters(filters, ops, output):
    p = plan(f"/unsafe/filters:{filters}/a.jpg")
    assert p.ops == ops
    for name, value in output.items():
        assert getattr(p.output, name) == value


@pytest.mark.parametrize("name", [
    "foo", "frame", "curve", "colorize", "redeye", "BLUR", "Quality",
])
def test_unknown_or_unbuilt_filters_are_400_naming_them(name):
    with pytest.raises(BadRequest) as caught:
        plan(f"/unsafe/filters:quality(80):{name}(1)/a.jpg")
    assert caught.value.code == "unknown_filter"
    assert name in caught.value.message


@pytest.mark.parametrize("filters", [
    "blur(abc)", "blur(99999)", "blur(-1)", "blur(1,2,3)", "blur()", "quality(-5)",
    "quality(101)", "quality(8.5)", "quality(1e3)", "format(bmp)", "format(heic)",
    "brightness(101)", "contrast(nan)", "saturation(inf)", "rotate(9999)", "rotate(x)",
    "grayscale(1)", "upscale(true)", "background_color(zzz)", "fill(nope)",
    "fill(red,maybe)", "round_corner(20,255,0)", "round_corner(10|20|3,0,0,0)",
    "round_corner(0,0,0,0)", "round_corner(20,256,0,0)", "sharpen(11,1,true)",
    "sharpen(1,1,maybe)", "watermark(logo.png,left,0,50)", "watermark(logo.png,10q,0,50)",
    "watermark(logo.png,0,0,101)", "watermark(logo.png,123456,0,1)",
    "watermark(../x.png,0,0,10)", "watermark(logo.png,0,0,10,none,300)",
    "watermark(logo.png,0,0)", "rgb(1,2)", "rgb(101,0,0)", "noise(1001)", "saturation(11)", "saturation(-1)", "fill(red,TRUE)", "noise(-1)",
    "convolution(1;2;3,2)", "convolution(1;x;1,3)", "convolution(1,16)",
    "convolution(1;1;1,3,maybe)", "proportion(0)", "proportion(2)", "max_bytes(0)",
    "max_age(-1)", "focal(10x10)", "focal(1x1:2)", "autojpg(maybe)", "cover(1)",
    "stretch(1)", "extract_focal()", "equalize(1)",
])
def test_bad_filter_arguments_are_400_naming_the_filter(filters):
    with pytest.raises(BadRequest) as caught:
        plan(f"/unsafe/filters:{filters}/a.jpg")
    assert caught.value.code == "bad_filter_arg", caught.value.message
    assert filters.split("(")[0] in caught.value.message


def test_malformed_filter_list_is_400():
    with pytest.raises(BadRequest) as caught:
        plan("/unsafe/filters:blur(2)x/quality(3)/a.jpg")
    assert caught.value.code == "bad_filter_syntax"


@pytest.mark.parametrize(("path", "code"), [
    ("debug/a.jpg", "unsupported_option"),
    ("trim:500/a.jpg", "bad_param"),
    ("70000x10/a.jpg", "bad_param"),
    ("10x20:5x30/a.jpg", "bad_param"),
    ("300x200/../secret.jpg", "bad_key"),
    ("300x200/", "bad_key"),
    ("", "bad_key"),
])
def test_grammar_errors(path, code):
    with pytest.raises(BadRequest) as caught:
        plan(f"/unsafe/{path}")
    assert caught.value.code == code


@pytest.mark.parametrize(("filters", "ops"), [
    ("fill(red)", (Resize(width=300, height=200, fit="inside", upscale=False),
                   Resize(width=300, height=200, fit="contain", upscale=False,
                          background=(255, 0, 0, 255)))),
    ("fill(blue,true)", (Resize(width=300, height=200, fit="inside", upscale=False),
                         Flatten(background=(0, 0, 255, 255)),
                         Resize(width=300, height=200, fit="contain", upscale=False,
                                background=(0, 0, 255, 255)))),
    ("fill(blur)", (Resize(width=300, height=200, fit="inside", upscale=False),
                    Resize(width=300, height=200, fit="contain", upscale=False,
                           fill="blur"))),
    ("fill(auto)", (Resize(width=300, height=200, fit="inside", upscale=False),
                    Resize(width=300, height=200, fit="contain", upscale=False,
                           fill="average"))),
])
def test_fill_pads_to_the_box_after_the_other_filters(filters, ops):
    assert plan(f"/unsafe/fit-in/300x200/filters:{filters}/a.jpg").ops == ops


def test_meta_max_age_and_orientation_travel_beside_the_plan():
    request = thumbor.compile_request("meta/300x200/filters:max_age(60)/a.jpg", False)
    assert request.meta and request.max_age == 60
    assert request.plan.source.orient is False


def test_extract_focal_takes_the_nested_urls_crop_as_focal_region():
    p = plan("/unsafe/300x200/filters:extract_focal()/localhost:8888/unsafe/"
             "100x150:300x250/photos/a.jpg")
    assert p.source.key == "photos/a.jpg"
    assert p.ops == (Resize(width=300, height=200, fit="cover", gravity="focal",
                            focal_px=(200.0, 200.0)),)


def test_focal_points_move_into_the_manual_crop():
    p = plan("/unsafe/100x100:300x300/50x50/filters:focal(150x150:170x170)/a.jpg")
    assert p.ops[1].focal_px == (60.0, 60.0)


def test_empty_crop_is_no_crop():
    assert plan("/unsafe/0x0:0x0/a.jpg").ops == ()


def test_libthumbor_generated_urls_parse():
    from libthumbor import CryptoURL

    crypto = CryptoURL(key="secret")
    url = crypto.generate(width=300, height=200, smart=True, halign="left", valign="top",
                          crop=((10, 20), (110, 220)), fit_in=False, flip=True,
                          filters=["quality(70)", "grayscale()"], image_url="photos/a.jpg")
    signature, rest, p = thumbor.parse(url)
    assert thumbor.SIGNATURE.fullmatch(signature)
    assert p.source.key == "photos/a.jpg" and p.output.quality == 70
    assert p.ops == (Extract(left=10, top=20, width=100, height=200),
                     Resize(width=300, height=200, fit="cover", gravity="attention"),
                     Flip(horizontal=True), Grayscale())


_SEGMENTS = st.sampled_from([
    "unsafe", "trim", "trim:top-left:10", "10x10:50x50", "fit-in", "full-fit-in",
    "adaptive-fit-in", "300x200", "-10x-0", "origx5", "left", "top", "smart", "meta",
    "filters:blur(2)", "filters:quality(101)", "filters:watermark(a.png,1,1,1)",
    "filters:x(", "a.jpg", "..", "", "%2F", "\x00", "filters:fill(red,true)",
])


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.lists(_SEGMENTS, max_size=8).map(lambda parts: "/" + "/".join(parts)),
    st.text(max_size=200),
))
def test_fuzz_parse_answers_a_plan_or_a_client_error(path):
    try:
        result = thumbor.parse(path)
    except DarkroomError as error:
        assert 400 <= error.status < 500, (path, error)
    else:
        assert result[2].source.key
