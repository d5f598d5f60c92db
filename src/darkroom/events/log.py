"""The log sink: one structured line per event on darkroom's JSON log."""

from __future__ import annotations

import logging

import structlog

from darkroom.events.model import Event
from darkroom.events.settings import LogSink

log = structlog.get_logger("darkroom")


class LogNotifier:
    """Writes each event as a log line `event_notified` with its id, type, subject and data."""

    def __init__(self, config: LogSink) -> None:
        self.name = config.name
        self._level = config.level

    async def deliver(self, event: Event) -> None:
        fields = event.model_dump(mode="json")
        log.log(_LEVELS[self._level], "event_notified", sink=self.name,
                event_id=fields["id"], event_type=fields["type"], subject=fields["subject"],
                occurred_at=fields["occurred_at"], data=fields["data"])

    async def aclose(self) -> None:
        """Nothing to release."""


_LEVELS = {"info": logging.INFO, "warning": logging.WARNING}
