"""Thumbor's URL grammar, compiled to the one canonical `EditPlan`.

    /{unsafe|SIGNATURE}/[debug/][meta/][trim[:top-left|:bottom-right][:tolerance]/]
    [AxB:CxD/][adaptive-][full-]fit-in/][-]Wx[-]H/[left|center|right/]
    [top|middle|bottom/][smart/][filters:name(args):name(args)/]{image}

Positional and strict, as Thumbor's own regular expression (thumbor/url.py): a segment out
of order, upper-cased or unknown is part of the image path (so the answer is a 404 for the
missing source, as in Thumbor). Filters are parsed in `thumbor_filters`.

Operations run in Thumbor's order: trim, manual crop, resize (with its auto-crop, towards
the focal points, the alignment or the smart crop), flip, then the filters in the order
of the URL, then `fill`'s padding to the box.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError

from darkroom.errors import BadRequest
from darkroom.grammars.thumbor_filters import MAX_SIDE, Filters, parse_filters
from darkroom.plan import (
    EditPlan, Extract, Flatten, Flip, Output, Resize, Source, Trim, parse_color,
)
from darkroom.storage import check_key

# thumbor/url.py (7.x), without the signature group, which the caller has split off.
_URL = re.compile(
    r"(?:(?P<debug>debug)/)?"
    r"(?:(?P<meta>meta)/)?"
    r"(?:(?P<trim>trim(?::(?:top-left|bottom-right))?(?::\d+)?)/)?"
    r"(?:(?P<crop_left>\d+)x(?P<crop_top>\d+):(?P<crop_right>\d+)x(?P<crop_bottom>\d+)/)?"
    r"(?:(?P<adaptive>adaptive-)?(?P<full>full-)?(?P<fit_in>fit-in)/)?"
    r"(?:(?P<horizontal_flip>-)?(?P<width>(?:\d+|orig))?x"
    r"(?P<vertical_flip>-)?(?P<height>(?:\d+|orig))?/)?"
    r"(?:(?P<halign>left|right|center)/)?"
    r"(?:(?P<valign>top|bottom|middle)/)?"
    r"(?:(?P<smart>smart)/)?"
    r"(?:filters:(?P<filters>.+?\))/)?"
    r"(?P<image>.+)",
    re.DOTALL,
)
_GRAVITY = {
    ("left", "top"): "northwest", ("center", "top"): "north", ("right", "top"): "northeast",
    ("left", "middle"): "west", ("center", "middle"): "center", ("right", "middle"): "east",
    ("left", "bottom"): "southwest", ("center", "bottom"): "south",
    ("right", "bottom"): "southeast",
}
SIGNATURE = re.compile(r"[A-Za-z0-9_-]{27}=")
"""A Thumbor signature segment: urlsafe base64 of 20 bytes, with its `=` padding."""


@dataclass(frozen=True)
class ThumborRequest:
    """A compiled Thumbor URL: the plan, and what is answered beside the pixels."""

    plan: EditPlan
    meta: bool = False  # answer Thumbor's JSON description instead of the image
    max_age: int | None = None  # Cache-Control max-age from `max_age()`


def split_signature(path: str) -> tuple[str, str]:
    """`/{first}/{rest}` to (first, rest); rest is "" when there is no second segment."""
    first, _, rest = path.removeprefix("/").partition("/")
    return first, rest


def parse(path: str) -> tuple[str, str, EditPlan]:
    """Compile a Thumbor path (`/unsafe/300x200/a.jpg` or `/{signature}/...`, decoded) to
    (first segment, the rest, the plan). The first segment is not checked here."""
    first, rest = split_signature(path)
    return first, rest, compile_options(rest)


def compile_options(rest: str) -> EditPlan:
    """The plan of what follows the signature segment (`300x200/smart/a.jpg`)."""
    return compile_request(rest, True).plan


def compile_request(rest: str, respect_orientation: bool) -> ThumborRequest:
    """Compile what follows the signature segment; `respect_orientation` is Thumbor's
    RESPECT_ORIENTATION (turn the pixels by the EXIF orientation)."""
    match = _URL.fullmatch(rest)
    if match is None:  # only an empty rest: the image group takes anything else
        raise BadRequest("a Thumbor URL needs an image path", "bad_key")
    try:
        return _compile(match.groupdict(), respect_orientation)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
        raise BadRequest(f"{where}: {first['msg']}" if where else first["msg"],
                         "bad_param") from None


def _compile(g: dict, respect_orientation: bool) -> ThumborRequest:
    if g["debug"]:
        raise BadRequest("debug/ is not supported", "unsupported_option")
    state = parse_filters(g["filters"]) if g["filters"] else Filters()
    image = g["image"]
    if state.extract_focal:
        image, box = _nested_crop(image)
        state.focal.append(box)
    ops: list = []
    if g["trim"]:
        ops.append(_trim(g["trim"]))
    crop = _crop(g)
    if crop is not None:
        ops.append(crop)
    ops.extend(_resize(g, state, crop))
    if g["horizontal_flip"] or g["vertical_flip"]:
        ops.append(Flip(horizontal=bool(g["horizontal_flip"]),
                        vertical=bool(g["vertical_flip"])))
    ops.extend(state.ops)
    ops.extend(_fill(g, state))
    output = Output(format=state.format, quality=state.quality, background=state.background,
                    max_bytes=state.max_bytes, animated=not state.cover,
                    opaque_png_as_jpeg=state.autojpg)
    source = Source(key=check_key(image), orient=respect_orientation)
    plan = EditPlan(source=source, ops=tuple(ops), output=output)
    return ThumborRequest(plan, bool(g["meta"]), state.max_age)


def _trim(text: str) -> Trim:
    """`trim[:top-left|:bottom-right][:tolerance]`: the colour of that corner is cut."""
    corner, tolerance = "top-left", 0
    for part in text.split(":")[1:]:
        if part.isdigit():
            tolerance = int(part)
        else:
            corner = part
    if tolerance > 442:  # the largest RGB distance
        raise BadRequest("trim tolerance must be 0-442", "bad_param")
    return Trim(threshold=min(tolerance, 255), corner=corner)


def _crop(g: dict) -> Extract | None:
    if g["crop_left"] is None:
        return None
    left, top, right, bottom = (int(g[k]) for k in (
        "crop_left", "crop_top", "crop_right", "crop_bottom"))
    if left == top == right == bottom == 0:
        return None
    if right <= left or bottom <= top:
        raise BadRequest(f"crop {left}x{top}:{right}x{bottom}: the right and bottom corner "
                         "must lie past the left and top corner", "bad_param")
    if max(left, top, right, bottom) > MAX_SIDE:
        raise BadRequest(f"crop coordinates must be at most {MAX_SIDE}", "bad_param")
    return Extract(left=left, top=top, width=right - left, height=bottom - top)


def _side(text: str | None) -> int | str | None:
    """`None` and `0` leave the side to the aspect ratio; `orig` is the image's side."""
    if text is None:
        return None
    if text == "orig":
        return "source"
    value = int(text)
    if value > MAX_SIDE:
        raise BadRequest(f"size {value} is over {MAX_SIDE}", "bad_param")
    return value or None


