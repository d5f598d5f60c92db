"""The `Event`: one frozen fact about an image or a job, with a unique id for dedup."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

EventType = Literal["image.uploaded", "image.replaced", "image.deleted", "image.processed",
                    "job.started", "job.succeeded", "job.failed"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Event(BaseModel):
    """What happened (`type`), to what (`subject`, e.g. an image id), when, with details.

    `id` is a uuid4 in hex; every sink passes it on so receivers can drop redeliveries.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=r"^[0-9a-f]{32}$")
    type: EventType
    occurred_at: datetime = Field(default_factory=_now)
    subject: str = Field(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f]+$")
    data: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        if value.utcoffset() is None:
            raise ValueError("occurred_at needs a time zone")
        return value.astimezone(timezone.utc)

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, UTF-8): the bytes every sink sends."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        """The event back from `to_json`'s bytes (validated again)."""
        return cls.model_validate_json(raw)
