"""SIH's Thumbor-style paths mapped to SIH's `edits`, as SIH's own ThumborMapper does.

    /[AxB:CxD/][fit-in/][WxH/][filters:f(a):g(b)/][s3:bucket/]...{key}

Unlike real Thumbor, the leading option segments come in any order and repeat
(`/filters:rotate(90)/filters:grayscale()/a.jpg`); the first segment that is none of
them starts the key. Filters apply in alphabetical order (SIH sorts them); a filter SIH
does not know is ignored, as in SIH. Where SIH turns a bad argument into NaN (and later a
500), the value is kept here and refused with a 400 when the edits are compiled.
"""

from __future__ import annotations

import math
import re

from darkroom.errors import BadRequest
from darkroom.grammars.sih_values import color as parse_colour
from darkroom.plan.color import NAMED

_CROP = re.compile(r"(\d{1,6})x(\d{1,6}):(\d{1,6})x(\d{1,6})")
_SIZE = re.compile(r"(\d{1,6})x(\d{1,6})")
_FILTER = re.compile(r"(\w+)\(([^)]*)\)")
_LEADING_INT = re.compile(r"\s*([+-]?\d+)")
_FORMATS = {"heic", "heif", "jpeg", "png", "raw", "tiff", "webp", "gif", "avif"}
_QUALITY_FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp",
                    "tiff": "tiff", "heif": "heif", "gif": "gif", "avif": "avif"}
MAX_FILTERS = 32


def parse_path(path: str, buckets: list[str]) -> tuple[str, str, dict]:
    """(bucket, key, edits) of a Thumbor-style SIH path (decoded, with its leading `/`)."""
    rest, bucket = path.lstrip("/"), buckets[0]
    edits: dict = {}
    filters: list[tuple[str, str]] = []
    override = None
    while rest:
        segment, _, after = rest.partition("/")
        if not after:  # the last segment is always the key's
            break
        if segment == "fit-in":
            _merge(edits, "resize", {"fit": "inside"})
        elif crop := _CROP.fullmatch(segment):
            left, top, right, bottom = (int(v) for v in crop.groups())
            edits.setdefault("crop", {"left": left, "top": top, "width": right - left,
                                      "height": bottom - top})
        elif size := _SIZE.fullmatch(segment):
            if "resize" not in edits or "width" not in edits["resize"]:
                _merge(edits, "resize", _resize(*(int(v) for v in size.groups())))
        elif segment.startswith("s3:") and segment[3:] in buckets and override is None:
            override = bucket = segment[3:]
        elif rest.startswith("filters:"):
            found, after = _split_filters(rest)
            filters += found
        else:
            break
        rest = after
    if len(filters) > MAX_FILTERS:
        raise BadRequest(f"more than {MAX_FILTERS} filters", "bad_edit")
    extension = path.rsplit(".", 1)[-1] if "." in path else ""
    for name, args in sorted(filters, key=lambda f: f"{f[0]}({f[1]})"):
        handler = _FILTERS.get(name)
        if handler is not None:
            handler(args, edits, extension)
    return bucket, rest, edits


def _split_filters(text: str) -> tuple[list[tuple[str, str]], str]:
    """`filters:a(x):b(y)/rest` to ([(a, x), (b, y)], rest); arguments may hold `/`."""
    found, position = [], len("filters:")
    while True:
        match = _FILTER.match(text, position)
        if match is None:
            raise BadRequest(f"malformed filters segment {text[:80]!r}", "bad_edit")
        found.append((match.group(1), match.group(2)))
        position = match.end()
        if text.startswith(":", position):
            position += 1
            continue
        if text.startswith("/", position):
            return found, text[position + 1:]
        raise BadRequest(f"malformed filters segment {text[:80]!r}", "bad_edit")


def _merge(edits: dict, key: str, values: dict) -> None:
    edits[key] = {**edits.get(key, {}), **values}


def _resize(width: int, height: int) -> dict:
    """SIH: a 0 side keeps the ratio, and then the fit is inside."""
    resize = {"fit": "inside"} if width == 0 or height == 0 else {}
    return {**resize, "width": width or None, "height": height or None}


def _number(text: str) -> float:
    """JavaScript's Number() of a filter argument (NaN when it is not one)."""
    try:
        value = float(text) if text.strip() else math.nan
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _parse_int(text: str) -> float:
    """JavaScript's parseInt(): the leading integer, NaN without one."""
    match = _LEADING_INT.match(text)
    return int(match.group(1)) if match else math.nan


def _colour(text: str) -> dict:
    r, g, b, _ = parse_colour("filter", text if text.lower() in NAMED else f"#{text}")
    return {"r": r, "g": g, "b": b}


