"""Steps that combine images: rounded corners and watermarks."""

from __future__ import annotations

import pyvips

from darkroom.engine.context import Context, Image, premultiplied, with_alpha
from darkroom.engine.geometry import (
    MAX_TILES, axis_offsets, clip_box, gravity_offset, mark_scale,
)
from darkroom.engine.limits import check_header, check_source_bytes
from darkroom.engine.load import load, probe
from darkroom.engine.prepare import to_srgb
from darkroom.errors import NotFound
from darkroom.plan.ops import RoundCorners, RoundCrop, Watermark


def round_corners(ctx: Context, op: RoundCorners) -> None:
    width, height = ctx.width, ctx.height
    rx = min(op.radius, width // 2)
    ry = min(op.radius if op.radius_y is None else op.radius_y, height // 2)
    _mask(ctx, f'<rect width="{width}" height="{height}" rx="{rx}" ry="{ry}"')


def round_crop(ctx: Context, op: RoundCrop) -> None:
    width, height = ctx.width, ctx.height
    half_w, half_h = (min(width, height) / 2,) * 2 if op.circle else (width / 2, height / 2)
    rx = op.rx if op.rx is not None else half_w
    ry = op.ry if op.ry is not None else half_h
    cx = op.cx if op.cx is not None else width / 2
    cy = op.cy if op.cy is not None else height / 2
    _mask(ctx, f'<ellipse cx="{cx}" cy="{cy}" rx="{rx}" ry="{ry}"')
    if op.crop:
        box = clip_box(width, height, (max(0, round(cx - rx)), max(0, round(cy - ry)),
                                       round(cx + rx) - max(0, round(cx - rx)),
                                       round(cy + ry) - max(0, round(cy - ry))))
        if box is not None:
            ctx.map(lambda f: f.crop(*box))


def _mask(ctx: Context, shape: str) -> None:
    """Multiply every frame's alpha by an SVG shape drawn in white (the rest is cut)."""
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{ctx.width}" '
           f'height="{ctx.height}">{shape} fill="#fff"/></svg>')
    mask = pyvips.Image.svgload_buffer(svg.encode()).extract_band(3)

    def cut(frame: Image) -> Image:
        frame = with_alpha(frame)
        alpha = frame.extract_band(frame.bands - 1) * mask / 255
        return frame.extract_band(0, n=frame.bands - 1).bandjoin(alpha.cast("uchar"))

    ctx.map(cut)


def watermark(ctx: Context, op: Watermark) -> None:
    data = ctx.assets.get(op.key)
    if data is None:
        raise NotFound(f"watermark {op.key!r} not found", "watermark_not_found")
    check_source_bytes(len(data), ctx.limits)
    header = probe(data)
    check_header(header.width, header.height, 1, ctx.limits)
    mark = with_alpha(to_srgb(load(data, header, 0, False, 1.0, False)))
    placed = op.x is not None or op.y is not None
    room_w, room_h = ctx.width - 2 * op.margin, ctx.height - 2 * op.margin
    if room_w < 1 or room_h < 1:
        return
    scale = mark_scale(ctx.width, ctx.height, mark.width, mark.height, op.width, op.height)
    if not placed:  # by gravity: the mark fits inside the margins
        scale = min(scale, room_w / mark.width, room_h / mark.height)
    if scale != 1:
        size = (max(1, round(mark.width * scale)), max(1, round(mark.height * scale)))
        check_header(*size, 1, ctx.limits)
        mark = premultiplied(mark, lambda i: i.resize(
            size[0] / i.width, vscale=size[1] / i.height))
    if op.opacity < 1:
        mark = mark.extract_band(0, n=3).bandjoin(
            (mark.extract_band(3) * op.opacity).cast("uchar"))
    left, top = gravity_offset(room_w - mark.width, room_h - mark.height, op.gravity)
    xs = axis_offsets(op.x, ctx.width, mark.width, left + op.margin)
    ys = axis_offsets(op.y, ctx.height, mark.height, top + op.margin)
    if len(xs) * len(ys) > MAX_TILES:  # both axes tiled: at most 6 along each
        xs, ys = axis_offsets(op.x, ctx.width, mark.width, 0, 6), axis_offsets(
            op.y, ctx.height, mark.height, 0, 6)
    spots = [(x, y) for x in xs for y in ys]

    def stamp(frame: Image) -> Image:
        out = with_alpha(frame).composite([mark] * len(spots), "over",
                                          x=[p[0] for p in spots], y=[p[1] for p in spots])
        return out if frame.hasalpha() else out.extract_band(0, n=3)

    ctx.map(lambda f: stamp(f).cast("uchar"))
