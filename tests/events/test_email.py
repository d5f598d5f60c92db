"""Email against a real SMTP server in process (aiosmtpd)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from darkroom.events import DeliveryError, Event
from darkroom.events.email import EmailNotifier
from darkroom.events.settings import EmailSink

from .conftest import free_port

pytestmark = pytest.mark.anyio
UPLOADED = Event(type="image.uploaded", subject="img-1", data={"key": "a.jpg"})
FAILED = Event(type="job.failed", subject="job-7", data={"error": "corrupt_image"})


class Mailbox:
    """An aiosmtpd handler that keeps what it accepts; `refuse` maps addresses to replies."""

    def __init__(self) -> None:
        self.envelopes: list = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret-pw"
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port,
                            authenticator=_authenticate, auth_require_tls=False)
    controller.start()
    yield mailbox, port
    controller.stop()


def sink(port: int, **options: object) -> EmailSink:
    defaults = {"type": "email", "host": "127.0.0.1", "port": port, "security": "none",
                "from_addr": "darkroom@example.org",
                "to_addrs": ["ops@example.org", "dev@example.org"]}
    return EmailSink(**{**defaults, **options})


async def deliver(config: EmailSink, event: Event) -> None:
    notifier = EmailNotifier(config)
    try:
        await notifier.deliver(event)
    finally:
        await notifier.aclose()


async def test_the_message_arrives_with_subject_and_json_body(smtp):
    mailbox, port = smtp
    await deliver(sink(port), UPLOADED)
    [envelope] = mailbox.envelopes
    assert envelope.mail_from == "darkroom@example.org"
    assert envelope.rcpt_tos == ["ops@example.org", "dev@example.org"]
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "[darkroom] image.uploaded img-1"
    assert message["Message-ID"] == f"<{UPLOADED.id}@darkroom>"
    assert message["Darkroom-Event-Id"] == UPLOADED.id
    assert message.get_content_type() == "text/plain"
    assert Event.model_validate(json.loads(message.get_content())) == UPLOADED


async def test_subject_templates_per_event_type(smtp):
    mailbox, port = smtp
    config = sink(port, subject="darkroom: {type}",
                  subjects={"job.failed": "FAILED {subject} ({id})"})
    await deliver(config, FAILED)
    await deliver(config, UPLOADED)
    subjects = [message_from_bytes(e.content, policy=policy.default)["Subject"]
                for e in mailbox.envelopes]
    assert subjects == [f"FAILED job-7 ({FAILED.id})", "darkroom: image.uploaded"]


async def test_login(smtp):
    mailbox, port = smtp
    await deliver(sink(port, username="darkroom", password="s3cret-pw"), UPLOADED)
    assert len(mailbox.envelopes) == 1
    with pytest.raises(DeliveryError, match="SMTP 535") as caught:
        await deliver(sink(port, username="darkroom", password="wrong"), UPLOADED)
    assert not caught.value.retryable


@pytest.mark.parametrize(("reply", "retryable"), [
    ("550 5.1.1 no such mailbox", False), ("450 4.2.0 mailbox busy, try later", True)])
async def test_refused_recipients(smtp, reply: str, retryable: bool):
    mailbox, port = smtp
    mailbox.refuse = {"ops@example.org": reply}
    with pytest.raises(DeliveryError, match="refused") as caught:
        await deliver(sink(port, to_addrs=["ops@example.org"]), UPLOADED)
    assert caught.value.retryable is retryable
    assert not mailbox.envelopes


async def test_one_refused_recipient_of_two_still_delivers(smtp):
    mailbox, port = smtp
    mailbox.refuse = {"dev@example.org": "550 5.1.1 no such mailbox"}
    await deliver(sink(port), UPLOADED)
    assert mailbox.envelopes[0].rcpt_tos == ["ops@example.org"]


async def test_starttls_on_a_server_without_it_is_not_retryable(smtp):
    _, port = smtp
    with pytest.raises(DeliveryError, match="STARTTLS") as caught:
        await deliver(sink(port, security="starttls"), UPLOADED)
    assert not caught.value.retryable


async def test_no_server_is_retryable():
    with pytest.raises(DeliveryError) as caught:
        await deliver(sink(free_port()), UPLOADED)
    assert caught.value.retryable


@pytest.mark.parametrize(("options", "message"), [
    ({"subject": "{type} {secret}"}, "unknown placeholder {secret}"),
    ({"subject": "{type.__class__}"}, "unknown placeholder"),
    ({"subjects": {"image.flagged": "x"}}, "image.flagged"),
    ({"username": "u"}, "username and password go together"),
    ({"to_addrs": []}, "to_addrs"),
])
def test_bad_options_fail_at_load(options: dict, message: str):
    with pytest.raises(ValueError, match=message):
        sink(25, **options)
