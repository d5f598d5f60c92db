"""Sizes and boxes as pure arithmetic: no pixels, unit-testable as numbers."""

from __future__ import annotations

from darkroom.plan.ops import Operation, Resize, Rotate, Flip

Box = tuple[int, int, int, int]  # left, top, width, height

_GRAVITY = {  # fraction of the free space to the left and to the top
    "center": (0.5, 0.5), "north": (0.5, 0.0), "south": (0.5, 1.0), "east": (1.0, 0.5),
    "west": (0.0, 0.5), "northeast": (1.0, 0.0), "northwest": (0.0, 0.0),
    "southeast": (1.0, 1.0), "southwest": (0.0, 1.0),
}


def half_up(value: float) -> int:
    """Round halves up (266.5 -> 267), as image services do; not to the even neighbour."""
    return int(value + 0.5 + 1e-9)


def oriented(op: Resize, width: int, height: int) -> Resize:
    """`op` for a width x height image: `source` sides replaced by the image's, and the box
    turned a quarter when `adaptive` and one of box and image is portrait, the other
    landscape."""
    box_w = width if op.width == "source" else op.width
    box_h = height if op.height == "source" else op.height
    if op.adaptive and box_w and box_h and (
            (width < height and box_w > box_h) or (width > height and box_w < box_h)):
        box_w, box_h = box_h, box_w
    if (box_w, box_h, False) == (op.width, op.height, op.adaptive):
        return op
    return op.model_copy(update={"width": box_w, "height": box_h, "adaptive": False})


def resize_scales(width: int, height: int, op: Resize) -> tuple[float, float]:
    """Horizontal and vertical scale that `op` applies to a width x height image."""
    sx = op.width / width if op.width else None
    sy = op.height / height if op.height else None
    if sx is None or sy is None:
        scale = sx if sx is not None else sy
        sx = sy = scale
    elif op.fit in ("inside", "contain"):
        sx = sy = min(sx, sy)
    elif op.fit in ("cover", "outside"):
        sx = sy = max(sx, sy)
    if not op.upscale:
        sx, sy = min(sx, 1.0), min(sy, 1.0)
    return sx, sy


def resized_size(width: int, height: int, op: Resize) -> tuple[int, int]:
    """The size after scaling (before the crop of `cover` or the bars of `contain`)."""
    sx, sy = resize_scales(width, height, op)
    return max(1, half_up(width * sx)), max(1, half_up(height * sy))


def final_size(width: int, height: int, op: Resize) -> tuple[int, int]:
    """The size `op` produces: the box for cover/contain/fill, else the scaled size.

    `contain` always gives the whole box (without `upscale` the image sits in it unscaled);
    `cover` without `upscale` never crops past the image.
    """
    w, h = resized_size(width, height, op)
    if op.width and op.height and op.fit == "cover":
        return min(w, op.width), min(h, op.height)
    if op.width and op.height and op.fit == "contain":
        return op.width, op.height
    return w, h


def gravity_offset(free_w: int, free_h: int, gravity: str) -> tuple[int, int]:
    """Where a box lands inside free space, for the compass gravities (centre otherwise)."""
    fx, fy = _GRAVITY.get(gravity, (0.5, 0.5))
    return round(free_w * fx), round(free_h * fy)


def focal_box(width: int, height: int, box_w: int, box_h: int, x: float, y: float) -> Box:
    """A box_w x box_h box centred on the focal point (fractions), kept inside the image."""
    left = min(max(round(x * width - box_w / 2), 0), width - box_w)
    top = min(max(round(y * height - box_h / 2), 0), height - box_h)
    return left, top, box_w, box_h


MAX_TILES = 100
"""Watermark copies a tiled (`repeat`) axis may hold; both axes tiled: 6 along each."""


def mark_scale(width: int, height: int, mark_w: int, mark_h: int,
               width_ratio: float | None, height_ratio: float | None) -> float:
    """The scale that fits a mark inside the fractions of the image (1 when none)."""
    scales = [r * side / m for r, side, m in (
        (width_ratio, width, mark_w), (height_ratio, height, mark_h)) if r]
    return min(scales) if scales else 1.0


def axis_offsets(position: str | None, side: int, mark: int, default: int,
                 most: int = MAX_TILES) -> list[int]:
    """Where copies of a mark start along one axis: `N` from the start, `-N` from the
    end to the mark's far edge, `Np` in percent of the side, `center`, `repeat` (evenly
    spaced copies filling the side, at most `most`), or `default` when not given."""
    if position is None:
        return [default]
    if position == "center":
        return [(side - mark) // 2]
    if position == "repeat":
        count, spare = divmod(side, mark)
        if count > most:
            count, spare = most, side - most * mark
        count = max(count, 1)
        gap = spare // (count - 1) if count > 1 else 0
        return [i * (mark + gap) for i in range(count)]
    negative = position.startswith("-")
    amount = position.lstrip("-")
    if amount.endswith("p"):
        amount = str(round(side * int(amount[:-1]) / 100 + 1e-5))
    return [side - mark - int(amount) if negative else int(amount)]


def clip_box(width: int, height: int, box: Box) -> Box | None:
    """The part of `box` inside the image, or None when nothing is left."""
    left, top, w, h = box
    right, bottom = min(left + w, width), min(top + h, height)
    if left >= width or top >= height or right <= left or bottom <= top:
        return None
    return left, top, right - left, bottom - top


def load_scale(width: int, height: int, ops: tuple[Operation, ...], swap: bool,
               most: float = 1.0) -> float:
    """How far the loader may shrink (or, up to `most`, enlarge: vector sources) and still
    give the first resize enough pixels.

    Only quarter turns and flips may stand before the resize; anything else needs the
    full image. `swap` says whether EXIF orientation turns the image a quarter. No side is
    shrunk below one pixel (loaders refuse a zero-sized result).
    """
    for op in ops:
        if isinstance(op, Rotate) and op.angle % 90 == 0:
            swap ^= (op.angle // 90) % 2 == 1
        elif isinstance(op, Resize):
            w, h = (height, width) if swap else (width, height)
            scales = resize_scales(w, h, oriented(op, w, h))
            return min(most, max(*scales, 1 / min(width, height)))
        elif not isinstance(op, Flip):
            return 1.0
    return 1.0


def jpeg_shrink(scale: float) -> int:
    """The largest DCT shrink (1, 2, 4, 8) that keeps at least `scale` of the pixels."""
    for shrink in (8, 4, 2):
        if scale * shrink <= 1.0:
            return shrink
    return 1
