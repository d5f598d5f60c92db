"""One step per operation, in a table keyed by the operation's `op` name."""

from __future__ import annotations

from collections.abc import Callable

from darkroom.engine.context import Context
from darkroom.engine.steps import compose, filters, geometry

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
}
