"""Reading the outbox as the console will: real files from the outbox sender, hostile ids,
broken files."""

from __future__ import annotations

import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from service.mail import ListInfo, OutgoingMessage, Rendered, build_message, make_message_id
from service.mail.outbox_view import (
    MessageNotFound,
    list_messages,
    open_message,
    read_raw,
)
from service.mail.senders.outbox import OutboxSender

TEXT = "Tram line 4 reopens on Monday.\nUnsubscribe: https://news.example.org/unsubscribe/T\n"
HTML = (
    '<html><body><p>Tram line 4 <b>reopens</b> on Monday.</p><script>alert("x")</script>'
    '<a href="https://news.example.org/unsubscribe/T">Unsubscribe</a></body></html>'
)


def digest(n: int, subject: str = "Transport digest") -> OutgoingMessage:
    return build_message(
        Rendered(subject, TEXT, HTML),
        to=f"reader{n}@example.com",
        mail_from="Courier News <news@news.example.org>",
        message_id=make_message_id("d", 1, n, domain="news.example.org"),
        list_info=ListInfo(
            list_id="Transport <transport.news.example.org>",
            unsubscribe_url="https://news.example.org/unsubscribe/T",
            unsubscribe_mailto=None,
            feedback_id="transport:digest:newsletter",
        ),
    )


def with_attachment() -> OutgoingMessage:
    msg = EmailMessage()
    msg["From"] = "Courier News <news@news.example.org>"
    msg["To"] = "editor@example.com"
    msg["Subject"] = "Report"
    msg["Message-ID"] = "<report.1@news.example.org>"
    msg.set_content("The figures are attached.")
    msg.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="figures.csv")
    return OutgoingMessage(
        "news@news.example.org", "editor@example.com", "<report.1@news.example.org>", msg.as_bytes()
    )


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    folder = tmp_path / "outbox"
    sender = OutboxSender(folder)
    sender.send(digest(1, "Transport digest: Tram line 4 reopens"))
    time.sleep(0.002)  # names carry the time to the microsecond
    sender.send(digest(2, "Verkehr: Straßenbahn fährt wieder"))
    time.sleep(0.002)
    sender.send(with_attachment())
    return folder


def test_lists_newest_first_with_the_headers_a_console_shows(outbox: Path) -> None:
    listed = list_messages(outbox)
    assert [m.to for m in listed] == [
        "editor@example.com",
        "reader2@example.com",
        "reader1@example.com",
    ]
    assert listed[1].subject == "Verkehr: Straßenbahn fährt wieder"  # RFC 2047 decoded
    assert listed[1].mail_from == "Courier News <news@news.example.org>"
    assert all(m.size == (outbox / m.id).stat().st_size for m in listed)
    assert all(m.date is not None and m.date.tzinfo is not None for m in listed)
    # Paging: the last id of a page gives the next.
    first = list_messages(outbox, limit=2)
    assert [m.id for m in first] == [m.id for m in listed[:2]]
    assert [m.id for m in list_messages(outbox, limit=2, before=first[-1].id)] == [listed[2].id]
    assert list_messages(outbox, before=listed[2].id) == []


def test_opens_both_parts_headers_and_attachments(outbox: Path) -> None:
    newest, second, oldest = list_messages(outbox)
    view = open_message(outbox, oldest.id)
    assert view.subject == "Transport digest: Tram line 4 reopens"
    assert view.header("List-Unsubscribe") == "<https://news.example.org/unsubscribe/T>"
    assert view.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert [n for n, _ in view.headers][:3] == ["To", "Message-ID", "List-Unsubscribe"]
    assert view.text is not None
    assert view.text.replace("\r\n", "\n") == TEXT
    assert view.html is not None
    assert "<script>" in view.html  # as stored: the console sandboxes it
    assert view.attachments == []
    assert view.problems == []
    assert view.size == (outbox / oldest.id).stat().st_size

    report = open_message(outbox, newest.id)
    assert report.html is None
    assert report.text is not None
    assert "figures are attached" in report.text
    assert [(a.filename, a.content_type, a.size) for a in report.attachments] == [
        ("figures.csv", "text/csv", 8)
    ]
    assert read_raw(outbox, second.id) == (outbox / second.id).read_bytes()


