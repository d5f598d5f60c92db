#!/usr/bin/env python3
"""Pipeline overhead: uploads/s through a real server whose pipeline makes 3 renditions,
against the bare engine making the same 3 renditions of the same images in one process;
and the same pipeline run on demand over the stored images (the pipeline's own overhead).

usage: bench/pipeline.py [--images 48] [--rounds 3] [--concurrency 4] [--threads 4]
                         [--warmup 12] [--database URL] [--photos corpus|camera]
                         [--settle-s 330]

The pipeline side is `darkroom serve` with its defaults (1 process, 2 engine threads, its
in-process worker with 4 render threads) on a fresh data dir: uploads go over HTTP,
`concurrency` at a time, and the clock stops when the last job has succeeded. The reference
renders each image's 3 plans on 4 threads (on 2 cores, its best: 2 threads take 7-12%
longer, as 2 render threads do in the worker), probing each image once, and writes them to
disk atomically, like the `renditions` step. Both run with VIPS_CONCURRENCY=1, `rounds`
times, the reference before and after the pipeline (their mean is the round's reference);
the figure is the median ratio. Both sides are warm, as in every other section of bench/:
`warmup` uploads go through the pipeline (and are waited for) before the clock starts,
and the bare engine renders as many images before its first run, so that first-use costs
(imports on first call, statement compilation, threads started) are not counted as
throughput. `--warmup 0` measures a server from cold (sessions up to 2026-12-06 did).
Beside the wall-clock ratios, each round reports CPU per image: the bare run's own, and the
server's (every thread, from /proc; with `DARKROOM_WORKERS=N` in the environment, the
server's N processes together) over each phase. On a shared, noisy machine the
CPU ratio moves far less than the wall-clock one; the wall-clock one adds the cores left
idle. `tail_s` is the time from the last upload's answer to the last job's end: the jobs
still queued or waiting for the queue's next poll (`pipelines.poll_s`), and the renders
still under way (uploads are answered faster than their renditions are made, so the jobs
queue up). A longer run (`--images 384`) weighs the start and the end of a burst less:
closer to a server's sustained throughput. Load stays on 127.0.0.1. Raw figures go to bench/results/<time>-pipeline.json.
No file of the run is deleted before its end (see `rounds`: on this machine's ext4, which
has no journal, a burst of deletes makes every new file dearer for minutes); the run first
waits (`--settle-s`) for new files to be cheap again after an earlier run's deletes, and
`inode_us` in each round says what a new file cost as it began (15-25 us when unpolluted).

--photos corpus (default): the corpus's JPEG photos of 0.4-2 MP. --photos camera: 12 MP
JPEGs as a camera makes them, with and without an sRGB profile (bench/setup.sh makes them
in /tmp/bench/images). The per-upload costs are the same; the renders are larger.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl

from harness import descendants, proc_cpu

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RENDITIONS = {"thumb": "w=160&h=160&fit=cover&fm=webp", "card": "w=480&fm=webp",
              "large": "w=1200&q=82"}
PIPELINE = {"steps": [{"name": "sizes", "type": "renditions",
                       "params": {"renditions": RENDITIONS}}]}


def camera_photos(folder: Path) -> list[Path]:
    photos = [folder / "12mp.jpg", folder / "12mp-srgb.jpg"]
    missing = [p for p in photos if not p.is_file()]
    if missing:
        raise SystemExit(f"{missing[0]} is missing: run bench/setup.sh first")
    return photos


def corpus_photos() -> list[Path]:
    corpus = Path(os.environ.get("DARKROOM_CORPUS", ROOT.parent / "shared" / "corpus"))
    manifest = json.loads((corpus / "MANIFEST.json").read_text())["files"]
    return [corpus / f["path"] for f in manifest if f["expect"] == "ok"
            and f["container"] == "jpeg" and f["frames"] == 1
            and f["width"] * f["height"] >= 300_000]


def bare_renditions() -> Callable[[bytes, Path, Callable[[], None]], None]:
    """What the bare engine does to one image: probe it once (as the renditions step does),
    then make its 3 renditions, each written to disk atomically at `stem`-<n>.<format>,
    calling `each()` after each."""
    from darkroom.config import Limits
    from darkroom.engine import probe, render
    from darkroom.grammars import native

    limits = Limits()
    plans = [native.parse("x", parse_qsl(q)) for q in RENDITIONS.values()]

    def renditions(data: bytes, stem: Path, each: Callable[[], None] = lambda: None) -> None:
        header = probe(data)
        for n, plan in enumerate(plans):
            result = render(plan, data, limits, header=header)
            target = stem.with_name(f"{stem.name}-{n}.{result.format}")
            temp = target.with_suffix(".tmp")
            temp.write_bytes(result.data)
            os.replace(temp, target)
            each()

    return renditions


def bare_engine(images: list[Path], out: Path, threads: int) -> tuple[float, float]:
    """Seconds for the engine alone to make every image's renditions on `threads` threads,
    and the CPU seconds it used."""
    renditions = bare_renditions()
    out.mkdir(parents=True, exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: renditions(images[i].read_bytes(), out / str(i)),
                      range(len(images))))
    return time.perf_counter() - start, time.process_time() - cpu


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) that process `pid` and the processes it
    started (a server's workers, with `DARKROOM_WORKERS`) used so far, while they run."""
    own = proc_cpu(pid)
    if own is None:
        raise ProcessLookupError(f"process {pid} is gone")
    return own + sum(proc_cpu(child) or 0.0 for child in descendants(pid))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pipeline(images: list[Path], data_dir: Path, concurrency: int, database: str | None,
             tag: str, warmup: int = 0) -> dict[str, float]:
    """Through `darkroom serve`: seconds from the first upload to the last job's success
    (end to end), and from the first on-demand run of the same pipeline over the stored
    images to the last one's success (the pipeline alone); with the CPU seconds the server
    process used in each phase (every thread, read from /proc), and in uploading the stored
    images (no pipeline)."""
    import httpx

    port = free_port()
    env = {**os.environ, "DARKROOM_DATA_DIR": str(data_dir), "DARKROOM_PORT": str(port),
           "DARKROOM_ALLOW_UNSIGNED": "true", "DARKROOM_ACCESS_LOG": "false",
           "DARKROOM_LOG_LEVEL": "warning"}
    if database:
        env["DARKROOM_DATABASE_URL"] = database
    server = subprocess.Popen([str(Path(sys.executable).with_name("darkroom")), "serve"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            _wait_ready(client)
            name = f"bench-{tag}"
            client.put(f"/v1/pipelines/{name}", json={**PIPELINE, "trigger": {
                "prefix": f"{tag}/"}}).raise_for_status()
            time.sleep(1.0)  # the in-process worker starts with the first pipeline
            bodies = [p.read_bytes() for p in images]
            connections = threading.local()

            def upload(key: str, index: int) -> str:
                """POST one image on this thread's kept-alive connection: http.client
                sends the body from C, so the load generator, which shares the server's
                2 cores, costs it little CPU (httpx cost 1.8 ms an upload)."""
                if not hasattr(connections, "http"):
                    connections.http = http.client.HTTPConnection("127.0.0.1", port,
                                                                  timeout=120)
                connections.http.request("POST", f"/v1/images?key={key}", bodies[index],
                                         {"content-type": "image/jpeg"})
                answer = connections.http.getresponse()
                body = answer.read()
                if answer.status != 201:
                    raise SystemExit(f"upload {key}: {answer.status} {body[:200]!r}")
                return json.loads(body)["id"]

            with ThreadPoolExecutor(concurrency) as pool:  # before the clock: warm-up
                list(pool.map(lambda i: upload(f"{tag}/warmup-{i}.jpg", i % len(images)),
                              range(warmup)))
            if warmup:
                _finished(client, name, warmup)
            start, cpu = time.time(), cpu_seconds(server.pid)
            ends: list[float] = []  # the server's CPU as each phase's last job is done
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda i: upload(f"{tag}/{i}.jpg", i), range(len(images))))
            uploaded = time.time()
            finished = _finished(client, name, warmup + len(images),
                                 lambda: ends.append(cpu_seconds(server.pid)))
            end_to_end = finished - start
            end_to_end_cpu = ends[-1] - cpu
            cpu = cpu_seconds(server.pid)
            with ThreadPoolExecutor(concurrency) as pool:  # stored, outside the trigger
                ids = list(pool.map(lambda i: upload(f"stored-{tag}/{i}.jpg", i),
                                    range(len(images))))
            upload_cpu = cpu_seconds(server.pid) - cpu
            start, cpu = time.time(), cpu_seconds(server.pid)
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda i: client.post(
                    f"/v1/pipelines/{name}/runs", params={"image_id": i}).raise_for_status(),
                    ids))
            alone = _finished(client, name, warmup + 2 * len(ids),
                              lambda: ends.append(cpu_seconds(server.pid))) - start
            return {"end_to_end": end_to_end, "end_to_end_cpu": end_to_end_cpu,
                    "tail": finished - uploaded,
                    "upload_cpu": upload_cpu,
                    "alone": alone, "alone_cpu": ends[-1] - cpu}
    finally:
        server.terminate()
        server.wait(timeout=30)


