"""Face crop: keep the box around one detected face (SIH's `smartCrop`)."""

from __future__ import annotations

from darkroom.engine.context import Context
from darkroom.engine.faces import detect_faces
from darkroom.errors import BadRequest
from darkroom.plan.ops import FaceCrop


def face_crop(ctx: Context, op: FaceCrop) -> None:
    faces = detect_faces(ctx.budget.watch(ctx.frames[0]))
    if not faces:
        return
    if op.index >= len(faces):
        raise BadRequest(f"face {op.index} asked, {len(faces)} found (indices start at 0)",
                         "face_index_out_of_range")
    left, top, width, height = faces[op.index]
    left, top = max(0, left - op.padding), max(0, top - op.padding)
    width = min(width + 2 * op.padding, ctx.width - left)
    height = min(height + 2 * op.padding, ctx.height - top)
    ctx.map(lambda f: f.crop(left, top, width, height))
