"""Transforms from embedded colour profiles to sRGB, built once per profile and kept.

libvips builds a new lcms transform for every image, and building one costs more than
running it on a web-sized image: a CMYK profile about 55 ms, an RGB one a few (measured:
a 12 MP JPEG to 800 px took 17% more CPU with an sRGB profile embedded, 32% more with
Display P3). Photos from one camera or phone share their profile, so for 8-bit RGB and
CMYK images the transform (Pillow's lcms, perceptual, to libvips's own sRGB profile) is
kept by the profile's hash. A profile found to map every colour to itself within one level
(an sRGB profile under another name) is skipped altogether, at any size. Other transforms
run here on images up to `MAX_PIXELS`, past which libvips's own (streamed, and faster per
pixel: about 22 ns against Pillow's 40 for RGB) wins over the build it saves. A profile
lcms refuses is remembered too, and left to libvips.
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyvips
from PIL import Image as PILImage
from PIL import ImageCms

CACHED = 32  # profiles remembered: a few cameras', phones' and workflows'
# Where a kept transform stops paying (measured on 2 cores: an RGB build costs about 6 ms,
# a CMYK one 55; Pillow then costs 18 and 15 ns a pixel more than libvips).
MAX_PIXELS = {"RGB": 300_000, "CMYK": 3_000_000}
_MODES = {3: "RGB", 4: "CMYK"}
_IDENTITY = "identity"
_REFUSED = "refused"
_verdicts: OrderedDict[tuple[bytes, str], object] = OrderedDict()
_lock = threading.Lock()


class Look(NamedTuple):
    """What colour management reads of an image, once (each read of a pyvips property is
    several calls into libvips): its band format, its interpretation, whether it carries
    an ICC profile."""

    fmt: str
    interpretation: str
    icc: bool


def look(image: pyvips.Image) -> Look:
    return Look(image.format, image.interpretation, bool(image.get_typeof("icc-profile-data")))


def cached_to_srgb(image: pyvips.Image, seen: Look, may_drop_fields: bool,
                   watch: Callable[[pyvips.Image], pyvips.Image] | None = None
                   ) -> pyvips.Image | None:
    """`image` (`seen`: its `look`) in sRGB through a kept transform, or None when this
    does not apply (no profile to apply, not 8-bit RGB or CMYK, refused, or too large).
    `may_drop_fields`: the result may lose the image's metadata (true unless the output
    keeps it); `watch` arms the time budget before the pixels are computed here."""
    mode = _MODES.get(image.bands) if seen.fmt == "uchar" else None
    cmyk = seen.interpretation == "cmyk"
    if mode is None or (mode == "CMYK") != cmyk or not (seen.icc or cmyk):
        return None
    applies = may_drop_fields and image.width * image.height <= MAX_PIXELS[mode]
    if cmyk and not applies:  # no CMYK profile is the identity: no build for nothing
        return None
    try:
        if seen.icc:
            profile = image.get("icc-profile-data")
            transform = _transform((hashlib.sha256(profile).digest(), mode), profile)
        else:
            transform = _transform((b"libvips:cmyk", mode), _builtin("cmyk"))
        if transform is _IDENTITY:
            return image.copy(interpretation="srgb")
        if transform is _REFUSED or not applies:
            return None
        pixels = PILImage.frombytes(mode, (image.width, image.height),
                                    (watch(image) if watch else image).write_to_memory())
        converted = transform.apply(pixels)  # type: ignore[union-attr]
    except (RuntimeError, ValueError, OSError):  # an empty profile blob, a bad buffer
        return None
    return pyvips.Image.new_from_memory(converted.tobytes(), image.width, image.height, 3,
                                        "uchar").copy(interpretation="srgb", xres=image.xres,
                                                      yres=image.yres)


def _transform(key: tuple[bytes, str], profile: bytes):
    """The kept transform for `profile`, or `_IDENTITY` / `_REFUSED`."""
    with _lock:
        if key in _verdicts:
            _verdicts.move_to_end(key)
            return _verdicts[key]
    verdict = _build(profile, key[1])
    with _lock:
        _verdicts[key] = verdict
        while len(_verdicts) > CACHED:
            _verdicts.popitem(last=False)
    return verdict


def _build(profile: bytes, mode: str):
    try:
        transform = ImageCms.buildTransform(
            ImageCms.ImageCmsProfile(io.BytesIO(profile)), _srgb(), mode, "RGB",
            renderingIntent=ImageCms.Intent.PERCEPTUAL, flags=ImageCms.Flags.NOCACHE)
        if mode == "RGB" and _maps_to_itself(transform):
            return _IDENTITY
    except (ImageCms.PyCMSError, OSError, ValueError):
        return _REFUSED
    return transform


def _maps_to_itself(transform: ImageCms.ImageCmsTransform) -> bool:
    """Whether every colour comes out within one level: a 17-level grid per channel, and
    every level of grey and of each channel alone."""
    levels = np.linspace(0, 255, 17).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    ramp = np.arange(256, dtype=np.uint8)
    zero = np.zeros(256, np.uint8)
    ramps = [np.stack(c, -1) for c in ((ramp, ramp, ramp), (ramp, zero, zero),
                                       (zero, ramp, zero), (zero, zero, ramp))]
    probe = np.concatenate([grid, *ramps]).reshape(1, -1, 3)
    out = np.asarray(transform.apply(PILImage.fromarray(probe, "RGB")))
    return int(np.abs(out.astype(int) - probe.astype(int)).max()) <= 1


@functools.cache
def _builtin(name: str) -> bytes:
    return pyvips.Operation.call("profile_load", name)


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(_builtin("srgb")))
