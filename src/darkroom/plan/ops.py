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
Coord = Annotated[float, Field(ge=0.0, le=65535.0)]
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
    background: Color | None = None  # None: the colour of `corner`
    corner: Literal["top-left", "bottom-right"] = "top-left"


class Extract(_Op):
    """Manual crop of a rectangle in the current image (clipped to it)."""

    op: Literal["extract"] = "extract"
    left: int = Field(ge=0, le=65535)
    top: int = Field(ge=0, le=65535)
    width: Side
    height: Side


class Resize(_Op):
    """Scale into a box; `None` on one side keeps the aspect ratio, `source` takes the
    side of the image as it reaches this step."""

    op: Literal["resize"] = "resize"
    width: Side | Literal["source"] | None = None
    height: Side | Literal["source"] | None = None
    fit: Fit = "inside"
    gravity: Gravity = "center"
    focal: tuple[Fraction, Fraction] | None = None  # with gravity "focal": x, y as fractions
    focal_px: tuple[Coord, Coord] | None = None  # or x, y in pixels of the image at resize
    upscale: bool = True
    background: Color = (0, 0, 0, 0)  # the bars of "contain"
    adaptive: bool = Field(False, description="turn the box a quarter when the image's "
                           "orientation (portrait, landscape) differs from the box's")
    fill: Literal["color", "blur", "average"] = Field(
        "color", description="contain's bars: `background`, the image blurred to the box, "
        "or the image's mean colour")

    @model_validator(mode="after")
    def _check(self) -> "Resize":
        if self.width is None and self.height is None:
            raise ValueError("resize needs a width or a height")
        points = (self.focal is not None) + (self.focal_px is not None)
        if (self.gravity == "focal") != bool(points) or points > 1:
            raise ValueError("gravity 'focal' goes with one focal point (focal or focal_px)")
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
    """Brightness, contrast and saturation in percent (0 leaves it alone): contrast up to
    +300 (4 times), saturation up to +900 (10 times)."""

    op: Literal["modulate"] = "modulate"
    brightness: float = Field(0.0, ge=-100.0, le=100.0)
    contrast: float = Field(0.0, ge=-100.0, le=300.0)
    saturation: float = Field(0.0, ge=-100.0, le=900.0)


class Grayscale(_Op):
    """Convert to shades of grey (kept as sRGB so every encoder takes it)."""

    op: Literal["grayscale"] = "grayscale"


class RoundCorners(_Op):
    """Make the corners transparent with this radius in pixels (`radius_y`: elliptic)."""

    op: Literal["round"] = "round"
    radius: int = Field(ge=1, le=65535)
    radius_y: int | None = Field(None, ge=1, le=65535)


class Pad(_Op):
    """Add a border of `color` around the image."""

    op: Literal["pad"] = "pad"
    top: int = Field(0, ge=0, le=65535)
    right: int = Field(0, ge=0, le=65535)
    bottom: int = Field(0, ge=0, le=65535)
    left: int = Field(0, ge=0, le=65535)
    color: Color = (0, 0, 0, 0)


Position = Annotated[str, Field(pattern=r"^(center|repeat|-?\d{1,5}p?)$")]


class Watermark(_Op):
    """Composite another stored image over this one.

    Placed by `gravity` and `margin`, unless `x`/`y` are given: `N` pixels from the left
    (top), `-N` from the right (bottom) edge to the mark's far edge, `Np` in percent of the
    image's side, `center`, or `repeat` to tile along that axis. `width`/`height` bound the
    mark as fractions of the image (both: it fits inside)."""

    op: Literal["watermark"] = "watermark"
    key: str = Field(min_length=1, max_length=1024)
    gravity: Literal[
        "center", "north", "south", "east", "west",
        "northeast", "northwest", "southeast", "southwest",
    ] = "southeast"
    opacity: Fraction = 1.0
    width: Fraction | None = None  # watermark width as a fraction of the image width
    height: Fraction | None = None
    margin: int = Field(0, ge=0, le=65535)
    x: Position | None = None
    y: Position | None = None


