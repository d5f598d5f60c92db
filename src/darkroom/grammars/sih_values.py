"""Checked readers for the values in SIH's `edits` (sharp's vocabulary): each returns a
bounded Python value or raises BadRequest(bad_edit) naming the edit."""

from __future__ import annotations

import math
import re

from darkroom.errors import BadRequest
from darkroom.plan import parse_color

_RGB = re.compile(r"rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*([\d.]+)\s*)?\)")


def bad(edit: str, why: str) -> BadRequest:
    """The error for a malformed edit value."""
    return BadRequest(f"edits.{edit}: {why}", "bad_edit")


def flag(edit: str, value: object) -> bool:
    """A switch: true/false (or the strings "true"/"false", which SIH's examples use)."""
    if value is True or value is False:
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise bad(edit, "expected true or false")


def number(edit: str, value: object, low: float, high: float) -> float:
    """A finite JSON number within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(edit, f"expected a number, got {value!r}"[:200])
    if not low <= value <= high:
        raise bad(edit, f"{value} is outside {low:g}..{high:g}")
    return float(value)


def integer(edit: str, value: object, low: int, high: int) -> int:
    """A whole JSON number within [low, high] (2.0 counts as 2)."""
    found = number(edit, value, low, high)
    if found != int(found):
        raise bad(edit, f"expected a whole number, got {value}")
    return int(found)


def mapping(edit: str, value: object, allowed: frozenset[str]) -> dict:
    """A JSON object whose keys are all in `allowed`."""
    if not isinstance(value, dict):
        raise bad(edit, "expected an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise bad(edit, f"unknown option {unknown[0]!r}"[:200])
    return value


def color(edit: str, value: object) -> tuple[int, int, int, int]:
    """A colour as sharp takes it: `{r, g, b, alpha}` (alpha 0-1), `#rgb[a]`, `#rrggbb[aa]`,
    `rgb()`/`rgba()` or one of darkroom's colour names."""
    if isinstance(value, dict):
        value = mapping(edit, value, frozenset({"r", "g", "b", "alpha"}))
        r, g, b = (round(number(edit, value.get(c, 0), 0, 255)) for c in "rgb")
        return r, g, b, round(255 * number(edit, value.get("alpha", 1), 0, 1))
    if not isinstance(value, str):
        raise bad(edit, "expected a colour: a string or {r, g, b, alpha}")
    match = _RGB.fullmatch(value.strip().lower())
    if match:
        r, g, b = (round(number(edit, float(v), 0, 255)) for v in match.groups()[:3])
        alpha = number(edit, float(match.group(4) or 1), 0, 1)
        return r, g, b, round(255 * alpha)
    try:
        return parse_color(value)
    except BadRequest:
        raise bad(edit, f"{value!r} is not a colour"[:200]) from None
