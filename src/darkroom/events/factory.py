"""Build the configured notifiers: the one place that maps a sink `type` to its class.

Sink modules are imported only when configured, so boto3 or nats-py load only if used.
"""

from __future__ import annotations

import importlib

from darkroom.events.base import Notifier
from darkroom.events.settings import Events

NOTIFIERS = {
    "webhook": "darkroom.events.webhook:WebhookNotifier",
    "email": "darkroom.events.email:EmailNotifier",
    "sns": "darkroom.events.sns:SnsNotifier",
    "nats": "darkroom.events.nats:NatsNotifier",
    "log": "darkroom.events.log:LogNotifier",
}


def build_notifiers(settings: Events) -> list[Notifier]:
    """One notifier per configured sink, in the order of the configuration."""
    notifiers = []
    for sink in settings.sinks:
        module, _, name = NOTIFIERS[sink.type].partition(":")
        notifiers.append(getattr(importlib.import_module(module), name)(sink))
    return notifiers
