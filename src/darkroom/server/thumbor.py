"""Thumbor URLs at the server root: `/{unsafe|signature}/300x200/smart/filters:.../key`.

Only the compile step differs from `/img/`: the path is parsed by `grammars.thumbor` and
the signature is Thumbor's (HMAC-SHA1 over the path as received). ETag, caching,
rendering and headers are ImageEndpoint's own; `meta/` answers JSON instead.
"""

from __future__ import annotations

import json
import re
import time
from email.utils import formatdate
from functools import lru_cache
from urllib.parse import parse_qsl, quote

from starlette.types import Receive, Scope, Send

from darkroom.config import Settings
from darkroom.engine import probe
from darkroom.errors import BadRequest, Forbidden, NotFound
from darkroom.grammars import thumbor
from darkroom.server.images import Compiled, ImageEndpoint
from darkroom.server.renderer import Renderer
from darkroom.server.thumbor_meta import describe
from darkroom.signing import verify_thumbor

HEALTHCHECK = "/healthcheck"
# Near a signature (27-28 characters of either base64 alphabet) but not one: 400, as Thumbor.
_MALFORMED_SIGNATURE = re.compile(r"[A-Za-z0-9+_=-]{27,28}")
_CALLBACK = re.compile(r"[A-Za-z_$][\w$.]{0,63}")


class ThumborEndpoint(ImageEndpoint):
    """ImageEndpoint with Thumbor's grammar and signature; `/healthcheck` says WORKING."""

    def __init__(self, settings: Settings, renderer: Renderer) -> None:
        super().__init__(settings, renderer)
        self.respect_orientation = settings.thumbor.respect_orientation
        self._verified = lru_cache(maxsize=4096)(self._verify)

    @staticmethod
    @lru_cache(maxsize=4096)
    def claims(path: str) -> bool:
        """Whether a root path is Thumbor's: `/healthcheck`, or a first segment that is
        `unsafe` or shaped like a signature (a malformed one gets Thumbor's 400)."""
        if path == HEALTHCHECK:
            return True
        first, _ = thumbor.split_signature(path)
        return first == "unsafe" or bool(_MALFORMED_SIGNATURE.fullmatch(first))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == HEALTHCHECK and scope["method"] in ("GET", "HEAD"):
            body = b"WORKING"
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/plain"), (b"content-length", b"7"),
                (b"cache-control", b"no-cache")]})
            await send({"type": "http.response.body",
                        "body": b"" if scope["method"] == "HEAD" else body})
            return
        await super().__call__(scope, receive, send)

    def compile(self, scope: Scope) -> Compiled:
        request, compiled = self._request(scope)
        if request.max_age is None:
            return compiled
        expires = formatdate(time.time() + request.max_age, usegmt=True)
        return Compiled(request.plan, cache_control=f"public, max-age={request.max_age}"
                        .encode(), headers=((b"expires", expires.encode()),))

    def _request(self, scope: Scope) -> tuple[thumbor.ThumborRequest, Compiled]:
        """The compiled URL, its signature checked, and its Compiled form without the
        clock-dependent `Expires` (memoised per endpoint: the same path always verifies
        the same way)."""
        return self._verified(scope["path"], scope.get("raw_path"))

    def _verify(self, path: str, raw: bytes | None) -> tuple[thumbor.ThumborRequest, Compiled]:
        first, rest = thumbor.split_signature(path)
        if first == "unsafe":
            if self.require_signature:  # Thumbor answers 400 here, not 403
                raise BadRequest("this server needs signed URLs: unsafe/ is not allowed",
                                 "unsafe_not_allowed")
        elif thumbor.SIGNATURE.fullmatch(first):
            if not self.keys:
                raise Forbidden("no signing key is configured: use unsafe/",
                                "bad_signature")
            raw = raw or quote(path).encode()
            _, raw_rest = thumbor.split_signature(raw.decode("utf-8", "replace"))
            verify_thumbor(self.keys, first, raw_rest)
        elif _MALFORMED_SIGNATURE.fullmatch(first):
            raise BadRequest("malformed signature: expected 28 characters of urlsafe "
                             "base64 with its '=' padding", "bad_signature")
        else:
            raise NotFound(f"no route for {path!r}", "no_route")
        request = thumbor.compile_request(rest, self.respect_orientation)
        return request, Compiled(request.plan)

    async def _answer(self, scope: Scope) -> tuple[int, list, bytes]:
        try:
            if self._request(scope)[0].meta:
                return await self._meta(scope)
            return await super()._answer(scope)
        except NotFound as error:
            if error.code == "watermark_not_found":  # Thumbor: a missing watermark is 400
                raise BadRequest(error.message, "watermark_not_found") from None
            raise

    async def _meta(self, scope: Scope) -> tuple[int, list, bytes]:
        """Thumbor's JSON description; JSONP with a `callback` query parameter."""
        plan = self._request(scope)[0].plan
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        callback = query.get("callback")
        if callback is not None and not _CALLBACK.fullmatch(callback):
            raise BadRequest("callback must be a JavaScript name", "bad_param")
        header = probe(await self.renderer.read(plan.source.key, "source_not_found"))
        body = json.dumps(describe(plan, header))
        kind = b"application/json"
        if callback:
            body, kind = f"{callback}({body});", b"text/javascript"
        data = body.encode()
        return 200, [(b"content-type", kind), (b"content-length", str(len(data)).encode()),
                     (b"cache-control", self.cache_control)], data
