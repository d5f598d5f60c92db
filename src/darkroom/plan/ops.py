"""The operations an EditPlan may hold: typed, bounded, one model each.

These models are the only description of an operation: every grammar builds them, the
engine executes them (one step per `op` in `darkroom.engine.steps`), OpenAPI shows them.
Bounds are checked here, where arguments are parsed; the engine re-checks sizes after
every step because several steps together can still grow an image past the caps.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from darkroom.plan.color import Color

Side = Annotated[int, Field(ge=1, le=65535)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Fit = Literal["cover", "contain", "fill", "inside", "outside"]
Gravity = Literal[
    "center", "north", "south", "east", "west",
    "northeast", "northwest", "southeast", "southwest",
    "attention", "entropy", "focal",
]


class _Op(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Trim(_Op):
    """Cut away a border of (nearly) the background colour; threshold is a colour distance."""

    op: Literal["trim"] = "trim"
    threshold: float = Field(10.0, ge=0.0, le=255.0)
    background: Color | None = None  # None: the top-left pixel


class Extract(_Op):
    """Manual crop of a rectangle in the current image (clipped to it)."""

    op: Literal["extract"] = "extract"
    left: int = Field(ge=0, le=65535)
    top: int = Field(ge=0, le=65535)
    width: Side
    height: Side


class Resize(_Op):
    """Scale into a box; `None` on one side keeps the aspect ratio."""

    op: Literal["resize"] = "resize"
    width: Side | None = None
    height: Side | None = None
    fit: Fit = "inside"
    gravity: Gravity = "center"
    focal: tuple[Fraction, Fraction] | None = None  # with gravity "focal": x, y as fractions
    upscale: bool = True
    background: Color = (0, 0, 0, 0)  # the bars of "contain"

    @model_validator(mode="after")
    def _check(self) -> "Resize":
        if self.width is None and self.height is None:
            raise ValueError("resize needs a width or a height")
        if (self.gravity == "focal") != (self.focal is not None):
            raise ValueError("gravity 'focal' and a focal point go together")
        return self


class Rotate(_Op):
    """Rotate clockwise by degrees; other than multiples of 90 the corners take `background`."""

    op: Literal["rotate"] = "rotate"
    angle: float = Field(ge=-360.0, le=360.0)
    background: Color = (0, 0, 0, 0)


class Flip(_Op):
    """Mirror horizontally (left-right) and/or vertically (top-bottom)."""

    op: Literal["flip"] = "flip"
    horizontal: bool = False
    vertical: bool = False


class Blur(_Op):
    """Gaussian blur with this sigma in pixels."""

    op: Literal["blur"] = "blur"
    sigma: float = Field(gt=0.0, le=100.0)


class Sharpen(_Op):
    """Unsharp mask on lightness with this sigma in pixels."""

    op: Literal["sharpen"] = "sharpen"
    sigma: float = Field(gt=0.0, le=10.0)


class Modulate(_Op):
    """Brightness, contrast and saturation, each -100..100 (0 leaves it alone)."""

    op: Literal["modulate"] = "modulate"
    brightness: float = Field(0.0, ge=-100.0, le=100.0)
    contrast: float = Field(0.0, ge=-100.0, le=100.0)
    saturation: float = Field(0.0, ge=-100.0, le=100.0)


class Grayscale(_Op):
    """Convert to shades of grey (kept as sRGB so every encoder takes it)."""

    op: Literal["grayscale"] = "grayscale"


class RoundCorners(_Op):
    """Make the corners transparent with this radius in pixels."""

    op: Literal["round"] = "round"
    radius: int = Field(ge=1, le=65535)


class Pad(_Op):
    """Add a border of `color` around the image."""

    op: Literal["pad"] = "pad"
    top: int = Field(0, ge=0, le=65535)
    right: int = Field(0, ge=0, le=65535)
    bottom: int = Field(0, ge=0, le=65535)
    left: int = Field(0, ge=0, le=65535)
    color: Color = (0, 0, 0, 0)


class Watermark(_Op):
    """Composite another stored image over this one."""

    op: Literal["watermark"] = "watermark"
    key: str = Field(min_length=1, max_length=1024)
    gravity: Literal[
        "center", "north", "south", "east", "west",
        "northeast", "northwest", "southeast", "southwest",
    ] = "southeast"
    opacity: Fraction = 1.0
    width: Fraction | None = None  # watermark width as a fraction of the image width
    margin: int = Field(0, ge=0, le=65535)


Operation = Annotated[
    Union[Trim, Extract, Resize, Rotate, Flip, Blur, Sharpen, Modulate, Grayscale,
          RoundCorners, Pad, Watermark],
    Field(discriminator="op"),
]
