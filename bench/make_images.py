#!/usr/bin/env python3
"""Generate the benchmark's workload images, deterministically, with pyvips.

    python bench/make_images.py [--out /tmp/bench/images] [--force]

All start from a real photo of the shared corpus (upscaled, so there is
plenty of smooth area), plus seeded Gaussian noise so that the JPEG does not
compress trivially and decode cost resembles a real camera file:

  12mp.jpg   4000x3000, Q90, 4:2:0 chroma subsampling, no metadata
  12mp-srgb.jpg  the same pixels with a camera's sRGB profile embedded (the 3144-byte
             "sRGB IEC61966-2.1" of the corpus's png/face_astronaut.png), as most
             camera and web JPEGs carry one
  2mp.jpg    1920x1080, Q90, 4:2:0, no metadata
  alpha.png  1000x1000 RGBA, a feathered (soft) elliptical cut-out

The same libvips version gives the same bytes; a manifest with sizes and
SHA-256 is written next to the images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("VIPS_CONCURRENCY", "1")
import pyvips  # noqa: E402

CORPUS = Path(os.environ.get("DARKROOM_CORPUS", "/work/shared/corpus"))
SOURCE = CORPUS / "photos" / "exif-orientation-6_portrait.jpg"  # 1800x1200, EXIF 6 -> 1200x1800


def _base() -> pyvips.Image:
    img = pyvips.Image.new_from_file(str(SOURCE)).autorot()
    img = img.colourspace("srgb")
    if img.hasalpha():
        img = img.flatten()
    return img.copy_memory()  # 1200 x 1800


def _noisy(img: pyvips.Image, sigma: float, seed: int) -> pyvips.Image:
    bands = [
        pyvips.Image.gaussnoise(img.width, img.height, mean=0.0, sigma=sigma, seed=seed + b)
        for b in range(img.bands)
    ]
    noise = bands[0].bandjoin(bands[1:]) if len(bands) > 1 else bands[0]
    return (img.cast("float") + noise).cast("uchar")  # cast clips to 0..255


def _scaled(img: pyvips.Image, left: int, top: int, w: int, h: int, out_w: int, out_h: int):
    crop = img.crop(left, top, w, h)
    return crop.resize(out_w / w, vscale=out_h / h, kernel="lanczos3")


def make_12mp(base: pyvips.Image) -> pyvips.Image:
    # bottom 1200x900 band (horizon, figure, ground) -> 4000x3000
    img = _scaled(base, 0, 900, 1200, 900, 4000, 3000)
    return _noisy(img, sigma=4.0, seed=1200)


def make_12mp_srgb(base: pyvips.Image) -> pyvips.Image:
    img = make_12mp(base).copy()
    profile = pyvips.Image.new_from_file(str(CORPUS / "png" / "face_astronaut.png"))
    img.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile.get("icc-profile-data"))
    return img


def make_2mp(base: pyvips.Image) -> pyvips.Image:
    img = _scaled(base, 0, 850, 1200, 675, 1920, 1080)
    return _noisy(img, sigma=2.0, seed=200)


def make_alpha(base: pyvips.Image) -> pyvips.Image:
    rgb = _noisy(_scaled(base, 0, 300, 1200, 1200, 1000, 1000), sigma=2.0, seed=1000)
    # feathered ellipse: 1 inside, 0 outside, a soft ~60 px edge
    xy = pyvips.Image.xyz(1000, 1000)
    x = (xy[0] - 500.0) / 430.0
    y = (xy[1] - 500.0) / 380.0
    d = (x * x + y * y) ** 0.5  # 1.0 on the ellipse
    alpha = ((1.0 - d) * 255.0 / 0.12 + 128.0)  # ramp across the edge
    alpha = (alpha > 255).ifthenelse(255, (alpha < 0).ifthenelse(0, alpha)).gaussblur(4)
    return rgb.bandjoin(alpha.cast("uchar")).copy(interpretation="srgb")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/bench/images")
    ap.add_argument("--force", action="store_true", help="regenerate even if present")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = {
        "12mp.jpg": (make_12mp, dict(Q=90, subsample_mode="on", keep="none", optimize_coding=False)),
        "12mp-srgb.jpg": (make_12mp_srgb, dict(Q=90, subsample_mode="on", keep="icc",
                                               optimize_coding=False)),
        "2mp.jpg": (make_2mp, dict(Q=90, subsample_mode="on", keep="none", optimize_coding=False)),
        "alpha.png": (make_alpha, dict(compression=6, keep="none")),
    }
    if not args.force and all((out / n).is_file() for n in targets) and (out / "MANIFEST.json").is_file():
        print(f"[images] present in {out}", file=sys.stderr)
        return 0
    base = _base()
    manifest = {"source": str(SOURCE), "libvips":
                f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}", "files": {}}
    for name, (fn, opts) in targets.items():
        img = fn(base)
        data = img.write_to_buffer("." + name.rsplit(".", 1)[1], **opts)
        tmp = out / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(out / name)
        manifest["files"][name] = {
            "width": img.width, "height": img.height, "bands": img.bands,
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        }
        print(f"[images] {name}: {img.width}x{img.height}x{img.bands} {len(data)} bytes", file=sys.stderr)
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
