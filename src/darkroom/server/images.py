"""`GET|HEAD /img/{key}?...`: the native grammar, signed, cached, negotiated."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import Response

from darkroom.config import Settings
from darkroom.engine.formats import EXTENSION, MIME
from darkroom.errors import BadRequest, DarkroomError, MethodNotAllowed
from darkroom.grammars import native
from darkroom.server.errors import error_response
from darkroom.server.renderer import Renderer
from darkroom.signing import verify
from darkroom.storage import check_key

_UNSAFE_FILENAME = re.compile(r'[^\w.\- ]')


def accepted_formats(accept: str) -> frozenset[str]:
    """Which of AVIF and WebP the client's Accept header names."""
    return frozenset(f for f in ("avif", "webp") if f"image/{f}" in accept)


class ImageEndpoint:
    """The hot path: the ETag is known from the source's version before any pixel work."""

    def __init__(self, settings: Settings, renderer: Renderer) -> None:
        self.keys = [k.get_secret_value() for k in settings.signing_keys]
        self.require_signature = bool(self.keys) and not settings.allow_unsigned
        self.cache_control = settings.cache_control
        self.renderer = renderer

    async def __call__(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        head = request.method == "HEAD"
        try:
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed("use GET or HEAD")
            response = await self._answer(request)
        except DarkroomError as error:
            response = error_response(error, head)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        path = request.url.path
        key = check_key(path[len("/img/"):])
        query = parse_qsl(request.url.query, keep_blank_values=True, max_num_fields=64)
        if self.require_signature or (self.keys and any(k == "s" for k, _ in query)):
            verify(self.keys, path, query)
        plan = native.parse(key, query)
        accept = accepted_formats(request.headers.get("accept", ""))
        cache_key, etag = await self.renderer.etag(plan, accept)
        headers = {"ETag": etag, "Cache-Control": self.cache_control}
        if plan.output.format == "auto":
            headers["Vary"] = "Accept"
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        result = await self.renderer.stored(plan, accept, cache_key, etag)
        headers["Content-Disposition"] = _disposition(key, result.format, dict(query).get("dl"))
        headers["X-Cache"] = "HIT" if result.cached else "MISS"
        body = b"" if request.method == "HEAD" else result.data
        response = Response(body, headers=headers, media_type=MIME[result.format])
        response.headers["content-length"] = str(len(result.data))
        return response


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _disposition(key: str, fmt: str, download: str | None) -> str:
    """`inline` with the key's name and the output's extension; `attachment` for `dl`."""
    if download is not None and len(download) > 255:
        raise BadRequest("dl is longer than 255 characters", "bad_param")
    stem = (download or key.rsplit("/", 1)[-1]).rsplit(".", 1)[0] or "image"
    name = f"{stem}.{EXTENSION.get(fmt, fmt)}"
    ascii_name = _UNSAFE_FILENAME.sub("_", name)
    kind = "attachment" if download is not None else "inline"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
