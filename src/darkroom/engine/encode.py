"""Encode the finished image; metadata goes unless the plan keeps it."""

from __future__ import annotations

from darkroom.engine.budget import Budget
from darkroom.engine.context import Image
from darkroom.engine.formats import ALPHA_CAPABLE
from darkroom.plan.model import Output

DEFAULT_QUALITY = {"jpeg": 80, "webp": 80, "avif": 50, "tiff": 80}


def encode(image: Image, fmt: str, output: Output) -> bytes:
    """Bytes of `image` in `fmt`; alpha is flattened on `output.background` where needed."""
    if image.hasalpha() and fmt not in ALPHA_CAPABLE:
        image = image.flatten(background=list(output.background[:3])).cast("uchar")
    keep = "all" if output.keep_metadata else "none"
    quality = output.quality or DEFAULT_QUALITY.get(fmt, 80)
    if fmt == "jpeg":
        return image.jpegsave_buffer(Q=quality, optimize_coding=True, keep=keep)
    if fmt == "png":
        return image.pngsave_buffer(compression=6, keep=keep)
    if fmt == "webp":
        return image.webpsave_buffer(Q=quality, lossless=output.lossless, effort=4, keep=keep)
    if fmt == "avif":
        return image.heifsave_buffer(compression="av1", Q=quality, lossless=output.lossless,
                                     effort=2, keep=keep)
    if fmt == "gif":
        return image.gifsave_buffer(keep=keep)
    if fmt == "tiff":
        compression = "deflate" if output.lossless or output.quality is None else "jpeg"
        return image.tiffsave_buffer(compression=compression, Q=quality, keep=keep)
    raise ValueError(f"no encoder for {fmt}")


def fit_bytes(image: Image, fmt: str, output: Output, encoded: bytes, budget: Budget) -> bytes:
    """The highest quality whose encoding fits `output.max_bytes` (a binary search), or the
    smallest one tried when none fits; lossless formats come back as they are."""
    if fmt not in DEFAULT_QUALITY or output.lossless:
        return encoded
    image = image.copy_memory()  # encoded several times
    low, high = 1, (output.quality or DEFAULT_QUALITY[fmt]) - 1
    best, smallest = None, encoded
    while low <= high:
        budget.check()
        quality = (low + high) // 2
        attempt = encode(image, fmt, output.model_copy(update={"quality": quality}))
        if len(attempt) <= output.max_bytes:
            best, low = attempt, quality + 1
        else:
            high = quality - 1
        smallest = min(smallest, attempt, key=len)
    return best or smallest
