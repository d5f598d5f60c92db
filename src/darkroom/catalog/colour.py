"""sRGB for the small thumbnail the catalog describes, with colour transforms built once.

Building an lcms transform costs far more than running it over a thumbnail (about 55 ms
for CMYK, 5 ms for an RGB profile, on a few thousand pixels), and uploads from one camera
or workflow share their profiles. So for 8-bit RGB and CMYK images the transform from the
embedded profile (CMYK without one: libvips's own CMYK profile) to libvips's sRGB is built
by Pillow's lcms once per profile and kept; anything else, or a profile lcms refuses, goes
through the engine's `to_srgb`, which decides the same way without the cache.
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
from collections import OrderedDict

import pyvips
from PIL import Image as PILImage
from PIL import ImageCms

from darkroom.engine.prepare import to_srgb

CACHED = 16  # transforms kept: a few cameras' and workflows' profiles
_MODES = {("srgb", 3): "RGB", ("rgb", 3): "RGB", ("cmyk", 4): "CMYK"}
_transforms: OrderedDict[tuple[bytes, str], ImageCms.ImageCmsTransform] = OrderedDict()
_lock = threading.Lock()


def thumbnail_to_srgb(image: pyvips.Image) -> pyvips.Image:
    """`image` (small: decoded shrunk) as 8-bit sRGB, like `to_srgb` but cached."""
    mode = _MODES.get((image.interpretation, image.bands)) if image.format == "uchar" else None
    embedded = "icc-profile-data" in image.get_fields()
    if mode is None or not (embedded or mode == "CMYK"):
        return to_srgb(image)
    profile = image.get("icc-profile-data") if embedded else _builtin("cmyk")
    try:
        transform = _transform(profile, mode)
        pixels = PILImage.frombytes(mode, (image.width, image.height), image.write_to_memory())
        converted = transform.apply(pixels)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return to_srgb(image)
    return pyvips.Image.new_from_memory(converted.tobytes(), image.width, image.height, 3,
                                        "uchar").copy(interpretation="srgb")


def _transform(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    key = (hashlib.sha256(profile).digest(), mode)
    with _lock:
        if key in _transforms:
            _transforms.move_to_end(key)
            return _transforms[key]
    transform = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(profile)), _srgb(), mode, "RGB",
        renderingIntent=ImageCms.Intent.PERCEPTUAL, flags=ImageCms.Flags.NOCACHE)
    with _lock:
        _transforms[key] = transform
        while len(_transforms) > CACHED:
            _transforms.popitem(last=False)
    return transform


@functools.cache
def _builtin(name: str) -> bytes:
    return pyvips.Operation.call("profile_load", name)


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(_builtin("srgb")))
