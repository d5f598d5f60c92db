"""Process-wide decoder settings, applied once on import of `darkroom.engine`.

libvips: untrusted loaders blocked (SVG re-enabled, rasterised from bytes only), no
operation cache, one thread per operation. Pillow: HEIC through pillow-heif.
"""

from __future__ import annotations

import os

os.environ.setdefault("VIPS_CONCURRENCY", "1")

import pillow_heif  # noqa: E402
import pyvips  # noqa: E402
from PIL import Image  # noqa: E402

pyvips.block_untrusted_set(True)
pyvips.operation_block_set("VipsForeignLoadSvg", False)
pyvips.cache_set_max(0)
pillow_heif.register_heif_opener()
Image.MAX_IMAGE_PIXELS = None  # darkroom checks its own limits from the header first
