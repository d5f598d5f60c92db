"""The retry schedule (exponential backoff, full jitter, dead letter) and one attempt."""

from __future__ import annotations

import random

import pytest

from darkroom.events import DeliveryError, Event
from darkroom.events.delivery import deliver_once, next_attempt
from darkroom.events.settings import RetryPolicy

POLICY = RetryPolicy(max_attempts=6, base_delay_s=2, max_delay_s=20)
EVENT = Event(type="job.started", subject="job-1")


@pytest.mark.parametrize(("attempts", "cap"), [(1, 2), (2, 4), (3, 8), (4, 16), (5, 20)])
def test_delays_are_full_jitter_under_a_growing_cap(attempts: int, cap: float):
    rng = random.Random(7)
    delays = [next_attempt(attempts, POLICY, rng) for _ in range(2000)]
    assert all(0 <= d <= cap for d in delays)
    assert min(delays) < cap * 0.05 and max(delays) > cap * 0.95  # the whole range is used


def test_after_max_attempts_the_event_is_dead():
    rng = random.Random(1)
    assert next_attempt(5, POLICY, rng) is not None
    assert next_attempt(6, POLICY, rng) is None
    assert next_attempt(60, POLICY, rng) is None
    assert next_attempt(1, RetryPolicy(max_attempts=1), rng) is None


def test_the_same_seed_gives_the_same_schedule():
    schedule = [[next_attempt(n, POLICY, random.Random(42)) for n in range(1, 6)]
                for _ in range(2)]
    assert schedule[0] == schedule[1]


def test_a_huge_policy_does_not_overflow():
    policy = RetryPolicy(max_attempts=100, base_delay_s=1e300, max_delay_s=1e301)
    assert 0 <= next_attempt(99, policy, random.Random(0)) <= 1e301


def test_attempts_count_from_one():
    with pytest.raises(ValueError, match="from 1"):
        next_attempt(0, POLICY, random.Random(0))


def test_the_policy_is_validated():
    with pytest.raises(ValueError, match="max_delay_s"):
        RetryPolicy(base_delay_s=10, max_delay_s=1)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


class Scripted:
    """A notifier that raises the given errors in turn, then delivers."""

    name = "scripted"

    def __init__(self, *errors: DeliveryError) -> None:
        self.errors = list(errors)
        self.delivered: list[Event] = []

    async def deliver(self, event: Event) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.delivered.append(event)

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.mark.anyio
async def test_one_attempt_gives_delivered_retry_or_dead():
    notifier = Scripted(DeliveryError("HTTP 503", retryable=True),
                        DeliveryError("HTTP 503", retryable=True),
                        DeliveryError("HTTP 404", retryable=False))
    rng = random.Random(3)
    first = await deliver_once(notifier, EVENT, 1, POLICY, rng)
    assert not first.delivered and not first.dead and 0 <= first.retry_in_s <= 2
    assert first.error == "HTTP 503"
    last = await deliver_once(notifier, EVENT, 6, POLICY, rng)
    assert last.dead  # retryable, but the attempts are used up
    refused = await deliver_once(notifier, EVENT, 2, POLICY, rng)
    assert refused.dead and refused.error == "HTTP 404"
    done = await deliver_once(notifier, EVENT, 3, POLICY, rng)
    assert done.delivered and not done.dead and notifier.delivered == [EVENT]
