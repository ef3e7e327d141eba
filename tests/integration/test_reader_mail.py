"""The confirmation and preferences-link mails: built from the database when the worker runs."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from service.config import Settings
from service.mail.senders.outbox import OutboxSender
from service.models import Cadence, Subscriber, SubscriberStatus, Subscription, Tag
from service.readers.mail import ReaderMail, send_reader_mail
from service.readers.tokens import Purpose, Tokens
from service.suppressions import suppress


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(var_dir=tmp_path, base_url="https://news.example.org", secret_key="k" * 48)


def _reader(db: Session, status: SubscriberStatus, nonce: str | None = "n0nce") -> Subscriber:
    tag = Tag(slug="ukraine", name="Ukraine")
    reader = Subscriber(email="ann@example.org", status=status, confirm_nonce=nonce)
    reader.subscriptions.append(Subscription(tag=tag, cadence=Cadence.WEEKLY))
    db.add(reader)
    db.flush()
    return reader


def _sent(outbox: Path) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(outbox.glob("*.eml"))
    ]


def _part(message: email.message.EmailMessage, subtype: str) -> str:
    body = message.get_body((subtype,))
    assert body is not None, f"no {subtype} part"
    return str(body.get_content())


def test_the_confirmation_carries_a_link_that_confirms_this_reader(
    db: Session, settings: Settings
) -> None:
    reader = _reader(db, SubscriberStatus.PENDING)
    sender = OutboxSender(settings.outbox_dir)
    assert send_reader_mail(db, sender, settings, ReaderMail.CONFIRM, reader.id, "r1")
    [message] = _sent(settings.outbox_dir)
    assert message["To"] == "ann@example.org"
    assert "Confirm" in message["Subject"]
    assert "List-Unsubscribe" not in message  # transactional: the reader asked for it
    text = _part(message, "plain")
    assert "Ukraine (weekly)" in text
    token = re.search(r"https://news\.example\.org/confirm/(\S+)", text)
    assert token is not None
    data = Tokens(settings).read(Purpose.CONFIRM, token.group(1))
    assert (data.subscriber_id, data.nonce) == (reader.id, "n0nce")


def test_a_retried_task_reuses_its_message_id(db: Session, settings: Settings) -> None:
    reader = _reader(db, SubscriberStatus.PENDING)
    sender = OutboxSender(settings.outbox_dir)
    send_reader_mail(db, sender, settings, ReaderMail.CONFIRM, reader.id, "same")
    send_reader_mail(db, sender, settings, ReaderMail.CONFIRM, reader.id, "same")
    send_reader_mail(db, sender, settings, ReaderMail.CONFIRM, reader.id, "next-request")
    assert len({m["Message-ID"] for m in _sent(settings.outbox_dir)}) == 2


def test_an_active_reader_gets_a_working_preferences_link(db: Session, settings: Settings) -> None:
    reader = _reader(db, SubscriberStatus.ACTIVE, nonce=None)
    send_reader_mail(
        db, OutboxSender(settings.outbox_dir), settings, ReaderMail.MANAGE, reader.id, "r1"
    )
    [message] = _sent(settings.outbox_dir)
    html = _part(message, "html")
    token = re.search(r"https://news\.example\.org/preferences/([^\"<\s]+)", html)
    assert token is not None
    assert Tokens(settings).read(Purpose.MANAGE, token.group(1)).subscriber_id == reader.id


@pytest.mark.parametrize(
    ("kind", "status", "nonce"),
    [
        (ReaderMail.CONFIRM, SubscriberStatus.ACTIVE, None),  # confirmed before the task ran
        (ReaderMail.CONFIRM, SubscriberStatus.UNSUBSCRIBED, None),
        (ReaderMail.MANAGE, SubscriberStatus.PENDING, "n"),
    ],
)
def test_mail_that_no_longer_applies_is_skipped(
    db: Session, settings: Settings, kind: ReaderMail, status: SubscriberStatus, nonce: str | None
) -> None:
    reader = _reader(db, status, nonce)
    assert (
        send_reader_mail(db, OutboxSender(settings.outbox_dir), settings, kind, reader.id, "r")
        is None
    )
    assert _sent(settings.outbox_dir) == []


def test_a_suppressed_address_gets_nothing(db: Session, settings: Settings) -> None:
    reader = _reader(db, SubscriberStatus.PENDING)
    suppress(db, "ANN@example.org", reason="hard_bounce", source="test")
    assert (
        send_reader_mail(
            db, OutboxSender(settings.outbox_dir), settings, ReaderMail.CONFIRM, reader.id, "r"
        )
        is None
    )
