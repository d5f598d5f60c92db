"""Colours: CSS-style hex in 3, 4, 6 or 8 digits, a few names, always RGBA out."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from darkroom.errors import BadRequest
from darkroom.plan import EditPlan, Output, Pad, parse_color


@pytest.mark.parametrize(("text", "rgba"), [
    ("f80", (255, 136, 0, 255)),
    ("#f80", (255, 136, 0, 255)),
    ("f808", (255, 136, 0, 136)),
    ("ff8800", (255, 136, 0, 255)),
    ("#FF8800", (255, 136, 0, 255)),
    ("ff880080", (255, 136, 0, 128)),
    ("  00000000 ", (0, 0, 0, 0)),
    ("white", (255, 255, 255, 255)),
    ("Black", (0, 0, 0, 255)),
    ("transparent", (0, 0, 0, 0)),
    ("red", (255, 0, 0, 255)),
    ("grey", (128, 128, 128, 255)),
    ("gray", (128, 128, 128, 255)),
])
def test_parse_color(text, rgba):
    assert parse_color(text) == rgba


@pytest.mark.parametrize("text", [
    "", "#", "ff", "fffff", "fffffff", "fffffffff", "ggg", "12345z", "rgb(1,2,3)", "purple",
    "#-12", "0x123",
])
def test_bad_colour_is_400_bad_color(text):
    with pytest.raises(BadRequest) as raised:
        parse_color(text)
    assert (raised.value.status, raised.value.code) == (400, "bad_color")


def test_colours_in_models_accept_text_and_lists():
    assert Pad(color="f00").color == (255, 0, 0, 255)
    assert Pad(color=[1, 2, 3]).color == (1, 2, 3, 255)
    assert Pad(color=(1, 2, 3, 4)).color == (1, 2, 3, 4)
    assert Output(background="transparent").background == (0, 0, 0, 0)


@pytest.mark.parametrize("value", [[256, 0, 0], [0, 0, 0, -1], [1, 2], [1, 2, 3, 4, 5]])
def test_out_of_range_colour_lists_are_refused(value):
    with pytest.raises(ValidationError):
        Pad(color=value)


@pytest.mark.parametrize("build", [
    lambda: Pad(color="nope"),
    lambda: EditPlan.model_validate({"ops": [{"op": "pad", "color": "nope"}]}),
    lambda: EditPlan.model_validate_json('{"output": {"background": "zz"}}'),
])
def test_a_bad_colour_string_in_a_plan_is_bad_color(build):
    # the validator's BadRequest reaches the client as 400 bad_color, not a 422 or a 500
    with pytest.raises(BadRequest) as raised:
        build()
    assert (raised.value.status, raised.value.code) == (400, "bad_color")


def test_colours_serialise_as_8_digit_hex():
    assert Pad(color="f80").model_dump(mode="json")["color"] == "ff8800ff"
