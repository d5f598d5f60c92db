"""darkroom's own URL grammar: `/img/{key}?w=800&fit=cover&fm=webp`, imgix-style names.

Every parameter is in the table below; an unknown or repeated one is a 400. Operations
always run in the same order, whatever the order of the query: trim, rotate, flip,
crop (`rect`), resize, filters, rounded corners, padding, watermark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import ValidationError

from darkroom.errors import BadRequest
from darkroom.plan import (
    Blur, EditPlan, Extract, Flip, Grayscale, Modulate, Output, Pad, Resize, Rotate,
    RoundCorners, Sharpen, Source, Trim, Watermark, parse_color,
)

SIGNATURE_PARAMS = ("s", "exp")
RESPONSE_PARAMS = ("dl",)
_COMPASS = {
    "center": "center", "centre": "center", "top": "north", "bottom": "south",
    "left": "west", "right": "east", "top,left": "northwest", "left,top": "northwest",
    "top,right": "northeast", "right,top": "northeast", "bottom,left": "southwest",
    "left,bottom": "southwest", "bottom,right": "southeast", "right,bottom": "southeast",
    "north": "north", "south": "south", "east": "east", "west": "west",
    "northeast": "northeast", "northwest": "northwest", "southeast": "southeast",
    "southwest": "southwest",
}
_CROPS = {**_COMPASS, "attention": "attention", "entropy": "entropy", "focalpoint": "focal"}
_FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp", "avif": "avif",
            "gif": "gif", "tif": "tiff", "tiff": "tiff", "auto": "auto"}
_FLIPS = {"h": (True, False), "v": (False, True), "hv": (True, True), "vh": (True, True)}
_BOOLS = {"1": True, "true": True, "0": False, "false": False}


def _number(kind: Callable[[str], float]) -> Callable[[str, str], float]:
    def parse(name: str, text: str) -> float:
        try:
            return kind(text)
        except ValueError:
            raise BadRequest(f"{name}={text!r} is not a valid number", "bad_param") from None
    return parse


def _choice(table: dict) -> Callable[[str, str], object]:
    def parse(name: str, text: str) -> object:
        if text.lower() not in table:
            allowed = ", ".join(sorted(table))
            raise BadRequest(f"{name}={text!r}: expected one of {allowed}", "bad_param")
        return table[text.lower()]
    return parse


def _color(name: str, text: str) -> tuple[int, int, int, int]:
    return parse_color(text)


def _pad(name: str, text: str) -> tuple[int, ...]:
    parts = [_number(int)(name, p) for p in text.split(",")]
    if len(parts) not in (1, 4):
        raise BadRequest(f"{name} takes one number or four (top,right,bottom,left)", "bad_param")
    return tuple(parts * 4)[:4] if len(parts) == 1 else tuple(parts)


def _rect(name: str, text: str) -> tuple[int, ...]:
    parts = [_number(int)(name, p) for p in text.split(",")]
    if len(parts) != 4:
        raise BadRequest(f"{name} takes x,y,width,height", "bad_param")
    return tuple(parts)


def _trim(name: str, text: str) -> float:
    return 10.0 if text.lower() == "auto" else _number(float)(name, text)


def _text(name: str, text: str) -> str:
    return text


PARAMS: dict[str, Callable[[str, str], object]] = {
    "w": _number(int), "h": _number(int), "fit": _choice({f: f for f in (
        "cover", "contain", "fill", "inside", "outside")}),
    "crop": _choice(_CROPS), "fp-x": _number(float), "fp-y": _number(float),
    "dpr": _number(float), "upscale": _choice(_BOOLS), "rect": _rect,
    "rot": _number(float), "flip": _choice(_FLIPS), "trim": _trim,
    "blur": _number(float), "sharp": _number(float), "bri": _number(float),
    "con": _number(float), "sat": _number(float), "gray": _choice(_BOOLS),
    "bg": _color, "pad": _pad, "radius": _number(int),
    "mark": _text, "mark-pos": _choice(_COMPASS), "mark-alpha": _number(float),
    "mark-w": _number(float), "mark-pad": _number(int),
    "fm": _choice(_FORMATS), "q": _number(int), "lossless": _choice(_BOOLS),
    "strip": _choice(_BOOLS), "page": _number(int),
}


def parse(key: str, query: Sequence[tuple[str, str]]) -> EditPlan:
    """Compile `/img/{key}` and its query pairs (signature and `dl` excluded) to a plan."""
    values: dict[str, object] = {}
    seen: set[str] = set()
    for name, text in query:
        if name in seen:
            raise BadRequest(f"parameter {name!r} given twice", "duplicate_param")
        seen.add(name)
        if name in SIGNATURE_PARAMS or name in RESPONSE_PARAMS:
            continue
        if name not in PARAMS:
            raise BadRequest(f"unknown parameter {name!r}", "unknown_param")
        values[name] = PARAMS[name](name, text)
    try:
        return _compile(key, values)
    except ValidationError as error:
        raise BadRequest(_describe(error), "bad_param") from None


def _compile(key: str, v: dict) -> EditPlan:
    dpr = v.get("dpr", 1.0)
    if not 0 < dpr <= 5:
        raise BadRequest("dpr must be in (0, 5]", "bad_param")
    bg = v.get("bg")
    ops: list = []
    if "trim" in v:
        ops.append(Trim(threshold=v["trim"]))
    if v.get("rot"):
        ops.append(Rotate(angle=v["rot"], background=bg or (0, 0, 0, 0)))
    if "flip" in v:
        ops.append(Flip(horizontal=v["flip"][0], vertical=v["flip"][1]))
    if "rect" in v:
        left, top, width, height = v["rect"]
        ops.append(Extract(left=left, top=top, width=width, height=height))
    if "w" in v or "h" in v:
        ops.append(_resize(v, dpr, bg))
    if v.get("blur"):
        ops.append(Blur(sigma=v["blur"]))
    if v.get("sharp"):
        ops.append(Sharpen(sigma=v["sharp"]))
    for name in ("bri", "con", "sat"):
        if not -100 <= v.get(name, 0) <= 100:
            raise BadRequest(f"{name} must be -100..100", "bad_param")
    if any(v.get(k) for k in ("bri", "con", "sat")):
        ops.append(Modulate(brightness=v.get("bri", 0), contrast=v.get("con", 0),
                            saturation=v.get("sat", 0)))
    if v.get("gray"):
        ops.append(Grayscale())
    if v.get("radius"):
        ops.append(RoundCorners(radius=_scaled(v["radius"], dpr)))
    if "pad" in v:
        top, right, bottom, left = (_scaled(p, dpr) for p in v["pad"])
        ops.append(Pad(top=top, right=right, bottom=bottom, left=left,
                       color=bg or (255, 255, 255, 255)))
    if "mark" in v:
        ops.append(Watermark(key=v["mark"], gravity=v.get("mark-pos", "southeast"),
                             opacity=v.get("mark-alpha", 100) / 100, width=v.get("mark-w"),
                             margin=_scaled(v.get("mark-pad", 0), dpr)))
    output = Output(format=v.get("fm", "source"), quality=v.get("q"),
                    lossless=v.get("lossless", False), keep_metadata=not v.get("strip", True),
                    background=bg or (255, 255, 255, 255))
    page = v.get("page", 1)
    if page < 1:
        raise BadRequest("page counts from 1", "bad_param")
    return EditPlan(source=Source(key=key, page=page - 1), ops=tuple(ops), output=output)


def _resize(v: dict, dpr: float, bg: tuple | None) -> Resize:
    crop = v.get("crop", "center")
    focal = (v.get("fp-x", 0.5), v.get("fp-y", 0.5)) if crop == "focal" else None
    return Resize(
        width=_scaled(v["w"], dpr) if "w" in v else None,
        height=_scaled(v["h"], dpr) if "h" in v else None,
        fit=v.get("fit", "inside"), gravity=crop, focal=focal,
        upscale=v.get("upscale", True), background=bg or (0, 0, 0, 0),
    )


def _scaled(value: int, dpr: float) -> int:
    """`value` times the DPR; positive values never round down to 0, others are left to
    the operation's bounds to refuse."""
    return max(1, round(value * dpr)) if value > 0 else value


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
    return f"{where}: {first['msg']}" if where else first["msg"]
