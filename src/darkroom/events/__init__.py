"""Events and the sinks that deliver them (webhook, email, SNS, NATS JetStream, log).

An `Event` is written to the outbox with the change it describes; the dispatcher hands it
to each configured `Notifier` (built by `factory.build_notifiers`) at least once, retrying
on the schedule of `delivery.next_attempt` and dead-lettering what never gets through.
"""

from darkroom.events.base import DeliveryError, Notifier
from darkroom.events.model import EVENT_TYPES, Event, EventType

__all__ = ["EVENT_TYPES", "DeliveryError", "Event", "EventType", "Notifier"]
