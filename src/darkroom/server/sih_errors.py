"""darkroom's errors in SIH's shape: `{"status", "code", "message"}` with SIH's codes and
statuses where SIH clients rely on them (darkroom's own code and the request id follow)."""

from __future__ import annotations

import json

from darkroom.errors import DarkroomError, Overloaded
from darkroom.server.observability import REJECTIONS, labelled, request_id_var

_EDITS = (400, "ImageEdits::CannotParseEdits")
_TOO_LARGE = (413, "TooLargeImageException")
_BAD_IMAGE = "InstantiationError"
# darkroom code -> (status, SIH code); a status of None keeps darkroom's own.
SIH_CODES: dict[str, tuple[int | None, str]] = {
    "cannot_decode_request": (400, "DecodeRequest::CannotDecodeRequest"),
    "missing_key": (400, "DecodeRequest::CannotDecodeRequest"),
    "bucket_not_allowed": (403, "ImageBucket::CannotAccessBucket"),
    "source_not_found": (404, "NoSuchKey"),
    "bad_key": (404, "NoSuchKey"),
    "watermark_not_found": (400, "OverlayImageException"),
    "signature_required": (400, "AuthorizationQueryParametersError"),
    "bad_signature": (403, "SignatureDoesNotMatch"),
    "bad_expires": (400, "ImageRequestExpiryFormat"),
    "request_expired": (400, "ImageRequestExpired"),
    "invalid_resize": (400, "InvalidResizeException"),
    "unsupported_request_type": (400, "RequestTypeError"),
    "unsupported_output_format": (400, "UnsupportedOutputImageFormatException"),
    "bad_param": (400, "QueryParameterParsingError"),
    "crop_out_of_bounds": (400, "Crop::AreaOutOfBounds"),
    "face_index_out_of_range": (400, "SmartCrop::FaceIndexOutOfRange"),
    "content_moderation_unavailable": (501, "ContentModeration::Unavailable"),
    "bad_edit": _EDITS, "unsupported_edit": _EDITS, "bad_color": _EDITS,
    "request_too_long": _TOO_LARGE, "source_too_large": _TOO_LARGE,
    "too_many_pixels": _TOO_LARGE, "too_many_frames": _TOO_LARGE,
    "output_too_large": _TOO_LARGE,
    "unsupported_format": (None, _BAD_IMAGE), "empty_source": (None, _BAD_IMAGE),
    "unsafe_svg": (None, _BAD_IMAGE), "corrupt_image": (None, _BAD_IMAGE),
    "time_budget_exceeded": (None, "TimeoutException"),
    "storage_unavailable": (None, "ImageRetrieval::CannotRetrieveImage"),
}


def sih_error(error: DarkroomError, extra_headers: list) -> tuple[int, list, bytes]:
    """Status, headers and body of `error` as SIH answers it (no Cache-Control, as SIH)."""
    labelled(REJECTIONS, error.code).inc()
    status, code = SIH_CODES.get(error.code, (None, error.code))
    status = status or error.status
    body = json.dumps({"status": status, "code": code, "message": error.message,
                       "darkroom_code": error.code, "request_id": request_id_var.get()})
    headers = [(b"content-type", b"application/json"), *extra_headers,
               (b"content-length", str(len(body)).encode())]
    if isinstance(error, Overloaded):
        headers.append((b"retry-after", str(error.retry_after).encode()))
    return status, headers, body.encode()
