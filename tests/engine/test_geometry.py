"""Pure size arithmetic: resize scales, final sizes, gravity, boxes, load-time shrink."""

from __future__ import annotations

import pytest

from darkroom.engine.geometry import (
    clip_box, final_size, focal_box, gravity_offset, jpeg_shrink, load_scale, resize_scales,
    resized_size,
)
from darkroom.plan import Blur, Extract, Flip, Resize, Rotate

FITS = ["cover", "contain", "fill", "inside", "outside"]


@pytest.mark.parametrize("fit", FITS)
def test_one_side_keeps_aspect_whatever_the_fit(fit):
    assert resize_scales(400, 200, Resize(width=100, fit=fit)) == (0.25, 0.25)
    assert resize_scales(400, 200, Resize(height=100, fit=fit)) == (0.5, 0.5)
    assert final_size(400, 200, Resize(width=100, fit=fit)) == (100, 50)
    assert final_size(400, 200, Resize(height=100, fit=fit)) == (200, 100)


@pytest.mark.parametrize(("fit", "scales", "resized", "final"), [
    ("inside", (0.25, 0.25), (100, 50), (100, 50)),
    ("contain", (0.25, 0.25), (100, 50), (100, 100)),
    ("outside", (0.5, 0.5), (200, 100), (200, 100)),
    ("cover", (0.5, 0.5), (200, 100), (100, 100)),
    ("fill", (0.25, 0.5), (100, 100), (100, 100)),
])
def test_both_sides_per_fit(fit, scales, resized, final):
    op = Resize(width=100, height=100, fit=fit)
    assert resize_scales(400, 200, op) == scales
    assert resized_size(400, 200, op) == resized
    assert final_size(400, 200, op) == final


@pytest.mark.parametrize(("fit", "final"), [
    ("inside", (40, 20)),      # never enlarged
    ("outside", (40, 20)),
    ("fill", (40, 20)),
    ("cover", (40, 20)),       # the crop cannot be larger than the image
    ("contain", (100, 100)),   # the whole box, the image unscaled inside it
])
def test_no_upscale_keeps_small_images_at_their_size(fit, final):
    op = Resize(width=100, height=100, fit=fit, upscale=False)
    assert resize_scales(40, 20, op) == (1.0, 1.0)
    assert final_size(40, 20, op) == final


def test_no_upscale_still_shrinks():
    op = Resize(width=100, height=100, fit="cover", upscale=False)
    assert final_size(400, 50, op) == (100, 50)  # scaled by 1 (capped), then cropped
    assert final_size(400, 200, Resize(width=100, upscale=False)) == (100, 50)


def test_fill_without_upscale_clamps_each_axis_alone():
    assert resize_scales(50, 400, Resize(width=100, height=100, fit="fill", upscale=False)) \
        == (1.0, 0.25)


def test_tiny_results_are_at_least_one_pixel():
    assert final_size(10000, 10, Resize(width=100)) == (100, 1)
    assert final_size(10, 10000, Resize(height=100)) == (1, 100)


@pytest.mark.parametrize(("gravity", "offset"), [
    ("center", (50, 20)), ("north", (50, 0)), ("south", (50, 40)), ("east", (100, 20)),
    ("west", (0, 20)), ("northeast", (100, 0)), ("northwest", (0, 0)),
    ("southeast", (100, 40)), ("southwest", (0, 40)), ("attention", (50, 20)),
])
def test_gravity_offset(gravity, offset):
    assert gravity_offset(100, 40, gravity) == offset


@pytest.mark.parametrize(("x", "y", "box"), [
    (0.5, 0.5, (50, 25, 100, 50)),
    (0.0, 0.0, (0, 0, 100, 50)),      # clamped inside at the top-left
    (1.0, 1.0, (100, 50, 100, 50)),   # and at the bottom-right
    (0.8, 0.2, (100, 0, 100, 50)),
])
def test_focal_box_centres_and_stays_inside(x, y, box):
    assert focal_box(200, 100, 100, 50, x, y) == box


@pytest.mark.parametrize(("box", "clipped"), [
    ((10, 10, 50, 50), (10, 10, 50, 50)),
    ((150, 80, 100, 100), (150, 80, 50, 20)),
    ((200, 0, 10, 10), None),
    ((0, 100, 10, 10), None),
])
def test_clip_box(box, clipped):
    assert clip_box(200, 100, box) == clipped


def test_load_scale_is_the_first_resize():
    assert load_scale(1000, 500, (Resize(width=250),), swap=False) == 0.25
    assert load_scale(1000, 500, (Resize(width=250), Resize(width=900)), swap=False) == 0.25


def test_load_scale_never_above_one():
    assert load_scale(100, 100, (Resize(width=400),), swap=False) == 1.0
    assert load_scale(100, 100, (), swap=False) == 1.0


def test_load_scale_uses_the_larger_scale_of_cover_and_fill():
    assert load_scale(1000, 500, (Resize(width=100, height=100, fit="cover"),), False) == 0.2
    assert load_scale(1000, 500, (Resize(width=100, height=100, fit="fill"),), False) == 0.2


@pytest.mark.parametrize(("ops", "swap", "scale"), [
    ((Rotate(angle=90), Resize(width=250)), False, 0.5),     # 1000x500 turned: 500 wide
    ((Rotate(angle=-90), Resize(width=250)), False, 0.5),
    ((Rotate(angle=180), Resize(width=250)), False, 0.25),
    ((Rotate(angle=90), Rotate(angle=270), Resize(width=250)), False, 0.25),
    ((Resize(width=250),), True, 0.5),                         # EXIF 5-8 swaps the sides
    ((Rotate(angle=90), Resize(width=250)), True, 0.25),       # EXIF swap and a turn cancel
    ((Flip(horizontal=True), Resize(width=250)), False, 0.25),
])
def test_load_scale_through_quarter_turns_and_exif(ops, swap, scale):
    assert load_scale(1000, 500, ops, swap) == scale


def test_load_scale_keeps_every_side_at_least_one_pixel():
    assert load_scale(6, 660, (Resize(height=32),), swap=False) == pytest.approx(1 / 6)
    assert load_scale(660, 6, (Rotate(angle=90), Resize(height=32)), swap=False) \
        == pytest.approx(1 / 6)


@pytest.mark.parametrize("first", [
    Rotate(angle=30), Blur(sigma=2), Extract(left=0, top=0, width=10, height=10),
])
def test_load_scale_is_full_size_when_another_op_comes_first(first):
    assert load_scale(1000, 500, (first, Resize(width=100)), swap=False) == 1.0


@pytest.mark.parametrize(("scale", "shrink"), [
    (1.0, 1), (0.6, 1), (0.51, 1), (0.5, 2), (0.3, 2), (0.25, 4), (0.2, 4),
    (0.125, 8), (0.01, 8),
])
def test_jpeg_shrink_keeps_enough_pixels(scale, shrink):
    assert jpeg_shrink(scale) == shrink
    assert scale * shrink <= 1.0
