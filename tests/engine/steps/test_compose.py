"""Steps that combine images: rounded corners and watermarks."""

from __future__ import annotations

import pytest

from darkroom.errors import DarkroomError, NotFound
from darkroom.plan import RoundCorners, Watermark

from ..helpers import (
    BLUE, GREEN, LOSSLESS, LOSSY, RED, assert_colour, decode, halves, pixel, png, run,
    run_image, solid,
)

MARK = png(solid(20, 20, GREEN))


def test_round_corners_make_the_corners_transparent():
    _, image = run_image(halves(), RoundCorners(radius=30))
    assert image.bands == 4
    for x, y in [(0, 0), (199, 0), (0, 99), (199, 99)]:
        assert pixel(image, x, y)[3] == 0, f"corner {x},{y}"
    assert pixel(image, 100, 50)[3] == 255
    assert pixel(image, 30, 0)[3] == 255, "the straight edge past the radius is opaque"


def test_round_corners_radius_larger_than_the_image_is_clamped():
    result, image = run_image(halves(), RoundCorners(radius=5000))
    assert (result.width, result.height) == (200, 100)
    assert pixel(image, 100, 50)[3] == 255


def test_round_corners_into_jpeg_show_the_output_background():
    result = run(png(halves()), RoundCorners(radius=30), format="jpeg", background="ff00ff")
    image = decode(result.data)
    assert image.bands == 3
    assert_colour(pixel(image, 0, 0), (255, 0, 255), LOSSY, "corner")
    assert_colour(pixel(image, 150, 50), BLUE, LOSSY, "middle")


def test_round_corners_keep_existing_transparency():
    half_clear = halves(left=(255, 0, 0, 255), right=(0, 0, 255, 0))
    _, image = run_image(half_clear, RoundCorners(radius=10))
    assert pixel(image, 150, 50)[3] == 0


@pytest.mark.parametrize(("gravity", "inside", "outside"), [
    ("southeast", (190, 90), (170, 70)),
    ("northwest", (10, 10), (30, 30)),
    ("northeast", (190, 10), (170, 30)),
    ("southwest", (10, 90), (30, 70)),
])
def test_watermark_lands_at_the_gravity_corner(gravity, inside, outside):
    _, image = run_image(halves(), Watermark(key="m", gravity=gravity), assets={"m": MARK})
    assert_colour(pixel(image, *inside), GREEN, LOSSLESS, "under the mark")
    assert pixel(image, *outside)[1] < 5, "no green outside the mark"


def test_watermark_opacity_blends():
    _, image = run_image(halves(), Watermark(key="m", opacity=0.5), assets={"m": MARK})
    assert_colour(pixel(image, 190, 90), (0, 128, 128), 3, "half green over blue")


def test_watermark_margin():
    _, image = run_image(halves(), Watermark(key="m", gravity="northwest", margin=5),
                         assets={"m": MARK})
    assert_colour(pixel(image, 2, 2), RED, LOSSLESS, "inside the margin")
    assert_colour(pixel(image, 10, 10), GREEN, LOSSLESS, "on the mark")


def test_watermark_width_as_a_fraction():
    _, image = run_image(halves(), Watermark(key="m", gravity="east", width=0.25),
                         assets={"m": MARK})
    assert_colour(pixel(image, 160, 50), GREEN, LOSSLESS, "mark is 50 px wide")
    assert_colour(pixel(image, 140, 50), BLUE, LOSSLESS, "left of the mark")


def test_watermark_larger_than_the_image_is_shrunk_to_fit():
    big = png(solid(1000, 1000, GREEN))
    result, image = run_image(halves(), Watermark(key="m", gravity="west"),
                              assets={"m": big})
    assert (result.width, result.height) == (200, 100)
    assert_colour(pixel(image, 50, 50), GREEN, LOSSLESS, "mark shrunk to 100x100")
    assert_colour(pixel(image, 150, 50), BLUE, LOSSLESS, "rest untouched")


def test_watermark_transparent_pixels_leave_the_image_alone():
    ring = solid(20, 20, (0, 255, 0, 0)).insert(solid(6, 6, (0, 255, 0, 255)), 7, 7)
    _, image = run_image(halves(), Watermark(key="m"), assets={"m": png(ring)})
    assert_colour(pixel(image, 182, 82), BLUE, LOSSLESS, "transparent part of the mark")
    assert_colour(pixel(image, 190, 90), GREEN, LOSSLESS, "opaque part of the mark")


def test_missing_watermark_is_404():
    with pytest.raises(NotFound) as raised:
        run_image(halves(), Watermark(key="nope"), assets={"m": MARK})
    assert (raised.value.status, raised.value.code) == (404, "watermark_not_found")


def test_watermark_that_is_not_an_image_is_refused():
    with pytest.raises(DarkroomError) as raised:
        run_image(halves(), Watermark(key="m"), assets={"m": b"hello, not an image"})
    assert raised.value.status == 415
