"""Thumbor's filters (`filters:name(args):name(args)`), with Thumbor's argument rules.

Each filter is a handler that reads its arguments and changes the `Filters` state: most
append operations (run after the resize, in the URL's order), a few change the resize or
the output. Where Thumbor silently ignores an unknown filter or a bad argument, darkroom
answers 400 `unknown_filter` / `bad_filter_arg` naming the filter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from darkroom.errors import BadRequest
from darkroom.plan import (
    Blur, ChannelShift, Convolve, Equalize, Flatten, Grayscale, Modulate, Noise, Rotate,
    RoundCorners, Scale, Sharpen, Watermark, parse_color,
)
from darkroom.storage import check_key

MAX_SIDE = 65535
_FILTER = re.compile(r"(\w+)\(([^()]*)\)")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_INT = re.compile(r"-?\d+")
_ARGUMENT = re.compile(r"\s*'[^']*'\s*(?=,|$)|[^,]+|(?<=,)(?=,|$)|^(?=,)")
_FOCAL = re.compile(r"(\d+)x(\d+):(\d+)x(\d+)")
_MARK_POSITION = re.compile(r"-?\d{1,5}p?|center|repeat")
_FORMATS = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png", "webp": "webp", "gif": "gif",
            "avif": "avif"}
_BOOLEANS = {"true": True, "True": True, "1": True, "false": False, "False": False, "0": False}


@dataclass
class Filters:
    """What the filters of one URL ask for."""

    ops: list = field(default_factory=list)  # after the resize, in URL order
    upscale: bool | None = None
    fill: str | None = None  # a colour, "blur" or "auto"
    fill_transparent: bool = False
    format: str = "source"
    quality: int | None = None
    background: tuple[int, int, int, int] = (255, 255, 255, 255)
    max_bytes: int | None = None
    max_age: int | None = None
    focal: list[tuple[int, int, int, int]] = field(default_factory=list)  # l, t, r, b
    extract_focal: bool = False
    stretch: bool = False
    autojpg: bool = False
    cover: bool = False


def parse_filters(text: str) -> Filters:
    """The state for `text`, the part between `filters:` and the last `)`."""
    state = Filters()
    position = 0
    while True:
        match = _FILTER.match(text, position)
        if match is None:
            raise BadRequest(f"filters:{text}: expected name(args) separated by ':'",
                             "bad_filter_syntax")
        name, args = match.group(1), match.group(2)
        handler = FILTERS.get(name)
        if handler is None:
            raise BadRequest(f"unknown or unsupported filter {name!r}", "unknown_filter")
        handler(name, _arguments(args), state)
        position = match.end()
        if position == len(text):
            return state
        if text[position] != ":":
            raise BadRequest(f"filters:{text}: expected ':' after {name}()",
                             "bad_filter_syntax")
        position += 1


def _arguments(text: str) -> list[str]:
    """Comma-separated arguments; a 'quoted' one may hold commas and loses its quotes."""
    if not text.strip():
        return []
    return [a[1:-1] if len(a) > 1 and a[0] == a[-1] == "'" else a.strip()
            for a in (m.group(0).strip() for m in _ARGUMENT.finditer(text))]


def _bad(name: str, why: str) -> BadRequest:
    return BadRequest(f"filter {name}(): {why}", "bad_filter_arg")


def _count(name: str, args: list[str], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        expected = str(low) if low == high else f"{low}-{high}"
        raise _bad(name, f"takes {expected} argument(s), got {len(args)}")


def _num(name: str, text: str, low: float, high: float, integer: bool = False) -> float:
    if not (_INT if integer else _NUMBER).fullmatch(text):
        raise _bad(name, f"{text!r} is not a{'n integer' if integer else ' number'}")
    value = int(text) if integer else float(text)
    if not low <= value <= high:
        raise _bad(name, f"{text} is outside {low:g}..{high:g}")
    return value


def _bool(name: str, text: str) -> bool:
    if text not in _BOOLEANS:
        raise _bad(name, f"{text!r}: expected true or false")
    return _BOOLEANS[text]


def _color(name: str, text: str) -> tuple[int, int, int, int]:
    try:
        return parse_color(text)
    except BadRequest:
        raise _bad(name, f"{text!r} is not a colour (hex RGB[A] or a name)") from None


Handler = Callable[[str, list[str], Filters], None]


def _one(parse: Callable[[str, str], object], apply: Callable[[Filters, object], None]
         ) -> Handler:
    """A filter of exactly one argument."""
    def handler(name: str, args: list[str], state: Filters) -> None:
        _count(name, args, 1, 1)
        apply(state, parse(name, args[0]))
    return handler


def _none(apply: Callable[[Filters], None]) -> Handler:
    """A filter without arguments."""
    def handler(name: str, args: list[str], state: Filters) -> None:
        _count(name, args, 0, 0)
        apply(state)
    return handler


def _format(name: str, text: str) -> str:
    if text.lower() not in _FORMATS:
        raise _bad(name, f"{text!r}: expected one of {', '.join(sorted(_FORMATS))}")
    return _FORMATS[text.lower()]


def _blur(name: str, args: list[str], state: Filters) -> None:
    """A Gaussian kernel of this radius (capped at 150), sigma = radius unless given;
    truncated at the radius, its spread is about radius/2, the sigma used here."""
    _count(name, args, 1, 2)
    radius = min(_num(name, args[0], 0, 10_000), 150)  # Thumbor caps the radius at 150
    sigma = _num(name, args[1], 0, 10_000) if len(args) > 1 else 0
    effective = min(sigma or radius, radius / 2)
    if effective > 0:
        state.ops.append(Blur(sigma=min(effective, 100.0)))


def _brightness(state: Filters, amount: float) -> None:
    """Adds amount% of full scale to every channel."""
    if amount:
        state.ops.append(ChannelShift(red=amount, green=amount, blue=amount))


def _contrast(state: Filters, amount: float) -> None:
    """Scales around mid-grey by (1 + amount/100) squared."""
    if amount:
        state.ops.append(Modulate(contrast=round(((1 + amount / 100) ** 2 - 1) * 100, 6)))


def _saturation(state: Filters, factor: float) -> None:
    """Multiplies the saturation: 1 leaves it, 0 is grey, at most 10."""
    if factor != 1:
        state.ops.append(Modulate(saturation=(factor - 1) * 100))


def _rotate(state: Filters, angle: float) -> None:
    """Counter-clockwise; angles that are not multiples of 90 are ignored (as Thumbor)."""
    if angle % 90 == 0 and angle % 360:
        state.ops.append(Rotate(angle=(-angle) % 360))


def _fill(name: str, args: list[str], state: Filters) -> None:
    """Pads a fit-in result to the box with a colour, `auto` (the mean colour) or `blur`;
    with `true` the image's own transparent pixels take the colour too."""
    _count(name, args, 1, 2)
    choice = args[0].lower()
    if choice not in ("auto", "blur"):
        _color(name, args[0])
    state.fill = args[0] if choice not in ("auto", "blur") else choice
    state.fill_transparent = len(args) > 1 and _bool(name, args[1])


