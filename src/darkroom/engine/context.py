"""The state a render passes from step to step."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pyvips

from darkroom.config import Limits
from darkroom.engine.budget import Budget

Image = pyvips.Image


@dataclass
class Context:
    """The frames being worked on (one unless animated) and what steps need beside them."""

    frames: list[Image]
    limits: Limits
    budget: Budget
    assets: Mapping[str, bytes] = field(default_factory=dict)
    prescale: tuple[float, float] = (1.0, 1.0)  # loaded / declared size, until the first resize
    _sized: tuple[Image, int, int] | None = field(default=None, repr=False, compare=False)

    @property
    def width(self) -> int:
        return self._size()[1]

    @property
    def height(self) -> int:
        return self._size()[2]

    def _size(self) -> tuple[Image, int, int]:
        """The first frame and its size, read once per frame: each read of an image's
        property is several calls into libvips, each giving up the GIL and taking it back
        (a dozen reads a render, at a switch each when other threads want the GIL)."""
        first = self.frames[0]
        if self._sized is None or self._sized[0] is not first:
            self._sized = (first, first.width, first.height)
        return self._sized

    def logical_size(self) -> tuple[int, int]:
        """The size as declared, undoing the loader's shrink so ratios stay exact."""
        return round(self.width / self.prescale[0]), round(self.height / self.prescale[1])

    def map(self, step: Callable[[Image], Image]) -> None:
        """Apply `step` to every frame."""
        self.frames = [step(frame) for frame in self.frames]


def with_alpha(image: Image) -> Image:
    """`image` with an alpha band (opaque if it had none)."""
    return image if image.hasalpha() else image.bandjoin_const([255])


def uchar(image: Image) -> Image:
    """`image` in 8-bit bands (no operation when it already is)."""
    return image if image.format == "uchar" else image.cast("uchar")


def colour_only(image: Image, step: Callable[[Image], Image]) -> Image:
    """Apply `step` to the colour bands and carry the alpha band through untouched."""
    if not image.hasalpha():
        return uchar(step(image))
    colour, alpha = image.extract_band(0, n=image.bands - 1), image.extract_band(image.bands - 1)
    return uchar(step(colour)).bandjoin(alpha)


def premultiplied(image: Image, step: Callable[[Image], Image]) -> Image:
    """Apply a resampling `step` on premultiplied alpha so edges do not darken."""
    if not image.hasalpha():
        return uchar(step(image))
    return uchar(step(image.premultiply()).unpremultiply())
