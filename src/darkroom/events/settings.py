"""The `events` settings group: the sinks to notify and the retry policy.

Each sink is a table with a `type`; a wrong type or a missing required option fails when
the settings load, naming the sink and the option. Secrets are `SecretStr` (masked by
`darkroom config show`).
"""

from __future__ import annotations

import string
from typing import Annotated, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from darkroom.events.model import EventType

TEMPLATE_FIELDS = ("id", "type", "subject", "occurred_at")


class _Sink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="unique name in logs and dead letters; default: type")
    concurrency: int = Field(8, ge=1, le=100, description="deliveries in flight at once")

    @model_validator(mode="after")
    def _default_name(self) -> _Sink:
        self.name = self.name or self.type  # type: ignore[attr-defined]
        return self


class WebhookSink(_Sink):
    """POST the event JSON to `url`, signed with every key of `signing_keys`."""

    type: Literal["webhook"]
    url: str
    signing_keys: list[SecretStr] = Field(min_length=1, description="first signs; all are sent")
    timeout_s: float = Field(10.0, gt=0)
    allowed_hosts: list[str] = Field(default_factory=list, description="if set, url's host "
                                     "must be one of these")

    @model_validator(mode="after")
    def _check_url(self) -> WebhookSink:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url must be http(s)://host/...: {self.url!r}")
        allowed = {h.lower() for h in self.allowed_hosts}
        if allowed and parts.hostname.lower() not in allowed:
            raise ValueError(f"webhook host {parts.hostname!r} is not in allowed_hosts")
        return self


class EmailSink(_Sink):
    """A plain-text mail per event, through an SMTP server."""

    type: Literal["email"]
    host: str
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    from_addr: str
    to_addrs: list[str] = Field(min_length=1)
    subject: str = "[darkroom] {type} {subject}"
    subjects: dict[EventType, str] = Field(default_factory=dict, description="per event type")
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("subject")
    @classmethod
    def _check_subject(cls, value: str) -> str:
        return _template(value)

    @field_validator("subjects")
    @classmethod
    def _check_subjects(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: _template(v) for k, v in value.items()}

    @model_validator(mode="after")
    def _check_login(self) -> EmailSink:
        if (self.username is None) != (self.password is None):
            raise ValueError("email username and password go together")
        return self


class SnsSink(_Sink):
    """AWS SNS `Publish` to a topic (FIFO topics get a deduplication id)."""

    type: Literal["sns"]
    topic_arn: str = Field(pattern=r"^arn:[^:]+:sns:")
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    message_group_id: str | None = Field(None, description="FIFO only; default: the subject")
    timeout_s: float = Field(10.0, gt=0)


class NatsSink(_Sink):
    """NATS JetStream publish to `<subject_prefix>.<type>`, deduplicated by event id."""

    type: Literal["nats"]
    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1)
    stream: str = Field("DARKROOM", pattern=r"^[A-Za-z0-9_-]+$")
    subject_prefix: str = Field("darkroom", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    create_stream: bool = True
    duplicate_window_s: float = Field(3600.0, gt=0, description="dedup window of a new stream")
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    timeout_s: float = Field(5.0, gt=0)


class LogSink(_Sink):
    """One structured log line per event."""

    type: Literal["log"]
    level: Literal["info", "warning"] = "info"


Sink = Annotated[Union[WebhookSink, EmailSink, SnsSink, NatsSink, LogSink],
                 Field(discriminator="type")]
SINK_MODELS = (WebhookSink, EmailSink, SnsSink, NatsSink, LogSink)


class RetryPolicy(BaseModel):
    """Exponential backoff with full jitter; after `max_attempts` an event is dead-lettered."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(8, ge=1, le=100)
    base_delay_s: float = Field(2.0, gt=0)
    max_delay_s: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RetryPolicy:
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must be at least base_delay_s")
        return self


class Events(BaseModel):
    """Where events go, and how hard darkroom tries."""

    model_config = ConfigDict(extra="forbid")

    sinks: list[Sink] = Field(default_factory=list)
    retry: RetryPolicy = RetryPolicy()
    dispatch_interval_s: float = Field(1.0, gt=0, description="outbox polling interval")
    lease_s: float = Field(300.0, gt=0, description="a delivery claimed by a dispatcher "
                           "that died is tried again after this long; keep it above the "
                           "sinks' timeouts")

    @model_validator(mode="after")
    def _unique_names(self) -> Events:
        names = [s.name for s in self.sinks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sink names must be unique, give each a `name`: {twice}")
        return self


def _template(text: str) -> str:
    for _, field, _, _ in string.Formatter().parse(text):
        if field is not None and field not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown placeholder {{{field}}} in {text!r}; "
                             f"use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
    return text