def _rgb(name: str, args: list[str], state: Filters) -> None:
    _count(name, args, 3, 3)
    red, green, blue = (_num(name, a, -100, 100, integer=True) for a in args)
    if red or green or blue:
        state.ops.append(ChannelShift(red=red, green=green, blue=blue))


def _noise(name: str, args: list[str], state: Filters) -> None:
    _count(name, args, 1, 2)
    amount = _num(name, args[0], 0, 1000, integer=True)
    seed = int(_num(name, args[1], 0, 2**31 - 1, integer=True)) if len(args) > 1 else 0
    if amount:
        state.ops.append(Noise(amount=amount, seed=seed))


def _convolution(name: str, args: list[str], state: Filters) -> None:
    """convolution(m;m;...,columns[,normalize]): at most 15 x 15 values."""
    _count(name, args, 2, 3)
    items = args[0].split(";")
    if len(items) > 225:
        raise _bad(name, "the matrix has more than 225 values")
    matrix = tuple(_num(name, v, -1e4, 1e4) for v in items)
    columns = int(_num(name, args[1], 1, 15, integer=True))
    if len(matrix) % columns:
        raise _bad(name, f"{len(matrix)} values do not make rows of {columns}")
    if len(matrix) // columns > 15:
        raise _bad(name, "the matrix has more than 15 rows")
    normalize = _bool(name, args[2]) if len(args) > 2 else True
    state.ops.append(Convolve(matrix=matrix, columns=columns, normalize=normalize))


def _round_corner(name: str, args: list[str], state: Filters) -> None:
    """round_corner(a|b,r,g,b[,transparent]): corners of radius a (a|b: elliptic), painted
    in the colour unless `transparent`."""
    _count(name, args, 4, 5)
    radii = args[0].split("|")
    if len(radii) > 2:
        raise _bad(name, f"{args[0]!r}: expected a radius or a|b")
    a, *b = (int(_num(name, r, 1, MAX_SIDE, integer=True)) for r in radii)
    rgb = tuple(int(_num(name, c, 0, 255, integer=True)) for c in args[1:4])
    transparent = len(args) == 5 and _bool(name, args[4])
    state.ops.append(RoundCorners(radius=a, radius_y=b[0] if b else None))
    if not transparent:
        state.ops.append(Flatten(background=(*rgb, 255)))


