"""SIH's geometric edits (resize, rotate, flip, flop, extract/crop, smartCrop, roundCrop,
extend, trim) and its overlay, each read from sharp's options into EditPlan operations."""

from __future__ import annotations

import re
from collections.abc import Callable

from darkroom.errors import BadRequest
from darkroom.grammars.sih_values import bad, color, flag, integer, mapping, number
from darkroom.plan import (
    Extract, FaceCrop, Flip, Pad, Resize, Rotate, RoundCrop, Scale, Trim, Watermark,
)

BLACK = (0, 0, 0, 255)  # sharp's default background for rotate, contain and extend
_POSITIONS = {
    "centre": "center", "center": "center", "top": "north", "right top": "northeast",
    "right": "east", "right bottom": "southeast", "bottom": "south",
    "left bottom": "southwest", "left": "west", "left top": "northwest",
    **{g: g for g in ("north", "northeast", "east", "southeast", "south", "southwest",
                      "west", "northwest", "entropy", "attention")},
}
_GRAVITY_CODES = {0: "center", 1: "north", 2: "east", 3: "northeast", 4: "south",
                  6: "southeast", 8: "west", 9: "northwest", 12: "southwest",
                  16: "entropy", 17: "attention"}  # sharp.gravity / sharp.strategy values
_KERNELS = frozenset({"nearest", "linear", "cubic", "mitchell", "lanczos2", "lanczos3",
                      "mks2013", "mks2021"})
_RESIZE = frozenset({"width", "height", "fit", "position", "background", "withoutEnlargement",
                     "withoutReduction", "kernel", "fastShrinkOnLoad", "ratio"})
_FITS = frozenset({"cover", "contain", "fill", "inside", "outside"})
_PLACE = re.compile(r"-?\d{1,5}p?")
_PERCENT = re.compile(r"100|[1-9]?\d")


def resize(value: object) -> list:
    """sharp's resize options; a size of 0 or less is SIH's InvalidResizeException."""
    value = mapping("resize", value, _RESIZE)
    width, height = _side(value.get("width")), _side(value.get("height"))
    fit = value.get("fit", "cover")
    if fit not in _FITS:
        raise bad("resize.fit", f"expected one of {', '.join(sorted(_FITS))}")
    if value.get("withoutReduction") not in (None, False):
        raise BadRequest("edits.resize.withoutReduction is not supported", "unsupported_edit")
    if value.get("kernel") is not None and value["kernel"] not in _KERNELS:
        raise bad("resize.kernel", f"expected one of {', '.join(sorted(_KERNELS))}")
    if "fastShrinkOnLoad" in value:
        flag("resize.fastShrinkOnLoad", value["fastShrinkOnLoad"])
    upscale = not flag("resize.withoutEnlargement", value.get("withoutEnlargement", False))
    if width is None and height is None:
        if value.get("ratio") is None:
            return []
        return [Scale(factor=number("resize.ratio", value["ratio"], 0.001, 1))]
    return [Resize(width=width, height=height, fit=fit, upscale=upscale,
                   gravity=_position(value.get("position", "center")),
                   background=color("resize.background", value.get("background", "#000000")))]


def _side(value: object) -> int | None:
    """SIH rounds `Number(value)`; null means "keep the ratio"."""
    if value is None:
        return None
    try:
        side = round(float(value)) if not isinstance(value, bool) else None
    except (TypeError, ValueError, OverflowError):
        side = None
    if side is None or not 1 <= side <= 65535:
        raise BadRequest(f"the image size is invalid: {value!r}"[:200], "invalid_resize")
    return side


def _position(value: object) -> str:
    if isinstance(value, str) and value.lower() in _POSITIONS:
        return _POSITIONS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in _GRAVITY_CODES:
        return _GRAVITY_CODES[value]
    raise bad("resize.position", f"unknown position {value!r}"[:200])


def rotate(value: object) -> list:
    """Clockwise degrees (corners black, as sharp); null only strips metadata."""
    if value is None:
        return []
    angle = number("rotate", value, -360, 360)
    return [Rotate(angle=angle, background=BLACK)] if angle % 360 else []


def flip(value: object) -> list:
    return [Flip(vertical=True)] if flag("flip", value) else []


def flop(value: object) -> list:
    return [Flip(horizontal=True)] if flag("flop", value) else []


def extract(value: object, name: str = "extract") -> list:
    value = mapping(name, value, frozenset({"left", "top", "width", "height"}))
    return [Extract(left=integer(f"{name}.left", value.get("left"), 0, 65535),
                    top=integer(f"{name}.top", value.get("top"), 0, 65535),
                    width=integer(f"{name}.width", value.get("width"), 1, 65535),
                    height=integer(f"{name}.height", value.get("height"), 1, 65535))]


