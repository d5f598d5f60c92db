"""Every cap on an image, checked from the header before decoding and after each step."""

from __future__ import annotations

from darkroom.config import Limits
from darkroom.errors import TooLarge


def check_source_bytes(size: int, limits: Limits) -> None:
    """Refuse a source larger than `max_source_bytes`."""
    if size > limits.max_source_bytes:
        raise TooLarge(
            f"source is {size} bytes, the limit is {limits.max_source_bytes}", "source_too_large"
        )


def check_header(width: int, height: int, frames: int, limits: Limits) -> None:
    """Refuse what the header declares before a single pixel is decoded."""
    if frames > limits.max_frames:
        raise TooLarge(f"{frames} frames, the limit is {limits.max_frames}", "too_many_frames")
    if width * height * max(frames, 1) > limits.max_pixels:
        raise TooLarge(
            f"{width}x{height}x{frames} pixels exceed {limits.max_megapixels:g} megapixels",
            "too_many_pixels",
        )


def check_output(width: int, height: int, frames: int, limits: Limits) -> None:
    """Refuse a result (or an intermediate one) past the output side or pixel caps."""
    side = limits.max_output_side
    if width > side or height > side:
        raise TooLarge(
            f"result would be {width}x{height}, the largest side allowed is {side}",
            "output_too_large",
        )
    if width * height * max(frames, 1) > limits.max_pixels:
        raise TooLarge(
            f"result would be {width}x{height}x{frames} pixels, over "
            f"{limits.max_megapixels:g} megapixels",
            "output_too_large",
        )
