"""Senders deliver an `OutgoingMessage` and say what happened; the caller owns retries.

`send` returns the backend's id for the message (provider message id, outbox file name, SMTP
queue reply) or raises a `service.mail.errors.MailError` subclass. It never resends on its own:
an automatic resend after an ambiguous failure could deliver the same mail twice.

`send_many` sends up to `batch_size` messages in one call (Postmark's /email/batch takes 500)
and returns one result per message, in order: the backend's id, or the `MailError` for that
message alone. An error that concerns the whole call (401, 429, 5xx, a dropped connection) is
raised instead, and then none of the batch counts as sent. The delivery ledger claims exactly
the messages it passes, so `batch_size` bounds what a killed worker can leave in doubt: 1 for
SMTP, where each message is claimed just before it goes out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from service.mail.errors import BackendRejected, MailError, TemporaryError
from service.mail.message import OutgoingMessage

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["SendResult", "Sender", "send_each", "sender_from_settings"]

SendResult = str | MailError


class Sender(Protocol):
    name: str
    batch_size: int

    def send(self, message: OutgoingMessage) -> str: ...

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]: ...

    def close(self) -> None: ...


def send_each(sender: Sender, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
    """`send_many` for a backend without a batch call: one `send` each. An error about the
    backend (refused login, a dropped connection) is raised when nothing went out yet; after
    that it is the result of its message, and the rest are not attempted (temporary errors)."""
    results: list[SendResult] = []
    for message in messages:
        try:
            results.append(sender.send(message))
        except (BackendRejected, TemporaryError) as exc:
            if not results:
                raise
            results.append(exc)
            skipped = TemporaryError(f"not attempted after: {exc}")
            results += [skipped] * (len(messages) - len(results))
            break
        except MailError as exc:
            results.append(exc)
    return results


def sender_from_settings(settings: Settings) -> Sender:
    # Imported here so importing the Protocol does not pull in every backend.
    if settings.mail_backend == "smtp":
        from service.mail.senders.smtp import SmtpSender

        return SmtpSender.from_settings(settings)
    from service.mail.senders.outbox import OutboxSender

    return OutboxSender(settings.outbox_dir)
