"""NATS JetStream: publish the event's JSON to `<subject_prefix>.<type>`.

The header `Nats-Msg-Id: <event id>` makes JetStream drop a redelivery of the same event
within the stream's duplicate window (the ack says `duplicate`). The stream (subjects
`<subject_prefix>.>`) is created when missing, unless `create_stream` is false.
"""

from __future__ import annotations

import asyncio

import nats
import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from darkroom.events.base import DeliveryError
from darkroom.events.model import Event
from darkroom.events.settings import NatsSink

log = structlog.get_logger("darkroom")


class NatsNotifier:
    """Publishes each event to a JetStream stream over one connection, opened on first use
    and again after it drops. Network errors, timeouts and JetStream 5xx are worth
    retrying; other JetStream refusals (4xx) are not."""

    def __init__(self, config: NatsSink) -> None:
        self.name = config.name
        self._config = config
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()

    def subject(self, event: Event) -> str:
        """The subject `event` is published to."""
        return f"{self._config.subject_prefix}.{event.type}"

    async def deliver(self, event: Event) -> None:
        try:
            js = await self._jetstream()
            ack = await js.publish(self.subject(event), event.to_json(),
                                   timeout=self._config.timeout_s, stream=self._config.stream,
                                   headers={"Nats-Msg-Id": event.id})
        except APIError as error:
            raise DeliveryError(f"{self.name}: JetStream {error.code}: {error.description}",
                                retryable=error.code is None or error.code >= 500) from error
        except (NatsError, OSError, asyncio.TimeoutError) as error:
            raise DeliveryError(f"{self.name}: {type(error).__name__}: {error}",
                                retryable=True) from error
        if ack.duplicate:
            log.debug("nats_duplicate", sink=self.name, event_id=event.id, seq=ack.seq)

    async def _jetstream(self) -> JetStreamContext:
        async with self._lock:
            if self._nc is not None and self._nc.is_connected and self._js is not None:
                return self._js
            await self.aclose()
            config = self._config
            self._nc = await nats.connect(  # try each server twice, then fail: the outbox retries
                servers=config.servers, connect_timeout=config.timeout_s, allow_reconnect=False,
                max_reconnect_attempts=1, reconnect_time_wait=0, error_cb=self._on_error,
                user=config.user,
                password=config.password.get_secret_value() if config.password else None,
                token=config.token.get_secret_value() if config.token else None)
            js = self._nc.jetstream(timeout=config.timeout_s)
            if config.create_stream:
                await self._ensure_stream(js)
            self._js = js
            return js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        config = self._config
        try:
            await js.stream_info(config.stream)
        except NotFoundError:
            await js.add_stream(name=config.stream, subjects=[f"{config.subject_prefix}.>"],
                                duplicate_window=config.duplicate_window_s)
            log.info("nats_stream_created", sink=self.name, stream=config.stream)

    async def _on_error(self, error: Exception) -> None:
        log.debug("nats_error", sink=self.name, error=f"{type(error).__name__}: {error}")

    async def aclose(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()
