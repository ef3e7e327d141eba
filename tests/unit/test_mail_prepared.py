"""Render once, personalize per reader: what each reader's message carries, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from service.mail import (
    HeaderInjection,
    OutgoingMessage,
    Rendered,
    build_message,
    prepare,
    slot,
)

UNSUB, PREFS = slot("unsubscribe_url"), slot("preferences_url")
RENDERED = Rendered(
    subject="Morning digest \N{EN DASH} Kyiv & Tokyo",
    text=(
        "Good morning.\n\n"
        + "A long line of text that goes on and on to exceed the quoted-printable limit " * 3
        + f"\n\nPreferences: {PREFS}\nUnsubscribe: {UNSUB}\n"
    ),
    html=(
        "<html><body><p>Good morning \N{EM DASH} caf\N{LATIN SMALL LETTER E WITH ACUTE}.</p>"
        f'<p><a href="{PREFS}">Preferences</a> <a href="{UNSUB}">Unsubscribe</a></p>'
        "</body></html>"
    ),
)
DATE = datetime(2026, 3, 29, 5, 0, tzinfo=UTC)


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def bodies(msg: EmailMessage) -> tuple[str, str]:
    text, html = (part.get_content().replace("\r\n", "\n") for part in msg.iter_parts())
    return text, html


def personalize_for(reader: int) -> bytes:
    prepared = prepare(
        RENDERED,
        mail_from="Harbour Courier <news@courier.example>",
        list_id="Daily <daily.courier.example>",
        feedback_id="daily:digest:newsletter",
        unsubscribe_mailto="unsubscribe@courier.example",
        date=DATE,
    )
    url = f"https://courier.example/unsubscribe/tok{reader}-" + "x" * 120 + "?a=1&b=2"
    return prepared.personalize(
        to=f"reader{reader}@example.com",
        message_id=f"<d.{reader}@courier.example>",
        unsubscribe_url=url,
        values={"preferences_url": f"https://courier.example/preferences/p{reader}"},
    ).data


def test_each_reader_gets_own_links_in_both_parts_and_headers() -> None:
    msg = parse(personalize_for(7))
    text, html = bodies(msg)
    url = "https://courier.example/unsubscribe/tok7-" + "x" * 120 + "?a=1&b=2"
    assert f"Unsubscribe: {url}\n" in text
    assert "Preferences: https://courier.example/preferences/p7\n" in text
    assert f'href="{url.replace("&", "&amp;")}"' in html
    assert "caf\N{LATIN SMALL LETTER E WITH ACUTE}" in html
    assert "%%nl:" not in text + html
    assert msg["To"] == "reader7@example.com"
    assert msg["Message-ID"] == "<d.7@courier.example>"
    assert msg["Subject"] == RENDERED.subject
    assert msg["List-Unsubscribe"] == f"<{url}>, <mailto:unsubscribe@courier.example>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Date"] == "Sun, 29 Mar 2026 05:00:00 +0000"


def test_readers_differ_only_in_their_own_parts() -> None:
    a, b = parse(personalize_for(1)), parse(personalize_for(2))
    assert bodies(a)[0].replace("tok1", "tokN").replace("/p1", "/pN") == bodies(b)[0].replace(
        "tok2", "tokN"
    ).replace("/p2", "/pN")


def test_wire_format_stays_within_quoted_printable_line_limits() -> None:
    data = personalize_for(3)
    _head, _, body = data.partition(b"\r\n\r\n")
    assert b"\n" not in body.replace(b"\r\n", b"")  # CRLF only
    assert all(len(line) <= 76 for line in body.split(b"\r\n")), "QP lines over 76 characters"
    assert all(b < 128 for b in data), "the message must be 7-bit clean"


def test_same_result_as_one_off_build_for_a_plain_message() -> None:
    rendered = Rendered("Hi", "Hello\n", "<p>Hello</p>")
    one = build_message(rendered, to="a@example.com", mail_from="n@example.org", message_id="<1@x>")
    msg = parse(one.data)
    assert bodies(msg) == ("Hello\n", "<p>Hello</p>\n")
    assert msg["List-Unsubscribe"] is None


def test_a_slot_without_a_value_and_injected_newlines_are_refused() -> None:
    prepared = prepare(RENDERED, mail_from="n@courier.example", list_id="L <l.example>")
    with pytest.raises(ValueError, match="preferences_url"):
        prepared.personalize(to="a@example.com", message_id="<1@x>", unsubscribe_url="https://u")
    with pytest.raises(HeaderInjection):
        prepared.personalize(
            to="a@example.com",
            message_id="<1@x>",
            unsubscribe_url="https://u",
            values={"preferences_url": "https://p\r\nBcc: victim@example.com"},
        )


def test_bulk_body_without_the_unsubscribe_slot_is_refused() -> None:
    rendered = Rendered("S", "no way out\n", "<p>none</p>")
    prepared = prepare(rendered, mail_from="n@courier.example", list_id="L <l.example>")
    with pytest.raises(ValueError, match="unsubscribe link"):
        prepared.personalize(to="a@example.com", message_id="<1@x>", unsubscribe_url="https://u")


def test_parts_view_for_json_apis_is_personalized() -> None:
    prepared = prepare(RENDERED, mail_from="n@courier.example", list_id="L <l.example>")
    out = prepared.personalize(
        to="a@example.com",
        message_id="<1@x>",
        unsubscribe_url="https://u/1?x=1&y=2",
        values={"preferences_url": "https://p/1"},
    )
    assert out.parts is not None
    assert "Unsubscribe: https://u/1?x=1&y=2" in out.parts.text
    assert 'href="https://u/1?x=1&amp;y=2"' in out.parts.html
    assert dict(out.parts.headers)["List-Unsubscribe"] == "<https://u/1?x=1&y=2>"
    assert out.parts.template is prepared


def test_list_unsubscribe_carries_its_url_in_clear_on_the_wire() -> None:
    # A long URL cannot be folded; it must not become RFC 2047 encoded words either, which
    # mailbox providers do not decode in List-Unsubscribe (one-click would be lost).
    head = personalize_for(5).partition(b"\r\n\r\n")[0]
    lines = head.replace(b"\r\n ", b" ").split(b"\r\n")  # unfolded (RFC 5322 2.2.3)
    url = "https://courier.example/unsubscribe/tok5-" + "x" * 120 + "?a=1&b=2"
    assert f"List-Unsubscribe: <{url}>, <mailto:unsubscribe@courier.example>".encode() in lines
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))


def test_slots_filled_for_a_group_then_per_reader() -> None:
    rendered = Rendered("S", f"At {slot('when')}.\n{UNSUB}\n", f"<p>At {slot('when')}</p>{UNSUB}")
    shared = prepare(rendered, mail_from="n@courier.example", list_id="L <l.example>")
    zone = shared.fill({"when": "Sun 29 Mar, 07:00 CEST"})
    assert shared.slots == {"when", "unsubscribe_url"}
    assert zone.slots == {"unsubscribe_url"}
    msg = parse(
        zone.personalize(to="a@example.com", message_id="<1@x>", unsubscribe_url="https://u").data
    )
    assert bodies(msg) == (
        "At Sun 29 Mar, 07:00 CEST.\nhttps://u\n",
        "<p>At Sun 29 Mar, 07:00 CEST</p>https://u\n",
    )
    assert zone.rendered.text == f"At Sun 29 Mar, 07:00 CEST.\n{UNSUB}\n"


def test_a_readers_return_path_changes_the_envelope_not_the_message() -> None:
    prepared = prepare(
        RENDERED,
        mail_from="Harbour Courier <news@courier.example>",
        list_id="Daily <daily.courier.example>",
        feedback_id="daily:digest:newsletter",
        date=DATE,
    )

    def one(return_path: str | None) -> OutgoingMessage:
        return prepared.personalize(
            to="reader7@example.com",
            message_id="<d.7@courier.example>",
            unsubscribe_url="https://courier.example/unsubscribe/t7",
            values={"preferences_url": "https://courier.example/preferences/p7"},
            return_path=return_path,
        )

    plain, verp = one(None), one("bounces+7-0a1b2c3d4e5f@courier.example")
    assert plain.mail_from_envelope == "news@courier.example"
    assert verp.mail_from_envelope == "bounces+7-0a1b2c3d4e5f@courier.example"
    assert verp.envelope_from == "news@courier.example"  # what the HTTP APIs send from
    # No Return-Path header: the receiving server writes it from the envelope (RFC 5321 4.4).
    assert verp.data == plain.data
    assert "Return-Path" not in parse(verp.data)
    with pytest.raises(ValueError, match="bare address"):
        one("x@y\r\nBcc: z@example.com")
