"""Webhooks against a real HTTP receiver on 127.0.0.1 that verifies signatures."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from darkroom.errors import Forbidden
from darkroom.events import DeliveryError, Event
from darkroom.events.settings import WebhookSink
from darkroom.events.webhook import SIGNATURE_HEADER, WebhookNotifier
from darkroom.signing import sign_webhook as sign
from darkroom.signing import verify_webhook

from .conftest import Receiver, free_port

pytestmark = pytest.mark.anyio
EVENT = Event(type="image.uploaded", subject="img-42", data={"key": "photos/a.jpg", "bytes": 9})


def sink(url: str, keys: list[str], **options: object) -> WebhookSink:
    return WebhookSink(type="webhook", url=url, signing_keys=keys, **options)


async def deliver(config: WebhookSink, event: Event = EVENT, **options: object) -> None:
    notifier = WebhookNotifier(config, **options)
    try:
        await notifier.deliver(event)
    finally:
        await notifier.aclose()


async def test_a_2xx_is_delivered_with_signed_headers(receiver: Receiver):
    await deliver(sink(receiver.url, receiver.keys))
    [request] = receiver.requests
    assert request["verdict"] == "ok"
    assert request["body"] == EVENT.to_json()
    assert Event.from_json(request["body"]) == EVENT
    headers = request["headers"]
    assert headers["Darkroom-Event-Id"] == EVENT.id
    assert headers["Darkroom-Event-Type"] == "image.uploaded"
    assert headers["Content-Type"] == "application/json"
    assert headers[SIGNATURE_HEADER].startswith("t=")


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_server_errors_and_throttling_are_retryable(receiver: Receiver, status: int):
    receiver.status = status
    with pytest.raises(DeliveryError, match=f"HTTP {status}") as caught:
        await deliver(sink(receiver.url, receiver.keys))
    assert caught.value.retryable


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
async def test_other_answers_are_not_retryable(receiver: Receiver, status: int):
    receiver.status = status
    with pytest.raises(DeliveryError) as caught:
        await deliver(sink(receiver.url, receiver.keys))
    assert not caught.value.retryable
    assert len(receiver.requests) == 1  # a redirect is not followed


async def test_a_timeout_is_retryable(receiver: Receiver):
    receiver.hold = True
    with pytest.raises(DeliveryError, match="no answer within 0.3 s") as caught:
        await deliver(sink(receiver.url, receiver.keys, timeout_s=0.3))
    assert caught.value.retryable


async def test_a_refused_connection_is_retryable():
    with pytest.raises(DeliveryError, match="ConnectError") as caught:
        await deliver(sink(f"http://127.0.0.1:{free_port()}/", ["k"]))
    assert caught.value.retryable


async def test_a_wrong_key_is_refused_by_the_receiver(receiver: Receiver):
    with pytest.raises(DeliveryError, match="HTTP 400") as caught:
        await deliver(sink(receiver.url, ["not-the-receivers-key"]))
    assert not caught.value.retryable
    assert receiver.requests[0]["verdict"] == "bad_signature"


async def test_a_stale_timestamp_is_refused_by_the_receiver(receiver: Receiver):
    with pytest.raises(DeliveryError, match="HTTP 400"):
        await deliver(sink(receiver.url, receiver.keys), clock=lambda: time.time() - 3600)
    assert receiver.requests[0]["verdict"] == "expired_signature"


async def test_verify_rejects_a_tampered_body_and_an_old_timestamp(receiver: Receiver):
    await deliver(sink(receiver.url, receiver.keys))
    [request] = receiver.requests
    header, body = request["headers"][SIGNATURE_HEADER], request["body"]
    timestamp = verify_webhook(receiver.keys, header, body)
    with pytest.raises(Forbidden) as caught:
        verify_webhook(receiver.keys, header, body.replace(b"img-42", b"img-43"))
    assert caught.value.code == "bad_signature"
    with pytest.raises(Forbidden) as caught:
        verify_webhook(receiver.keys, header, body, tolerance_s=300, now=timestamp + 301)
    assert caught.value.code == "expired_signature"
    verify_webhook(receiver.keys, header, body, tolerance_s=300, now=timestamp + 299)


async def test_rotation_sends_one_signature_per_key(receiver: Receiver):
    keys = ["whsec-new", "whsec-current"]
    await deliver(sink(receiver.url, keys))  # the receiver still holds only the old key
    [request] = receiver.requests
    assert request["verdict"] == "ok"
    header, body = request["headers"][SIGNATURE_HEADER], request["body"]
    assert header.count("v1=") == 2
    verify_webhook(["whsec-new"], header, body)  # a receiver already on the new key
    with pytest.raises(Forbidden):
        verify_webhook(["whsec-other"], header, body)


@pytest.mark.parametrize("header", [
    "", "v1=abc", "t=1,t=2,v1=abc", "t=abc,v1=abc", "t=1", "t=-5,v1=abc", "nonsense",
])
def test_malformed_headers_are_refused(header: str):
    with pytest.raises(Forbidden) as caught:
        verify_webhook(["k"], header, b"{}", now=1)
    assert caught.value.code == "bad_signature"


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    """The scheme in the README, computed independently."""
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign(["k"], b"{}", 1700000000) == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize("url", ["ftp://example.org/x", "file:///etc/passwd", "example.org/x",
                                 "http:///nohost", "javascript:alert(1)"])
def test_only_http_urls_are_accepted(url: str):
    with pytest.raises(ValidationError, match="http"):
        sink(url, ["k"])


def test_the_allow_list_restricts_hosts():
    sink("https://hooks.example.org/x", ["k"], allowed_hosts=["HOOKS.example.org"])
    with pytest.raises(ValidationError, match="not in allowed_hosts"):
        sink("https://evil.example.com/x", ["k"], allowed_hosts=["hooks.example.org"])


def test_a_webhook_needs_a_signing_key():
    with pytest.raises(ValidationError, match="signing_keys"):
        sink("https://hooks.example.org/x", [])
