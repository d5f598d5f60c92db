"""SIH's `edits` object (sharp's vocabulary, as in the base64-JSON requests and as SIH's
Thumbor and query mappers produce it) compiled to EditPlan operations.

Geometry (resize, rotate, flip, flop, extract/crop, smartCrop, roundCrop, extend, trim)
runs in the order of the JSON keys, as in SIH; the pixel filters run after it in sharp's
fixed pipeline order (sharp blurs, tints... after resizing whatever the call order); the
overlay is composited last. Keys outside SIH's allow-list are ignored, as SIH ignores them;
allow-listed sharp operations darkroom does not have are a 400 `unsupported_edit`;
malformed values are a 400 `bad_edit` (SIH answers 500 for most of them).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from darkroom.errors import BadRequest, NotImplementedYet
from darkroom.grammars import sih_geometry as geometry
from darkroom.grammars.sih_values import bad, color, flag, integer, mapping, number
from darkroom.plan import Blur, Convolve, Flatten, Grayscale, Negate, Normalize, Sharpen, Tint

FILTER_ORDER = ("flatten", "negate", "grayscale", "greyscale", "blur", "convolve", "sharpen",
                "normalise", "normalize", "tint")
FORMAT_KEYS = ("jpeg", "png", "webp", "avif", "tiff", "gif", "heif")
UNSUPPORTED = frozenset({
    "removeAlpha", "ensureAlpha", "extractChannel", "joinChannel", "bandbool",
    "pipelineColourspace", "pipelineColorspace", "toColourspace", "toColorspace", "affine",
    "median", "unflatten", "gamma", "clahe", "threshold", "boolean", "linear", "recomb",
    "modulate",
})
Resolve = Callable[[str | None, str], str]  # (bucket, key) -> storage key


def compile_ops(edits: dict, resolve: Resolve) -> tuple:
    """The operations of `edits`, in SIH's order; `resolve` maps an overlay's bucket/key."""
    for name in edits:
        if name in UNSUPPORTED:
            raise BadRequest(f"edits.{name}: this sharp operation is not supported",
                             "unsupported_edit")
    moderation = edits.get("contentModeration")
    if moderation not in (None, False):
        _check_moderation(moderation)
    try:
        ops = [op for name, value in edits.items() if name in geometry.STEPS
               for op in geometry.STEPS[name](value)]
        ops += [op for name in FILTER_ORDER if name in edits
                for op in _FILTERS[name](name, edits[name])]
        if "overlayWith" in edits:
            ops.append(geometry.overlay(edits["overlayWith"], resolve))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
        raise BadRequest(f"edits: {where} {first['msg']}".strip()[:300], "bad_edit") from None
    return tuple(ops)


def _switch(name: str, value: object, build: Callable[[dict], object],
            options: frozenset[str] = frozenset()) -> list:
    """`true` (defaults), `false` (nothing) or an options object."""
    if isinstance(value, dict):
        return [build(mapping(name, value, options))]
    return [build({})] if flag(name, value) else []


def _flatten(name: str, value: object) -> list:
    return _switch(name, value, lambda o: Flatten(background=color(
        name, o.get("background", "#000000"))), frozenset({"background"}))


def _negate(name: str, value: object) -> list:
    return _switch(name, value, lambda o: Negate(alpha=flag(name, o.get("alpha", True))),
                   frozenset({"alpha"}))


def _grayscale(name: str, value: object) -> list:
    return [Grayscale()] if flag(name, value) else []


def _blur(name: str, value: object) -> list:
    if isinstance(value, dict):
        value = mapping(name, value, frozenset({"sigma", "precision", "minAmplitude"}))
        value = value.get("sigma", True)
    if isinstance(value, bool):
        return [Blur(sigma=0.8)] if value else []  # sharp's mild 3x3 box blur
    return [Blur(sigma=number(name, value, 0.3, 100))]


def _sharpen(name: str, value: object) -> list:
    if isinstance(value, dict):
        options = frozenset({"sigma", "m1", "m2", "x1", "y2", "y3"})
        value = mapping(name, value, options).get("sigma", True)
    if isinstance(value, bool):
        return [Sharpen(sigma=1.0)] if value else []  # sharp's mild sharpen
    return [Sharpen(sigma=number(name, value, 0.01, 10))]


def _normalize(name: str, value: object) -> list:
    return _switch(name, value, lambda o: Normalize(
        lower=number(name, o.get("lower", 1), 0, 99),
        upper=number(name, o.get("upper", 99), 1, 100)), frozenset({"lower", "upper"}))


def _tint(name: str, value: object) -> list:
    return [Tint(color=color(name, value))]


def _convolve(name: str, value: object) -> list:
    value = mapping(name, value, frozenset({"width", "height", "kernel", "scale", "offset"}))
    width = integer(name, value.get("width"), 1, 15)
    height = integer(name, value.get("height"), 1, 15)
    kernel = value.get("kernel")
    if not isinstance(kernel, list) or len(kernel) != width * height:
        raise bad(name, "kernel must be a list of width x height numbers")
    matrix = tuple(number(name, k, -1e4, 1e4) for k in kernel)
    total = sum(matrix) or 1.0
    if number(name, value.get("scale", total), -1e6, 1e6) != total:
        raise bad(name, "only the default scale (the kernel's sum) is supported")
    if number(name, value.get("offset", 0), -1e6, 1e6) != 0:
        raise bad(name, "only offset 0 is supported")
    return [Convolve(matrix=matrix, columns=width, normalize=True)]


_FILTERS = {"flatten": _flatten, "negate": _negate, "grayscale": _grayscale,
            "greyscale": _grayscale, "blur": _blur, "sharpen": _sharpen,
            "normalise": _normalize, "normalize": _normalize, "tint": _tint,
            "convolve": _convolve}


def _check_moderation(value: object) -> None:
    """Validate SIH's contentModeration options, then say it is not available yet."""
    if value is not True:
        value = mapping("contentModeration", value,
                        frozenset({"minConfidence", "blur", "moderationLabels"}))
        if "minConfidence" in value:
            number("contentModeration.minConfidence", value["minConfidence"], 0, 100)
        if "blur" in value:
            number("contentModeration.blur", value["blur"], 0, 1000)
        labels = value.get("moderationLabels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise bad("contentModeration.moderationLabels", "expected a list of strings")
    raise NotImplementedYet("contentModeration is not available yet: this server has no "
                            "moderation detector", "content_moderation_unavailable")
