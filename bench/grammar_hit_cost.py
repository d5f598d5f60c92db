"""CPU per cache hit of each grammar, in process: the ASGI app called directly (no sockets,
no wrk, no kernel connection split), so a few microseconds of parsing are visible.

    /tmp/dv/bin/python bench/grammar_hit_cost.py [--rounds 15] [--requests 1000]

Same request in three grammars (native, Thumbor, SIH), interleaved in rounds; the minimum
process CPU time per request over the rounds is kept for each (the least disturbed one).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import tempfile
import time
from pathlib import Path

from darkroom.config import Settings
from darkroom.server.app import create_app

IMAGE = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "photos" / "face_katherine-maher.jpg"
KEY = "photo.jpg"
SIH = {"bucket": "darkroom", "key": KEY,
       "edits": {"resize": {"width": 200}, "toFormat": "jpeg", "jpeg": {"quality": 80}}}
URLS = {
    "native": (f"/img/{KEY}", b"w=200&fm=jpeg&q=80"),
    "thumbor": (f"/unsafe/200x0/filters:format(jpeg):quality(80)/{KEY}", b""),
    "sih": ("/" + base64.b64encode(json.dumps(SIH).encode()).decode(), b""),
}


async def call(app, path: str, query: bytes) -> dict:
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": query, "headers": [(b"host", b"bench"), (b"accept", b"*/*")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "scheme": "http",
             "http_version": "1.1", "root_path": ""}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return {"status": sent[0]["status"], "headers": dict(sent[0]["headers"]),
            "body": sent[1]["body"]}


async def measure(image: Path, rounds: int, requests: int) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="darkroom-hitcost-"))
    try:
        (data / "storage").mkdir()
        shutil.copy2(image, data / "storage" / KEY)
        app = create_app(Settings(data_dir=data, access_log=False, log_level="warning"))
        bodies = set()
        for path, query in URLS.values():
            await call(app, path, query)  # renders and fills the cache
            answer = await call(app, path, query)
            assert answer["status"] == 200 and answer["headers"][b"x-cache"] == b"HIT", path
            bodies.add(answer["body"])
        assert len(bodies) == 1, "the three grammars must answer the same bytes"
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, (path, query) in URLS.items():
                start = time.process_time()
                for _ in range(requests):
                    await call(app, path, query)
                spent = (time.process_time() - start) / requests * 1e6
                best[name] = min(best.get(name, spent), spent)
        return best
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--image", type=Path, default=IMAGE, help="the source (a JPEG)")
    args = parser.parse_args()
    best = asyncio.run(measure(args.image, args.rounds, args.requests))
    print("| grammar | CPU µs per cache hit (min over rounds) | / native |")
    print("|---|---|---|")
    for name, micros in best.items():
        print(f"| {name} | {micros:.1f} | {micros / best['native']:.3f} |")


if __name__ == "__main__":
    main()
