"""SNS against moto's server: publish, then read the message back from a subscribed queue."""

from __future__ import annotations

import json

import pytest

from darkroom.events import DeliveryError, Event
from darkroom.events.settings import SnsSink
from darkroom.events.sns import SnsNotifier

from .conftest import Aws, free_port

pytestmark = pytest.mark.anyio
EVENT = Event(type="job.succeeded", subject="img-9", data={"job": "thumbs", "renditions": 3})


def sink(endpoint: str, topic_arn: str, **options: object) -> SnsSink:
    return SnsSink(type="sns", topic_arn=topic_arn, endpoint_url=endpoint,
                   access_key_id="testing", secret_access_key="testing", **options)


async def deliver(config: SnsSink, *events: Event) -> None:
    notifier = SnsNotifier(config)
    try:
        for event in events:
            await notifier.deliver(event)
    finally:
        await notifier.aclose()


async def test_the_event_arrives_in_a_subscribed_queue(aws: Aws):
    topic, queue = aws.topic_with_queue()
    await deliver(sink(aws.endpoint, topic), EVENT)
    [envelope] = aws.received(queue, expected=1)
    assert envelope["TopicArn"] == topic
    assert Event.from_json(envelope["Message"]) == EVENT
    assert envelope["MessageAttributes"]["event_type"]["Value"] == "job.succeeded"
    assert envelope["MessageAttributes"]["event_id"]["Value"] == EVENT.id


async def test_a_fifo_topic_gets_a_deduplication_id(aws: Aws):
    topic, queue = aws.topic_with_queue(fifo=True)
    config = sink(aws.endpoint, topic)
    request = SnsNotifier(config).request(EVENT)
    assert request["MessageDeduplicationId"] == EVENT.id
    assert request["MessageGroupId"] == "img-9"
    await deliver(config, EVENT)
    [envelope] = aws.received(queue, expected=1)
    assert json.loads(envelope["Message"])["id"] == EVENT.id


def test_a_standard_topic_gets_no_fifo_parameters():
    config = SnsSink(type="sns", topic_arn="arn:aws:sns:us-east-1:123456789012:plain",
                     message_group_id="all")
    request = SnsNotifier(config, client=object()).request(EVENT)
    assert "MessageDeduplicationId" not in request and "MessageGroupId" not in request


async def test_a_missing_topic_is_not_retryable(aws: Aws):
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    with pytest.raises(DeliveryError, match="NotFound") as caught:
        await deliver(sink(aws.endpoint, missing), EVENT)
    assert not caught.value.retryable


async def test_an_unreachable_endpoint_is_retryable(aws: Aws):
    config = sink(f"http://127.0.0.1:{free_port()}", "arn:aws:sns:us-east-1:123456789012:t",
                  timeout_s=2)
    with pytest.raises(DeliveryError, match="EndpointConnectionError") as caught:
        await deliver(config, EVENT)
    assert caught.value.retryable


def test_the_topic_must_be_an_sns_arn():
    with pytest.raises(ValueError, match="topic_arn"):
        SnsSink(type="sns", topic_arn="my-topic")
