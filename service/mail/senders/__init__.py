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

Batch sizes: smtp, outbox, ses and mailgun 1 (one message a call, `send_each`); postmark 500
(`/email/batch`, a result per message); sendgrid 1000 (readers of one prepared body share a
call, `send_in_calls`). The HTTP senders take an injectable `httpx.Client` and share
`senders/http.py`; each module names the provider documentation it follows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from service.mail.errors import BackendRejected, MailError, TemporaryError
from service.mail.message import OutgoingMessage

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["SendResult", "Sender", "send_each", "send_in_calls", "sender_from_settings"]

SendResult = str | MailError


class Sender(Protocol):
    name: str
    batch_size: int

    def send(self, message: OutgoingMessage) -> str: ...

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]: ...

    def close(self) -> None: ...


def send_each(sender: Sender, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
    """`send_many` for a backend without a batch call: one `send` each (see `send_in_calls`)."""
    one_each = [[i] for i in range(len(messages))]
    return send_in_calls(messages, one_each, lambda one: [sender.send(one[0])])


def send_in_calls(
    messages: Sequence[OutgoingMessage],
    calls: Sequence[Sequence[int]],
    call: Callable[[list[OutgoingMessage]], list[SendResult]],
) -> list[SendResult]:
    """`send_many` as several backend calls: `calls` lists the indexes of `messages` each call
    sends, and `call` returns one result per message it was given.

    An error about the backend (refused login, 429, a dropped connection) raised by the first
    call is raised: nothing went out. Raised by a later call it is the result of that call's
    messages, and the rest are not attempted (temporary errors). Any other `MailError` a call
    raises is the result of each of its messages.
    """
    results: list[SendResult | None] = [None] * len(messages)
    for n, indexes in enumerate(calls):
        try:
            answers = call([messages[i] for i in indexes])
        except (BackendRejected, TemporaryError) as exc:
            if n == 0:
                raise
            skipped = TemporaryError(f"not attempted after: {exc}")
            for i in indexes:
                results[i] = exc
            for later in calls[n + 1 :]:
                for i in later:
                    results[i] = skipped
            break
        except MailError as exc:
            answers = [exc] * len(indexes)
        for i, answer in zip(indexes, answers, strict=True):
            results[i] = answer
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise ValueError(f"messages {missing} are in no call")
    return [r for r in results if r is not None]


def sender_from_settings(settings: Settings) -> Sender:
    # Imported here so importing the Protocol does not pull in every backend (botocore, ...).
    backend = settings.mail_backend
    if backend == "smtp":
        from service.mail.senders.smtp import SmtpSender

        return SmtpSender.from_settings(settings)
    if backend == "postmark":
        from service.mail.senders.postmark import PostmarkSender

        return PostmarkSender.from_settings(settings)
    if backend == "ses":
        from service.mail.senders.ses import SesSender

        return SesSender.from_settings(settings)
    if backend == "sendgrid":
        from service.mail.senders.sendgrid import SendgridSender

        return SendgridSender.from_settings(settings)
    if backend == "mailgun":
        from service.mail.senders.mailgun import MailgunSender

        return MailgunSender.from_settings(settings)
    from service.mail.senders.outbox import OutboxSender

    return OutboxSender(settings.outbox_dir)
