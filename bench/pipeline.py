#!/usr/bin/env python3
"""Pipeline overhead: uploads/s through a real server whose pipeline makes 3 renditions,
against the bare engine making the same 3 renditions of the same images in one process.

usage: bench/pipeline.py [--images 48] [--rounds 3] [--concurrency 4] [--database URL]

The pipeline side is `darkroom serve` (1 process, 2 engine threads, its in-process worker)
on a fresh data dir: uploads go over HTTP, `concurrency` at a time, and the clock stops when
the last job has succeeded. The reference renders each image's 3 plans on 2 threads (the
machine's cores) and writes them to disk atomically, like the `renditions` step. Both run
with VIPS_CONCURRENCY=1, alternately, `rounds` times; the figure is the median ratio.
Load stays on 127.0.0.1. Raw figures go to bench/results/<time>-pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RENDITIONS = {"thumb": "w=160&h=160&fit=cover&fm=webp", "card": "w=480&fm=webp",
              "large": "w=1200&q=82"}
PIPELINE = {"steps": [{"name": "sizes", "type": "renditions",
                       "params": {"renditions": RENDITIONS}}]}


def corpus_photos() -> list[Path]:
    corpus = Path(os.environ.get("DARKROOM_CORPUS", ROOT.parent / "shared" / "corpus"))
    manifest = json.loads((corpus / "MANIFEST.json").read_text())["files"]
    return [corpus / f["path"] for f in manifest if f["expect"] == "ok"
            and f["container"] == "jpeg" and f["frames"] == 1
            and f["width"] * f["height"] >= 300_000]


def bare_engine(images: list[Path], out: Path) -> float:
    """Seconds for the engine alone to make every image's renditions on 2 threads."""
    from darkroom.config import Limits
    from darkroom.engine import render
    from darkroom.grammars import native

    limits = Limits()
    plans = [native.parse("x", parse_qsl(q)) for q in RENDITIONS.values()]

    def one(index: int) -> None:
        data = images[index].read_bytes()
        for n, plan in enumerate(plans):
            result = render(plan, data, limits)
            target = out / f"{index}-{n}.{result.format}"
            temp = target.with_suffix(".tmp")
            temp.write_bytes(result.data)
            os.replace(temp, target)

    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(len(images))))
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pipeline(images: list[Path], data_dir: Path, concurrency: int, database: str | None
             ) -> float:
    """Seconds from the first upload to the last job's success, through `darkroom serve`."""
    import httpx

    port = free_port()
    env = {**os.environ, "DARKROOM_DATA_DIR": str(data_dir), "DARKROOM_PORT": str(port),
           "DARKROOM_ALLOW_UNSIGNED": "true", "DARKROOM_ACCESS_LOG": "false",
           "DARKROOM_LOG_LEVEL": "warning",
           "DARKROOM_PIPELINES__CONCURRENCY": str(concurrency)}
    if database:
        env["DARKROOM_DATABASE_URL"] = database
    server = subprocess.Popen([str(Path(sys.executable).with_name("darkroom")), "serve"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            _wait_ready(client)
            client.put("/v1/pipelines/bench", json=PIPELINE).raise_for_status()
            time.sleep(1.0)  # the in-process worker starts with the first pipeline
            bodies = [p.read_bytes() for p in images]

            def upload(index: int) -> str:
                answer = client.post(f"/v1/images?key=b{index}.jpg", content=bodies[index],
                                     headers={"content-type": "image/jpeg"})
                answer.raise_for_status()
                return answer.json()["jobs"][0]["id"]

            start = time.time()
            with ThreadPoolExecutor(concurrency) as pool:
                jobs = list(pool.map(upload, range(len(images))))
            while True:  # slow polling: the clock is the jobs' own finished_at
                time.sleep(0.5)
                page = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
                if any(j["status"] == "failed" for j in page):
                    raise SystemExit(f"a job failed: {page}")
                if sum(j["status"] == "succeeded" for j in page) >= len(jobs):
                    end = max(datetime.fromisoformat(j["finished_at"]) for j in page)
                    return end.timestamp() - start
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_ready(client) -> None:
    import httpx

    for _ in range(300):
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("darkroom serve did not get ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="uploads per round (max 100)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="uploads and runs at once")
    parser.add_argument("--database", help="catalog URL (default: SQLite in the data dir)")
    args = parser.parse_args()
    os.environ["VIPS_CONCURRENCY"] = "1"
    photos = corpus_photos()
    images = [photos[i % len(photos)] for i in range(min(args.images, 100))]
    rows = []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as ref_dir, tempfile.TemporaryDirectory() as data:
            bare = bare_engine(images, Path(ref_dir))
            piped = pipeline(images, Path(data), args.concurrency, args.database)
        row = {"round": round_ + 1, "images": len(images), "bare_s": round(bare, 3),
               "pipeline_s": round(piped, 3), "bare_per_s": round(len(images) / bare, 2),
               "uploads_per_s": round(len(images) / piped, 2),
               "overhead": round(piped / bare - 1, 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"median_overhead": statistics.median(r["overhead"] for r in rows),
               "median_uploads_per_s": statistics.median(r["uploads_per_s"] for r in rows),
               "median_bare_per_s": statistics.median(r["bare_per_s"] for r in rows),
               "renditions": RENDITIONS, "concurrency": args.concurrency,
               "database": args.database or "sqlite", "rounds": rows}
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"{time.strftime('%Y%m%d-%H%M%S')}-pipeline.json").write_text(
        json.dumps(summary, indent=2))
    print(f"pipeline overhead (median of {args.rounds}): {summary['median_overhead']:+.1%} "
          f"({summary['median_uploads_per_s']} uploads/s with 3 renditions each, bare engine "
          f"{summary['median_bare_per_s']} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
