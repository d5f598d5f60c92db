"""The `Notifier` Protocol every sink implements, and the one error a sink raises."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from darkroom.errors import DarkroomError
from darkroom.events.model import Event


class DeliveryError(DarkroomError):
    """A sink could not deliver an event; `retryable` says whether trying again may help."""

    status = 502
    default_code = "delivery_failed"

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@runtime_checkable
class Notifier(Protocol):
    """Delivers events to one destination. At least once: the same event may come again."""

    name: str

    async def deliver(self, event: Event) -> None:
        """Hand `event` over, or raise `DeliveryError`."""

    async def aclose(self) -> None:
        """Release connections; the notifier is not used afterwards."""