def _sharpen(name: str, args: list[str], state: Filters) -> None:
    """sharpen(amount,radius,luminance_only): sigma 1 + radius/2 (as SIH maps it);
    darkroom always sharpens the lightness, and has no separate amount."""
    _count(name, args, 3, 3)
    amount = _num(name, args[0], 0, 10)
    radius = _num(name, args[1], 0, 18)
    _bool(name, args[2])
    if amount > 0:
        state.ops.append(Sharpen(sigma=1 + radius / 2))


def _watermark(name: str, args: list[str], state: Filters) -> None:
    """watermark(key,x,y,alpha[,w_ratio[,h_ratio]]): x/y `center`, `repeat`, N, -N or Np;
    alpha is Thumbor's transparency 0 (opaque)..100; ratios in percent of the image."""
    _count(name, args, 4, 6)
    key, x, y, alpha = args[:4]
    try:
        key = check_key(key)
    except BadRequest as error:
        raise _bad(name, error.message) from None
    for position in (x, y):
        if not _MARK_POSITION.fullmatch(position):
            raise _bad(name, f"position {position!r}: expected center, repeat, N, -N or Np")
    transparency = _num(name, alpha, 0, 100)
    ratios = [_num(name, r, 1, 100) / 100 if r.lower() != "none" else None
              for r in args[4:6]] + [None, None]
    state.ops.append(Watermark(key=key, x=x, y=y, opacity=1 - transparency / 100,
                               width=ratios[0], height=ratios[1]))


def _background_color(state: Filters, colour: tuple | str) -> None:
    """Transparent pixels take the colour (`auto`: the image's mean visible colour)."""
    if colour == "auto":
        state.ops.append(Flatten(auto=True))
    else:
        state.ops.append(Flatten(background=colour))
        state.background = colour


def _focal(state: Filters, box: tuple[int, int, int, int]) -> None:
    if box[2] > box[0] and box[3] > box[1]:
        state.focal.append(box)


def _focal_box(name: str, text: str) -> tuple[int, int, int, int]:
    match = _FOCAL.fullmatch(text)
    if match is None:
        raise _bad(name, f"{text!r}: expected LEFTxTOP:RIGHTxBOTTOM")
    box = tuple(int(v) for v in match.groups())
    if max(box) > MAX_SIDE:
        raise _bad(name, f"coordinates must be at most {MAX_SIDE}")
    return box


def _optional_bool(attribute: str) -> Handler:
    def handler(name: str, args: list[str], state: Filters) -> None:
        _count(name, args, 0, 1)
        setattr(state, attribute, _bool(name, args[0]) if args else True)
    return handler


def _set(attribute: str, value: object) -> Callable[[Filters], None]:
    return lambda state: setattr(state, attribute, value)


FILTERS: dict[str, Handler] = {
    "quality": _one(lambda n, t: max(1, int(_num(n, t, 0, 100, integer=True))),
                    lambda s, v: setattr(s, "quality", v)),
    "format": _one(_format, lambda s, v: setattr(s, "format", v)),
    "blur": _blur,
    "brightness": _one(lambda n, t: _num(n, t, -100, 100, integer=True), _brightness),
    "contrast": _one(lambda n, t: _num(n, t, -100, 100, integer=True), _contrast),
    "saturation": _one(lambda n, t: _num(n, t, 0, 10), _saturation),
    "rgb": _rgb,
    "grayscale": _none(lambda s: s.ops.append(Grayscale())),
    "equalize": _none(lambda s: s.ops.append(Equalize())),
    "noise": _noise,
    "convolution": _convolution,
    "sharpen": _sharpen,
    "rotate": _one(lambda n, t: _num(n, t, -3600, 3600, integer=True), _rotate),
    "round_corner": _round_corner,
    "watermark": _watermark,
    "fill": _fill,
    "background_color": _one(lambda n, t: "auto" if t == "auto" else _color(n, t),
                             _background_color),
    "strip_exif": _none(lambda s: None),  # darkroom strips metadata already
    "strip_icc": _none(lambda s: None),
    "no_upscale": _none(_set("upscale", False)),
    "upscale": _none(_set("upscale", True)),
    "max_bytes": _one(lambda n, t: int(_num(n, t, 1, 100 * 1024 * 1024, integer=True)),
                      lambda s, v: setattr(s, "max_bytes", v)),
    "max_age": _one(lambda n, t: int(_num(n, t, 0, 10 * 365 * 86400, integer=True)),
                    lambda s, v: setattr(s, "max_age", v)),
    "focal": _one(_focal_box, _focal),
    "proportion": _one(lambda n, t: _num(n, t, 0.0001, 1),
                       lambda s, v: s.ops.append(Scale(factor=v))),
    "extract_focal": _none(_set("extract_focal", True)),
    "autojpg": _optional_bool("autojpg"),
    "cover": _none(_set("cover", True)),
    "stretch": _none(_set("stretch", True)),
}
"""Every filter darkroom builds; any other name is 400 `unknown_filter`."""
