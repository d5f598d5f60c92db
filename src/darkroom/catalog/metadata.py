"""What the catalog keeps about an image, read with as little decoding as possible.

The header (format, size, pages) comes from `engine.probe` and passes the limits before
any pixel is decoded; then one small thumbnail, shrunk on load, gives the dominant colours,
the BlurHash and a 64-bit perceptual hash. When an upload makes a rendition for its
pipelines (a head start), the descriptors come from that rendition's decode instead, tapped
inside the engine, so the image is decoded once for both. EXIF is read by Pillow from the
header alone, and a broken EXIF block only leaves the subset empty.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyvips
from PIL import Image as PILImage

from darkroom.catalog import blurhash
from darkroom.config import Limits
from darkroom.engine import probe, render
from darkroom.engine.formats import ANIMATABLE
from darkroom.engine.limits import check_header, check_source_bytes
from darkroom.engine.load import Header, load
from darkroom.engine.prepare import to_srgb, upright
from darkroom.engine.render import Rendered
from darkroom.errors import DarkroomError, Unprocessable
from darkroom.plan.model import EditPlan

THUMB = 64  # colours, BlurHash, and at half this side the perceptual hash (DCT)
AVERAGED = 1_000_000  # pixels that `descriptors` may hold whole in memory (3 MB)
_EXIF_TEXT = {"make": 0x010F, "model": 0x0110, "datetime": 0x0132}
_EXIF_IFD, _GPS_IFD, _DATETIME_ORIGINAL = 0x8769, 0x8825, 0x9003
_EXIF_NUMBERS = {"exposure_time": 0x829A, "f_number": 0x829D, "iso": 0x8827,
                 "focal_length": 0x920A}


@dataclass(frozen=True)
class Facts:
    """The header and the derived descriptors of one image; `made`, a rendition made from
    the same decode (see `describe`)."""

    header: Header
    exif: dict = field(default_factory=dict)
    colours: list = field(default_factory=list)
    blurhash: str = ""
    phash: str = ""
    made: tuple[EditPlan, Rendered] | None = None


def describe(path: Path, limits: Limits,
             pick: Callable[[Header], EditPlan | None] | None = None) -> Facts:
    """Probe, check limits, then derive descriptors from one thumbnail of `path`.

    When `pick` names a plan for the header, the image is decoded as that plan needs and
    both the plan's rendition and the descriptors are made from that one decode; if the
    plan fails (or takes half the time budget), the image is described alone (and refused
    there if it does not decode).
    The decoders read from memory, so the file is read once, after its size passed the
    limit; the upload that wrote it never held it whole."""
    check_source_bytes(path.stat().st_size, limits)
    data = path.read_bytes()
    header = probe(data)
    frames = header.pages if header.format in ANIMATABLE else 1
    check_header(header.width, header.height, frames, limits)
    plan = pick(header) if pick is not None else None
    if plan is not None:
        seen: list[tuple] = []
        half = limits.model_copy(update={"time_budget_s": limits.time_budget_s / 2})
        try:  # within half the time budget, so that describing alone has the rest
            made = render(plan, data, half, tap=lambda image: seen.append(descriptors(image)),
                          header=header)
        except DarkroomError:
            made = None
        if made is not None and seen:
            return Facts(header, _exif(data), *seen[0], made=(plan, made))
    scale = min(1.0, THUMB / max(header.width, header.height, 1))
    try:
        image = upright(to_srgb(load(data, header, 0, False, scale, False)), header.orientation)
        return Facts(header, _exif(data), *descriptors(image))
    except pyvips.Error as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "decode failed"
        raise Unprocessable(f"cannot decode image: {reason}", "corrupt_image") from None


def descriptors(image: pyvips.Image) -> tuple[list, str, str]:
    """Dominant colours, BlurHash and perceptual hash of an upright sRGB image, all drawn
    from one 64x64 thumbnail of it (transparency on white). Up to `AVERAGED` pixels, the
    thumbnail is an area average by OpenCV of the pixels in memory (a libvips resize costs
    1-2 ms of set-up on an image this small, the average 0.2-0.8 ms, for the same hashes);
    a larger image (a source not shrunk on load) is first shrunk by libvips, streaming."""
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    if image.bands > 3:
        image = image.extract_band(0, n=3)
    elif image.bands < 3:  # grey
        image = image.bandjoin([image] * (3 - image.bands)).copy(interpretation="srgb")
    if image.width * image.height > AVERAGED:  # upright already: no turn by a stale tag
        image = image.thumbnail_image(THUMB, height=THUMB, size="force", no_rotate=True)
    pixels = _thumbnail(_array(image))
    return dominant_colours(pixels), blurhash.encode(pixels), perceptual_hash(_grey_half(pixels))


def _thumbnail(pixels: np.ndarray) -> np.ndarray:
    """The `THUMB` x `THUMB` area average of `pixels`: first the means of whole k x k
    blocks (OpenCV's fast path; the last rows and columns short of a block are left out),
    then the fractional average of what remains (half the time of the one step)."""
    height, width = pixels.shape[:2]
    k = min(height, width) // THUMB
    if k >= 2:
        pixels = cv2.resize(pixels[:height - height % k, :width - width % k],
                            (width // k, height // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(pixels, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def _grey_half(pixels: np.ndarray) -> np.ndarray:
    """Rec. 709 luma of `pixels` at half the side (2x2 means): 64x64 RGB -> 32x32 grey."""
    luma = pixels.astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    h, w = luma.shape[0] // 2 * 2, luma.shape[1] // 2 * 2
    return luma[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _array(image) -> np.ndarray:
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                      shape=(image.height, image.width, image.bands))


def dominant_colours(pixels: np.ndarray, count: int = 5) -> list[dict]:
    """The most common colours, as 3-bit-per-channel buckets averaged: hex and share."""
    flat = pixels.reshape(-1, 3).astype(np.int64)
    buckets = (flat[:, 0] >> 5) << 6 | (flat[:, 1] >> 5) << 3 | flat[:, 2] >> 5
    counts = np.bincount(buckets, minlength=512)
    top = np.argsort(-counts, kind="stable")[:count]
    top = top[counts[top] > 0]
    sums = np.stack([np.bincount(buckets, flat[:, c], 512)[top] for c in range(3)], axis=1)
    means = (sums / counts[top, None]).round().astype(int)
    return [{"hex": "#{:02x}{:02x}{:02x}".format(*mean),
             "share": round(float(n) / len(flat), 4)} for mean, n in zip(means, counts[top])]


def perceptual_hash(grey: np.ndarray) -> str:
    """pHash: the 8x8 lowest DCT frequencies of a 32x32 grey image against their median."""
    basis = _dct_basis(grey.shape[0])
    low = (basis @ grey.astype(np.float64) @ basis.T)[:8, :8]
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


@functools.lru_cache(maxsize=4)
def _dct_basis(n: int) -> np.ndarray:
    """The first 8 rows of the DCT-II basis of size `n`: all the hash reads (shared:
    read-only)."""
    basis = np.cos(np.pi * np.outer(np.arange(8), 2 * np.arange(n) + 1) / (2 * n))
    basis.flags.writeable = False
    return basis


def _exif(data: bytes) -> dict:
    """make, model, datetime, orientation, exposure, f-number, ISO, focal length, GPS flag."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like
            with PILImage.open(io.BytesIO(data)) as image:
                return _subset(image.getexif())
    except Exception:  # noqa: BLE001  (a bad EXIF block never fails an upload)
        return {}


def _subset(exif: PILImage.Exif) -> dict:
    if not exif:
        return {}
    details = exif.get_ifd(_EXIF_IFD)
    found: dict = {}
    for name, tag in _EXIF_TEXT.items():
        value = details.get(_DATETIME_ORIGINAL) if name == "datetime" else None
        value = value if isinstance(value, str) else exif.get(tag)
        if isinstance(value, str) and value.strip("\x00 "):
            found[name] = value.strip("\x00 ")[:64]
    if isinstance(exif.get(0x0112), int):
        found["orientation"] = exif[0x0112]
    for name, tag in _EXIF_NUMBERS.items():
        value = details.get(tag)
        if isinstance(value, (int, float)) or hasattr(value, "numerator"):
            found[name] = round(float(value), 6)
    found["gps"] = bool(exif.get_ifd(_GPS_IFD))
    return found
