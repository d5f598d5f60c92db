"""Webhooks: POST the event's JSON, signed as Stripe signs its webhooks.

`Darkroom-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, where each `v1` is
HMAC-SHA256 of `"<t>.<body>"` under one signing key (one entry per key, so a receiver
holding the old or the new key verifies during a rotation). Receivers check it with
`darkroom.signing.verify_webhook`, which also refuses a timestamp outside its tolerance
(replays).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from darkroom import __version__
from darkroom.events.base import DeliveryError
from darkroom.events.model import Event
from darkroom.events.settings import WebhookSink
from darkroom.signing import sign_webhook

SIGNATURE_HEADER = "Darkroom-Signature"


class WebhookNotifier:
    """POSTs each event to one URL. 2xx is delivered; 408, 429, 5xx and network errors are
    worth retrying; other answers (redirects are not followed) are not."""

    def __init__(self, config: WebhookSink, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = config.name
        self._url = config.url
        self._keys = [k.get_secret_value() for k in config.signing_keys]
        self._timeout_s = config.timeout_s
        self._client = client or httpx.AsyncClient(timeout=config.timeout_s,
                                                   follow_redirects=False)
        self._clock = clock

    async def deliver(self, event: Event) -> None:
        body = event.to_json()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"darkroom/{__version__}",
            "Darkroom-Event-Id": event.id,
            "Darkroom-Event-Type": event.type,
            SIGNATURE_HEADER: sign_webhook(self._keys, body, int(self._clock())),
        }
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException as error:
            raise DeliveryError(f"{self.name}: no answer within {self._timeout_s} s",
                                retryable=True) from error
        except httpx.TransportError as error:
            raise DeliveryError(f"{self.name}: {type(error).__name__}: {error}",
                                retryable=True) from error
        status = response.status_code
        if not response.is_success:
            raise DeliveryError(f"{self.name}: HTTP {status} from the webhook",
                                retryable=status in (408, 429) or status >= 500)

    async def aclose(self) -> None:
        await self._client.aclose()
