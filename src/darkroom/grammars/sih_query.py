"""SIH's query parameters, as its CloudFront function keeps them and its Lambda maps them.

CloudFront passes on only `signature, expires, format, fit, width, height, rotate, flip,
flop, grayscale`, keeps the last value of a repeated key and sorts them; the signature is
computed over that text. Every other key is dropped, so it changes nothing.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from darkroom.errors import BadRequest

KEPT = ("signature", "expires", "format", "fit", "width", "height", "rotate", "flip", "flop",
        "grayscale")
_INT = re.compile(r"-?\d{1,9}")
_FALSY = ("0", "false", "")


def kept_params(raw_query: str) -> dict[str, str]:
    """The parameters SIH's Lambda sees: kept keys only, last value wins, sorted by key."""
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, max_num_fields=256)
    except ValueError:
        raise BadRequest("more than 256 query parameters", "bad_param") from None
    found = {k: v for k, v in pairs if k in KEPT}
    return dict(sorted(found.items()))


def query_edits(params: dict[str, str]) -> dict:
    """SIH's QueryParamMapper: `format` is `toFormat`; fit, width and height make a new
    `resize` (a size of 0 or nothing keeps the ratio); flip, flop and grayscale are false
    for 0, false or nothing."""
    edits: dict = {}
    if "format" in params:
        edits["toFormat"] = params["format"]
    for name in ("fit", "width", "height"):
        if name in params:
            value = params[name]
            edits.setdefault("resize", {})[name] = value if name == "fit" else _side(
                name, value)
    if "rotate" in params:
        edits["rotate"] = _int("rotate", params["rotate"]) if params["rotate"] else None
    for name in ("flip", "flop"):
        if name in params:
            edits[name] = params[name].lower() not in _FALSY
    if "grayscale" in params:
        edits["greyscale"] = params["grayscale"].lower() not in _FALSY
    return edits


def _side(name: str, value: str) -> int | None:
    return None if value in ("", "0") else _int(name, value)


def _int(name: str, value: str) -> int:
    if not _INT.fullmatch(value):
        raise BadRequest(f"query parameter {name}={value[:40]!r} is not a whole number",
                         "invalid_resize" if name in ("width", "height") else "bad_param")
    return int(value)
