"""`EditPlan`: the one canonical form of a request, whatever grammar it came from."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from darkroom.plan.color import Color
from darkroom.plan.ops import Operation

OutputFormat = Literal["jpeg", "png", "webp", "avif", "gif", "tiff"]
FormatChoice = Literal["jpeg", "png", "webp", "avif", "gif", "tiff", "auto", "source"]


class Source(BaseModel):
    """Where the pixels come from: a storage key (or uploaded bytes) and which page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str | None = Field(None, max_length=1024)
    page: int = Field(0, ge=0, le=10_000, description="page (TIFF) or frame to render")
    orient: bool = Field(True, description="turn the pixels upright by the EXIF orientation "
                         "(false: ignore the tag, as Thumbor without RESPECT_ORIENTATION)")


class Output(BaseModel):
    """How the result is encoded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: FormatChoice = "source"
    quality: int | None = Field(None, ge=1, le=100)
    lossless: bool = False
    keep_metadata: bool = False
    background: Color = (255, 255, 255, 255)  # flattens alpha for formats without it
    max_bytes: int | None = Field(None, ge=1, le=100 * 1024 * 1024, description=(
        "lower the quality until the result fits, if it can"))
    animated: bool = Field(True, description="keep every frame of an animated source")
    opaque_png_as_jpeg: bool = Field(False, description=(
        "with format `source`: encode a PNG without transparency as JPEG"))


class EditPlan(BaseModel):
    """A source, the ordered operations, the output spec. Frozen; hashable by content."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Source = Source()
    ops: tuple[Operation, ...] = ()
    output: Output = Output()

    def canonical_json(self) -> str:
        """Sorted keys, no spaces, defaults included: equal plans give equal text."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @cached_property
    def recipe_hash(self) -> str:
        """SHA-256 of the operations, page and output: what is done, not to which key."""
        body = self.model_dump(mode="json")
        body["source"].pop("key")
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def model_copy(self, *, update: dict | None = None, deep: bool = False) -> "EditPlan":
        """A copy; with `update` it drops the cached `recipe_hash`, which no longer holds."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            copy.__dict__.pop("recipe_hash", None)
        return copy
