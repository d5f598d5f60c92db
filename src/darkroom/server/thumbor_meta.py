"""Thumbor's `meta/` answer: a JSON description of the operations, from the source's
header alone (no pixel is decoded), in the shape Thumbor's JSON engine writes.

    {"thumbor": {"source": {"url", "width", "height", "frameCount"},
                 "operations": [{"type": "crop", "left", "top", "right", "bottom"},
                                {"type": "resize", "width", "height"},
                                {"type": "flip_horizontally"}, ...],
                 "target": {"width", "height"}, "focal_points": [...]}}

As in Thumbor, `source.width`/`height` are the size after the operations and resize
sizes are floats. Trim and smart crops depend on pixels: a trim is not reported and a
smart crop is described centred.
"""

from __future__ import annotations

from darkroom.engine import Header
from darkroom.engine.geometry import clip_box, focal_box, oriented
from darkroom.plan import EditPlan, Extract, Flip, Resize

_ALIGN = {"west": (0.0, 0.5), "east": (1.0, 0.5), "north": (0.5, 0.0), "south": (0.5, 1.0),
          "northwest": (0.0, 0.0), "northeast": (1.0, 0.0), "southwest": (0.0, 1.0),
          "southeast": (1.0, 1.0)}


def describe(plan: EditPlan, header: Header) -> dict:
    """Thumbor's JSON description of `plan` applied to an image with this header."""
    swap = plan.source.orient and header.swaps_sides
    width, height = (header.height, header.width) if swap else (header.width, header.height)
    operations: list[dict] = []
    focal: list[dict] = []
    resized = False
    for op in plan.ops:
        if isinstance(op, Extract):
            box = clip_box(width, height, (op.left, op.top, op.width, op.height))
            if box:
                operations.append(_crop(box))
                width, height = box[2], box[3]
        elif isinstance(op, Resize) and not resized:
            resized = True
            width, height = _resize(oriented(op, width, height), width, height,
                                    operations, focal)
        elif isinstance(op, Flip):
            for axis, on in (("horizontally", op.horizontal), ("vertically", op.vertical)):
                if on:
                    operations.append({"type": f"flip_{axis}"})
    body = {"source": {"url": plan.source.key, "width": width, "height": height,
                       "frameCount": header.pages if plan.output.animated else 1},
            "operations": operations, "target": {"width": width, "height": height}}
    if focal:
        body["focal_points"] = focal
    return {"thumbor": body}


def _crop(box: tuple[int, int, int, int]) -> dict:
    left, top, w, h = box
    return {"type": "crop", "left": left, "top": top, "right": left + w, "bottom": top + h}


def _resize(op: Resize, width: int, height: int, operations: list[dict],
            focal: list[dict]) -> tuple[int, int]:
    """Thumbor's auto-crop (cover) then resize; fit-in resizes only. The new size."""
    box_w = op.width or width * op.height / height
    box_h = op.height or height * op.width / width
    if op.fit == "cover" and op.width and op.height:
        fit = min(width / box_w, height / box_h)  # the largest box of that shape inside
        crop_w, crop_h = min(width, round(box_w * fit)), min(height, round(box_h * fit))
        point = _focus(op, width, height)
        focal.append({"x": int(point[0]), "y": int(point[1]), "z": 1.0, "height": 1,
                      "width": 1, "origin": "alignment" if op.gravity != "focal"
                      else "Explicit"})
        if (crop_w, crop_h) != (width, height):
            left, top, _, _ = focal_box(width, height, crop_w, crop_h,
                                        point[0] / width, point[1] / height)
            operations.append(_crop((left, top, crop_w, crop_h)))
        target = (float(op.width), float(op.height))
    elif op.fit == "fill":
        target = (float(box_w), float(box_h))
    else:
        scale = max if op.fit == "outside" else min
        factor = scale(box_w / width, box_h / height)
        if not op.upscale:
            factor = min(factor, 1.0)
        target = (round(width * factor, 2), round(height * factor, 2))
    if target != (width, height):
        operations.append({"type": "resize", "width": target[0], "height": target[1]})
    return round(target[0]), round(target[1])


def _focus(op: Resize, width: int, height: int) -> tuple[float, float]:
    if op.focal_px:
        return op.focal_px
    if op.focal:
        return op.focal[0] * width, op.focal[1] * height
    fx, fy = _ALIGN.get(op.gravity, (0.5, 0.5))
    return fx * width, fy * height
