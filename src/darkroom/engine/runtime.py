"""Process-wide decoder settings, applied once on import of `darkroom.engine`.

libvips: untrusted loaders blocked (SVG re-enabled, rasterised from bytes only), no
operation cache, one thread per operation. Pillow: HEIC through pillow-heif. glibc's
allocator keeps freed pixel buffers for the next render (`keep_freed_memory`).
"""

from __future__ import annotations

import ctypes
import os
import platform

os.environ.setdefault("VIPS_CONCURRENCY", "1")

import pillow_heif  # noqa: E402
import pyvips  # noqa: E402
from PIL import Image  # noqa: E402

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Have glibc serve blocks under 32 MB from its heap, trimmed only past 256 MB free.

    By default glibc maps large blocks afresh and unmaps them on free (its threshold
    moves between 128 kB and 32 MB with what was freed last), so a render could fault in
    megabytes of new zeroed pages: up to 1,300 faults and a tenth of a 12 MP → 800 px
    JPEG's CPU on the project's machine. Blocks of 32 MB and more still go back to the
    kernel. Left alone when GLIBC_TUNABLES sets malloc options, and off glibc; True when
    applied."""
    if platform.libc_ver()[0] != "glibc" or "glibc.malloc" in os.environ.get(
            "GLIBC_TUNABLES", ""):
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


keep_freed_memory()

pyvips.block_untrusted_set(True)
pyvips.operation_block_set("VipsForeignLoadSvg", False)
pyvips.cache_set_max(0)
pillow_heif.register_heif_opener()
Image.MAX_IMAGE_PIXELS = None  # darkroom checks its own limits from the header first
