"""The one place where a DarkroomError becomes an HTTP status and a JSON body."""

from __future__ import annotations

import json

from starlette.responses import Response

from darkroom.errors import DarkroomError, Overloaded
from darkroom.server.observability import REJECTIONS, labelled, request_id_var


def error_response(error: DarkroomError, head: bool = False) -> Response:
    """`{"error": {"code", "message", "request_id"}}` with the error's status."""
    labelled(REJECTIONS, error.code).inc()
    body = {"error": {"code": error.code, "message": error.message,
                      "request_id": request_id_var.get()}}
    headers = {"Cache-Control": "no-store", **getattr(error, "headers", {})}
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(error.retry_after)
    content = json.dumps(body).encode()
    response = Response(b"" if head else content, status_code=error.status, headers=headers,
                        media_type="application/json")
    response.headers["content-length"] = str(len(content))  # HEAD: what GET would send
    return response


def internal_error() -> Response:
    """A 500 that says nothing about the cause (which is logged, not sent)."""
    return error_response(DarkroomError("internal error", "internal"))
