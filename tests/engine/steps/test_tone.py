"""Steps that remap colour values: rgb, equalize, normalize, noise, convolve, tint,
negate, flatten; and that each carries alpha through untouched."""

from __future__ import annotations

import pytest

from darkroom.plan import (
    ChannelShift, Convolve, Equalize, Flatten, Negate, Noise, Normalize, Tint,
)

from ..helpers import (
    BLUE, GREY, LOSSLESS, RED, assert_colour, halves, pixel, run_image, solid,
)


def test_rgb_adds_a_percentage_of_full_scale_per_channel():
    _, image = run_image(solid(10, 10, GREY), ChannelShift(red=10, green=0, blue=-20))
    assert_colour(pixel(image, 5, 5), (128 + 25.5, 128, 128 - 51), LOSSLESS)


def test_rgb_clips_at_the_ends():
    _, image = run_image(solid(10, 10, (250, 5, 128)), ChannelShift(red=50, green=-50))
    assert_colour(pixel(image, 5, 5), (255, 0, 128), LOSSLESS)


def test_equalize_spreads_a_narrow_range_over_the_whole_scale():
    _, image = run_image(halves(left=(100,) * 3, right=(110,) * 3), Equalize())
    dark, light = pixel(image, 10, 50)[0], pixel(image, 190, 50)[0]
    assert light - dark > 100, (dark, light)


def test_normalize_stretches_lightness_to_black_and_white():
    _, image = run_image(halves(left=(90,) * 3, right=(160,) * 3), Normalize())
    assert pixel(image, 10, 50)[0] < 10
    assert pixel(image, 190, 50)[0] > 245


def test_noise_is_repeatable_for_a_seed_and_differs_between_seeds():
    base = solid(64, 64, GREY)
    first = run_image(base, Noise(amount=60, seed=7))[0].data
    again = run_image(base, Noise(amount=60, seed=7))[0].data
    other = run_image(base, Noise(amount=60, seed=8))[0].data
    assert first == again and first != other
    image = run_image(base, Noise(amount=60, seed=7))[1]
    assert image.extract_band(0).deviate() > 5  # grain is really there
    assert abs(image.extract_band(0).avg() - 128) < 4  # and centred


def test_convolve_with_a_normalised_box_kernel_blurs_and_keeps_flat_areas():
    _, image = run_image(halves(), Convolve(matrix=(1,) * 9, columns=3))
    assert_colour(pixel(image, 10, 50), RED, LOSSLESS)
    r, _, b = pixel(image, 100, 50)[:3]
    assert 60 < r < 200 and 60 < b < 200


def test_convolve_edge_kernel_without_normalising_finds_the_edge():
    kernel = (-1, 0, 1, -2, 0, 2, -1, 0, 1)
    _, image = run_image(halves(left=(0,) * 3, right=(200,) * 3),
                         Convolve(matrix=kernel, columns=3, normalize=False))
    assert pixel(image, 10, 50)[0] == 0  # flat: no edge
    assert pixel(image, 100, 50)[0] == 255  # the step, clipped


def test_tint_keeps_lightness_and_takes_the_colour():
    _, image = run_image(halves(left=(40,) * 3, right=(200,) * 3), Tint(color=(255, 0, 0, 255)))
    dark, light = pixel(image, 10, 50), pixel(image, 190, 50)
    assert dark[0] > dark[1] and light[0] > light[1] + 20  # reddish both
    assert sum(light[:3]) > sum(dark[:3]) + 200  # lightness kept


def test_negate_inverts_colour_and_leaves_alpha_unless_asked():
    half_clear = solid(10, 10, (255, 0, 0, 128))
    _, kept = run_image(half_clear, Negate())
    _, both = run_image(half_clear, Negate(alpha=True))
    assert_colour(pixel(kept, 5, 5), (0, 255, 255, 128), LOSSLESS)
    assert_colour(pixel(both, 5, 5)[3:], (127,), LOSSLESS)


def test_flatten_puts_transparency_on_the_background_and_drops_alpha():
    clear = solid(10, 10, (0, 0, 0, 0))
    _, image = run_image(clear, Flatten(background=(0, 0, 255, 255)))
    assert image.bands == 3
    assert_colour(pixel(image, 5, 5), BLUE, LOSSLESS)


@pytest.mark.parametrize("op", [
    ChannelShift(red=20), Equalize(), Normalize(), Noise(amount=10), Tint(color=(0, 0, 255, 255)),
    Convolve(matrix=(1,) * 9, columns=3),
])
def test_alpha_passes_through(op):
    _, image = run_image(solid(20, 20, (200, 100, 50, 77)), op)
    assert image.bands == 4
    assert_colour(pixel(image, 10, 10)[3:], (77,), LOSSLESS)
