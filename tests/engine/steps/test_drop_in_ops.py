"""Operations the drop-in grammars need: scale, contain bars from the image, focal points
in pixels, adaptive boxes, source sides, bottom-right trim, elliptic corners, round crop,
watermark positions and tiling; output size caps, first frame only, opaque PNG as JPEG,
and ignoring the EXIF orientation."""

from __future__ import annotations

import pytest

from darkroom.config import Limits
from darkroom.engine import render
from darkroom.plan import (
    EditPlan, Output, Resize, RoundCorners, RoundCrop, Scale, Source, Trim, Watermark,
)

from ..helpers import (
    BLUE, GREEN, LOSSLESS, RED, WHITE, assert_colour, decode, frame_count, halves, one,
    pixel, png, read, run, run_image, solid, with_square,
)

MARK = png(solid(20, 20, GREEN))


def test_scale_by_a_factor():
    result, _ = run_image(halves(), Scale(factor=0.25))
    assert (result.width, result.height) == (50, 25)


def test_contain_bars_can_be_the_mean_colour():
    result, image = run_image(halves(), Resize(width=100, height=100, fit="contain",
                                               fill="average"))
    assert (result.width, result.height) == (100, 100)
    assert_colour(pixel(image, 50, 2), (128, 0, 128), 3, "bar: mean of red and blue")


def test_contain_bars_can_be_the_image_blurred():
    _, image = run_image(halves(), Resize(width=100, height=100, fit="contain", fill="blur"))
    top_left, top_right = pixel(image, 2, 2), pixel(image, 97, 2)
    assert top_left[0] > top_left[2] and top_right[2] > top_right[0]  # red left, blue right
    assert image.bands == 3


def test_focal_point_in_pixels_steers_the_cover_crop():
    base = with_square(solid(200, 100, WHITE), RED, 170, 40, 20)
    _, image = run_image(base, Resize(width=50, height=100, fit="cover", gravity="focal",
                                      focal_px=(180.0, 50.0)))
    assert_colour(pixel(image, 30, 50), RED, LOSSLESS, "the focal square is kept")


def test_adaptive_box_turns_to_the_image_orientation():
    result, _ = run_image(halves(), Resize(width=50, height=100, adaptive=True))
    assert (result.width, result.height) == (100, 50)


def test_source_side_takes_the_image_side():
    result, _ = run_image(halves(), Resize(width="source", height=20, fit="cover"))
    assert (result.width, result.height) == (200, 20)


def test_trim_bottom_right_uses_that_corner():
    base = with_square(solid(100, 100, BLUE), WHITE, 50, 50, 50)  # white bottom-right
    result, _ = run_image(base, Trim(threshold=10, corner="bottom-right"))
    assert (result.width, result.height) == (100, 100)  # white is not a border here
    framed = with_square(solid(100, 100, WHITE), BLUE, 0, 0, 60)
    result, _ = run_image(framed, Trim(threshold=10, corner="bottom-right"))
    assert (result.width, result.height) == (60, 60)


def test_elliptic_corners():
    _, image = run_image(solid(100, 100, RED), RoundCorners(radius=40, radius_y=10))
    assert pixel(image, 2, 2)[3] == 0
    assert pixel(image, 5, 3)[3] < 128  # inside a 40 x 10 corner
    assert pixel(image, 3, 12)[3] == 255  # a 40 px circle would cut this


def test_round_crop_keeps_the_centred_ellipse():
    _, image = run_image(solid(100, 60, RED), RoundCrop())
    assert pixel(image, 50, 30)[3] == 255
    assert pixel(image, 3, 3)[3] == 0 and pixel(image, 96, 56)[3] == 0


def test_round_crop_as_sih_keeps_a_circle_cut_to_its_box():
    result, image = run_image(solid(100, 60, RED), RoundCrop(circle=True, crop=True))
    assert (result.width, result.height) == (60, 60)
    assert pixel(image, 30, 30)[3] == 255 and pixel(image, 2, 2)[3] == 0


@pytest.mark.parametrize(("x", "y", "green_at", "not_green_at"), [
    ("10", "20", (15, 25), (5, 25)),
    ("-10", "-5", (175, 80), (195, 80)),  # right edge 10 px from the right
    ("50p", "center", (105, 50), (95, 50)),  # left edge at half the width
])
def test_watermark_positions(x, y, green_at, not_green_at):
    _, image = run_image(halves(), Watermark(key="m", x=x, y=y), assets={"m": MARK})
    assert_colour(pixel(image, *green_at), GREEN, LOSSLESS)
    assert pixel(image, *not_green_at)[1] < 5


def test_watermark_repeat_tiles_the_axis():
    _, image = run_image(halves(), Watermark(key="m", x="repeat", y="0"), assets={"m": MARK})
    greens = sum(pixel(image, x, 5)[1] > 200 for x in range(0, 200, 5))
    assert greens == 40  # ten marks side by side cover the top row
    assert pixel(image, 100, 50)[1] < 5


def test_watermark_height_ratio_bounds_the_mark():
    _, image = run_image(halves(), Watermark(key="m", x="0", y="0", width=1.0, height=0.5),
                         assets={"m": MARK})
    assert_colour(pixel(image, 45, 45), GREEN, LOSSLESS)  # 50 x 50: half the height
    assert pixel(image, 55, 55)[1] < 5


def test_max_bytes_lowers_the_quality_until_it_fits():
    photo = read(one("photo", "ok"))
    full = run(photo, Resize(width=400), format="jpeg")
    capped = run(photo, Resize(width=400), format="jpeg", max_bytes=len(full.data) // 3)
    assert len(capped.data) <= len(full.data) // 3
    assert (capped.width, capped.height) == (full.width, full.height)


def test_animated_false_keeps_the_first_frame_only():
    data = read(one("animated", "ok"))
    assert frame_count(run(data, format="gif").data) > 1
    assert frame_count(run(data, format="gif", animated=False).data) == 1


def test_opaque_png_as_jpeg_only_without_alpha():
    opaque = run(png(solid(10, 10, RED)), format="source", opaque_png_as_jpeg=True)
    clear = run(png(solid(10, 10, (255, 0, 0, 9))), format="source", opaque_png_as_jpeg=True)
    assert (opaque.format, clear.format) == ("jpeg", "png")


def test_orientation_can_be_ignored():
    data = read(one("exif-orientation-6"))
    upright = run(data, format="png")
    ignored = render(EditPlan(source=Source(orient=False), output=Output(format="png")),
                     data, Limits())
    assert (ignored.width, ignored.height) == (upright.height, upright.width)
    assert decode(ignored.data).width == upright.height
