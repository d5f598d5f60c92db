"""Email: one plain-text message per event through SMTP (stdlib smtplib, in a thread).

The body is the event's JSON; `Message-ID` is derived from the event id, so mail clients
can fold a redelivered event into the first copy.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

import structlog

from darkroom.events.base import DeliveryError
from darkroom.events.model import Event
from darkroom.events.settings import EmailSink

log = structlog.get_logger("darkroom")


class EmailNotifier:
    """Sends each event to `to_addrs`. SMTP 4xx replies and network errors are worth
    retrying; 5xx replies (refused sender or recipients, failed login) and a server
    without the configured STARTTLS or AUTH are not."""

    def __init__(self, config: EmailSink) -> None:
        self.name = config.name
        self._config = config

    def message(self, event: Event) -> EmailMessage:
        """The mail for `event`: subject from the templates, the event JSON as the body."""
        config = self._config
        fields = {"id": event.id, "type": event.type, "subject": event.subject,
                  "occurred_at": event.occurred_at.isoformat()}
        message = EmailMessage()
        message["From"] = config.from_addr
        message["To"] = ", ".join(config.to_addrs)
        message["Subject"] = config.subjects.get(event.type, config.subject).format(**fields)
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = f"<{event.id}@darkroom>"
        message["Darkroom-Event-Id"] = event.id
        message["Darkroom-Event-Type"] = event.type
        body = json.dumps(json.loads(event.to_json()), indent=2, sort_keys=True)
        message.set_content(body + "\n")
        return message

    async def deliver(self, event: Event) -> None:
        await asyncio.to_thread(self._send, self.message(event))

    def _send(self, message: EmailMessage) -> None:
        config = self._config
        try:
            with self._connect() as smtp:
                if config.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if config.username is not None and config.password is not None:
                    smtp.login(config.username, config.password.get_secret_value())
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            raise DeliveryError(f"{self.name}: every recipient refused: {codes}",
                                retryable=all(400 <= c < 500 for c in codes)) from error
        except smtplib.SMTPNotSupportedError as error:
            raise DeliveryError(f"{self.name}: {error}", retryable=False) from error
        except smtplib.SMTPResponseException as error:
            raise DeliveryError(f"{self.name}: SMTP {error.smtp_code}: {error.smtp_error!r}",
                                retryable=400 <= error.smtp_code < 500) from error
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryError(f"{self.name}: {type(error).__name__}: {error}",
                                retryable=True) from error
        if refused:
            log.warning("email_recipients_refused", sink=self.name, recipients=sorted(refused),
                        event_id=message["Darkroom-Event-Id"])

    def _connect(self) -> smtplib.SMTP:
        config = self._config
        if config.security == "ssl":
            return smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout_s,
                                    context=ssl.create_default_context())
        return smtplib.SMTP(config.host, config.port, timeout=config.timeout_s)

    async def aclose(self) -> None:
        """Nothing to release: each delivery opens its own connection."""
