"""AWS SNS: `Publish` the event's JSON to a topic (boto3, in a thread).

The message carries the attributes `event_type` and `event_id`. A FIFO topic (its ARN ends
in `.fifo`) gets `MessageDeduplicationId` = the event id, so SNS drops a redelivery, and
`MessageGroupId` = `message_group_id` or the event's subject (per-image order).
"""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from darkroom.events.base import DeliveryError
from darkroom.events.model import Event
from darkroom.events.settings import SnsSink

_RETRYABLE_CODES = {"Throttling", "ThrottlingException", "ThrottledException",
                    "KMSThrottlingException", "InternalError", "InternalFailure",
                    "ServiceUnavailable", "RequestTimeout"}


class SnsNotifier:
    """Publishes each event to one topic. Throttling, 5xx and network errors are worth
    retrying; other AWS errors (no such topic, denied, bad parameter) are not."""

    def __init__(self, config: SnsSink, client: Any = None) -> None:
        self.name = config.name
        self._config = config
        self._fifo = config.topic_arn.endswith(".fifo")
        secret = config.secret_access_key
        self._client = client or boto3.client(
            "sns", region_name=config.region, endpoint_url=config.endpoint_url,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(connect_timeout=config.timeout_s, read_timeout=config.timeout_s,
                          retries={"total_max_attempts": 1}))

    def request(self, event: Event) -> dict[str, Any]:
        """The `Publish` parameters for `event`."""
        params: dict[str, Any] = {
            "TopicArn": self._config.topic_arn,
            "Message": event.to_json().decode(),
            "Subject": f"darkroom {event.type}",
            "MessageAttributes": {
                "event_type": {"DataType": "String", "StringValue": event.type},
                "event_id": {"DataType": "String", "StringValue": event.id},
            },
        }
        if self._fifo:
            params["MessageGroupId"] = self._config.message_group_id or event.subject
            params["MessageDeduplicationId"] = event.id
        return params

    async def deliver(self, event: Event) -> None:
        await asyncio.to_thread(self._publish, self.request(event))

    def _publish(self, params: dict[str, Any]) -> None:
        try:
            self._client.publish(**params)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            raise DeliveryError(f"{self.name}: SNS {code or status}: {error}",
                                retryable=code in _RETRYABLE_CODES or status >= 500) from error
        except (BotoConnectionError, HTTPClientError) as error:
            raise DeliveryError(f"{self.name}: {type(error).__name__}: {error}",
                                retryable=True) from error
        except BotoCoreError as error:
            raise DeliveryError(f"{self.name}: {type(error).__name__}: {error}",
                                retryable=False) from error

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)
