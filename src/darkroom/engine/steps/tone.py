"""Steps that remap colour values: rgb shift, equalise, normalise, noise, convolve, tint,
negate, flatten. Each works on the colour bands and carries alpha through."""

from __future__ import annotations

import math

import pyvips

from darkroom.engine.context import Context, Image, colour_only
from darkroom.plan.ops import (
    ChannelShift, Convolve, Equalize, Flatten, Negate, Noise, Normalize, Tint,
)


def channel_shift(ctx: Context, op: ChannelShift) -> None:
    offsets = [255 * v / 100 for v in (op.red, op.green, op.blue)]
    ctx.map(lambda f: colour_only(f, lambda i: i.linear([1, 1, 1], offsets)))


def equalize(ctx: Context, op: Equalize) -> None:
    def each_band(image: Image) -> Image:
        image = image.cast("uchar")  # one histogram bin per level
        bands = [image.extract_band(b).hist_equal() for b in range(image.bands)]
        joined = bands[0].bandjoin(bands[1:]) if len(bands) > 1 else bands[0]
        return joined.copy(interpretation=image.interpretation)

    ctx.map(lambda f: colour_only(f, each_band))


def normalize(ctx: Context, op: Normalize) -> None:
    """Stretch L* so the percentiles of the first frame reach 0 and 100 (as sharp)."""
    lightness = ctx.budget.watch(ctx.frames[0]).colourspace("lch").extract_band(0)
    histogram = lightness.cast("uchar").hist_find()  # L* is 0..100: one bin per level
    low = _percentile(histogram, op.lower)
    high = _percentile(histogram, op.upper)
    if high <= low:
        return
    gain = 100 / (high - low)

    def stretch(image: Image) -> Image:
        lch = image.colourspace("lch")
        return lch.linear([gain, 1, 1], [-low * gain, 0, 0]).colourspace("srgb")

    ctx.map(lambda f: colour_only(f, stretch))


def _percentile(histogram: Image, percent: float) -> int:
    """The first level at or above `percent` of the pixels, from a 1-band histogram."""
    counts = histogram.tolist()[0]
    goal = sum(counts) * percent / 100
    running = 0
    for level, count in enumerate(counts):
        running += count
        if running >= goal:
            return level
    return len(counts) - 1


def noise(ctx: Context, op: Noise) -> None:
    """Monochrome noise with the variance of Thumbor's uniform noise of this amount."""
    sigma = op.amount / math.sqrt(12)

    def add(image: Image) -> Image:
        grain = pyvips.Image.gaussnoise(image.width, image.height, sigma=sigma, mean=0,
                                        seed=op.seed)
        return image + grain

    ctx.map(lambda f: colour_only(f, add))


def convolve(ctx: Context, op: Convolve) -> None:
    rows = len(op.matrix) // op.columns
    total = sum(op.matrix)
    scale = total if op.normalize and total else 1
    kernel = pyvips.Image.new_from_array(
        [list(op.matrix[r * op.columns:(r + 1) * op.columns]) for r in range(rows)], scale=scale)
    ctx.map(lambda f: colour_only(f, lambda i: i.conv(kernel, precision="float")))


def tint(ctx: Context, op: Tint) -> None:
    """Keep L*, take a* b* from the tint colour (sharp's tint)."""
    swatch = (pyvips.Image.black(1, 1, bands=3) + list(op.color[:3])).cast("uchar")
    lab = swatch.copy(interpretation="srgb").colourspace("lab").getpoint(0, 0)

    def colourise(image: Image) -> Image:
        lightness = image.colourspace("lab").extract_band(0)
        return lightness.bandjoin_const(lab[1:3]).copy(
            interpretation="lab").colourspace("srgb")

    ctx.map(lambda f: colour_only(f, colourise))


def negate(ctx: Context, op: Negate) -> None:
    def invert(image: Image) -> Image:
        if op.alpha or not image.hasalpha():
            return image.invert().cast("uchar")
        return colour_only(image, lambda i: i.invert())

    ctx.map(invert)


def flatten(ctx: Context, op: Flatten) -> None:
    first = ctx.frames[0]
    if not first.hasalpha():
        return
    if op.auto:  # as Thumbor: the mean of every pixel's colour, transparent ones too
        first = ctx.budget.watch(first)
        background = [first.extract_band(b).avg() for b in range(first.bands - 1)]
    else:
        background = list(op.background[:3])
    ctx.map(lambda f: f.flatten(background=background).cast("uchar"))
