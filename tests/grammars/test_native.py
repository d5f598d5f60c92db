"""The native query grammar: what each parameter compiles to, and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darkroom.errors import BadRequest, DarkroomError
from darkroom.grammars.native import PARAMS, parse
from darkroom.plan import (
    Blur, Extract, Flip, Grayscale, Modulate, Pad, Resize, Rotate, RoundCorners, Sharpen,
    Trim, Watermark,
)


def q(text: str) -> list[tuple[str, str]]:
    return [tuple(part.split("=", 1)) for part in text.split("&") if part]


def test_resize_with_dpr_crop_and_output():
    plan = parse("a/b.jpg", q("w=400&h=300&fit=cover&crop=top,left&dpr=2&fm=webp&q=70"))
    assert plan.source.key == "a/b.jpg"
    assert plan.ops == (Resize(width=800, height=600, fit="cover", gravity="northwest"),)
    assert (plan.output.format, plan.output.quality) == ("webp", 70)


def test_operations_run_in_a_fixed_order_whatever_the_query_order():
    a = parse("k", q("gray=1&w=100&rot=90&trim=auto&blur=2"))
    b = parse("k", q("blur=2&trim=auto&rot=90&w=100&gray=1"))
    assert a == b
    assert [op.op for op in a.ops] == ["trim", "rotate", "resize", "blur", "grayscale"]


def test_every_operation_parameter():
    plan = parse("k", q(
        "trim=12&rot=30&bg=ff0000&flip=hv&rect=1,2,30,40&w=10&blur=1.5&sharp=2&bri=10&con=-5"
        "&sat=20&gray=true&radius=4&pad=1,2,3,4&mark=logo.png&mark-pos=top,right"
        "&mark-alpha=50&mark-w=0.25&mark-pad=6&lossless=1&strip=false&page=2"))
    assert plan.ops == (
        Trim(threshold=12),
        Rotate(angle=30, background=(255, 0, 0, 255)),
        Flip(horizontal=True, vertical=True),
        Extract(left=1, top=2, width=30, height=40),
        Resize(width=10, background=(255, 0, 0, 255)),
        Blur(sigma=1.5), Sharpen(sigma=2),
        Modulate(brightness=10, contrast=-5, saturation=20),
        Grayscale(), RoundCorners(radius=4),
        Pad(top=1, right=2, bottom=3, left=4, color=(255, 0, 0, 255)),
        Watermark(key="logo.png", gravity="northeast", opacity=0.5, width=0.25, margin=6),
    )
    assert plan.output.lossless and plan.output.keep_metadata
    assert plan.source.page == 1


def test_focal_point_crop():
    plan = parse("k", q("w=10&h=10&fit=cover&crop=focalpoint&fp-x=0.2&fp-y=0.9"))
    assert plan.ops[0].gravity == "focal" and plan.ops[0].focal == (0.2, 0.9)


def test_signature_and_download_parameters_are_not_operations():
    assert parse("k", q("w=5&s=abc&exp=123&dl=x")) == parse("k", q("w=5"))


@pytest.mark.parametrize("query,code", [
    ("zoom=2", "unknown_param"),
    ("w=1&w=2", "duplicate_param"),
    ("w=abc", "bad_param"),
    ("w=0", "bad_param"),
    ("w=-5", "bad_param"),
    ("w=70000", "bad_param"),
    ("rot=361", "bad_param"),
    ("blur=1000", "bad_param"),
    ("sharp=-1", "bad_param"),
    ("bri=101", "bad_param"),
    ("fit=squash", "bad_param"),
    ("crop=faces", "bad_param"),
    ("fm=bmp", "bad_param"),
    ("q=0", "bad_param"),
    ("q=101", "bad_param"),
    ("bg=nothex", "bad_color"),
    ("pad=1,2", "bad_param"),
    ("rect=1,2,3", "bad_param"),
    ("dpr=0", "bad_param"),
    ("dpr=6", "bad_param"),
    ("page=0", "bad_param"),
    ("mark-alpha=150&mark=a.png", "bad_param"),
    ("fp-x=2&w=5&h=5&fit=cover&crop=focalpoint", "bad_param"),
])
def test_bad_queries_are_400_with_a_precise_code(query, code):
    with pytest.raises(BadRequest) as caught:
        parse("k", q(query))
    assert caught.value.code == code
    assert caught.value.status == 400


names = st.sampled_from(sorted(PARAMS) + ["s", "exp", "dl", "x", ""])
values = st.one_of(
    st.text(max_size=12),
    st.integers(-10**9, 10**9).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["auto", "cover", "top,left", "fff", "1,2,3,4", "true", "nan", "inf"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(names, values), max_size=8))
def test_fuzz_any_query_compiles_or_is_a_4xx(query):
    try:
        parse("k.jpg", query)
    except DarkroomError as error:
        assert 400 <= error.status < 500
