"""Who may call the `/v1/` API: bearer tokens, each with a scope.

Each of `api_keys` has a name, a key and a scope: `read` (every `GET`), `write` (also
uploads, replaces, deletes, renders by `/v1/transform`, pipeline runs, retries and
cancels: what changes the catalog or costs compute) or `admin` (also declares and deletes
pipelines, which call webhooks and write under other prefixes); each scope includes the
ones before it. Without `api_keys`, any of `signing_keys` grants every scope, as it always
did, and with neither the API is open. `allow_unsigned` never opens it: it is about image
URLs. The name of the key a request used goes into its access log line.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Depends, Request, params

from darkroom.config import Settings
from darkroom.errors import Forbidden, InsufficientScope, TokenRequired

SCOPES = ("read", "write", "admin")


class Access:
    """The API's keys, as `settings` give them; `require` checks a request."""

    def __init__(self, settings: Settings) -> None:
        if settings.api_keys:
            self._keys = [(_digest(k.key.get_secret_value().encode()), k.name,
                           SCOPES.index(k.scope)) for k in settings.api_keys]
            self.open = False
        else:
            self._keys = [(_digest(k.get_secret_value().encode()), "signing-key",
                           len(SCOPES) - 1) for k in settings.signing_keys]
            self.open = not self._keys

    def need(self, scope: str) -> params.Depends:
        """A route's dependency on a key of `scope`: checked before anything else of the
        request is read or validated, and named in the OpenAPI spec (`x-scope`)."""
        async def check(request: Request) -> None:  # async: on the loop, no thread hop
            self.require(request, scope)

        check.scope = scope  # type: ignore[attr-defined]
        return Depends(check)

    def require(self, request: Request, scope: str) -> None:
        """Raise unless `request` bears a key whose scope includes `scope`."""
        if self.open:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenRequired("send Authorization: Bearer <key>")
        given, found = _digest(token.strip().encode()), None
        for key, name, level in self._keys:  # digests, every one: the time tells nothing
            if hmac.compare_digest(given, key):
                found = (name, level)
        if found is None:
            raise Forbidden("bearer token does not match a key", "bad_token")
        request.state.api_key = found[0]
        if found[1] < SCOPES.index(scope):
            raise InsufficientScope(f"key {found[0]!r} has scope {SCOPES[found[1]]}; this "
                                    f"needs {scope}")


def _digest(token: bytes) -> bytes:
    """SHA-256 of `token`: what is compared, so that neither its length nor its bytes
    show in the time a comparison takes."""
    return hashlib.sha256(token).digest()
