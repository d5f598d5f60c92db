"""`GET|HEAD /img/{key}?...`: the native grammar, signed, cached, negotiated.

This is the hot path, so it speaks ASGI directly: no request object, no router, and a
memo of compiled URLs, so that a cache hit costs a stat, an open and a read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, quote

from starlette.types import Receive, Scope, Send

from darkroom.config import Settings
from darkroom.engine.formats import EXTENSION, MIME
from darkroom.errors import BadRequest, DarkroomError, MethodNotAllowed
from darkroom.grammars import native
from darkroom.plan import EditPlan
from darkroom.server.errors import error_response
from darkroom.server.renderer import Renderer
from darkroom.signing import verify
from darkroom.storage import check_key

_UNSAFE_FILENAME = re.compile(r"[^\w.\- ]", re.ASCII)  # the plain `filename=` is ASCII
Query = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Compiled:
    """What a grammar makes of a request: the plan and how to answer beside the pixels."""

    plan: EditPlan
    download: str | None = None  # answer as an attachment with this name
    cache_control: bytes | None = None  # None: the configured Cache-Control
    headers: tuple[tuple[bytes, bytes], ...] = ()  # extra response headers


def accepted_formats(accept: str) -> frozenset[str]:
    """Which of AVIF and WebP the client's Accept header names."""
    return frozenset(f for f in ("avif", "webp") if f"image/{f}" in accept)


@lru_cache(maxsize=4096)
def compile_url(path: str, raw_query: str) -> tuple[Query, EditPlan]:
    """The query pairs and the plan of an `/img/` URL (plans are immutable: safe to share)."""
    key = check_key(path[len("/img/"):])
    try:
        query = tuple(parse_qsl(raw_query, keep_blank_values=True, max_num_fields=64))
    except ValueError:  # over max_num_fields
        raise BadRequest("more than 64 query parameters", "bad_param") from None
    return query, native.parse(key, query)


class ImageEndpoint:
    """The ETag is known from the source's version before any pixel work."""

    def __init__(self, settings: Settings, renderer: Renderer) -> None:
        self.keys = [k.get_secret_value() for k in settings.signing_keys]
        self.require_signature = bool(self.keys) and not settings.allow_unsigned
        self.cache_control = settings.cache_control.encode()
        self.renderer = renderer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = scope["method"] == "HEAD"
        try:
            if scope["method"] not in ("GET", "HEAD"):
                raise MethodNotAllowed("use GET or HEAD")
            status, headers, body = await self._answer(scope)
        except DarkroomError as error:
            await self.send_error(error, head, scope, receive, send)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def send_error(self, error: DarkroomError, head: bool, scope: Scope,
                         receive: Receive, send: Send) -> None:
        """darkroom's JSON error; a grammar whose clients expect another body overrides it."""
        await error_response(error, head)(scope, receive, send)

    def compile(self, scope: Scope) -> Compiled:
        """The request's plan (signature checked) and response options: the one step a
        grammar's endpoint replaces."""
        path = scope["path"]
        query, plan = compile_url(path, scope["query_string"].decode("latin-1"))
        if self.require_signature or (self.keys and any(k == "s" for k, _ in query)):
            verify(self.keys, path, query)
        download = next((v for k, v in query if k == "dl"), None)
        if download is not None and len(download) > 255:  # refused before any work
            raise BadRequest("dl is longer than 255 characters", "bad_param")
        return Compiled(plan, download)

    async def _answer(self, scope: Scope) -> tuple[int, list, bytes]:
        compiled = self.compile(scope)
        plan, download = compiled.plan, compiled.download
        request_headers = dict(scope["headers"])
        accept = accepted_formats(request_headers.get(b"accept", b"").decode("latin-1"))
        cache_key, etag = await self.renderer.etag(plan, accept)
        headers = [(b"etag", etag.encode()),
                   (b"cache-control", compiled.cache_control or self.cache_control),
                   *compiled.headers]
        if plan.output.format == "auto":
            headers.append((b"vary", b"Accept"))
        if _matches(request_headers.get(b"if-none-match"), etag):
            return 304, headers, b""
        result = await self.renderer.stored(plan, accept, cache_key, etag)
        headers += [
            (b"content-type", MIME[result.format].encode()),
            (b"content-length", str(len(result.data)).encode()),
            (b"content-disposition", _disposition(plan.source.key, result.format, download)),
            (b"x-cache", b"HIT" if result.cached else b"MISS"),
        ]
        return 200, headers, result.data


def _matches(if_none_match: bytes | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.decode("latin-1").split(",")]
    return "*" in tags or etag in tags


@lru_cache(maxsize=4096)
def _disposition(key: str, fmt: str, download: str | None) -> bytes:
    """`inline` with the key's name and the output's extension; `attachment` for `dl`."""
    stem = (download or key.rsplit("/", 1)[-1]).rsplit(".", 1)[0] or "image"
    name = f"{stem}.{EXTENSION.get(fmt, fmt)}"
    ascii_name = _UNSAFE_FILENAME.sub("_", name)
    kind = "attachment" if download is not None else "inline"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}".encode()
