"""Read a header without decoding, then load pixels with the shrink the plan allows.

libvips decodes everything it can; Pillow only what this libvips build lacks (HEIC via
pillow-heif, BMP, ICO). SVG is rasterised from bytes only, never from a path.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Protocol

import pyvips
from PIL import Image as PILImage

from darkroom.engine.formats import sniff
from darkroom.engine.geometry import jpeg_shrink
from darkroom.errors import Unprocessable, Unsupported

PILLOW_FORMATS = frozenset({"heic", "bmp", "ico"})
_UNSAFE_SVG = re.compile(rb"<!ENTITY|<!DOCTYPE[^>]*\[", re.IGNORECASE)


class Shape(Protocol):
    """What choosing an output format reads of a source: a `Header`, or what a catalog
    remembers of one."""

    format: str
    pages: int
    alpha: bool


@dataclass(frozen=True)
class Header:
    """What the header says, before any pixel is decoded."""

    format: str
    width: int
    height: int
    pages: int
    alpha: bool
    orientation: int
    icc: bool
    bytes: int

    @property
    def swaps_sides(self) -> bool:
        """EXIF orientations 5-8 turn the image a quarter."""
        return self.orientation >= 5


def probe(data: bytes) -> Header:
    """The header of `data`; raises Unsupported or Unprocessable, never decodes pixels."""
    fmt = sniff(data)
    if fmt in PILLOW_FORMATS:
        return _probe_pillow(data, fmt)
    if fmt == "svg" and (_UNSAFE_SVG.search(data[:65536]) or b"<!ENTITY" in data):
        raise Unsupported("SVG with a DOCTYPE subset or entities is refused", "unsafe_svg")
    if fmt == "gif":
        declared = _gif_screen(data)
        try:
            image = _vips_open(data)
        except Unprocessable:
            # A GIF whose first frame is missing still declares a screen: let limits judge it.
            return Header(fmt, *declared, 1, False, 1, False, len(data))
    else:
        image = _vips_open(data)
    has = image.get_typeof  # one lookup per field (get_fields lists them all)
    pages = image.get("n-pages") if has("n-pages") else 1
    height = image.get("page-height") if has("page-height") else image.height
    return Header(
        format=fmt,
        width=image.width,
        height=height,
        pages=max(1, pages),
        alpha=bool(image.hasalpha()),
        orientation=image.get("orientation") if has("orientation") else 1,
        icc=bool(has("icc-profile-data")),
        bytes=len(data),
    )


def load(data: bytes, header: Header, page: int, animated: bool, scale: float,
         sequential: bool) -> pyvips.Image:
    """Decode lazily: all frames if `animated`, else `page`; shrink towards `scale`."""
    if header.format in PILLOW_FORMATS:
        return _load_pillow(data, header)
    options: dict = {"access": "sequential" if sequential else "random", "fail_on": "error"}
    if animated:
        options["n"] = -1
    elif header.pages > 1:
        options["page"] = page
    if header.format == "jpeg":
        options["shrink"] = jpeg_shrink(scale)
    elif header.format == "webp" and scale < 1.0:
        options["scale"] = scale
    elif header.format == "svg":
        options["scale"] = scale
        options.pop("fail_on")
    return _vips_open(data, **options)


def _gif_screen(data: bytes) -> tuple[int, int]:
    """The larger of a GIF's logical screen and its first frame's extent, from raw bytes.

    A frame may declare a size far past the screen; libvips then refuses the file with a
    vague error, so the declared size is read here for the limits to judge.
    """
    width, height = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    pos = 13 + (3 << ((data[10] & 7) + 1) if len(data) > 10 and data[10] & 0x80 else 0)
    while pos < len(data):
        if data[pos] == 0x2C and pos + 9 <= len(data):
            left, top, w, h = (int.from_bytes(data[pos + i : pos + i + 2], "little")
                               for i in (1, 3, 5, 7))
            return max(width, left + w), max(height, top + h)
        if data[pos] != 0x21:
            break
        pos += 2  # extension introducer and label, then sub-blocks until a zero length
        while pos < len(data) and data[pos]:
            pos += data[pos] + 1
        pos += 1
    return width, height


def _vips_open(data: bytes, **options) -> pyvips.Image:
    """Open `data` where it lies: a buffer load would copy the whole source first (twice
    a render, with the probe's open); pyvips keeps `data` alive with the image."""
    try:
        return pyvips.Image.new_from_source(pyvips.Source.new_from_memory(data), "", **options)
    except pyvips.Error as error:
        raise Unprocessable(f"cannot read image: {_first_line(error)}", "corrupt_image") from None


def _probe_pillow(data: bytes, fmt: str) -> Header:
    try:
        with _pillow_open(data) as image:
            return Header(fmt, image.width, image.height, 1,
                          "A" in image.getbands() or "transparency" in image.info, 1,
                          bool(image.info.get("icc_profile")), len(data))
    except (OSError, ValueError, SyntaxError) as error:
        raise Unprocessable(f"cannot read image: {_reason(error)}", "corrupt_image") from None


def _load_pillow(data: bytes, header: Header) -> pyvips.Image:
    try:
        with _pillow_open(data) as image:
            image = image.convert("RGBA" if header.alpha else "RGB")
            return pyvips.Image.new_from_memory(
                image.tobytes(), image.width, image.height, len(image.getbands()), "uchar"
            ).copy(interpretation="srgb")
    except (OSError, ValueError, SyntaxError) as error:
        raise Unprocessable(f"cannot decode image: {_reason(error)}", "corrupt_image") from None


def _pillow_open(data: bytes) -> PILImage.Image:
    return PILImage.open(io.BytesIO(data), formats=("BMP", "ICO", "HEIF"))


def _reason(error: Exception) -> str:
    """Pillow's message without Python object reprs (they say nothing to a client)."""
    return re.sub(r"\s*<[^>]*>", "", str(error)) or type(error).__name__


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"
