"""What every sender shares: choosing one from settings, batches split into calls, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from service.config import Settings
from service.httpdate import retry_after
from service.mail import (
    MailError,
    MessageRejected,
    OutgoingMessage,
    RateLimited,
    TemporaryError,
)
from service.mail.senders import SendResult, send_in_calls, sender_from_settings
from service.mail.senders.mailgun import MailgunSender
from service.mail.senders.outbox import OutboxSender
from service.mail.senders.postmark import PostmarkSender
from service.mail.senders.sendgrid import SendgridSender
from service.mail.senders.ses import SesSender
from service.mail.senders.smtp import SmtpSender
from tests.unit.mail_api import raised, readers

NOW = datetime(2026, 3, 29, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Sun, 29 Mar 2026 05:01:30 GMT", 90.0),  # IMF-fixdate
        ("Sunday, 29-Mar-26 05:00:10 GMT", 10.0),  # obsolete RFC 850 form
        ("Sun Mar 29 05:00:05 2026", 5.0),  # asctime, no zone: UTC
        ("Sun, 29 Mar 2026 04:00:00 GMT", 0.0),  # past: no wait, never negative
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(value: str | None, seconds: float | None) -> None:
    assert retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        ({"mail_backend": "outbox"}, OutboxSender),
        ({"mail_backend": "smtp"}, SmtpSender),
        ({"mail_backend": "postmark", "postmark_server_token": "t"}, PostmarkSender),
        (
            {
                "mail_backend": "ses",
                "ses_region": "us-east-1",
                "ses_access_key_id": "AKID",
                "ses_secret_access_key": "secret",
            },
            SesSender,
        ),
        ({"mail_backend": "sendgrid", "sendgrid_api_key": "SG.k"}, SendgridSender),
        (
            {"mail_backend": "mailgun", "mailgun_api_key": "k", "mailgun_domain": "mg.x.example"},
            MailgunSender,
        ),
    ],
)
def test_the_backend_setting_picks_the_sender(settings: dict[str, str], kind: type) -> None:
    sender = sender_from_settings(Settings(**settings))  # type: ignore[arg-type]
    try:
        assert isinstance(sender, kind)
        assert sender.name == settings["mail_backend"]
    finally:
        sender.close()


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({"mail_backend": "postmark"}, "NEWSLETTER_POSTMARK_SERVER_TOKEN"),
        (
            {
                "mail_backend": "postmark",
                "postmark_server_token": "t",
                "postmark_message_stream": " ",
            },
            "NEWSLETTER_POSTMARK_MESSAGE_STREAM",
        ),
        (
            {"mail_backend": "ses", "ses_region": "eu-west-1"},
            "NEWSLETTER_SES_ACCESS_KEY_ID, NEWSLETTER_SES_SECRET_ACCESS_KEY",
        ),
        ({"mail_backend": "sendgrid"}, "NEWSLETTER_SENDGRID_API_KEY"),
        (
            {"mail_backend": "mailgun", "mailgun_api_key": "k"},
            "NEWSLETTER_MAILGUN_DOMAIN",
        ),
    ],
)
def test_a_backend_without_its_settings_is_refused_by_name(
    settings: dict[str, str], missing: str
) -> None:
    with pytest.raises(
        ValidationError, match=f"MAIL_BACKEND={settings['mail_backend']} needs {missing} \\["
    ):
        Settings(**settings)  # type: ignore[arg-type]


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = Settings(mail_backend="sendgrid", sendgrid_api_key="SG.very-secret")
    assert "very-secret" not in repr(settings)


class Calls:
    """A backend call that answers from a script: a list of results, or an error to raise."""

    def __init__(self, *script: list[SendResult] | MailError) -> None:
        self.script = list(script)
        self.calls: list[list[str]] = []

    def __call__(self, batch: list[OutgoingMessage]) -> list[SendResult]:
        self.calls.append([m.recipient for m in batch])
        step = self.script.pop(0)
        if isinstance(step, MailError):
            raise step
        return step


def test_calls_may_group_messages_out_of_order_and_results_come_back_in_order() -> None:
    messages = readers(4)
    call = Calls(["a0", "a2"], ["b1", "b3"])
    assert send_in_calls(messages, [[0, 2], [1, 3]], call) == ["a0", "b1", "a2", "b3"]
    assert call.calls == [
        ["reader0@example.com", "reader2@example.com"],
        ["reader1@example.com", "reader3@example.com"],
    ]


def test_an_error_about_the_backend_in_the_first_call_is_raised() -> None:
    limited = RateLimited("slow down", 429, 5.0)
    error = raised(lambda: send_in_calls(readers(3), [[0, 1], [2]], Calls(limited)))
    assert error is limited


def test_after_a_call_went_out_a_backend_error_stays_with_its_call_and_stops_the_rest() -> None:
    limited = RateLimited("slow down", 429, 5.0)
    call = Calls(["a0"], limited)
    results = send_in_calls(readers(4), [[0], [1, 2], [3]], call)
    assert results[0] == "a0"
    assert results[1:3] == [limited, limited]
    assert isinstance(results[3], TemporaryError)
    assert "not attempted" in str(results[3])
    assert len(call.calls) == 2


def test_a_refused_call_is_the_result_of_each_of_its_messages_and_the_rest_go_on() -> None:
    refused = MessageRejected("content", 400)
    results = send_in_calls(readers(3), [[0, 1], [2]], Calls(refused, ["c2"]))
    assert results == [refused, refused, "c2"]


def test_every_message_must_be_in_a_call() -> None:
    with pytest.raises(ValueError, match=r"\[1\]"):
        send_in_calls(readers(2), [[0]], Calls(["a0"]))
