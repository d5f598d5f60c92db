"""NATS JetStream against the loopback server (127.0.0.1:4222): a test fails if it is down."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from darkroom.events import DeliveryError, Event
from darkroom.events.nats import NatsNotifier
from darkroom.events.settings import NatsSink

from .conftest import free_port

pytestmark = pytest.mark.anyio
EVENT = Event(type="image.deleted", subject="img-5", data={"key": "photos/a.jpg"})


@pytest.fixture
async def stream(nats_server: str) -> AsyncIterator[NatsSink]:
    """Settings for a stream and subjects of this test alone; the stream is deleted after."""
    tag = uuid.uuid4().hex[:12]
    config = NatsSink(type="nats", servers=[nats_server], stream=f"DARKROOM_TEST_{tag}",
                      subject_prefix=f"darkroomtest{tag}")
    yield config
    nc = await nats.connect(nats_server)
    try:
        await nc.jetstream().delete_stream(config.stream)
    except NotFoundError:
        pass
    await nc.close()


async def deliver(config: NatsSink, *events: Event) -> None:
    notifier = NatsNotifier(config)
    try:
        for event in events:
            await notifier.deliver(event)
    finally:
        await notifier.aclose()


async def test_a_redelivered_event_is_stored_once(stream: NatsSink, nats_server: str):
    await deliver(stream, EVENT, EVENT)
    nc = await nats.connect(nats_server)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream.stream)
        assert info.state.messages == 1
        assert info.config.subjects == [f"{stream.subject_prefix}.>"]
        assert info.config.duplicate_window == 3600  # seconds, the sink's default
        again = await js.publish(f"{stream.subject_prefix}.image.deleted", EVENT.to_json(),
                                 headers={"Nats-Msg-Id": EVENT.id})
        assert again.duplicate
        puller = await js.pull_subscribe(f"{stream.subject_prefix}.>", stream=stream.stream)
        [message] = await puller.fetch(1, timeout=5)
        assert message.subject == f"{stream.subject_prefix}.image.deleted"
        assert message.headers["Nats-Msg-Id"] == EVENT.id
        assert Event.from_json(message.data) == EVENT
        await message.ack()
        with pytest.raises(NatsTimeout):
            await puller.fetch(1, timeout=0.5)
    finally:
        await nc.close()


async def test_distinct_events_are_all_stored(stream: NatsSink, nats_server: str):
    other = Event(type="job.started", subject="job-1")
    await deliver(stream, EVENT, other)
    nc = await nats.connect(nats_server)
    try:
        assert (await nc.jetstream().stream_info(stream.stream)).state.messages == 2
    finally:
        await nc.close()


def test_the_default_subject_is_darkroom_dot_type():
    notifier = NatsNotifier(NatsSink(type="nats"))
    assert notifier.subject(EVENT) == "darkroom.image.deleted"


async def test_without_the_stream_and_not_creating_it_delivery_fails(stream: NatsSink):
    config = stream.model_copy(update={"create_stream": False})
    with pytest.raises(DeliveryError) as caught:
        await deliver(config, EVENT)
    assert caught.value.retryable


async def test_an_unreachable_server_is_retryable():
    config = NatsSink(type="nats", servers=[f"nats://127.0.0.1:{free_port()}"], timeout_s=2)
    with pytest.raises(DeliveryError) as caught:
        await deliver(config, EVENT)
    assert caught.value.retryable


async def test_the_notifier_reconnects_after_close(stream: NatsSink, nats_server: str):
    notifier = NatsNotifier(stream)
    try:
        await notifier.deliver(EVENT)
        await notifier.aclose()
        await notifier.deliver(Event(type="job.failed", subject="job-2"))
    finally:
        await notifier.aclose()
    nc = await nats.connect(nats_server)
    try:
        assert (await nc.jetstream().stream_info(stream.stream)).state.messages == 2
    finally:
        await nc.close()