class Scale(_Op):
    """Scale the image by a factor (Thumbor's `proportion`)."""

    op: Literal["scale"] = "scale"
    factor: float = Field(gt=0.0, le=1.0)


class ChannelShift(_Op):
    """Add a percentage of full scale to each colour channel, -100..100 (Thumbor's `rgb`)."""

    op: Literal["rgb"] = "rgb"
    red: float = Field(0.0, ge=-100.0, le=100.0)
    green: float = Field(0.0, ge=-100.0, le=100.0)
    blue: float = Field(0.0, ge=-100.0, le=100.0)


class Equalize(_Op):
    """Equalise the histogram of each colour channel."""

    op: Literal["equalize"] = "equalize"


class Normalize(_Op):
    """Stretch lightness so the `lower` and `upper` percentiles reach black and white."""

    op: Literal["normalize"] = "normalize"
    lower: float = Field(1.0, ge=0.0, le=99.0)
    upper: float = Field(99.0, ge=1.0, le=100.0)

    @model_validator(mode="after")
    def _check(self) -> "Normalize":
        if self.lower >= self.upper:
            raise ValueError("lower must be below upper")
        return self


class Noise(_Op):
    """Add monochrome noise of this amplitude in levels, the same for the same seed."""

    op: Literal["noise"] = "noise"
    amount: float = Field(gt=0.0, le=1000.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class Convolve(_Op):
    """Convolve with a kernel given row by row; `normalize` divides by the kernel's sum."""

    op: Literal["convolve"] = "convolve"
    matrix: tuple[Annotated[float, Field(ge=-1e4, le=1e4)], ...] = Field(
        min_length=1, max_length=225)
    columns: int = Field(ge=1, le=15)
    normalize: bool = True

    @model_validator(mode="after")
    def _check(self) -> "Convolve":
        if len(self.matrix) % self.columns or len(self.matrix) // self.columns > 15:
            raise ValueError("the matrix must have whole rows, at most 15 of them")
        return self


class Tint(_Op):
    """Colourise: keep each pixel's lightness, take the chroma of `color` (sharp's tint)."""

    op: Literal["tint"] = "tint"
    color: Color


class Negate(_Op):
    """Invert the colours (and the alpha band too when `alpha`)."""

    op: Literal["negate"] = "negate"
    alpha: bool = False


class Flatten(_Op):
    """Composite the image over an opaque `background` (with `auto`: the mean colour of
    all its pixels), dropping its alpha band."""

    op: Literal["flatten"] = "flatten"
    background: Color = (0, 0, 0, 255)
    auto: bool = False


class RoundCrop(_Op):
    """Keep an ellipse, the rest transparent: radii and centre in pixels, by default the
    largest ellipse (with `circle`, circle) centred in the image; with `crop` the image is
    then cut to the shape's bounding box (SIH's roundCrop)."""

    op: Literal["round_crop"] = "round_crop"
    circle: bool = False
    crop: bool = False
    rx: int | None = Field(None, ge=1, le=65535)
    ry: int | None = Field(None, ge=1, le=65535)
    cx: int | None = Field(None, ge=0, le=65535)
    cy: int | None = Field(None, ge=0, le=65535)


class FaceCrop(_Op):
    """Crop to the `index`-th face found (largest first), widened by `padding` pixels on
    each side and clipped to the image; an image with no face at all is left whole."""

    op: Literal["face_crop"] = "face_crop"
    index: int = Field(0, ge=0, le=99)
    padding: int = Field(0, ge=0, le=65535)


Operation = Annotated[
    Union[Trim, Extract, Resize, Rotate, Flip, Blur, Sharpen, Modulate, Grayscale,
          RoundCorners, Pad, Watermark, Scale, ChannelShift, Equalize, Normalize, Noise,
          Convolve, Tint, Negate, Flatten, RoundCrop, FaceCrop],
    Field(discriminator="op"),
]
