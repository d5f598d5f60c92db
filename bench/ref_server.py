#!/usr/bin/env python3
"""The "bare engine" reference server: a minimal HTTP front for one engine, no framework.

    VIPS_CONCURRENCY=1 python bench/ref_server.py --port 9000 --root /tmp/bench/images \
        [--engine pyvips|darkroom]

Serves darkroom's native URL form for the bench workloads, `/img/<file>?w=&h=&fit=&fm=&q=`,
doing exactly what bench/engine_worker.py does for the same engine (buffer -> buffer; the
source is read from disk per request, as a server would). stdlib `ThreadingHTTPServer`,
HTTP/1.1 keep-alive, TCP_NODELAY (without it every response waits ~40 ms for the client's
delayed ACK: http.server writes headers and body separately), and its own SO_REUSEPORT
socket: start two processes on the same port and the kernel spreads the connections.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

os.environ.setdefault("VIPS_CONCURRENCY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_worker  # noqa: E402  (the engines, shared with the engine section)

CTYPE = {"jpeg": "image/jpeg", "webp": "image/webp", "png": "image/png"}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            return  # wrk closing connections with requests in flight at the end of a run
        super().handle_error(request, client_address)


def make_handler(root: Path, engine: str):
    ops: dict[tuple, object] = {}

    def get_op(src: str, q: dict) -> tuple:
        w = {"source": src, "width": int(q["w"]), "format": q.get("fm", "jpeg")}
        if "h" in q:
            w["height"] = int(q["h"])
            w["fit"] = q.get("fit", "inside")
        if int(q.get("q", "80")) != 80:
            raise ValueError("the reference server encodes at q=80 only")
        key = tuple(sorted(w.items()))
        if key not in ops:
            ops[key] = engine_worker.ENGINES[engine](w)[0]
        return ops[key], w["format"]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # TCP_NODELAY

        def log_message(self, *args) -> None:  # no access log
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/healthz":
                return self._send(200, b"ok", "text/plain")
            if not parts.path.startswith("/img/"):
                return self._send(404, b"not found", "text/plain")
            name = unquote(parts.path[len("/img/"):])
            q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            path = (root / name).resolve()
            if root not in path.parents or not path.is_file():
                return self._send(404, b"not found", "text/plain")
            try:
                op, fmt = get_op(name, q)
                data, _, _ = op(path.read_bytes())
            except (KeyError, ValueError) as exc:
                return self._send(400, str(exc).encode(), "text/plain")
            self._send(200, data, CTYPE.get(fmt, "application/octet-stream"))

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # wrk stopping mid-request
                self.close_connection = True

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--root", default="/tmp/bench/images")
    ap.add_argument("--engine", choices=["pyvips", "darkroom"], default="pyvips")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    # fail at start, not on the first request, if the engine cannot be imported
    engine_worker.ENGINES[args.engine]({"width": 8, "format": "jpeg", "source": ""})
    srv = Server((args.host, args.port), make_handler(root, args.engine))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
