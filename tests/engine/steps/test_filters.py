"""Steps that change pixel values only: blur, sharpen, modulate, grayscale."""

from __future__ import annotations

import pytest

from darkroom.plan import Blur, Grayscale, Modulate, Sharpen

from ..helpers import (
    BLUE, GREY, LOSSLESS, RED, assert_colour, halves, pixel, run_image, solid,
)


def grey_step(dark: int = 100, light: int = 150):
    """A 200x100 image: left half `dark` grey, right half `light` grey."""
    return halves(left=(dark,) * 3, right=(light,) * 3)


def test_blur_softens_the_edge_and_leaves_flat_areas():
    _, image = run_image(halves(), Blur(sigma=5))
    r, _, b = pixel(image, 100, 50)[:3]
    assert 60 < r < 200 and 60 < b < 200, "the seam is a mix of both sides"
    assert_colour(pixel(image, 10, 50), RED, LOSSLESS, "far left")
    assert_colour(pixel(image, 190, 50), BLUE, LOSSLESS, "far right")


def test_blur_does_not_darken_soft_alpha_edges():
    # a red square on transparent black: blurred edges must stay red, only less opaque
    square = solid(40, 40, (255, 0, 0, 255)).embed(30, 30, 100, 100, extend="background",
                                                    background=[0, 0, 0, 0])
    _, image = run_image(square, Blur(sigma=4))
    r, g, b, a = pixel(image, 30, 50)
    assert 0 < a < 255
    assert r > 230 and g < 10 and b < 10


def test_sharpen_overshoots_at_an_edge():
    _, image = run_image(grey_step(), Sharpen(sigma=2))
    assert pixel(image, 98, 50)[0] < 100 - 3, "dark side gets darker next to the edge"
    assert pixel(image, 101, 50)[0] > 150 + 3, "light side gets lighter next to the edge"
    assert_colour(pixel(image, 10, 50), (100,) * 3, LOSSLESS, "flat area")


@pytest.mark.parametrize(("brightness", "value"), [(50, 150), (-50, 50), (0, 100)])
def test_brightness_scales_values(brightness, value):
    _, image = run_image(solid(20, 20, (100,) * 3), Modulate(brightness=brightness))
    assert_colour(pixel(image, 10, 10), (value,) * 3, LOSSLESS, "grey")


def test_contrast_spreads_around_the_middle():
    _, image = run_image(grey_step(50, 200), Modulate(contrast=50))
    assert_colour(pixel(image, 10, 50), (11,) * 3, LOSSLESS, "dark")     # (50-128)*1.5+128
    assert_colour(pixel(image, 190, 50), (236,) * 3, LOSSLESS, "light")  # (200-128)*1.5+128


def test_desaturate_gives_grey():
    _, image = run_image(halves(), Modulate(saturation=-100))
    for x in (10, 190):
        r, g, b = pixel(image, x, 50)[:3]
        assert abs(r - g) <= 2 and abs(g - b) <= 2


def test_saturation_increases_chroma():
    muted = (150, 110, 100)
    _, image = run_image(solid(20, 20, muted), Modulate(saturation=60))
    r, g, b = pixel(image, 10, 10)[:3]
    assert max(r, g, b) - min(r, g, b) > max(muted) - min(muted) + 10


def test_grayscale_has_equal_bands_everywhere():
    _, image = run_image(halves(), Grayscale())
    assert image.bands == 3
    r, g, b = image.extract_band(0), image.extract_band(1), image.extract_band(2)
    assert (r - g).abs().max() == 0 and (g - b).abs().max() == 0
    assert pixel(image, 10, 50)[0] != pixel(image, 190, 50)[0], "red and blue differ in luma"


@pytest.mark.parametrize("op", [Grayscale(), Modulate(brightness=30), Sharpen(sigma=1),
                                Blur(sigma=1)])
def test_filters_keep_the_alpha_band(op):
    half_clear = halves(left=(255, 0, 0, 255), right=(0, 0, 255, 0))
    _, image = run_image(half_clear, op)
    assert image.bands == 4
    assert pixel(image, 10, 50)[3] == 255
    assert pixel(image, 190, 50)[3] == 0


def test_filters_on_a_grey_source():
    result, image = run_image(solid(30, 30, GREY).extract_band(0).copy(interpretation="b-w"),
                              Modulate(brightness=10), Grayscale())
    assert result.width == 30 and image.bands in (1, 3)