def smart_crop(value: object) -> list:
    if not isinstance(value, dict):
        return [FaceCrop()] if flag("smartCrop", value) else []
    value = mapping("smartCrop", value, frozenset({"faceIndex", "padding"}))
    index, padding = value.get("faceIndex"), value.get("padding")
    return [FaceCrop(index=0 if index is None else integer("smartCrop.faceIndex", index, 0, 99),
                     padding=0 if padding is None else integer(
                         "smartCrop.padding", padding, 0, 65535))]


def round_crop(value: object) -> list:
    """An ellipse: radii `rx`/`ry`, centre `left`/`top` (0 or null: the default)."""
    if not isinstance(value, dict):
        return [RoundCrop(circle=True, crop=True)] if flag("roundCrop", value) else []
    value = mapping("roundCrop", value, frozenset({"rx", "ry", "top", "left"}))
    rx, ry, cy, cx = (integer(f"roundCrop.{k}", value[k], 0, 65535) or None
                      if value.get(k) is not None else None for k in ("rx", "ry", "top", "left"))
    return [RoundCrop(rx=rx, ry=ry, cx=cx, cy=cy, circle=True, crop=True)]


def extend(value: object) -> list:
    if not isinstance(value, dict):
        side = integer("extend", value, 0, 65535)
        return [Pad(top=side, right=side, bottom=side, left=side, color=BLACK)] if side else []
    value = mapping("extend", value, frozenset({"top", "bottom", "left", "right",
                                                "background", "extendWith"}))
    if value.get("extendWith", "background") != "background":
        raise BadRequest("edits.extend.extendWith: only 'background' is supported",
                         "unsupported_edit")
    sides = {k: integer(f"extend.{k}", value.get(k, 0), 0, 65535)
             for k in ("top", "right", "bottom", "left")}
    return [Pad(**sides, color=color("extend.background", value.get("background", "#000000")))]


def trim(value: object) -> list:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [Trim(threshold=number("trim", value, 0, 255))]
    if not isinstance(value, dict):
        return [Trim()] if flag("trim", value) else []
    value = mapping("trim", value, frozenset({"background", "threshold", "lineArt"}))
    if value.get("lineArt") not in (None, False):
        raise BadRequest("edits.trim.lineArt is not supported", "unsupported_edit")
    background = value.get("background")
    return [Trim(threshold=number("trim.threshold", value.get("threshold", 10), 0, 255),
                 background=None if background is None else color("trim.background",
                                                                  background))]


def overlay(value: object, resolve: Callable[[str | None, str], str]) -> Watermark:
    """`overlayWith`: a stored image, `alpha` its transparency in percent, `wRatio` and
    `hRatio` its size in percent of the image, `options.left/top` its place (N, -N from
    the far edge, Np in percent); neither: centred, as sharp composites."""
    value = mapping("overlayWith", value, frozenset({"bucket", "key", "alpha", "wRatio",
                                                     "hRatio", "options"}))
    key, bucket = value.get("key"), value.get("bucket")
    if not isinstance(key, str) or not isinstance(bucket, (str, type(None))):
        raise bad("overlayWith", "key (and bucket) must be strings")
    options = mapping("overlayWith.options", value.get("options") or {},
                      frozenset({"left", "top"}))
    x, y = (_place(f"overlayWith.options.{k}", options.get(k)) for k in ("left", "top"))
    if (x is None) != (y is None):
        raise bad("overlayWith.options", "give both left and top, or neither")
    alpha = _percent("overlayWith.alpha", value.get("alpha"), 0) or 0
    width = _percent("overlayWith.wRatio", value.get("wRatio"), 1)
    height = _percent("overlayWith.hRatio", value.get("hRatio"), 1)
    return Watermark(key=resolve(bucket, key), gravity="center", opacity=1 - alpha / 100,
                     width=None if width is None else width / 100,
                     height=None if height is None else height / 100, x=x, y=y)


def _percent(name: str, value: object, low: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and _PERCENT.fullmatch(value.strip()):
        value = int(value.strip())
    return integer(name, value, low, 100)


def _place(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(integer(name, round(value), -65535, 65535))
    if not isinstance(value, str) or not _PLACE.fullmatch(value.strip()):
        raise bad(name, "expected N, -N, Np or -Np")
    text = value.strip()
    if text.endswith("p") and abs(int(text[:-1])) > 100:
        raise bad(name, "a percentage is at most 100")
    return text


STEPS: dict[str, Callable[[object], list]] = {
    "resize": resize, "rotate": rotate, "flip": flip, "flop": flop,
    "extract": extract, "crop": lambda v: extract(v, "crop"), "smartCrop": smart_crop,
    "roundCrop": round_crop, "extend": extend, "trim": trim,
}
