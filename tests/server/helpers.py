"""Helpers for the HTTP server tests: the corpus, settings on a temporary data dir,
reading images, metrics, error bodies and raw ASGI answers."""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "use httpx2" notice from starlette.testclient
    from starlette.testclient import TestClient  # noqa: F401  (re-exported)

import pyvips
from prometheus_client.parser import text_string_to_metric_families

from darkroom.catalog import intent_spares
from darkroom.config import Settings

from corpus_files import CORPUS, MANIFEST, OK_FILES, REJECT_FILES  # noqa: F401


def pick(predicate: Callable[[dict], bool]) -> dict:
    """The first manifest entry that fits, so tests name what they need, not a file."""
    return next(f for f in MANIFEST if predicate(f))


# A plain upright JPEG photo, and one whose EXIF orientation turns it a quarter.
PHOTO = pick(lambda f: f["expect"] == "ok" and f["container"] == "jpeg" and f["frames"] == 1
             and "photo" in f["traits"] and "cmyk" not in f["traits"]
             and not any(t.startswith("exif-orientation") for t in f["traits"]))
ROTATED = pick(lambda f: "exif-orientation-6" in f["traits"])
ALPHA_PNG = pick(lambda f: f["expect"] == "ok" and f["container"] == "png" and "alpha" in f["traits"])


def settings_for(data_dir: Path, **overrides: object) -> Settings:
    """Settings on `data_dir` with the corpus copied into its storage."""
    overrides.setdefault("access_log", False)
    settings = Settings(data_dir=data_dir, **overrides)
    if settings.storage == "local":
        shutil.copytree(CORPUS, settings.storage_dir, dirs_exist_ok=True)
    return settings


def image_size(data: bytes) -> tuple[int, int]:
    """Width and (page) height of encoded image bytes, as a viewer would show them."""
    image = pyvips.Image.new_from_buffer(data, "")
    fields = image.get_fields()
    height = image.get("page-height") if "page-height" in fields else image.height
    return image.width, height


def loader_of(data: bytes) -> str:
    """The libvips loader that reads `data` (jpegload_buffer, webpload_buffer, ...)."""
    return pyvips.Image.new_from_buffer(data, "").get("vips-loader")


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def left_in_tmp(settings: Settings) -> list[Path]:
    """The files in the data dir's `tmp` but the spare intent files that a live process
    holds (`catalog.intent_spares`): what finished or failed writes left behind."""
    return [p for p in files_under(settings.data_dir / "tmp")
            if not (p.match(intent_spares.PATTERN) and held(p))]


def held(path: Path) -> bool:
    """Whether a process holds the lock (`flock`) on the file at `path`."""
    with open(path, "rb") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def assert_error(response, status: int, code: str | None = None) -> dict:
    """A JSON error body with code, message and the request id of the response."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, error
    return error


def raw_get(app, raw_path: bytes, query: bytes = b"") -> tuple[int, dict, bytes]:
    """Send a GET with an un-normalised path straight to the ASGI app, decoded the way
    uvicorn decodes it (HTTP clients would collapse `..` segments before sending)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": unquote(raw_path.decode("ascii")), "raw_path": raw_path,
        "query_string": query, "root_path": "", "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234), "server": ("testserver", 80),
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body
