"""Request ids, JSON logs and Prometheus metrics, applied to every request by one middleware."""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import random
import re
import sys
import time

import structlog
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter("darkroom_requests_total", "HTTP requests", ["route", "status"])
LATENCY = Histogram("darkroom_request_seconds", "HTTP request latency", ["route"],
                    buckets=_LATENCY)
CACHE = Counter("darkroom_cache_total", "Result cache lookups", ["result"])
ENGINE = Histogram("darkroom_engine_seconds", "Engine time per render", ["format"],
                   buckets=_LATENCY)
QUEUE = Gauge("darkroom_queue_depth", "Renders running or waiting", multiprocess_mode="livesum")
REJECTIONS = Counter("darkroom_rejections_total", "Error answers by code", ["code"])
JOBS = Counter("darkroom_jobs_total", "Pipeline runs finished", ["pipeline", "status"])
STEPS = Histogram("darkroom_step_seconds", "Pipeline step attempts by outcome",
                  ["type", "outcome"], buckets=_LATENCY)
PRERENDERS = Counter("darkroom_prerenders_total", "Renditions pre-rendered for their steps: "
                     "started, taken by a step, dropped untaken", ["outcome"])

log = structlog.get_logger("darkroom")


@functools.lru_cache(maxsize=1024)
def labelled(metric, *values: str):
    """`metric.labels(*values)`, looked up once: labelling costs more than counting."""
    return metric.labels(*values)


def configure_logging(level: str = "info") -> None:
    """JSON lines on stdout, each with the request id; uvicorn's own lines included."""
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_request_id,
    ]
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


def _add_request_id(_logger: object, _name: str, event: dict) -> dict:
    event.setdefault("request_id", request_id_var.get())
    event.setdefault("pid", os.getpid())
    return event


def route_of(path: str) -> str:
    """A low-cardinality route label for metrics."""
    if path.startswith("/img/"):
        return "/img"
    if path.startswith("/v1/info/"):
        return "/v1/info"
    return path if path in _KNOWN_ROUTES else "other"


_KNOWN_ROUTES = {"/v1/transform", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}


class ObservabilityMiddleware:
    """Sets the request id (echoing a safe `X-Request-Id`), times, counts and logs."""

    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _SAFE_ID.match(given) else _new_request_id()
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        status, started = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled_error", method=scope["method"], path=scope["path"])
            if not started:
                from darkroom.server.errors import internal_error  # (imports this module)

                await internal_error()(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = route_of(scope["path"])
            labelled(REQUESTS, route, str(status)).inc()
            labelled(LATENCY, route).observe(elapsed)
            if self.access_log:
                key = scope.get("state", {}).get("api_key")  # `auth`: who asked
                log.info("request", method=scope["method"], path=scope["path"],
                         status=status, ms=round(elapsed * 1000, 2),
                         **({"api_key": key} if key else {}))
            request_id_var.reset(token)


_ids = random.Random()  # seeded from the OS once per process: ids need not be secret
os.register_at_fork(after_in_child=_ids.seed)  # a forked worker must not repeat its parent's


def _new_request_id() -> str:
    """16 hex digits, without a system call per request."""
    return f"{_ids.getrandbits(64):016x}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