def _resize(g: dict, state: Filters, crop: Extract | None) -> list:
    width, height = _side(g["width"]), _side(g["height"])
    if width is None and height is None:
        return []
    if g["fit_in"]:  # fit-in never enlarges unless upscale(); full-fit-in always may
        upscale = bool(state.upscale) or bool(g["full"])
        return [Resize(width=width, height=height, fit="outside" if g["full"] else "inside",
                       upscale=upscale, adaptive=bool(g["adaptive"]))]
    upscale = state.upscale if state.upscale is not None else True  # plain WxH enlarges
    if not (width and height):
        return [Resize(width=width, height=height, fit="inside", upscale=upscale)]
    if state.stretch:
        return [Resize(width=width, height=height, fit="fill", upscale=upscale)]
    focal = _focal_point(state.focal, crop)
    if g["smart"] and focal is None:
        gravity = "attention"
    else:
        gravity = "focal" if focal else _GRAVITY[(g["halign"] or "center",
                                                  g["valign"] or "middle")]
    return [Resize(width=width, height=height, fit="cover", gravity=gravity,
                   focal_px=focal, upscale=upscale)]


def _focal_point(boxes: list[tuple[int, int, int, int]], crop: Extract | None
                 ) -> tuple[float, float] | None:
    """The focal boxes' centre of mass (each weighs its area, as in Thumbor), moved into
    the manual crop; boxes whose centre lies outside the crop are dropped."""
    points = [((left + right) / 2, (top + bottom) / 2, (right - left) * (bottom - top))
              for left, top, right, bottom in boxes]
    if crop is not None:
        points = [(x - crop.left, y - crop.top, w) for x, y, w in points
                  if 0 <= x - crop.left <= crop.width and 0 <= y - crop.top <= crop.height]
    total = sum(p[2] for p in points)
    if not total:
        return None
    return (sum(p[0] * p[2] for p in points) / total, sum(p[1] * p[2] for p in points) / total)


def _fill(g: dict, state: Filters) -> list:
    """`fill()` pads the result to the requested box (centred, whatever the alignment):
    fit-in leaves room, and without upscale a plain resize may too; full-fit-in fills
    the box already."""
    if state.fill is None:
        return []
    width, height = _side(g["width"]), _side(g["height"])
    colour = (0, 0, 0, 0) if state.fill in ("blur", "auto") else parse_color(state.fill)
    ops = [Flatten(background=colour)] if state.fill_transparent and colour[3] else []
    if isinstance(width, int) and isinstance(height, int) and not g["full"]:
        mode = {"blur": "blur", "auto": "average"}.get(state.fill, "color")
        ops.append(Resize(width=width, height=height, fit="contain", upscale=False,
                          background=colour, fill=mode))
    return ops


def _nested_crop(image: str) -> tuple[str, tuple[int, int, int, int]]:
    """`extract_focal()`: the image path is itself a Thumbor URL (after a host, if any)
    with a manual crop; its image is the source and its crop the focal region."""
    for _ in range(10):
        inner = re.sub(r"^(https?://)?.*?/", "", image, count=1)
        first, rest = split_signature(inner)
        match = _URL.fullmatch(rest) if first == "unsafe" or SIGNATURE.fullmatch(first) else None
        if match is None:
            break
        g = match.groupdict()
        if g["crop_left"] is not None:
            box = tuple(int(g[k]) for k in ("crop_left", "crop_top", "crop_right", "crop_bottom"))
            return g["image"], box
        image = g["image"]
    raise BadRequest("filter extract_focal(): the image is not a Thumbor URL with a crop",
                     "bad_filter_arg")
