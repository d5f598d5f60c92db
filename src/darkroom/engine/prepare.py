"""Bring a decoded image to the working form (upright, 8-bit sRGB) and back to frames."""

from __future__ import annotations

import pyvips

from darkroom.engine.budget import Budget
from darkroom.engine.colour import cached_to_srgb, look
from darkroom.engine.context import Image, uchar


def to_srgb(image: Image, may_drop_fields: bool = True,
            budget: Budget | None = None) -> Image:
    """Colour-manage to 8-bit sRGB: embedded ICC first, CMYK without one by a built-in
    profile; through a kept transform (`engine.colour`) when one applies. The image's
    metadata may go unless `may_drop_fields` is false (an output that keeps it); a kept
    transform computes the pixels at once, under `budget` when given."""
    seen = look(image)
    cached = cached_to_srgb(image, seen, may_drop_fields, budget.watch if budget else None)
    if cached is not None:
        return cached
    cmyk = seen.interpretation == "cmyk"
    if cmyk or seen.icc:
        try:
            image = image.icc_transform("srgb", embedded=True, intent="perceptual",
                                        input_profile="cmyk" if cmyk else "srgb")
        except pyvips.Error:
            image = image.colourspace("srgb")
    elif seen.interpretation == "srgb" and seen.fmt == "uchar":
        return image  # already 8-bit sRGB: no operation
    else:
        image = image.colourspace("srgb")
    return uchar(image).copy(interpretation="srgb")


def upright(image: Image, orientation: int) -> Image:
    """Apply the EXIF orientation to the pixels, so the tag can go."""
    return image.autorot() if orientation > 1 else image


def split_frames(image: Image, frame_height: int) -> list[Image]:
    """A loaded animation (frames stacked vertically) as a list of frames."""
    count = max(1, image.height // frame_height)
    if count == 1:
        return [image]
    return [image.crop(0, i * frame_height, image.width, frame_height) for i in range(count)]


def join_frames(frames: list[Image], source: Image) -> Image:
    """Stack frames again, carrying the animation's delays and loop count."""
    if len(frames) == 1:
        return frames[0]
    image = pyvips.Image.arrayjoin(frames, across=1).copy()
    image.set_type(pyvips.GValue.gint_type, "page-height", frames[0].height)
    fields = source.get_fields()
    if "delay" in fields:
        delays = list(source.get("delay"))[: len(frames)]
        delays += [delays[-1] if delays else 100] * (len(frames) - len(delays))
        image.set_type(pyvips.GValue.array_int_type, "delay", delays)
    if "loop" in fields:
        image.set_type(pyvips.GValue.gint_type, "loop", source.get("loop"))
    return image
