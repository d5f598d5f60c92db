"""AWS Serverless Image Handler (SIH) requests, compiled to the one canonical `EditPlan`.

Two path styles, as SIH tells them apart, plus query parameters over either:

- `/{base64(JSON)}` with `{"bucket", "key", "edits", "outputFormat", "headers", "effort"}`:
  `edits` is sharp's vocabulary (see `sih_edits`);
- a Thumbor-style path (`sih_thumbor`), whose last part is the key;
- `?format=&fit=&width=&height=&rotate=&flip=&flop=&grayscale=` (`sih_query`), which
  override the edits of the path (a new `resize` replaces the whole old one).

Parsing gives SIH's own `edits` object (what SIH's tests assert); `to_plan` compiles it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from darkroom.errors import BadRequest, Forbidden
from darkroom.grammars.sih_edits import FORMAT_KEYS, compile_ops
from darkroom.grammars.sih_query import query_edits
from darkroom.grammars.sih_thumbor import parse_path
from darkroom.grammars.sih_values import bad, flag, integer
from darkroom.plan import EditPlan, Output, Source

MAX_PATH = 16 * 1024
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_EXTENSIONS = re.compile(r".*\.(jpe?g|png|webp|tiff?|svg|gif|avif)", re.IGNORECASE)
_ANY_EXTENSION = re.compile(r"\.[^./\\]+$")
_REQUEST = frozenset({"bucket", "key", "edits", "outputFormat", "headers", "effort",
                      "reductionEffort"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_DENIED_HEADER = re.compile(
    r"authorization|connection|server|transfer-encoding|referrer-policy|www-authenticate|"
    r"proxy-authenticate|x-api-key|set-cookie|x-frame-.*|x-content-.*|x-xss-.*|"
    r"strict-transport-.*|permissions-.*|x-amzn?-.*|access-control-.*|cross-origin-.*|"
    r"content-.*|etag|vary|date|x-cache|x-request-id|last-modified", re.IGNORECASE)
OUTPUT_FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp", "avif": "avif",
                  "gif": "gif", "tiff": "tiff", "tif": "tiff"}


@dataclass(frozen=True)
class SihRequest:
    """A request as SIH reads it, before compiling."""

    style: str  # "default" (base64 JSON) or "thumbor"
    bucket: str
    key: str
    edits: dict = field(default_factory=dict, hash=False)
    output_format: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@lru_cache(maxsize=4096)
def claims(path: str) -> bool:
    """Whether a root path is SIH's base64 JSON: base64 (either alphabet, padding
    optional) of text that opens a JSON object. Anything else is a Thumbor-style path."""
    text = path[1:]
    if not text.startswith("ey") or len(text) > MAX_PATH or not _BASE64.fullmatch(text):
        return False
    opening = _b64decode(text[:8])
    return opening is not None and re.match(rb'\{\s*["}]', opening) is not None


def parse(path: str, params: dict[str, str], buckets: list[str]) -> SihRequest:
    """Read a root path and the kept query parameters (see `sih_query.kept_params`)."""
    if len(path) > MAX_PATH:
        raise BadRequest(f"the request path is over {MAX_PATH} characters", "request_too_long")
    if claims(path):
        request = _default(path, buckets)
    elif not _ANY_EXTENSION.search(path) or _EXTENSIONS.fullmatch(path):
        bucket, key, edits = parse_path(path, buckets)
        request = SihRequest("thumbor", bucket, key, edits)
    else:
        raise BadRequest("the key's extension is not one SIH serves (jpg, jpeg, png, tiff, "
                         "tif, webp, svg, gif, avif)", "unsupported_request_type")
    edits = {**request.edits, **query_edits(params)}
    if request.style == "thumbor":
        edits = _fix_quality(edits)
    return SihRequest(request.style, request.bucket, request.key, edits,
                      request.output_format, request.headers)


def _fix_quality(edits: dict) -> dict:
    """SIH's fixQuality: a Thumbor quality() moves to the key of the output format."""
    target = edits.get("toFormat")
    found = next((k for k in edits if k in FORMAT_KEYS), None)
    if target not in FORMAT_KEYS or found in (None, target):
        return edits
    moved = {k: v for k, v in edits.items() if k != found}
    moved[target] = edits[found]
    return moved


