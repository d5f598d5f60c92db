"""The log sink writes one JSON line per event on darkroom's log (run as the server runs)."""

from __future__ import annotations

import json
import subprocess
import sys

from darkroom.events import Event

SCRIPT = """
import asyncio, sys
from darkroom.events import Event
from darkroom.events.log import LogNotifier
from darkroom.events.settings import LogSink
from darkroom.server.observability import configure_logging

configure_logging("info")
event = Event.from_json(sys.argv[1])
asyncio.run(LogNotifier(LogSink(type="log", name="audit", level=sys.argv[2])).deliver(event))
"""


def run(event: Event, level: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, event.to_json(), level],
                          capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_line_is_json_with_the_event():
    event = Event(type="image.replaced", subject="img-3", data={"old": "v1", "new": "v2"})
    [line] = run(event, "info")
    assert line["event"] == "event_notified" and line["level"] == "info"
    assert line["event_id"] == event.id and line["event_type"] == "image.replaced"
    assert line["subject"] == "img-3" and line["data"] == {"old": "v1", "new": "v2"}
    assert line["sink"] == "audit"
    assert line["occurred_at"] == event.model_dump(mode="json")["occurred_at"]


def test_the_level_is_configurable():
    [line] = run(Event(type="job.failed", subject="job-3"), "warning")
    assert line["level"] == "warning"