def _set(key: str, value: object):
    def handler(args: str, edits: dict, extension: str) -> None:
        edits[key] = value
    return handler


def _background_color(args: str, edits: dict, extension: str) -> None:
    edits["flatten"] = {"background": _colour(args)}


def _blur(args: str, edits: dict, extension: str) -> None:
    parts = [_number(p) for p in args.split(",")]
    sigma = parts[1] if len(parts) > 1 and not math.isnan(parts[1]) else parts[0] / 2
    edits["blur"] = sigma


def _convolution(args: str, edits: dict, extension: str) -> None:
    values = args.split(",")
    kernel = [_number(v) for v in values[0].split(";")]
    width = _number(values[1]) if len(values) > 1 else math.nan
    height = math.ceil(len(kernel) / width) if width and math.isfinite(width) else math.nan
    edits["convolve"] = {"width": width, "height": height, "kernel": kernel}


def _fill(args: str, edits: dict, extension: str) -> None:
    _merge(edits, "resize", {"fit": "contain", "background": _colour(args)})


def _format(args: str, edits: dict, extension: str) -> None:
    name = re.sub(r"[^0-9a-z]", "", args, flags=re.IGNORECASE).lower().replace("jpg", "jpeg")
    if name in _FORMATS:
        edits["toFormat"] = name


def _proportion(args: str, edits: dict, extension: str) -> None:
    ratio, resize = _number(args), edits.setdefault("resize", {})
    if resize.get("width") and resize.get("height"):
        resize["width"], resize["height"] = resize["width"] * ratio, resize["height"] * ratio
    else:
        resize["ratio"] = ratio


def _quality(args: str, edits: dict, extension: str) -> None:
    target = _QUALITY_FORMATS.get(extension.lower()) or _QUALITY_FORMATS.get(
        str(edits.get("toFormat")))
    if target:
        edits[target] = {"quality": _number(args)}


def _rgb(args: str, edits: dict, extension: str) -> None:
    values = [255 * _number(p) / 100 for p in args.split(",")] + [math.nan] * 3
    edits["tint"] = dict(zip("rgb", values[:3]))


def _rotate(args: str, edits: dict, extension: str) -> None:
    edits["rotate"] = None if args == "" else _number(args)  # rotate(): auto-orient only


def _sharpen(args: str, edits: dict, extension: str) -> None:
    parts = args.split(",")
    edits["sharpen"] = 1 + (_number(parts[1]) if len(parts) > 1 else math.nan) / 2


def _stretch(args: str, edits: dict, extension: str) -> None:
    resize = edits.setdefault("resize", {})
    if resize.get("fit") != "inside":
        resize["fit"] = "fill"


def _watermark(args: str, edits: dict, extension: str) -> None:
    values = re.sub(r"\s+", "", args).split(",") + [None] * 7
    bucket, key, x, y, alpha, w_ratio, h_ratio = values[:7]
    options = {}
    for name, value in (("left", x), ("top", y)):
        if value is not None and (re.fullmatch(r"(100|[1-9]?\d|-(100|[1-9]\d?))p", value)
                                  or not math.isnan(_number(value))):
            options[name] = value
    edits["overlayWith"] = {"bucket": bucket, "key": key, "alpha": alpha, "wRatio": w_ratio,
                            "hRatio": h_ratio, "options": options}


def _smart_crop(args: str, edits: dict, extension: str) -> None:
    parts = args.split(",") + ["", ""]
    edits["smartCrop"] = {k: _parse_int(v) if v else None
                          for k, v in (("faceIndex", parts[0]), ("padding", parts[1]))}


def _animated(args: str, edits: dict, extension: str) -> None:
    edits["animated"] = args.lower() != "false"


_FILTERS = {
    "autojpg": _set("toFormat", "jpeg"), "background_color": _background_color,
    "blur": _blur, "convolution": _convolution, "equalize": _set("normalize", True),
    "fill": _fill, "format": _format, "grayscale": _set("grayscale", True),
    "no_upscale": lambda a, e, x: _merge(e, "resize", {"withoutEnlargement": True}),
    "proportion": _proportion, "quality": _quality, "rgb": _rgb, "rotate": _rotate,
    "sharpen": _sharpen, "stretch": _stretch, "strip_exif": _set("rotate", None),
    "strip_icc": _set("rotate", None),
    "upscale": lambda a, e, x: _merge(e, "resize", {"fit": "inside"}),
    "watermark": _watermark, "animated": _animated, "smart_crop": _smart_crop,
}
