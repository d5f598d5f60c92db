"""Operation bounds: every numeric argument is limited where it is parsed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from darkroom.plan import (
    Blur, Extract, Modulate, Pad, Resize, Rotate, RoundCorners, Sharpen, Trim, Watermark,
)


@pytest.mark.parametrize(("model", "args"), [
    (Resize, {}),                                   # needs a side
    (Resize, {"width": 0}),
    (Resize, {"width": 65536}),
    (Resize, {"height": -5}),
    (Resize, {"width": 10, "fit": "stretch"}),
    (Resize, {"width": 10, "gravity": "up"}),
    (Resize, {"width": 10, "gravity": "focal"}),    # focal gravity needs a point
    (Resize, {"width": 10, "focal": (0.5, 0.5)}),   # and a point needs focal gravity
    (Resize, {"width": 10, "gravity": "focal", "focal": (1.5, 0.5)}),
    (Extract, {"left": -1, "top": 0, "width": 10, "height": 10}),
    (Extract, {"left": 0, "top": 0, "width": 0, "height": 10}),
    (Rotate, {"angle": 361}),
    (Rotate, {"angle": -361}),
    (Blur, {"sigma": 0}),
    (Blur, {"sigma": 100.5}),
    (Sharpen, {"sigma": 11}),
    (Modulate, {"brightness": 101}),
    (Modulate, {"contrast": -101}),
    (Modulate, {"saturation": 1000}),
    (RoundCorners, {"radius": 0}),
    (Pad, {"top": -1}),
    (Pad, {"left": 65536}),
    (Trim, {"threshold": 256}),
    (Watermark, {"key": ""}),
    (Watermark, {"key": "m", "opacity": 1.5}),
    (Watermark, {"key": "m", "width": 2}),
    (Watermark, {"key": "m", "gravity": "focal"}),
    (Watermark, {"key": "m", "margin": -1}),
])
def test_out_of_range_arguments_are_refused(model, args):
    with pytest.raises(ValidationError):
        model(**args)


@pytest.mark.parametrize("op", [
    Resize(width=65535), Resize(height=1), Rotate(angle=-360), Rotate(angle=360),
    Blur(sigma=100), Sharpen(sigma=10), Modulate(brightness=-100, contrast=100,
                                                  saturation=-100),
    Resize(width=10, gravity="focal", focal=(0.0, 1.0)), Watermark(key="m", opacity=0),
    Trim(threshold=0), Pad(), RoundCorners(radius=65535),
])
def test_bounds_are_inclusive(op):
    assert op.model_dump()["op"]


def test_ops_reject_unknown_fields():
    with pytest.raises(ValidationError):
        Blur(sigma=1, radius=3)


def test_ops_are_frozen():
    op = Blur(sigma=1)
    with pytest.raises(ValidationError):
        op.sigma = 2
