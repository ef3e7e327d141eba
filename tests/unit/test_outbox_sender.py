"""The outbox backend: each message is one readable .eml file, even when a send is retried."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path

from service.config import Settings
from service.mail import (
    OutgoingMessage,
    Rendered,
    build_message,
    make_message_id,
    sender_from_settings,
)
from service.mail.senders.outbox import OutboxSender


def message(delivery_id: int) -> OutgoingMessage:
    return build_message(
        Rendered("Hello", "Hello reader.\n", "<html><body><p>Hello reader.</p></body></html>"),
        to="reader@example.com",
        mail_from="News <news@news.example.org>",
        message_id=make_message_id("delivery", delivery_id, domain="news.example.org"),
    )


def test_writes_a_parseable_eml_file(tmp_path: Path) -> None:
    outbox = tmp_path / "var" / "outbox"  # created on first send
    sent = message(1)
    name = OutboxSender(outbox).send(sent)
    assert name.endswith(".eml")
    assert [p.name for p in outbox.iterdir()] == [name]  # no temp file left behind
    data = (outbox / name).read_bytes()
    assert data == sent.data
    parsed = message_from_bytes(data, policy=policy.default)
    assert parsed["Message-ID"] == "<delivery.1@news.example.org>"
    assert parsed["Subject"] == "Hello"


def test_same_message_twice_is_one_file(tmp_path: Path) -> None:
    sender = OutboxSender(tmp_path)
    first = sender.send(message(1))
    retry = OutboxSender(tmp_path).send(message(1))  # a retry, maybe from another worker
    assert retry == first
    assert len(list(tmp_path.glob("*.eml"))) == 1


def test_different_messages_are_different_files_in_time_order(tmp_path: Path) -> None:
    sender = OutboxSender(tmp_path)
    names = [sender.send(message(i)) for i in range(3)]
    assert len(set(names)) == 3
    assert sorted(p.name for p in tmp_path.glob("*.eml")) == names


def test_settings_choose_the_outbox(tmp_path: Path) -> None:
    sender = sender_from_settings(Settings(var_dir=tmp_path, mail_backend="outbox"))
    assert sender.name == "outbox"
    name = sender.send(message(1))
    assert (tmp_path / "outbox" / name).is_file()