@pytest.mark.parametrize(
    "bad",
    [
        "../secret.eml",
        "..",
        ".",
        "",
        "sub/inner.eml",
        "..%2Fsecret.eml",
        "%2e%2e%2fsecret.eml",
        "..\\secret.eml",
        "a\x00.eml",
        "missing.eml",
        ".hidden.eml",
        "inner.eml/",
    ],
)
def test_anything_but_a_bare_file_name_in_the_folder_is_not_found(outbox: Path, bad: str) -> None:
    (outbox.parent / "secret.eml").write_bytes(b"Subject: secret\n\nnot for you\n")
    (outbox / "sub").mkdir()
    (outbox / "sub" / "inner.eml").write_bytes(b"Subject: inner\n\nhidden\n")
    with pytest.raises(MessageNotFound):
        open_message(outbox, bad)
    with pytest.raises(MessageNotFound):
        read_raw(outbox, bad)


def test_absolute_paths_symlinks_and_folders_are_not_found(outbox: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.eml"
    secret.write_bytes(b"Subject: secret\n\nnot for you\n")
    real = list_messages(outbox)[0].id
    (outbox / "link.eml").symlink_to(secret)
    (outbox / "folder.eml").mkdir()
    for bad in (str(secret), str(outbox / real), "/etc/passwd", "link.eml", "folder.eml"):
        with pytest.raises(MessageNotFound):
            open_message(outbox, bad)
    # Neither is listed either: only regular .eml files are messages.
    listed = {m.id for m in list_messages(outbox)}
    assert "link.eml" not in listed
    assert "folder.eml" not in listed
    assert len(listed) == 3


def test_corrupt_files_are_shown_with_their_problems(outbox: Path) -> None:
    real = (outbox / list_messages(outbox)[-1].id).read_bytes()
    broken = {
        "20990101T000000000001Z-garbage.eml": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        "20990101T000000000002Z-truncated.eml": real[: len(real) * 2 // 3],
        "20990101T000000000003Z-charset.eml": (
            b"From: a@example.org\r\nSubject: =?x-unknown?q?caf=E9?=\r\n"
            b'Content-Type: text/plain; charset="x-unknown"\r\n\r\ncaf\xe9\r\n'
        ),
        "20990101T000000000004Z-base64.eml": (
            b"From: a@example.org\r\nSubject: b64\r\nContent-Type: text/html\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nPGI+b2s8L2I+!!!not base64\r\n"
        ),
        "20990101T000000000005Z-empty.eml": b"",
    }
    for name, data in broken.items():
        (outbox / name).write_bytes(data)
    listed = {m.id: m for m in list_messages(outbox)}
    assert set(broken) <= set(listed)
    assert listed["20990101T000000000005Z-empty.eml"].size == 0
    for name in broken:
        view = open_message(outbox, name)  # never raises
        assert view.id == name
    for name in ("20990101T000000000001Z-garbage.eml", "20990101T000000000005Z-empty.eml"):
        view = open_message(outbox, name)
        assert view.headers == []
        assert "no headers: this is not a mail message" in view.problems
    base64 = open_message(outbox, "20990101T000000000004Z-base64.eml")
    assert base64.subject == "b64"
    assert base64.problems == ["InvalidBase64LengthDefect"]
    charset = open_message(outbox, "20990101T000000000003Z-charset.eml")
    assert charset.text is not None
    assert charset.text.startswith("caf\N{REPLACEMENT CHARACTER}")  # shown, undecodable marked
    assert charset.problems == ["text/plain part: LookupError: unknown encoding: x-unknown"]
    truncated = open_message(outbox, "20990101T000000000002Z-truncated.eml")
    assert truncated.subject == "Transport digest: Tram line 4 reopens"


def test_a_missing_outbox_is_empty_and_limits_are_checked(tmp_path: Path) -> None:
    assert list_messages(tmp_path / "never-written") == []
    with pytest.raises(MessageNotFound):
        open_message(tmp_path / "never-written", "x.eml")
    for limit in (0, 501):
        with pytest.raises(ValueError, match="limit"):
            list_messages(tmp_path, limit=limit)
