"""The one exception tree of darkroom.

Every error a client can see is a `DarkroomError`; its class fixes the HTTP status, and
each raise names a stable machine code for the precise cause::

    DarkroomError (500 internal)
    ├── BadRequest (400)        bad_param, unknown_param, bad_key, bad_plan, bad_color, ...
    ├── Unauthorized (401)      signature_required
    ├── Forbidden (403)         bad_signature, expired_signature
    ├── NotFound (404)          not_found, source_not_found, watermark_not_found
    ├── MethodNotAllowed (405)  method_not_allowed
    ├── Conflict (409)          image_exists, idempotency_conflict
    ├── TooLarge (413)          source_too_large, too_many_pixels, too_many_frames,
    │                           output_too_large, body_too_large
    ├── Unsupported (415)       unsupported_format, unsafe_svg
    ├── Unprocessable (422)     corrupt_image, time_budget_exceeded
    ├── NotImplementedYet (501) not_implemented, unsupported_edit
    ├── Overloaded (503)        overloaded (with Retry-After)
    ├── CatalogError (503)      catalog_unavailable
    ├── StorageError (502)      storage_unavailable
    └── DeliveryError (502)     delivery_failed (events.base: a sink refused an event)

`server.errors` alone turns these into `{"error": {"code", "message", "request_id"}}`.
Foreign errors (pyvips, obstore, Pillow) are translated where they are called.
"""

from __future__ import annotations


class DarkroomError(Exception):
    """Base of every error darkroom reports; `status` and `code` go to the client."""

    status = 500
    default_code = "internal"

    def __init__(self, message: str = "internal error", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class BadRequest(DarkroomError):
    """The request itself is malformed: a parameter, a key, a plan."""

    status = 400
    default_code = "bad_param"


class Unauthorized(DarkroomError):
    """A signature is needed and none was given."""

    status = 401
    default_code = "signature_required"


class TokenRequired(Unauthorized):
    """The API needs a bearer key and none was given."""

    default_code = "token_required"
    headers = {"WWW-Authenticate": 'Bearer realm="darkroom"'}


class Forbidden(DarkroomError):
    """A signature was given but is wrong or expired."""

    status = 403
    default_code = "bad_signature"


class InsufficientScope(Forbidden):
    """The API key given does not grant what the request needs."""

    default_code = "insufficient_scope"
    headers = {"WWW-Authenticate": 'Bearer realm="darkroom", error="insufficient_scope"'}


class NotFound(DarkroomError):
    """The source (or another named object) does not exist."""

    status = 404
    default_code = "not_found"


class MethodNotAllowed(DarkroomError):
    """The route exists but not for this HTTP method."""

    status = 405
    default_code = "method_not_allowed"


class Conflict(DarkroomError):
    """The request clashes with what exists: a taken key, a reused idempotency key."""

    status = 409
    default_code = "conflict"


class TooLarge(DarkroomError):
    """A limit on bytes, pixels, frames or output size was exceeded."""

    status = 413
    default_code = "too_large"


class Unsupported(DarkroomError):
    """The bytes are not an image format darkroom accepts."""

    status = 415
    default_code = "unsupported_format"


class Unprocessable(DarkroomError):
    """The image claims a supported format but cannot be processed (corrupt, too slow)."""

    status = 422
    default_code = "corrupt_image"


class NotImplementedYet(DarkroomError):
    """A valid request for a feature darkroom does not have (yet)."""

    status = 501
    default_code = "not_implemented"


class Overloaded(DarkroomError):
    """The CPU pool is full; the client should retry after `retry_after` seconds."""

    status = 503
    default_code = "overloaded"

    def __init__(self, message: str = "server busy, retry later", retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(DarkroomError):
    """The storage backend failed or could not be reached."""

    status = 502
    default_code = "storage_unavailable"


class CatalogError(DarkroomError):
    """The catalog database failed or could not be reached."""

    status = 503
    default_code = "catalog_unavailable"
