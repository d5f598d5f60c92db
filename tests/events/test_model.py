"""The Event: validated, frozen, canonical JSON, a fresh uuid4 id each time."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from darkroom.events import EVENT_TYPES, Event


def test_the_seven_types():
    assert EVENT_TYPES == ("image.uploaded", "image.replaced", "image.deleted",
                           "image.processed", "job.started", "job.succeeded", "job.failed")


def test_defaults_give_a_unique_uuid4_and_utc_now():
    a, b = Event(type="image.uploaded", subject="i"), Event(type="image.uploaded", subject="i")
    assert a.id != b.id and uuid.UUID(hex=a.id).version == 4
    assert a.occurred_at.utcoffset() == timedelta(0)
    assert a.data == {}


def test_an_unknown_type_is_refused_naming_the_known_ones():
    with pytest.raises(ValidationError, match="image.uploaded"):
        Event(type="image.flagged", subject="i")


@pytest.mark.parametrize("changes", [
    {"subject": ""}, {"subject": "line\nbreak"}, {"id": "not-hex"}, {"id": "A" * 32},
    {"occurred_at": datetime(2026, 1, 1)}, {"data": {"x": object()}}, {"extra": 1},
])
def test_bad_fields_are_refused(changes: dict):
    with pytest.raises(ValidationError):
        Event(**{"type": "job.started", "subject": "job-1", **changes})


def test_frozen():
    event = Event(type="job.started", subject="job-1")
    with pytest.raises(ValidationError):
        event.subject = "job-2"


def test_canonical_json_round_trips_and_is_in_utc():
    paris = timezone(timedelta(hours=1))
    event = Event(type="job.succeeded", subject="job-1",
                  occurred_at=datetime(2026, 12, 4, 20, 0, tzinfo=paris),
                  data={"z": 1, "a": ["é", None, 2.5], "m": {"k": True}})
    raw = event.to_json()
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False).encode()
    assert json.loads(raw)["occurred_at"] == "2026-12-04T19:00:00Z"
    assert "é" in raw.decode()
    assert Event.from_json(raw) == event
    assert Event.from_json(raw).to_json() == raw
