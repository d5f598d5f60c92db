"""Steps that change pixel values only: blur, sharpen, modulate, grayscale."""

from __future__ import annotations

from darkroom.engine.context import Context, colour_only, premultiplied
from darkroom.plan.ops import Blur, Grayscale, Modulate, Sharpen


def blur(ctx: Context, op: Blur) -> None:
    ctx.map(lambda f: premultiplied(f, lambda i: i.gaussblur(op.sigma)))


def sharpen(ctx: Context, op: Sharpen) -> None:
    ctx.map(lambda f: colour_only(f, lambda i: i.sharpen(sigma=op.sigma).colourspace("srgb")))


def modulate(ctx: Context, op: Modulate) -> None:
    """Saturation scales each channel's distance from sqrt(.299 R² + .587 G² + .114 B²);
    brightness and contrast are a gain and an offset around mid-grey."""
    def adjust(image):
        if op.saturation:  # move each channel away from the pixel's perceived brightness
            factor = 1 + op.saturation / 100
            weighted = (image.cast("float") ** 2 * [0.299, 0.587, 0.114]).bandmean() * 3
            image = weighted ** 0.5 * (1 - factor) + image * factor
        gain = (1 + op.brightness / 100) * (1 + op.contrast / 100)
        offset = 128 * (1 + op.brightness / 100) * (-op.contrast / 100)
        return image.linear(gain, offset) if (gain, offset) != (1, 0) else image

    ctx.map(lambda f: colour_only(f, adjust))


def grayscale(ctx: Context, op: Grayscale) -> None:
    ctx.map(lambda f: colour_only(f, lambda i: i.colourspace("b-w").colourspace("srgb")))
