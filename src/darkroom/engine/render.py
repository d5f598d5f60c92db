"""Run an EditPlan on source bytes: limits, load with shrink, steps, encode."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyvips

from darkroom.config import Limits
from darkroom.engine.budget import Budget
from darkroom.engine.context import Context
from darkroom.engine.encode import encode, fit_bytes
from darkroom.engine.formats import ALPHA_CAPABLE, ANIMATABLE, WEB_FORMAT
from darkroom.engine.geometry import load_scale
from darkroom.engine.limits import check_header, check_output, check_source_bytes
from darkroom.engine.load import Header, Shape, load, probe
from darkroom.engine.prepare import join_frames, split_frames, to_srgb, upright
from darkroom.engine.steps import STEPS
from darkroom.errors import BadRequest, Unprocessable
from darkroom.plan.model import EditPlan

# Operations that read their input once, top to bottom, so libvips may stream the source.
_STREAMING = frozenset({"extract", "blur", "sharpen", "modulate", "grayscale", "pad", "round",
                        "watermark", "scale", "rgb", "noise", "tint", "negate",
                        "round_crop"})


@dataclass(frozen=True)
class Rendered:
    """An encoded result and what it is."""

    data: bytes
    format: str
    width: int
    height: int
    frames: int
    page: int
    pages: int


Tap = Callable[[pyvips.Image], None]


def render(plan: EditPlan, data: bytes, limits: Limits, accept: frozenset[str] = frozenset(),
           assets: Mapping[str, bytes] | None = None, tap: Tap | None = None,
           header: Header | None = None) -> Rendered:
    """Execute `plan` on `data` within `limits`; `accept` is what `auto` may choose from.

    `tap`, for a single frame, is shown the decoded source (8-bit sRGB, shrunk on load as
    the plan allows, upright unless the plan keeps the stored orientation) before any step:
    the pixels are decoded once into memory and serve both. `header` is `probe(data)` when
    the caller already has it (several renders of one source)."""
    check_source_bytes(len(data), limits)
    if header is None or header.bytes != len(data):
        header = probe(data)
    fmt = choose_format(plan.output.format, header, accept, plan.output.opaque_png_as_jpeg)
    animated = (plan.output.animated and header.pages > 1 and header.format in ANIMATABLE
                and fmt in ANIMATABLE)
    frames = header.pages if animated else 1
    check_header(header.width, header.height, frames, limits)
    page = plan.source.page
    if page >= header.pages:
        raise BadRequest(f"page {page} asked, the source has {header.pages}", "page_out_of_range")
    budget = Budget(limits.time_budget_s)
    try:
        return _run(plan, data, header, fmt, animated, page, limits, budget, assets or {}, tap)
    except pyvips.Error as error:
        if budget.killed:
            raise budget.error() from None
        raise Unprocessable(f"cannot process image: {_last_line(error)}", "corrupt_image") from None
    finally:
        budget.release()


def _run(plan: EditPlan, data: bytes, header: Header, fmt: str, animated: bool, page: int,
         limits: Limits, budget: Budget, assets: Mapping[str, bytes], tap: Tap | None
         ) -> Rendered:
    orientation = header.orientation if plan.source.orient else 1
    swaps = orientation >= 5
    single_resize = not animated and header.pages == 1
    vector = header.format == "svg"  # rasterised at the size asked for, within the caps
    most = limits.max_output_side / max(header.width, header.height) if vector else 1.0
    scale = load_scale(header.width, header.height, plan.ops, swaps, most)
    streaming = header.orientation <= 1 and not animated and all(
        op.op in _STREAMING or (op.op == "resize" and op.fill == "color"
                                and op.gravity not in ("attention", "entropy"))
        for op in plan.ops)
    loaded = load(data, header, page, animated, scale if single_resize else 1.0, streaming)
    source = loaded
    if vector:
        check_header(loaded.width, loaded.height, 1, limits)
    parts = split_frames(loaded, loaded.get("page-height")) if animated else [loaded]
    frames = [to_srgb(upright(f, orientation), not plan.output.keep_metadata, budget)
              for f in parts]
    if tap is not None and len(frames) == 1:
        frames = [budget.watch(frames[0]).copy_memory()]
        tap(frames[0])
    if fmt not in ALPHA_CAPABLE:  # flatten now: every later step then works on 3 bands
        background = list(plan.output.background[:3])
        frames = [f.flatten(background=background).cast("uchar") if f.hasalpha() else f
                  for f in frames]
    ctx = Context(frames=frames, limits=limits, budget=budget, assets=assets)
    declared = (header.height, header.width) if swaps else (
        header.width, header.height)
    ctx.prescale = (ctx.width / declared[0], ctx.height / declared[1])
    for op in plan.ops:
        budget.check()
        before = (ctx.width, ctx.height)
        STEPS[op.op](ctx, op)
        _check_growth(ctx, before, limits)
    check_output(ctx.width, ctx.height, len(ctx.frames), limits)
    budget.check()
    image = budget.watch(join_frames(ctx.frames, source))
    encoded = encode(image, fmt, plan.output)
    if plan.output.max_bytes and len(encoded) > plan.output.max_bytes:
        encoded = fit_bytes(image, fmt, plan.output, encoded, budget)
    budget.check()
    return Rendered(encoded, fmt, ctx.width, ctx.height, len(ctx.frames), page, header.pages)


def _check_growth(ctx: Context, before: tuple[int, int], limits: Limits) -> None:
    """A step may shrink a source that is past the output caps; none may grow past them."""
    if ctx.width > before[0] or ctx.height > before[1]:
        check_output(ctx.width, ctx.height, len(ctx.frames), limits)


def choose_format(choice: str, header: Shape, accept: frozenset[str],
                  opaque_png_as_jpeg: bool = False) -> str:
    """Resolve `auto` (from what the client accepts) and `source` to a concrete format."""
    if choice == "source":
        if opaque_png_as_jpeg and header.format == "png" and not header.alpha:
            return "jpeg"
        return WEB_FORMAT[header.format]
    if choice != "auto":
        return choice
    if header.pages > 1 and header.format in ANIMATABLE:
        return "webp" if "webp" in accept else "gif"
    for preferred in ("avif", "webp"):
        if preferred in accept:
            return preferred
    return "png" if header.alpha else "jpeg"


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"



