"""Steps that combine images: rounded corners and watermarks."""

from __future__ import annotations

import pyvips

from darkroom.engine.context import Context, Image, premultiplied, with_alpha
from darkroom.engine.geometry import gravity_offset
from darkroom.engine.limits import check_header, check_source_bytes
from darkroom.engine.load import load, probe
from darkroom.engine.prepare import to_srgb
from darkroom.errors import NotFound
from darkroom.plan.ops import RoundCorners, Watermark


def round_corners(ctx: Context, op: RoundCorners) -> None:
    width, height = ctx.width, ctx.height
    radius = min(op.radius, width // 2, height // 2)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
           f'<rect width="{width}" height="{height}" rx="{radius}" ry="{radius}" '
           'fill="#fff"/></svg>')
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
    room_w, room_h = ctx.width - 2 * op.margin, ctx.height - 2 * op.margin
    if room_w < 1 or room_h < 1:
        return
    want_w = round(ctx.width * op.width) if op.width else mark.width
    scale = min(want_w / mark.width, room_w / mark.width, room_h / mark.height)
    if scale != 1:
        mark = premultiplied(mark, lambda i: i.resize(scale))
    if op.opacity < 1:
        mark = mark.extract_band(0, n=3).bandjoin(
            (mark.extract_band(3) * op.opacity).cast("uchar"))
    left, top = gravity_offset(room_w - mark.width, room_h - mark.height, op.gravity)
    x, y = left + op.margin, top + op.margin

    def stamp(frame: Image) -> Image:
        out = with_alpha(frame).composite2(mark, "over", x=x, y=y)
        return out if frame.hasalpha() else out.extract_band(0, n=3)

    ctx.map(lambda f: stamp(f).cast("uchar"))
