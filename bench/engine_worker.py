#!/usr/bin/env python3
"""One engine, one workload, in this process: the unit the engine section spawns.

Run with darkroom's venv (it has pyvips, Pillow and darkroom):

    VIPS_CONCURRENCY=1 python bench/engine_worker.py --engine pyvips --workload 12mp/jpeg800 \
        --mode latency --images /tmp/bench/images

Modes (the result is one JSON line on stdout):
  latency     3 warm-up ops, then ops one at a time until --min-iters and --min-time are both
              reached (capped at --max-iters): wall and process-CPU time of every op.
  throughput  load + one warm-up op, print {"ready": true}, wait for "go SECONDS" on stdin, then
              loop for that long: images, seconds, CPU seconds. The driver starts 2 at once.

Buffer -> buffer: the source bytes are read once, before timing; the output stays in memory.
If an engine cannot be imported the line is {"error": ...} and the exit status is 3.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VIPS_CONCURRENCY", "1")
HERE = Path(__file__).resolve().parent
WORKLOADS = {w["name"]: w for w in json.loads((HERE / "workloads.json").read_text())["workloads"]}


def _vm(field: str) -> int:
    """VmHWM / VmRSS of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# -- engines: each returns op(data) -> (bytes, width, height) ---------------------------------

def make_pyvips(w: dict):
    import pyvips

    pyvips.cache_set_max(0)  # no operation cache: every op does the work
    width, height, fmt = w["width"], w.get("height"), w["format"]

    def op(data: bytes):
        if height and w.get("fit") == "cover":
            img = pyvips.Image.thumbnail_buffer(data, width, height=height, crop="centre")
        else:
            img = pyvips.Image.thumbnail_buffer(data, width)
        if fmt == "jpeg":
            if img.hasalpha():
                img = img.flatten(background=[255, 255, 255])
            out = img.jpegsave_buffer(Q=80, optimize_coding=True, keep="none")
        elif fmt == "webp":
            out = img.webpsave_buffer(Q=80, effort=4, keep="none")
        else:
            raise ValueError(fmt)
        return out, img.width, img.height

    version = f"pyvips {pyvips.__version__}, libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
    return op, version


def make_pillow(w: dict):
    from PIL import Image, ImageOps
    import PIL

    width, height, fmt = w["width"], w.get("height"), w["format"]

    def op(data: bytes):
        im = Image.open(io.BytesIO(data))
        if height and w.get("fit") == "cover":
            sw, sh = im.size
            scale = max(width / sw, height / sh)
            if im.format == "JPEG":  # DCT shrink on load to >= 2x the target (reducing_gap=2)
                im.draft("RGB", (int(sw * scale * 2), int(sh * scale * 2)))
            im = ImageOps.fit(im, (width, height), Image.Resampling.LANCZOS)
        else:
            sw, sh = im.size  # the box must be tight, or draft() cannot shrink on load
            im.thumbnail((width, math.ceil(width * sh / sw)), Image.Resampling.LANCZOS, reducing_gap=2.0)
        if im.mode in ("RGBA", "LA", "P", "PA"):
            im = im.convert("RGBA")
            if fmt == "jpeg":
                bg = Image.new("RGB", im.size, (255, 255, 255))
                bg.paste(im, mask=im.getchannel("A"))
                im = bg
        buf = io.BytesIO()
        if fmt == "jpeg":
            im.convert("RGB").save(buf, "JPEG", quality=80, optimize=True)
        elif fmt == "webp":
            im.save(buf, "WEBP", quality=80, method=4)
        else:
            raise ValueError(fmt)
        return buf.getvalue(), im.width, im.height

    return op, f"Pillow {PIL.__version__}"


def make_darkroom(w: dict):
    from darkroom.config import Limits
    from darkroom.engine import render
    from darkroom.plan import EditPlan, Output, Resize

    if w.get("height"):
        resize = Resize(width=w["width"], height=w["height"], fit=w.get("fit", "inside"))
    else:
        resize = Resize(width=w["width"])
    plan = EditPlan(ops=(resize,), output=Output(format=w["format"], quality=80))
    limits = Limits()

    def op(data: bytes):
        r = render(plan, data, limits)
        return r.data, r.width, r.height

    try:
        from importlib.metadata import version as _v
        ver = f"darkroom {_v('darkroom')}"
    except Exception:  # pragma: no cover
        ver = "darkroom"
    return op, ver


ENGINES = {"pyvips": make_pyvips, "pillow": make_pillow, "darkroom": make_darkroom}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=sorted(ENGINES), required=True)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    ap.add_argument("--mode", choices=["latency", "throughput"], default="latency")
    ap.add_argument("--images", default="/tmp/bench/images")
    ap.add_argument("--min-iters", type=int, default=30)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--max-iters", type=int, default=300)
    args = ap.parse_args(argv)

    w = WORKLOADS[args.workload]
    data = (Path(args.images) / w["source"]).read_bytes()
    try:
        op, version = ENGINES[args.engine](w)
    except Exception as exc:  # import or plan construction failed: say so, clearly
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "engine": args.engine}), flush=True)
        return 3
    rss_base = _vm("VmRSS")
    common = {"engine": args.engine, "version": version, "workload": args.workload,
              "pid": os.getpid(), "vips_concurrency": os.environ.get("VIPS_CONCURRENCY")}

    if args.mode == "latency":
        out = b""
        for _ in range(3):
            out, ow, oh = op(data)
        walls, cpus = [], []
        t_start = time.perf_counter()
        while len(walls) < args.max_iters and (
            len(walls) < args.min_iters or time.perf_counter() - t_start < args.min_time
        ):
            c0, t0 = time.process_time(), time.perf_counter()
            out, ow, oh = op(data)
            t1, c1 = time.perf_counter(), time.process_time()
            walls.append((t1 - t0) * 1000)
            cpus.append((c1 - c0) * 1000)
        print(json.dumps({**common, "mode": "latency", "wall_ms": walls, "cpu_ms": cpus,
                          "bytes": len(out), "out_w": ow, "out_h": oh,
                          "rss_base_kb": rss_base, "hwm_kb": _vm("VmHWM")}), flush=True)
        return 0

    # throughput
    out, ow, oh = op(data)
    print(json.dumps({"ready": True}), flush=True)
    line = sys.stdin.readline().split()
    if not line or line[0] != "go":
        return 2
    duration = float(line[1])
    n = 0
    c0, t0 = time.process_time(), time.perf_counter()
    while True:
        op(data)
        n += 1
        t1 = time.perf_counter()
        if t1 - t0 >= duration:
            break
    c1 = time.process_time()
    print(json.dumps({**common, "mode": "throughput", "images": n, "seconds": t1 - t0,
                      "cpu_s": c1 - c0, "bytes": len(out), "out_w": ow, "out_h": oh,
                      "hwm_kb": _vm("VmHWM")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