def _finished(client, pipeline: str, count: int,
              idle: Callable[[], object] | None = None) -> float:
    """When the `count`th job of `pipeline` succeeded (the jobs' own clock, so how often
    this looks does not move the figure). The server is asked once a second, cheaply (is
    any job still queued or running?), so that watching costs it little; `idle()` is
    called once none is (to read the server's CPU before the jobs are listed: that
    listing is the benchmark's, not the pipeline's), then the jobs are listed once."""
    while any(client.get("/v1/jobs", params={"pipeline": pipeline, "status": status,
                                             "limit": 1}).json()["items"]
              for status in ("queued", "running")):
        time.sleep(1.0)
    if idle is not None:
        idle()
    jobs, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"pipeline": pipeline, "limit": 100,
                                              **({"cursor": cursor} if cursor else {})}).json()
        jobs += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    if any(j["status"] != "succeeded" for j in jobs) or len(jobs) < count:
        raise SystemExit(f"not every job succeeded: {jobs}")
    return max(datetime.fromisoformat(j["finished_at"]).timestamp() for j in jobs)


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


def rounds(images: list[Path], args: argparse.Namespace, kept: Path):
    """Each round's figures. Every file the rounds make stays in `kept` until the run
    ends: on a filesystem without a journal (this machine's), ext4 skips every inode
    freed in the last seconds to minutes when it allocates one, so a burst of deletes
    (a round's data dir, thousands of files) made each new file of the next round cost up
    to 0.7 ms of CPU instead of 20 us, and the server makes twice the bare engine's files
    an image. For the same reason each bare run writes into a folder of its own, never
    over the files of the one before. `inode_us`: what a new file cost as the round
    began."""
    _settled(kept / "settle", args.settle_s)
    bare_engine([images[i % len(images)] for i in range(args.warmup)], kept / "warm",
                args.threads)  # the bare engine warm, as the server
    for round_ in range(args.rounds):
        folder = kept / f"round-{round_ + 1}"
        inode_us = _inode_cost(folder / "probe")
        before = bare_engine(images, folder / "bare-before", args.threads)
        served = pipeline(images, folder / "data", args.concurrency, args.database,
                          f"r{round_}{os.getpid()}", args.warmup)
        after = bare_engine(images, folder / "bare-after", args.threads)
        # the reference on each side of the pipeline: a machine whose speed drifts during
        # the round moves both alike
        bare, bare_cpu = ((b + a) / 2 for b, a in zip(before, after))
        n = len(images)
        row = {"round": round_ + 1, "images": n, "inode_us": inode_us,
               "bare_s": round(bare, 3),
               "bare_s_before_after": [round(before[0], 3), round(after[0], 3)],
               "end_to_end_s": round(served["end_to_end"], 3),
               "pipeline_alone_s": round(served["alone"], 3),
               "bare_per_s": round(n / bare, 2),
               "uploads_per_s": round(n / served["end_to_end"], 2),
               "end_to_end_overhead": round(served["end_to_end"] / bare - 1, 3),
               "tail_s": round(served["tail"], 3),
               "pipeline_overhead": round(served["alone"] / bare - 1, 3),
               "bare_cpu_ms": round(1000 * bare_cpu / n, 1),
               "end_to_end_cpu_ms": round(1000 * served["end_to_end_cpu"] / n, 1),
               "alone_cpu_ms": round(1000 * served["alone_cpu"] / n, 1),
               "upload_cpu_ms": round(1000 * served["upload_cpu"] / n, 1),
               "end_to_end_cpu_overhead": round(served["end_to_end_cpu"] / bare_cpu - 1, 3),
               "alone_cpu_overhead": round(served["alone_cpu"] / bare_cpu - 1, 3)}
        yield row


