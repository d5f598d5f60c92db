"""Run the server: one process, or N worker processes each with its own SO_REUSEPORT socket.

A listening socket inherited by several workers leaves one of them idle under keep-alive
load; with one socket per worker the kernel spreads connections between them, and an eBPF
program (`server.balance`) makes that spread a round-robin where the kernel allows it.
The supervisor binds the sockets, so it can place a restarted worker's in the rotation.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from importlib import resources
from pathlib import Path

import uvicorn
from prometheus_client import multiprocess

from darkroom.config import Settings
from darkroom.server import waiting
from darkroom.server.app import create_app
from darkroom.server.balance import Balancer
from darkroom.server.observability import configure_logging, log
from darkroom.storage import temps

METRICS_PREFIX = "darkroom-metrics-"


def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; restart a worker that dies."""
    settings.require_safe_binding()
    configure_logging(settings.log_level)
    if settings.workers == 1:
        _worker(settings, _bind_or_exit(settings, reuse=False), 0)
        return
    if settings.port == 0:
        raise SystemExit("--port 0 needs --workers 1 (workers share a fixed port)")
    own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    if own_metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir(Path(tempfile.gettempdir()))
    try:
        _supervise(settings)
    finally:
        if own_metrics_dir:
            shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)


def metrics_dir(parent: Path) -> str:
    """A new folder in `parent` for the workers' metrics, named after this host, pid
    namespace and process; first, those of servers here killed before they could remove
    theirs (their process gone) are removed."""
    prefix = f"{METRICS_PREFIX}{temps.place()}-"
    for old in parent.glob(f"{prefix}*-*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not temps.process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)


def ensure_sample(settings: Settings) -> str | None:
    """Put the sample image into local storage on first run; return its key."""
    if settings.storage != "local":
        return None
    target = settings.storage_dir / "sample.jpg"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with resources.as_file(resources.files("darkroom") / "sample" / "sample.jpg") as src:
            shutil.copyfile(src, target)
    return "sample.jpg"


def _bind(host: str, port: int, reuse: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _bind_or_exit(settings: Settings, reuse: bool) -> socket.socket:
    try:
        return _bind(settings.host, settings.port, reuse)
    except OSError as e:
        raise SystemExit(
            f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}") from None


def _listening(settings: Settings) -> socket.socket:
    sock = _bind_or_exit(settings, reuse=True)
    sock.listen(2048)  # in the group now: the balancer can place it
    return sock


def _balancer(sockets: list[socket.socket]) -> Balancer | None:
    try:
        balancer = Balancer(sockets)
    except OSError as error:
        log.info("connection_round_robin_unavailable", reason=str(error))
        return None
    log.info("connection_round_robin", workers=len(sockets))
    return balancer


def _worker(settings: Settings, sock: socket.socket, index: int) -> None:
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings, index), http="httptools", loop="uvloop",
        access_log=False, log_config=None, lifespan="on", timeout_graceful_shutdown=5,
        server_header=False,
    )
    log.info("worker_started", address=f"{settings.host}:{sock.getsockname()[1]}")
    _Server(config).run(sockets=[sock])


class _Server(uvicorn.Server):
    """uvicorn's server, whose requests waiting for jobs answer at once when it stops."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        waiting.release_all()
        await super().shutdown(sockets)


def _supervise(settings: Settings) -> None:
    context = multiprocessing.get_context("spawn")
    sockets = [_listening(settings) for _ in range(settings.workers)]
    balancer = _balancer(sockets)
    workers = [_start(context, settings, sock, i) for i, sock in enumerate(sockets)]
    started = {process.pid: time.monotonic() for process in workers}
    failed = False
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    quick_deaths = 0  # workers that died soon after starting, in a row
    while not stopping:
        time.sleep(0.5)
        for i, process in enumerate(workers):
            if not process.is_alive() and not stopping:
                log.warning("worker_died", pid=process.pid, exitcode=process.exitcode)
                multiprocess.mark_process_dead(process.pid)  # drop its live gauges
                lived = time.monotonic() - started[process.pid]
                quick_deaths = quick_deaths + 1 if lived < QUICK_DEATH_S else 0
                if quick_deaths > MAX_QUICK_DEATHS:
                    log.error("workers_keep_dying", deaths=quick_deaths)
                    stopping, failed = True, True
                    break
                sock = _listening(settings)
                if balancer is not None:
                    balancer.place(i, sock)
                workers[i] = _start(context, settings, sock, i)
                started[workers[i].pid] = time.monotonic()
    for process in workers:
        process.terminate()
    for process in workers:
        process.join(timeout=10)
    if failed:
        raise SystemExit("workers keep dying at start; see the log")


QUICK_DEATH_S = 10.0  # a worker that dies sooner counts as failing to start
MAX_QUICK_DEATHS = 5


def _start(context, settings: Settings, sock: socket.socket, index: int):
    """A worker serving `sock`; the supervisor's copy is closed once the worker has its own,
    so a dead worker's socket leaves the group with it."""
    process = context.Process(target=_worker, args=(settings, sock, index), daemon=False)
    process.start()
    sock.close()
    return process
