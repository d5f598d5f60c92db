#!/usr/bin/env python3
"""The pipeline's CPU an upload against the bare engine's CPU an image, measured at once.

usage: bench/pipeline_vs_bare.py [--images 192] [--rounds 4] [--warmup 12]

`bench/pipeline.py` times the bare engine and the server one after the other; this shared
machine's speed drifts by 10-40% between minutes, and a round's ratio moves as much. Here
both run at the same time, as `bench/pipeline_ab.py` runs two servers: each round starts
`darkroom serve` (its defaults, the pipeline of bench/pipeline.py, a fresh data dir) and a
bare-engine process that renders the same corpus photos over and over on 4 threads (what
bench/pipeline.py's reference does to each image: probe it once, make the 3 renditions,
write each to disk atomically) until told to stop. `images` uploads go to the server, 4 at
a time, after `warmup` more; the window is from the first measured upload to the end of
the last job. The figure is the server's CPU an upload (every thread, from /proc) over
the bare process's CPU an image in the same window (its own CPU over the renditions it
finished, three to an image): the median of the rounds. Both sides share the cores and
their caches alike, so the ratio is what the server costs; it says nothing of latency,
nor of cores left idle (bench/pipeline.py's wall-clock figure has those). Load stays on
127.0.0.1; every file stays until the run ends (see `pipeline.rounds`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline import (ROOT, _finished, bare_renditions, corpus_photos, cpu_seconds)
from pipeline_ab import Server

THREADS = 4  # the bare engine's best on 2 cores (see bench/pipeline.py)


def bare_loop(out: Path) -> None:
    """The child: render the corpus photos over and over on THREADS threads until stdin
    closes; for each line read, write "<renditions finished> <CPU seconds so far>"."""
    renditions = bare_renditions()
    photos = [p.read_bytes() for p in corpus_photos()]
    finished, lock, stop = [0], threading.Lock(), threading.Event()

    def one() -> None:
        with lock:
            finished[0] += 1

    def work(worker: int) -> None:
        for index in range(worker, sys.maxsize, THREADS):
            if stop.is_set():
                return
            renditions(photos[index % len(photos)], out / f"{index}", one)

    out.mkdir(parents=True, exist_ok=True)
    threads = [threading.Thread(target=work, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for _ in sys.stdin:
        with lock:
            print(finished[0], time.process_time(), flush=True)
    stop.set()
    for thread in threads:
        thread.join()


class Bare:
    """The bare-engine child process, asked where it stands with `mark()`."""

    def __init__(self, out: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--bare-child", str(out)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "VIPS_CONCURRENCY": "1"})

    def mark(self) -> tuple[int, float]:
        """(renditions finished, CPU seconds used) so far."""
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        done, cpu = self.process.stdout.readline().split()
        return int(done), float(cpu)

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=120)


def one_round(bodies: list[bytes], warmup: int, kept: Path) -> tuple[float, float]:
    """(server CPU ms an upload, bare CPU ms an image) over one shared window."""
    server = Server(ROOT / "src", {}, kept / "data")
    bare = Bare(kept / "bare")
    try:
        with ThreadPoolExecutor(4) as pool:  # the server warm; the bare engine warms meanwhile
            list(pool.map(lambda i: server._upload(f"t/w{i}.jpg", bodies[i % len(bodies)]),
                          range(warmup)))
        _finished(server.client, "ab", warmup)
        start, marks = cpu_seconds(server.process.pid), [bare.mark()]
        ends = []
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: server._upload(f"t/{i}.jpg", bodies[i]),
                          range(len(bodies))))
        _finished(server.client, "ab", warmup + len(bodies),
                  lambda: (ends.append(cpu_seconds(server.process.pid)),
                           marks.append(bare.mark())))
    finally:
        bare.stop()
        server.stop()
    (done_0, cpu_0), (done_1, cpu_1) = marks
    return (1000 * (ends[0] - start) / len(bodies),
            1000 * (cpu_1 - cpu_0) / ((done_1 - done_0) / 3))


def main() -> int:
    if sys.argv[1:2] == ["--bare-child"]:
        bare_loop(Path(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=12)
    args = parser.parse_args()
    os.environ["VIPS_CONCURRENCY"] = "1"
    photos = corpus_photos()
    bodies = [photos[i % len(photos)].read_bytes() for i in range(args.images)]
    ratios = []
    with tempfile.TemporaryDirectory(prefix="darkroom-vs-bare-") as kept:
        for round_ in range(args.rounds):
            served, bare = one_round(bodies, args.warmup, Path(kept) / str(round_))
            ratios.append(served / bare)
            print(f"round {round_ + 1}: CPU server {served:.1f} ms an upload, bare engine "
                  f"{bare:.1f} ms an image, overhead {served / bare - 1:+.1%}", flush=True)
    print(f"CPU overhead of the pipeline over the bare engine, at the same time, median of "
          f"{args.rounds} rounds: {statistics.median(ratios) - 1:+.1%} (rounds "
          f"{min(ratios) - 1:+.1%} to {max(ratios) - 1:+.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
