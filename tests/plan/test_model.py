"""EditPlan: canonical JSON, recipe hash, frozen and strict."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from darkroom.plan import (
    Blur, EditPlan, Extract, Output, Pad, Resize, Rotate, Source, Watermark,
)

PLAN = EditPlan(
    source=Source(key="photos/cat.jpg", page=1),
    ops=(Resize(width=300, height=200, fit="cover", gravity="north"), Blur(sigma=2.5),
         Pad(top=4, color="ff8800"), Watermark(key="logo.png", opacity=0.5)),
    output=Output(format="webp", quality=70, background="black"),
)


def test_canonical_json_round_trips():
    text = PLAN.canonical_json()
    again = EditPlan.model_validate_json(text)
    assert again == PLAN
    assert again.canonical_json() == text


def test_canonical_json_is_sorted_compact_and_complete():
    text = PLAN.canonical_json()
    assert " " not in text
    body = json.loads(text)
    assert list(body) == sorted(body)
    assert body["output"]["lossless"] is False  # defaults are written out
    assert body["ops"][2]["color"] == "ff8800ff"  # colours as 8-digit hex


def test_equal_plans_from_different_spellings_are_equal():
    spelled = EditPlan.model_validate({
        "source": {"key": "photos/cat.jpg", "page": 1},
        "ops": [
            {"op": "resize", "width": 300, "height": 200, "fit": "cover", "gravity": "north"},
            {"op": "blur", "sigma": 2.5},
            {"op": "pad", "top": 4, "color": "#FF8800"},
            {"op": "watermark", "key": "logo.png", "opacity": 0.5},
        ],
        "output": {"format": "webp", "quality": 70, "background": [0, 0, 0]},
    })
    assert spelled == PLAN
    assert spelled.canonical_json() == PLAN.canonical_json()
    assert spelled.recipe_hash == PLAN.recipe_hash


def test_recipe_hash_is_stable_hex():
    assert len(PLAN.recipe_hash) == 64
    assert PLAN.recipe_hash == PLAN.model_copy().recipe_hash


def test_key_is_not_in_the_recipe_hash():
    other = PLAN.model_copy(update={"source": Source(key="elsewhere/dog.png", page=1)})
    assert other.recipe_hash == PLAN.recipe_hash
    assert other.canonical_json() != PLAN.canonical_json()


@pytest.mark.parametrize("change", [
    {"ops": (Resize(width=301, height=200, fit="cover", gravity="north"),)},
    {"ops": PLAN.ops[:2]},
    {"ops": tuple(reversed(PLAN.ops))},
    {"output": Output(format="avif", quality=70, background="black")},
    {"source": Source(key="photos/cat.jpg", page=2)},
])
def test_different_recipes_hash_differently(change):
    before = PLAN.recipe_hash  # computed (and cached) before the copy is made
    assert PLAN.model_copy(update=change).recipe_hash != before


def test_plans_are_frozen_and_hashable():
    with pytest.raises(ValidationError):
        PLAN.output.quality = 5
    assert hash(PLAN) == hash(EditPlan.model_validate_json(PLAN.canonical_json()))


@pytest.mark.parametrize("body", [
    {"ops": [{"op": "explode"}]},
    {"ops": [{"op": "resize", "width": 10, "colour": "red"}]},
    {"output": {"format": "bmp"}},
    {"output": {"quality": 0}},
    {"output": {"quality": 101}},
    {"source": {"page": -1}},
    {"source": {"key": "k" * 1025}},
    {"surprise": True},
])
def test_unknown_or_out_of_range_fields_are_refused(body):
    with pytest.raises(ValidationError):
        EditPlan.model_validate(body)


def test_defaults():
    plan = EditPlan()
    assert plan.ops == ()
    assert (plan.source.page, plan.output.format, plan.output.keep_metadata) == (0, "source",
                                                                               False)
    assert plan.output.background == (255, 255, 255, 255)


def test_ops_keep_their_order_and_type():
    plan = EditPlan.model_validate({"ops": [
        {"op": "rotate", "angle": 90}, {"op": "extract", "left": 1, "top": 2, "width": 3,
                                        "height": 4}]})
    assert isinstance(plan.ops[0], Rotate) and isinstance(plan.ops[1], Extract)
