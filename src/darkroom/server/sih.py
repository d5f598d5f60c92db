"""AWS Serverless Image Handler requests at the server root (base64 JSON, Thumbor-style,
query parameters), with SIH's signature, expiry, headers and error bodies.

Only the compile step and the answer's framing differ from `/img/`: ETag, result cache and
rendering are ImageEndpoint's own. A request with no edits and no format change answers
the stored bytes untouched, as SIH does (raster formats only: SVG is always rendered).
"""

from __future__ import annotations

import re
import time
from calendar import timegm
from dataclasses import dataclass, replace
from functools import lru_cache

from starlette.types import Receive, Scope, Send

from darkroom.config import Settings
from darkroom.engine.formats import MIME, sniff
from darkroom.errors import BadRequest, DarkroomError, Forbidden
from darkroom.grammars import sih
from darkroom.grammars.sih_query import kept_params
from darkroom.server.images import Compiled, ImageEndpoint, _matches, accepted_formats
from darkroom.server.renderer import Renderer
from darkroom.server.sih_errors import sih_error
from darkroom.signing import verify_sih
from darkroom.storage import check_key

DEFAULT_CACHE_CONTROL = b"max-age=31536000,public"
PASSTHROUGH = frozenset({"jpeg", "png", "webp", "gif", "avif", "tiff"})
_EXPIRES = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z")
_COMPILED = "darkroom.sih"
_NOT_EDITS = ("signature", "expires")


@dataclass(frozen=True)
class SihCompiled(Compiled):
    """Compiled, plus the Content-Type SIH names (`image/jpg`) when not the format's."""

    content_type: bytes | None = None


@lru_cache(maxsize=4096)
def _to_plan(request: sih.SihRequest, key_of, auto: str | None):
    """The request's plan and Content-Type (memoised: plans are immutable)."""
    return sih.to_plan(request, key_of(request.bucket, request.key), key_of, auto)


@lru_cache(maxsize=4096)
def _parse(path: str, params: tuple[tuple[str, str], ...],
           buckets: tuple[str, ...]) -> sih.SihRequest:
    return sih.parse(path, dict(params), list(buckets))


class SihEndpoint(ImageEndpoint):
    """ImageEndpoint with SIH's grammar, signature, headers and error bodies."""

    claims = staticmethod(sih.claims)

    def __init__(self, settings: Settings, renderer: Renderer) -> None:
        super().__init__(settings, renderer)
        config = settings.sih
        self.buckets = tuple(config.source_buckets)
        self.prefixes = dict(config.bucket_prefixes)
        self._compiled = lru_cache(maxsize=4096)(self._compile)
        key = config.signing_key
        self.secrets = [key.get_secret_value()] if key else self.keys
        self.signed = config.enable_signature or self.require_signature
        if self.signed and not self.secrets:
            raise DarkroomError("sih.enable_signature needs sih.signing_key (or signing_keys)",
                                "bad_config")
        self.auto = (("avif",) if config.auto_avif else ()) + (
            ("webp",) if config.auto_webp else ())
        self.cors = [(b"access-control-allow-methods", b"GET"),
                     (b"access-control-allow-headers", b"Content-Type, Authorization"),
                     (b"access-control-allow-credentials", b"true")]
        if config.cors_enabled:
            self.cors.append((b"access-control-allow-origin", config.cors_origin.encode()))

    async def send_error(self, error: DarkroomError, head: bool, scope: Scope,
                         receive: Receive, send: Send) -> None:
        """SIH's error body, with the CORS headers."""
        status, headers, body = sih_error(error, self.cors)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    def compile(self, scope: Scope) -> SihCompiled:
        if _COMPILED in scope:  # compiled once per request, by _answer
            return scope[_COMPILED]
        auto = None
        if self.auto:
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            auto = next((f for f in self.auto if f in accepted_formats(accept)), None)
        compiled, expires = self._compiled(scope["path"], scope["query_string"], auto)
        seconds = _seconds_left(expires)  # checked on every request: it depends on the clock
        if seconds is None:
            return compiled
        return replace(compiled, cache_control=f"max-age={seconds},public".encode())

    def _compile(self, path: str, raw_query: bytes, auto: str | None
                 ) -> tuple[SihCompiled, str | None]:
        """The signed, parsed request (memoised per endpoint in `_compiled`) and its
        `expires` parameter, if any."""
        params = kept_params(raw_query.decode("latin-1")) if raw_query else {}
        if self.signed:
            verify_sih(self.secrets, path, params)
        edit_params = tuple((k, v) for k, v in params.items() if k not in _NOT_EDITS)
        request = _parse(path, edit_params, self.buckets)
        plan, content_type = _to_plan(request, self._key, auto)
        custom = [(k.lower().encode(), v.encode()) for k, v in request.headers]
        cache = next((v for k, v in custom if k == b"cache-control"), DEFAULT_CACHE_CONTROL)
        headers = [*self.cors, *((k, v) for k, v in custom if k != b"cache-control")]
        if self.auto:
            headers.append((b"vary", b"Accept"))
        compiled = SihCompiled(plan, None, cache, tuple(headers),
                               content_type.encode() if content_type else None)
        return compiled, params.get("expires")

    def _key(self, bucket: str | None, key: str) -> str:
        """The storage key of `key` in an allowed `bucket`."""
        if bucket not in self.buckets:
            raise Forbidden(f"bucket {str(bucket)[:100]!r} is not an allowed source bucket",
                            "bucket_not_allowed")
        return check_key(self.prefixes.get(bucket, "") + key)

    async def _answer(self, scope: Scope) -> tuple[int, list, bytes]:
        compiled = scope[_COMPILED] = self.compile(scope)
        plan = compiled.plan
        if not plan.ops and plan.output.format == "source":
            answer = await self._untouched(scope, compiled)
            if answer is not None:
                return answer
        status, headers, body = await super()._answer(scope)
        headers = [(k, v) for k, v in headers if k != b"content-disposition"]
        if compiled.content_type:
            headers = [(k, compiled.content_type if k == b"content-type" else v)
                       for k, v in headers]
        return status, headers, body

    async def _untouched(self, scope: Scope, compiled: SihCompiled) -> tuple | None:
        """The stored bytes as they are (None when they must be rendered: SVG, HEIC...)."""
        plan = compiled.plan
        cache_key, etag = await self.renderer.etag(plan, frozenset())
        headers = [(b"etag", etag.encode()), (b"cache-control", compiled.cache_control),
                   *compiled.headers]
        if _matches(dict(scope["headers"]).get(b"if-none-match"), etag):
            return 304, headers, b""
        data = await self.renderer.read(plan.source.key, "source_not_found")
        fmt = sniff(data)
        if fmt not in PASSTHROUGH:
            return None
        return 200, [*headers, (b"content-type", MIME[fmt].encode()),
                     (b"content-length", str(len(data)).encode())], data


def _seconds_left(expires: str | None, now: float | None = None) -> int | None:
    """Seconds until `expires` (YYYYMMDDTHHmmssZ, UTC); None without it."""
    if expires is None:
        return None
    match = _EXPIRES.fullmatch(expires)
    try:
        deadline = timegm(time.strptime(expires, "%Y%m%dT%H%M%SZ")) if match else None
    except ValueError:
        deadline = None
    if deadline is None:
        raise BadRequest("expires must be a real UTC time as YYYYMMDDTHHmmssZ, e.g. "
                         "19700102T120304Z", "bad_expires")
    left = deadline - int(now if now is not None else time.time())
    if left < 0:
        raise BadRequest("the request has expired", "request_expired")
    return left