def _settled(folder: Path, most_s: float, cheap_us: float = 60.0) -> None:
    """Wait (at most `most_s`) until a new file costs under `cheap_us` again: a run that
    ended just before, this one's own or another's, deleted its files."""
    start = time.monotonic()
    while (cost := _inode_cost(folder / str(int(time.monotonic() - start)))) > cheap_us:
        if time.monotonic() - start > most_s:
            print(f"new files still cost {cost} us after {most_s:.0f} s: measuring anyway",
                  file=sys.stderr, flush=True)
            return
        print(f"new files cost {cost} us (recent deletes): waiting", file=sys.stderr,
              flush=True)
        time.sleep(15)


def _inode_cost(folder: Path, count: int = 50) -> float:
    """Microseconds of CPU a new empty file costs in `folder` now."""
    folder.mkdir(parents=True)
    start = time.process_time()
    for i in range(count):
        os.close(os.open(folder / str(i), os.O_CREAT | os.O_WRONLY, 0o644))
    return round(1e6 * (time.process_time() - start) / count, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="uploads per round (at most 1000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="uploads at once")
    parser.add_argument("--threads", type=int, default=4,
                        help="the reference's render threads (4: its best on 2 cores)")
    parser.add_argument("--warmup", type=int, default=12,
                        help="uploads through the pipeline (and bare renders) before timing")
    parser.add_argument("--database", help="catalog URL (default: SQLite in the data dir)")
    parser.add_argument("--settle-s", type=float, default=330,
                        help="at most this long, wait first for new files to be cheap again")
    parser.add_argument("--photos", choices=("corpus", "camera"), default="corpus",
                        help="corpus JPEGs of 0.4-2 MP, or 12 MP camera-size JPEGs")
    parser.add_argument("--images-dir", type=Path, default=Path("/tmp/bench/images"),
                        help="where bench/setup.sh put the 12 MP JPEGs")
    args = parser.parse_args()
    os.environ["VIPS_CONCURRENCY"] = "1"
    photos = corpus_photos() if args.photos == "corpus" else camera_photos(args.images_dir)
    images = [photos[i % len(photos)] for i in range(min(args.images, 1000))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="darkroom-bench-") as kept:
        for row in rounds(images, args, Path(kept)):
            rows.append(row)
            print(json.dumps(row), flush=True)
    median = {key: statistics.median(r[key] for r in rows) for key in (
        "end_to_end_overhead", "pipeline_overhead", "uploads_per_s", "bare_per_s",
        "end_to_end_cpu_overhead", "alone_cpu_overhead", "bare_cpu_ms", "end_to_end_cpu_ms",
        "alone_cpu_ms", "upload_cpu_ms", "tail_s")}
    summary = {**{f"median_{k}": v for k, v in median.items()}, "renditions": RENDITIONS,
               "upload_concurrency": args.concurrency, "reference_threads": args.threads,
               "warmup": args.warmup,
               "server_threads": os.environ.get("DARKROOM_THREADS", "default"),
               "server_render_threads": os.environ.get("DARKROOM_PIPELINES__RENDER_THREADS",
                                                       "default"),
               "database": args.database or "sqlite",
               "photos": args.photos,
               "rounds": rows}
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"{time.strftime('%Y%m%d-%H%M%S')}-pipeline.json").write_text(
        json.dumps(summary, indent=2))
    print(f"median of {args.rounds} rounds, {len(images)} {args.photos} images, "
          "3 renditions each: "
          f"{median['uploads_per_s']} uploads/s end to end, bare engine "
          f"{median['bare_per_s']} images/s; overhead end to end (HTTP upload, catalog, "
          f"metadata, pipeline) {median['end_to_end_overhead']:+.1%}, pipeline alone "
          f"(queue, workflow, steps) {median['pipeline_overhead']:+.1%}; CPU per image: bare "
          f"{median['bare_cpu_ms']} ms, end to end {median['end_to_end_cpu_ms']} ms "
          f"({median['end_to_end_cpu_overhead']:+.1%}), pipeline alone "
          f"{median['alone_cpu_ms']} ms ({median['alone_cpu_overhead']:+.1%}), an upload "
          f"alone (no pipeline) {median['upload_cpu_ms']} ms; from the last upload's "
          f"answer to the last job's end {median['tail_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
