"""Colours in plans: always RGBA 0-255; parsed from CSS-style hex or a few names."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer

from darkroom.errors import BadRequest

NAMED = {
    "white": (255, 255, 255, 255),
    "black": (0, 0, 0, 255),
    "transparent": (0, 0, 0, 0),
    "red": (255, 0, 0, 255),
    "green": (0, 128, 0, 255),
    "blue": (0, 0, 255, 255),
    "gray": (128, 128, 128, 255),
    "grey": (128, 128, 128, 255),
}


def parse_color(text: str) -> tuple[int, int, int, int]:
    """`fff`, `ffff`, `ff8800`, `ff880080` (with or without `#`) or a name, to RGBA."""
    value = text.strip().lower().lstrip("#")
    if value in NAMED:
        return NAMED[value]
    if len(value) in (3, 4) and _is_hex(value):
        value = "".join(c * 2 for c in value)
    if len(value) == 6 and _is_hex(value):
        value += "ff"
    if len(value) == 8 and _is_hex(value):
        r, g, b, a = (int(value[i : i + 2], 16) for i in range(0, 8, 2))
        return (r, g, b, a)
    raise BadRequest(f"bad colour {text!r}: use hex RGB[A] such as ff8800 or a name", "bad_color")


def _is_hex(value: str) -> bool:
    return all(c in "0123456789abcdef" for c in value)


def _coerce(value: object) -> object:
    if isinstance(value, str):
        return parse_color(value)
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return (*value, 255)
    return value


def _hex(value: tuple[int, int, int, int]) -> str:
    return "".join(f"{c:02x}" for c in value)


_Byte = Annotated[int, Field(ge=0, le=255)]

Color = Annotated[
    tuple[_Byte, _Byte, _Byte, _Byte],
    BeforeValidator(_coerce),
    PlainSerializer(_hex, return_type=str),
]
"""An RGBA colour; accepts hex strings, names or 3/4-item lists; serialises as 8-digit hex."""
