"""Caps on bytes, pixels, frames and output size: from the header, and after every step.

Where a test must prove a cap is checked before pixels are decoded, it uses a truncated
source: decoding it would fail with 422 corrupt_image, so a 413 shows nothing was decoded.
"""

from __future__ import annotations

import pytest

from darkroom.config import Limits
from darkroom.engine.limits import check_header, check_output, check_source_bytes
from darkroom.errors import DarkroomError, TooLarge
from darkroom.plan import Blur, Pad, Resize, Rotate, Watermark

from .helpers import BLUE, corpus, halves, one, png, read, run, solid

SMALL = Limits(max_output_side=700)


def refused(call) -> DarkroomError:
    with pytest.raises(DarkroomError) as raised:
        call()
    return raised.value


def test_check_source_bytes():
    check_source_bytes(100, Limits(max_source_bytes=100))
    error = refused(lambda: check_source_bytes(101, Limits(max_source_bytes=100)))
    assert (error.status, error.code) == (413, "source_too_large")


def test_check_header_pixels_and_frames():
    limits = Limits(max_megapixels=1, max_frames=10)
    check_header(1000, 1000, 1, limits)
    assert refused(lambda: check_header(1001, 1000, 1, limits)).code == "too_many_pixels"
    assert refused(lambda: check_header(10, 10, 11, limits)).code == "too_many_frames"
    assert refused(lambda: check_header(500, 500, 5, limits)).code == "too_many_pixels"


def test_check_output_side_and_pixels():
    check_output(700, 700, 1, SMALL)
    error = refused(lambda: check_output(701, 10, 1, SMALL))
    assert (error.status, error.code) == (413, "output_too_large")
    assert isinstance(error, TooLarge)
    tight = Limits(max_megapixels=0.5)
    assert refused(lambda: check_output(800, 800, 1, tight)).code == "output_too_large"


def test_source_over_max_source_bytes():
    data = read(one("exif-orientation-6"))
    error = refused(lambda: run(data, limits=Limits(max_source_bytes=len(data) - 1)))
    assert (error.status, error.code) == (413, "source_too_large")


def test_pixels_over_the_cap_from_the_header():
    error = refused(lambda: run(png(halves()), limits=Limits(max_megapixels=0.01)))
    assert (error.status, error.code) == (413, "too_many_pixels")


def test_frames_over_max_frames():
    entry = one("animated", "ok")
    limits = Limits(max_frames=entry["frames"] - 1)
    error = refused(lambda: run(read(entry), format="gif", limits=limits))
    assert (error.status, error.code) == (413, "too_many_frames")
    error = refused(lambda: run(read(entry), format="webp", limits=limits))
    assert error.code == "too_many_frames"


def test_frame_limit_does_not_apply_to_a_still_output():
    entry = one("animated", "ok")
    result = run(read(entry), format="jpeg", limits=Limits(max_frames=1))
    assert result.frames == 1


def test_animation_pixels_count_every_frame():
    entry = one("animated", "ok")
    per_frame = entry["width"] * entry["height"]
    limits = Limits(max_megapixels=per_frame * 2 / 1e6)
    assert refused(lambda: run(read(entry), format="gif", limits=limits)).code \
        == "too_many_pixels"
    assert run(read(entry), format="png", limits=limits).frames == 1


def truncated_png() -> bytes:
    entry = next(f for f in corpus(trait="truncated") if f["format"] == "PNG")
    return read(entry)  # 640x480, decoding it fails


@pytest.mark.parametrize("op", [
    Pad(left=400),
    Resize(width=2000),
    Resize(width=1200, height=100, fit="contain"),
    Rotate(angle=45),
], ids=["pad", "upscale", "contain-box", "rotate-45"])
def test_growth_past_the_output_side_is_refused_before_decoding(op):
    error = refused(lambda: run(truncated_png(), op, limits=SMALL))
    assert (error.status, error.code) == (413, "output_too_large")


def test_the_same_source_without_growth_fails_as_corrupt():
    error = refused(lambda: run(truncated_png(), Pad(left=10), limits=SMALL))
    assert (error.status, error.code) == (422, "corrupt_image")


def test_a_later_step_cannot_grow_past_the_cap():
    error = refused(lambda: run(png(halves()), Resize(width=600), Pad(left=200),
                                limits=SMALL))
    assert error.code == "output_too_large"


def test_upscale_past_the_pixel_cap():
    error = refused(lambda: run(png(halves()), Resize(width=4000),
                                limits=Limits(max_megapixels=1, max_output_side=8192)))
    assert (error.status, error.code) == (413, "output_too_large")


def test_a_source_wider_than_the_output_side_can_be_shrunk():
    panorama = png(solid(1500, 100, BLUE))  # within the pixel cap, wider than the side cap
    result = run(panorama, Resize(width=300), limits=SMALL)
    assert (result.width, result.height) == (300, 20)


def test_an_oversized_source_is_refused_when_not_shrunk():
    panorama = png(solid(1500, 100, BLUE))
    for ops in [(), (Blur(sigma=1),), (Resize(width=800),)]:
        error = refused(lambda: run(panorama, *ops, limits=SMALL))
        assert (error.status, error.code) == (413, "output_too_large")


def test_watermark_assets_obey_the_limits():
    bomb = read(next(f for f in corpus(trait="bomb") if f["format"] == "PNG"))
    error = refused(lambda: run(png(halves()), Watermark(key="m"), assets={"m": bomb}))
    assert (error.status, error.code) == (413, "too_many_pixels")
    mark = png(solid(10, 10, BLUE))
    error = refused(lambda: run(png(halves()), Watermark(key="m"), assets={"m": mark},
                                limits=Limits(max_source_bytes=len(mark) - 1)))
    assert error.code == "source_too_large"
