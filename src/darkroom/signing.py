"""URL signatures: HMAC-SHA256, base64url without padding, several keys for rotation.

The signed text is the decoded path, percent-encoded canonically, and the query without
`s`, its pairs sorted by name and value and percent-encoded canonically, so neither the
order a client writes them in nor how it escapes them matters. `exp` (unix seconds) is
part of the signed text, so it cannot be stretched.
Sign with the first key, accept any: rotate by putting the new key first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable, Sequence
from urllib.parse import quote, urlencode

from darkroom.errors import BadRequest, Forbidden, Unauthorized


def canonical(path: str, query: Sequence[tuple[str, str]]) -> str:
    """The text that is signed: `path?sorted-query` (without `s`), or `path` alone.

    `path` is the decoded path (`/img/my photo.jpg`), as the server sees it.
    """
    pairs = sorted((k, v) for k, v in query if k != "s")
    path = quote(path)
    return f"{path}?{urlencode(pairs)}" if pairs else path


def signature(key: str, text: str) -> str:
    """base64url(HMAC-SHA256(key, text)) without padding."""
    digest = hmac.new(key.encode(), text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_url(key: str, path: str, query: Sequence[tuple[str, str]] = (),
             expires: int | None = None) -> str:
    """A signed URL (path and query) for the decoded `path`, valid until `expires` if given."""
    pairs = [(k, v) for k, v in query if k not in ("s", "exp")]
    if expires is not None:
        pairs.append(("exp", str(expires)))
    pairs.sort()
    text = canonical(path, pairs)
    return f"{text}{'&' if pairs else '?'}s={signature(key, text)}"


def verify(keys: Sequence[str], path: str, query: Sequence[tuple[str, str]],
           now: float | None = None) -> None:
    """Raise unless the query's `s` matches one of `keys` and `exp` has not passed."""
    given = [v for k, v in query if k == "s"]
    if not given:
        raise Unauthorized("this server needs signed URLs: add s=<signature>",
                           "signature_required")
    if len(given) > 1:
        raise BadRequest("s given twice", "duplicate_param")
    text = canonical(path, query)
    _require_match(given[0], (signature(k, text) for k in keys))
    expires = [v for k, v in query if k == "exp"]
    if expires:
        try:
            deadline = int(expires[0])
        except ValueError:
            raise BadRequest("exp must be unix seconds", "bad_param") from None
        if (now if now is not None else time.time()) > deadline:
            raise Forbidden("signed URL has expired", "expired_signature")


def thumbor_signature(key: str, text: str) -> str:
    """Thumbor's signature: base64url(HMAC-SHA1(key, text)) *with* `=` padding, where
    `text` is the path after the signature segment exactly as received (percent-encoding
    included, no leading `/`)."""
    digest = hmac.new(key.encode(), text.encode(), hashlib.sha1).digest()
    return base64.urlsafe_b64encode(digest).decode()


def verify_thumbor(keys: Sequence[str], given: str, text: str) -> None:
    """Raise Forbidden unless `given` is the Thumbor signature of `text` under one of `keys`.

    Every key is compared, in constant time, whichever matches."""
    _require_match(given, (thumbor_signature(k, text) for k in keys))


def sih_signature(secret: str, path: str, params: dict[str, str]) -> str:
    """SIH's signature: lowercase hex HMAC-SHA256 of the path, plus `?k=v&...` of the kept
    parameters (sorted, raw values) without `signature` when there are any."""
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")
    text = f"{path}?{query}" if query else path
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def verify_sih(secrets: list[str], path: str, params: dict[str, str]) -> None:
    """Raise unless `params["signature"]` is SIH's signature under one of `secrets`: 400
    when missing, 403 when wrong; every secret is compared in constant time."""
    given = params.get("signature", "")
    if not given:
        raise BadRequest("the query string needs the signature parameter",
                         "signature_required")
    _require_match(given, (sih_signature(s, path, params) for s in secrets))


def _require_match(given: str, expected: Iterable[str]) -> None:
    """Raise Forbidden(bad_signature) unless `given` is one of `expected`; every one is
    compared, in constant time, whichever matches."""
    given_bytes = given.encode("utf-8", "replace")
    matches = [hmac.compare_digest(e.encode(), given_bytes) for e in expected]
    if not any(matches):
        raise Forbidden("signature does not match", "bad_signature")


def sign_webhook(keys: Sequence[str], body: bytes, timestamp: int) -> str:
    """The `Darkroom-Signature` value for `body` sent at `timestamp`, one `v1` per key."""
    return ",".join([f"t={timestamp}", *(f"v1={_digest(k, timestamp, body)}" for k in keys)])


def verify_webhook(keys: Sequence[str], header: str, body: bytes, tolerance_s: float = 300,
                   now: float | None = None) -> int:
    """Raise `Forbidden` unless `header` signs `body` under one of `keys`, with a timestamp
    within `tolerance_s` of `now`; return the timestamp."""
    fields = [part.strip().partition("=") for part in header.split(",")]
    stamps = [value for name, _, value in fields if name == "t"]
    given = [value for name, _, value in fields if name == "v1"]
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()) or not given:
        raise Forbidden("malformed Darkroom-Signature header", "bad_signature")
    timestamp = int(stamps[0])
    expected = [_digest(k, timestamp, body) for k in keys]
    if not any(hmac.compare_digest(e, g) for e in expected for g in given):
        raise Forbidden("no webhook signature matches", "bad_signature")
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise Forbidden("webhook timestamp is outside the tolerance", "expired_signature")
    return timestamp


def _digest(key: str, timestamp: int, body: bytes) -> str:
    return hmac.new(key.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
