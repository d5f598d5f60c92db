#!/usr/bin/env python3
"""Two builds of the upload pipeline under the same load at the same time: server CPU an
image of each, so what the shared machine does to one it does to the other.

usage: bench/pipeline_ab.py A B [--images 96] [--rounds 4] [--warmup 12] [--env-a K=V]
                            [--env-b K=V] [--alone]

A and B are git revisions (checked out in temporary worktrees) or `.` for the working tree;
`--env-a`/`--env-b` add settings to one side (e.g. `--env-b DARKROOM_PIPELINES__RENDER_
THREADS=2`), so `. .` with an env compares configurations. Each round starts both servers
(`darkroom serve`, defaults, each on a fresh data dir, the pipeline of bench/pipeline.py),
uploads the same corpus photos to both at once (4 at a time each) and waits for every job
to succeed; the figure is the median of the rounds' B/A ratios of server CPU an image.
The side started (and loaded) first alternates between rounds: an A/A run (one build on
both sides, started in the same order each round) read 0.996, the second side favoured.
Wall-clock ratios drift by 10-40% between minutes here; this ratio moved by 1-2%
between rounds of identical builds. It says nothing about latency, only about cost.

Two servers at once each have about one core, so their threads may contend for the GIL
less than those of a server alone on the machine (not measured apart from the host's drift
so far: see the twenty-second session in RESULTS.md); a change to threads or processes may
read better here than it is. `--alone` runs the two one after the other instead, each with
the machine to itself, and compares uploads/s end to end (first upload to last job's end)
as well: the machine's drift between minutes weighs on each round's ratio, so more rounds
are needed.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from pipeline import (PIPELINE, ROOT, _finished, _wait_ready, corpus_photos, cpu_seconds,
                      free_port)


def source_dir(revision: str, stack: ExitStack) -> Path:
    """The `src` folder of `revision` (`.`: the working tree's own)."""
    if revision == ".":
        return ROOT / "src"
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(folder),
                    revision], check=True)
    stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(folder)], check=False)
    return folder / "src"


class Server:
    """`darkroom serve` with `src` first on its path, a trigger on `t/`, uploads over HTTP."""

    def __init__(self, src: Path, env: dict[str, str], data: Path) -> None:
        import httpx

        self.port = free_port()
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("darkroom")), "serve"],
            env={**os.environ, "PYTHONPATH": str(src), "DARKROOM_DATA_DIR": str(data),
                 "DARKROOM_PORT": str(self.port), "DARKROOM_ALLOW_UNSIGNED": "true",
                 "DARKROOM_ACCESS_LOG": "false", "DARKROOM_LOG_LEVEL": "warning", **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        try:
            _wait_ready(self.client)
            self.client.put("/v1/pipelines/ab", json={**PIPELINE, "trigger": {
                "prefix": "t/"}}).raise_for_status()
        except BaseException:
            self.stop()
            raise
        self._local = threading.local()

    def upload_all(self, bodies: list[bytes], warmup: int) -> tuple[float, float]:
        """CPU seconds the server spent on uploading `bodies` and running their jobs, after
        `warmup` uploads through the pipeline (waited for, not counted), and seconds from
        the first of those uploads to the last job's end."""
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: self._upload(f"t/w{i}.jpg", bodies[i % len(bodies)]),
                          range(warmup)))
        _finished(self.client, "ab", warmup)
        start, ends, began = cpu_seconds(self.process.pid), [], time.time()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: self._upload(f"t/{i}.jpg", bodies[i]), range(len(bodies))))
        finished = _finished(self.client, "ab", warmup + len(bodies),
                             lambda: ends.append(cpu_seconds(self.process.pid)))
        return ends[0] - start, finished - began

    def _upload(self, key: str, body: bytes) -> None:
        if not hasattr(self._local, "http"):
            self._local.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self._local.http.request("POST", f"/v1/images?key={key}", body,
                                 {"content-type": "image/jpeg"})
        answer = self._local.http.getresponse()
        text = answer.read()
        if answer.status != 201:
            raise SystemExit(f"upload {key}: {answer.status} {text[:200]!r}")

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="git revision, or . for the working tree")
    parser.add_argument("b", help="git revision, or . for the working tree")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=12,
                        help="uploads through each server before its measured ones")
    parser.add_argument("--env-a", action="append", default=[], metavar="K=V")
    parser.add_argument("--env-b", action="append", default=[], metavar="K=V")
    parser.add_argument("--alone", action="store_true",
                        help="one server after the other, each with the machine to itself")
    args = parser.parse_args()
    if args.rounds % 2:
        parser.error("--rounds must be even: each side starts first as often")
    os.environ["VIPS_CONCURRENCY"] = "1"
    photos = corpus_photos()
    bodies = [photos[i % len(photos)].read_bytes() for i in range(args.images)]
    envs = [dict(pair.split("=", 1) for pair in pairs) for pairs in (args.env_a, args.env_b)]
    ratios, speeds = [], []
    with ExitStack() as stack:
        sources = [source_dir(revision, stack) for revision in (args.a, args.b)]
        # every round's files kept until the end: see `pipeline.rounds`
        kept = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="darkroom-ab-")))
        for round_ in range(args.rounds):
            order = (0, 1) if round_ % 2 == 0 else (1, 0)  # who starts first, alternately
            made = [lambda i=i: Server(sources[i], envs[i], kept / f"{round_}{'ab'[i]}")
                    for i in order]
            measured = dict(zip(order, _alone(made, bodies, args.warmup) if args.alone
                                else _together(made, bodies, args.warmup)))
            (a, wall_a), (b, wall_b) = ((1000 * cpu / len(bodies), wall)
                                        for cpu, wall in (measured[0], measured[1]))
            ratios.append(b / a)
            speeds.append(wall_a / wall_b)
            print(f"round {round_ + 1}: server CPU an image A {a:.1f} ms, B {b:.1f} ms, "
                  f"B/A {b / a:.3f}" + (f"; uploads/s A {len(bodies) / wall_a:.2f}, B "
                                        f"{len(bodies) / wall_b:.2f}, B/A {wall_a / wall_b:.3f}"
                                        if args.alone else ""), flush=True)
    print(f"B/A, median of {args.rounds} rounds: {statistics.median(ratios):.3f} "
          f"(rounds {min(ratios):.3f}-{max(ratios):.3f})" + (
              f"; uploads/s B/A {statistics.median(speeds):.3f} (rounds {min(speeds):.3f}-"
              f"{max(speeds):.3f})" if args.alone else ""))
    return 0


def _together(made: list[Callable[[], Server]], bodies: list[bytes], warmup: int
              ) -> list[tuple[float, float]]:
    """Each server's (CPU seconds, seconds), all started, then loaded at once."""
    with ExitStack() as running:
        servers = []
        for make in made:
            servers.append(make())
            running.callback(servers[-1].stop)
        with ThreadPoolExecutor(len(servers)) as both:
            return list(both.map(lambda server: server.upload_all(bodies, warmup), servers))


def _alone(made: list[Callable[[], Server]], bodies: list[bytes], warmup: int
           ) -> list[tuple[float, float]]:
    """Each server's (CPU seconds, seconds), one after the other, each alone."""
    measured = []
    for make in made:
        server = make()
        try:
            measured.append(server.upload_all(bodies, warmup))
        finally:
            server.stop()
    return measured


if __name__ == "__main__":
    sys.exit(main())
