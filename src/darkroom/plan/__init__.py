"""The canonical EditPlan and its operations."""

from darkroom.plan.color import Color, parse_color
from darkroom.plan.model import EditPlan, Output, OutputFormat, Source
from darkroom.plan.ops import (
    Blur, ChannelShift, Convolve, Equalize, Extract, FaceCrop, Flatten, Flip, Grayscale,
    Modulate, Negate, Noise, Normalize, Operation, Pad, Resize, Rotate, RoundCorners, RoundCrop,
    Scale, Sharpen, Tint, Trim, Watermark,
)

__all__ = [
    "Blur", "ChannelShift", "Color", "Convolve", "EditPlan", "Equalize", "Extract", "FaceCrop",
    "Flatten", "Flip", "Grayscale", "Modulate", "Negate", "Noise", "Normalize", "Operation",
    "Output", "OutputFormat", "Pad", "Resize", "Rotate", "RoundCorners", "RoundCrop", "Scale",
    "Sharpen", "Source", "Tint", "Trim", "Watermark", "parse_color",
]
