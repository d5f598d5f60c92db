"""The canonical EditPlan and its operations."""

from darkroom.plan.color import Color, parse_color
from darkroom.plan.model import EditPlan, Output, OutputFormat, Source
from darkroom.plan.ops import (
    Blur, Extract, Flip, Grayscale, Modulate, Operation, Pad, Resize, Rotate,
    RoundCorners, Sharpen, Trim, Watermark,
)

__all__ = [
    "Blur", "Color", "EditPlan", "Extract", "Flip", "Grayscale", "Modulate", "Operation",
    "Output", "OutputFormat", "Pad", "Resize", "Rotate", "RoundCorners", "Sharpen", "Source",
    "Trim", "Watermark", "parse_color",
]
