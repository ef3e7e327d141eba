"""Senders deliver an `OutgoingMessage` and say what happened; the caller owns retries.

`send` returns the backend's id for the message (provider message id, outbox file name, SMTP
queue reply) or raises a `service.mail.errors.MailError` subclass. It never resends on its own:
an automatic resend after an ambiguous failure could deliver the same mail twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from service.mail.message import OutgoingMessage

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["Sender", "sender_from_settings"]


class Sender(Protocol):
    name: str

    def send(self, message: OutgoingMessage) -> str: ...

    def close(self) -> None: ...


def sender_from_settings(settings: Settings) -> Sender:
    # Imported here so importing the Protocol does not pull in every backend.
    if settings.mail_backend == "smtp":
        from service.mail.senders.smtp import SmtpSender

        return SmtpSender.from_settings(settings)
    from service.mail.senders.outbox import OutboxSender

    return OutboxSender(settings.outbox_dir)
