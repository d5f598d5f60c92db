"""One step per operation, in a table keyed by the operation's `op` name."""

from __future__ import annotations

from collections.abc import Callable

from darkroom.engine.context import Context
from darkroom.engine.steps import compose, faces, filters, geometry, tone

STEPS: dict[str, Callable[[Context, object], None]] = {
    "trim": geometry.trim,
    "extract": geometry.extract,
    "resize": geometry.resize,
    "rotate": geometry.rotate,
    "flip": geometry.flip,
    "pad": geometry.pad,
    "blur": filters.blur,
    "sharpen": filters.sharpen,
    "modulate": filters.modulate,
    "grayscale": filters.grayscale,
    "round": compose.round_corners,
    "watermark": compose.watermark,
    "scale": geometry.scale,
    "rgb": tone.channel_shift,
    "equalize": tone.equalize,
    "normalize": tone.normalize,
    "noise": tone.noise,
    "convolve": tone.convolve,
    "tint": tone.tint,
    "negate": tone.negate,
    "flatten": tone.flatten,
    "round_crop": compose.round_crop,
    "face_crop": faces.face_crop,
}
