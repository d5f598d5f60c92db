"""One delivery attempt and the retry schedule: exponential backoff with full jitter.

The outbox dispatcher records each attempt; these functions only decide. After attempt `n`
fails, the next waits a random time in `[0, min(max_delay_s, base_delay_s * 2**(n-1))]`;
after `max_attempts` failures, or one failure that is not worth retrying, the event is
dead-lettered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import structlog

from darkroom.events.base import DeliveryError, Notifier
from darkroom.events.model import Event
from darkroom.events.settings import RetryPolicy

log = structlog.get_logger("darkroom")


def next_attempt(attempts: int, policy: RetryPolicy, rng: random.Random) -> float | None:
    """Seconds to wait after `attempts` failed attempts (1 or more), or None: dead-letter."""
    if attempts < 1:
        raise ValueError(f"attempts counts failed attempts, from 1: {attempts}")
    if attempts >= policy.max_attempts:
        return None
    cap = min(policy.max_delay_s, policy.base_delay_s * 2.0 ** min(attempts - 1, 64))
    return rng.uniform(0.0, cap)


@dataclass(frozen=True)
class Outcome:
    """What one attempt gave: delivered, retry in `retry_in_s` seconds, or dead."""

    delivered: bool
    retry_in_s: float | None = None
    error: str | None = None

    @property
    def dead(self) -> bool:
        return not self.delivered and self.retry_in_s is None


async def deliver_once(notifier: Notifier, event: Event, attempt: int, policy: RetryPolicy,
                       rng: random.Random) -> Outcome:
    """Make attempt number `attempt` (from 1) to deliver `event` through `notifier`."""
    try:
        await notifier.deliver(event)
    except DeliveryError as error:
        delay = next_attempt(attempt, policy, rng) if error.retryable else None
        log.warning("event_delivery_failed", sink=notifier.name, event_id=event.id,
                    event_type=event.type, attempt=attempt, retryable=error.retryable,
                    retry_in_s=delay, error=error.message)
        return Outcome(delivered=False, retry_in_s=delay, error=error.message)
    return Outcome(delivered=True)