def _b64decode(text: str) -> bytes | None:
    text = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _default(path: str, buckets: list[str]) -> SihRequest:
    raw = _b64decode(path[1:])
    try:
        body = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise BadRequest("the request could not be decoded: base64 of a JSON object "
                         "expected", "cannot_decode_request")
    body = {k: v for k, v in body.items() if k in _REQUEST}  # SIH ignores other keys
    bucket = body.get("bucket", buckets[0])
    if not isinstance(bucket, str) or bucket not in buckets:
        raise Forbidden(f"bucket {str(bucket)[:100]!r} is not an allowed source bucket",
                         "bucket_not_allowed")
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise BadRequest("the request needs a key: the image's name in the bucket",
                         "missing_key")
    edits = body.get("edits") or {}
    if not isinstance(edits, dict):
        raise bad("edits", "expected an object")
    output = body.get("outputFormat")
    if output is not None and not isinstance(output, str):
        raise bad("outputFormat", "expected a format name")
    if "effort" in body:
        integer("effort", body["effort"], 0, 9)
    return SihRequest("default", bucket, key, edits, output, _headers(body.get("headers")))


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    """Custom response headers, minus SIH's deny list and darkroom's own headers."""
    if value is None:
        return ()
    if not isinstance(value, dict) or len(value) > 32:
        raise bad("headers", "expected an object of at most 32 headers")
    kept = []
    for name, text in value.items():
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = str(text)
        if (not _HEADER_NAME.fullmatch(name) or not isinstance(text, str) or len(text) > 1024
                or not text.isprintable() or not text.isascii()):
            raise bad("headers", f"bad header {name[:64]!r}: printable ASCII expected")
        if not _DENIED_HEADER.fullmatch(name):
            kept.append((name, text))
    return tuple(kept)


def to_plan(request: SihRequest, key: str, resolve: Callable[[str | None, str], str],
            auto: str | None = None) -> tuple[EditPlan, str | None]:
    """The plan, and the Content-Type SIH would name when it is not the format's own
    (`image/jpg`). `auto` is the format that Accept negotiation chose, if enabled."""
    edits = request.edits
    ops = compile_ops(edits, resolve)
    named = edits.get("toFormat")
    if named is None:  # auto-WebP/AVIF overrides outputFormat, not toFormat
        named = auto or request.output_format
    fmt, content_type = _format(named)
    if fmt == "source" and request.style == "default":
        options = [k for k in edits if k in FORMAT_KEYS]
        if options:  # sharp: the last format call picks the encoder
            fmt, content_type = _format(options[-1])
    quality, lossless = _quality(edits, fmt, request.style)
    animated = edits.get("animated")
    animated = fmt in ("source", "gif") if animated is None else flag("animated", animated)
    output = Output(format=fmt, quality=quality, lossless=lossless, animated=animated)
    return EditPlan(source=Source(key=key), ops=ops, output=output), content_type


def _format(name: object) -> tuple[str, str | None]:
    if name is None:
        return "source", None
    if not isinstance(name, str) or name.lower() not in OUTPUT_FORMATS:
        raise BadRequest(f"output format {str(name)[:40]!r} is not supported: use jpeg, "
                         "png, webp, avif, gif or tiff", "unsupported_output_format")
    name = name.lower()
    return OUTPUT_FORMATS[name], "image/jpg" if name == "jpg" else None


def _quality(edits: dict, fmt: str, style: str) -> tuple[int | None, bool]:
    """Thumbor style: quality() follows the output format; JSON: the options of the
    output format's own key (`"webp": {"quality": 90, "lossless": true}`)."""
    keys = [k for k in FORMAT_KEYS if k in edits]
    if style == "thumbor":
        source = edits[keys[0]] if keys else None
    else:
        source = edits.get(fmt)
    if source is None:
        return None, False
    if not isinstance(source, dict):
        raise bad(fmt, "expected an object of encoder options")
    quality = source.get("quality")
    quality = None if quality is None else integer(f"{fmt}.quality", quality, 1, 100)
    return quality, flag(f"{fmt}.lossless", source.get("lossless", False))
