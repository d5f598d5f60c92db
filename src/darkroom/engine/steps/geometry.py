"""Steps that change the size or shape: trim, extract, resize, rotate, flip, pad."""

from __future__ import annotations

from darkroom.engine.context import Context, Image, premultiplied, with_alpha
from darkroom.engine.geometry import (
    clip_box, focal_box, gravity_offset, half_up, oriented, resize_scales,
)
from darkroom.engine.limits import check_output
from darkroom.errors import BadRequest
from darkroom.plan.ops import Extract, Flip, Pad, Resize, Rotate, Scale, Trim


def trim(ctx: Context, op: Trim) -> None:
    first = ctx.budget.watch(ctx.frames[0])
    corner = (0, 0) if op.corner == "top-left" else (first.width - 1, first.height - 1)
    background = list(op.background[:3]) if op.background else first.getpoint(*corner)[:3]
    left, top, width, height = first.find_trim(threshold=op.threshold, background=background)
    if width and height:
        ctx.map(lambda f: f.crop(left, top, width, height))


def extract(ctx: Context, op: Extract) -> None:
    box = clip_box(ctx.width, ctx.height, (op.left, op.top, op.width, op.height))
    if box is None:
        raise BadRequest(
            f"crop {op.width}x{op.height}+{op.left}+{op.top} lies outside the "
            f"{ctx.width}x{ctx.height} image", "crop_out_of_bounds")
    ctx.map(lambda f: f.crop(*box))


def resize(ctx: Context, op: Resize) -> None:
    width, height = ctx.logical_size()
    op = oriented(op, width, height)
    focal = op.focal or (op.focal_px and (op.focal_px[0] / width, op.focal_px[1] / height))
    sx, sy = resize_scales(width, height, op)
    target_w, target_h = max(1, half_up(width * sx)), max(1, half_up(height * sy))
    check_output(target_w, target_h, len(ctx.frames), ctx.limits)
    have = ctx.width, ctx.height
    ctx.map(lambda f: _scaled(f, target_w, target_h, have))
    ctx.prescale = (1.0, 1.0)
    if op.width and op.height and op.fit == "cover":
        _crop_to(ctx, min(target_w, op.width), min(target_h, op.height), op.gravity, focal)
    elif op.width and op.height and op.fit == "contain":
        check_output(op.width, op.height, len(ctx.frames), ctx.limits)
        left, top = gravity_offset(op.width - target_w, op.height - target_h, op.gravity)
        if op.fill == "blur":
            ctx.map(lambda f: _on_blurred(f, left, top, op.width, op.height))
            return
        bg = _mean_colour(ctx.frames[0]) if op.fill == "average" else list(op.background)
        ctx.map(lambda f: _embed(f, left, top, op.width, op.height, bg))


def scale(ctx: Context, op: Scale) -> None:
    width, height = ctx.logical_size()
    target_w, target_h = max(1, int(width * op.factor)), max(1, int(height * op.factor))
    have = ctx.width, ctx.height
    ctx.map(lambda f: _scaled(f, target_w, target_h, have))
    ctx.prescale = (1.0, 1.0)


def _scaled(image: Image, width: int, height: int, have: tuple[int, int]) -> Image:
    """`image`, whose size is `have` (the context's frames': known without asking
    libvips), resampled to `width` x `height`."""
    return premultiplied(image, lambda i: i.resize(
        width / have[0], vscale=height / have[1], kernel="lanczos3"))


def _mean_colour(image: Image) -> list[float]:
    """The mean of each colour band, opaque."""
    colour = image.extract_band(0, n=3) if image.bands >= 3 else image
    return [colour.extract_band(b).avg() for b in range(colour.bands)] + [255]


def _on_blurred(image: Image, left: int, top: int, width: int, height: int) -> Image:
    """`image` over itself stretched to the box and blurred with a sigma of 1/40 of the
    box's longer side (Thumbor's `fill(blur)`)."""
    sigma = min(max(1.0, max(width, height) / 40), 100.0)
    background = premultiplied(_scaled(image, width, height, (image.width, image.height)),
                               lambda i: i.gaussblur(sigma))
    out = background.composite2(image, "over", x=left, y=top).cast("uchar")
    return out if image.hasalpha() else out.extract_band(0, n=out.bands - 1)


def _crop_to(ctx: Context, width: int, height: int, gravity: str,
             focal: tuple[float, float] | None) -> None:
    if (width, height) == (ctx.width, ctx.height):
        return
    if gravity in ("attention", "entropy") and len(ctx.frames) == 1:
        frame = ctx.budget.watch(ctx.frames[0])
        ctx.frames = [frame.smartcrop(width, height, interesting=gravity)]
        return
    if gravity == "focal" and focal:
        box = focal_box(ctx.width, ctx.height, width, height, *focal)
    else:
        left, top = gravity_offset(ctx.width - width, ctx.height - height, gravity)
        box = (left, top, width, height)
    ctx.map(lambda f: f.crop(*box))


def _embed(image: Image, left: int, top: int, width: int, height: int, bg: list[int]) -> Image:
    if bg[3] < 255:
        image = with_alpha(image)
    return image.embed(left, top, width, height, extend="background",
                       background=bg[: image.bands])


def rotate(ctx: Context, op: Rotate) -> None:
    angle = op.angle % 360
    if angle % 90 == 0:
        turns = {0: None, 90: "d90", 180: "d180", 270: "d270"}[int(angle)]
        if turns:
            ctx.map(lambda f: f.rot(turns))
        if turns in ("d90", "d270"):
            ctx.prescale = ctx.prescale[::-1]  # the loader's shrink turns with the image
        return
    bg = list(op.background)

    def turn(frame: Image) -> Image:
        frame = with_alpha(frame) if bg[3] < 255 else frame
        return premultiplied(frame, lambda i: i.rotate(
            angle, background=_premultiplied_bg(bg, i.bands)))

    ctx.map(turn)


def _premultiplied_bg(bg: list[int], bands: int) -> list[float]:
    if bands == 4:
        alpha = bg[3] / 255
        return [bg[0] * alpha, bg[1] * alpha, bg[2] * alpha, bg[3]]
    return bg[:bands]


def flip(ctx: Context, op: Flip) -> None:
    if op.horizontal:
        ctx.map(lambda f: f.fliphor())
    if op.vertical:
        ctx.map(lambda f: f.flipver())


def pad(ctx: Context, op: Pad) -> None:
    width = ctx.width + op.left + op.right
    height = ctx.height + op.top + op.bottom
    check_output(width, height, len(ctx.frames), ctx.limits)
    bg = list(op.color)
    ctx.map(lambda f: _embed(f, op.left, op.top, width, height, bg))
