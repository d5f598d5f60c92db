"""Sinks built from settings in one place; a bad sink configuration fails at load."""

from __future__ import annotations

import json
import typing

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from darkroom.cli import app
from darkroom.config import Settings
from darkroom.events import Notifier
from darkroom.events.factory import NOTIFIERS, build_notifiers
from darkroom.events.settings import SINK_MODELS

HOOK = {"type": "webhook", "url": "https://hooks.example.org/d", "signing_keys": ["whk-1"]}
MAIL = {"type": "email", "host": "smtp.example.org", "from_addr": "d@example.org",
        "to_addrs": ["ops@example.org"], "username": "d", "password": "mail-pw-1"}
SNS = {"type": "sns", "topic_arn": "arn:aws:sns:eu-west-1:123456789012:darkroom",
       "region": "eu-west-1", "secret_access_key": "aws-key-1", "access_key_id": "AK"}
NATS = {"type": "nats", "token": "nats-token-1"}


@pytest.mark.anyio
async def test_every_sink_type_builds_its_notifier():
    settings = Settings(events={"sinks": [HOOK, MAIL, SNS, NATS, {"type": "log"},
                                          {**HOOK, "name": "second-hook"}]})
    notifiers = build_notifiers(settings.events)
    assert [n.name for n in notifiers] == ["webhook", "email", "sns", "nats", "log",
                                           "second-hook"]
    assert [type(n).__name__ for n in notifiers] == [
        "WebhookNotifier", "EmailNotifier", "SnsNotifier", "NatsNotifier", "LogNotifier",
        "WebhookNotifier"]
    assert all(isinstance(n, Notifier) for n in notifiers)
    for notifier in notifiers:
        await notifier.aclose()


def test_the_factory_knows_every_sink_model():
    types = {typing.get_args(m.model_fields["type"].annotation)[0] for m in SINK_MODELS}
    assert types == set(NOTIFIERS)


def test_no_sinks_by_default():
    settings = Settings()
    assert settings.events.sinks == [] and build_notifiers(settings.events) == []
    assert settings.events.retry.max_attempts == 8


@pytest.mark.parametrize(("sinks", "message"), [
    ([{"type": "pigeon"}], "does not match any of the expected tags: 'webhook', 'email'"),
    ([{"url": "https://x"}], "Unable to extract tag using discriminator 'type'"),
    ([{"type": "webhook", "signing_keys": ["k"]}], r"sinks\.0\.webhook\.url\s+Field required"),
    ([{"type": "sns"}], r"sinks\.0\.sns\.topic_arn\s+Field required"),
    ([HOOK, {**HOOK, "url": "https://other.example.org/"}], "sink names must be unique"),
    ([{**HOOK, "retries": 3}], "retries"),
])
def test_a_bad_sink_fails_with_a_clear_error(sinks: list, message: str):
    with pytest.raises(ValidationError, match=message):
        Settings(events={"sinks": sinks})


def test_sinks_from_the_environment_and_toml(tmp_path, monkeypatch):
    (tmp_path / "darkroom.toml").write_text(
        '[events.retry]\nmax_attempts = 3\n[[events.sinks]]\ntype = "log"\n'
        '[[events.sinks]]\ntype = "webhook"\nurl = "https://h.example.org/"\n'
        'signing_keys = ["k1", "k0"]\n')
    settings = Settings()
    assert [s.type for s in settings.events.sinks] == ["log", "webhook"]
    assert settings.events.retry.max_attempts == 3
    monkeypatch.setenv("DARKROOM_EVENTS__SINKS", json.dumps([NATS]))
    monkeypatch.setenv("DARKROOM_EVENTS__RETRY__BASE_DELAY_S", "0.5")
    settings = Settings()
    assert [s.type for s in settings.events.sinks] == ["nats"]
    assert settings.events.retry.base_delay_s == 0.5


def test_config_show_masks_sink_secrets(monkeypatch):
    monkeypatch.setenv("DARKROOM_EVENTS__SINKS", json.dumps([HOOK, MAIL, SNS, NATS]))
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    for secret in ("whk-1", "mail-pw-1", "aws-key-1", "nats-token-1"):
        assert secret not in result.stdout
    shown = json.loads(result.stdout)["events"]["sinks"]
    assert shown[0]["url"] == HOOK["url"] and shown[1]["password"] == "**********"


def test_the_cli_reports_a_bad_sink(tmp_path):
    (tmp_path / "darkroom.toml").write_text('[[events.sinks]]\ntype = "pigeon"\n')
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert result.stderr.startswith("bad configuration: ") and "pigeon" in result.stderr
