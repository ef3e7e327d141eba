"""The message contract: what a mailbox provider and a reader see in every message we build."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from jinja2 import UndefinedError

from service.config import Settings
from service.mail import (
    DkimSigner,
    HeaderInjection,
    ListInfo,
    OutgoingMessage,
    Rendered,
    build_message,
    dkim_signer_from_settings,
    make_message_id,
    render,
    template_names,
)
from service.mail.render import templates_dir

SAMPLE_CONTEXTS: dict[str, dict[str, Any]] = {
    "test": {
        "site_name": "Example News",
        "base_url": "https://news.example.org",
        "sent_at": "2025-03-01 09:30 UTC",
    },
    "confirm": {
        "site_name": "Example News",
        "base_url": "https://news.example.org",
        "confirm_url": "https://news.example.org/confirm/TOKEN",
        "tags": [{"name": "Ukraine", "cadence": "daily"}, {"name": "Economy", "cadence": "weekly"}],
    },
    "digest": (
        _items := {
            "site_name": "Example News",
            "base_url": "https://news.example.org",
            "schedule_title": "daily digest",
            "total": 2,
            "headlines": [
                {"title": "Dock <strike> ends", "url": "https://news.example.org/a"},
                {"title": "Fog", "url": "https://news.example.org/b"},
            ],
            "groups": [
                {
                    "name": "Port",
                    "posts": [
                        {
                            "title": "Dock <strike> ends",
                            "url": "https://news.example.org/a",
                            "excerpt": "Workers return on Monday.",
                            "author": "A. Writer",
                            "time": "Sun 29 Mar, 07:00 JST",
                        }
                    ],
                }
            ],
            "tag_names": ["Port", "Weather"],
            "more_count": 3,
            "more_url": "https://news.example.org/archive/port",
            "archive_url": "https://news.example.org/archive/editions/7?tags=port,weather",
            "unsubscribe_url": "https://news.example.org/unsubscribe/T",
            "preferences_url": "https://news.example.org/preferences/T",
        }
    ),
    "instant": _items,
    "breaking": _items,
    "manage": {
        "site_name": "Example News",
        "base_url": "https://news.example.org",
        "preferences_url": "https://news.example.org/preferences/TOKEN",
    },
}

LIST_INFO = ListInfo(
    list_id="Climate <tag-climate.news.example.org>",
    unsubscribe_url="https://news.example.org/unsubscribe/TOKEN123",
    unsubscribe_mailto="unsubscribe+TOKEN123@news.example.org",
    feedback_id="tag-climate:digest:newsletter",
)
RENDERED = Rendered(
    subject="Your climate digest",
    text=(
        "Hello reader \N{EM DASH} three new posts.\n"
        "Unsubscribe: https://news.example.org/unsubscribe/TOKEN123\n"
    ),
    html=(
        "<html><body><p>Hello reader &mdash; three new posts.</p>"
        '<p><a href="https://news.example.org/unsubscribe/TOKEN123">Unsubscribe</a></p>'
        "</body></html>"
    ),
)
MESSAGE_ID = make_message_id("delivery", 42, 7, domain="news.example.org")


def build(**overrides: Any) -> OutgoingMessage:
    rendered = overrides.pop("rendered", RENDERED)
    kwargs: dict[str, Any] = {
        "to": "Reader <reader@example.com>",
        "mail_from": "Example News <news@news.example.org>",
        "message_id": MESSAGE_ID,
        "list_info": LIST_INFO,
        "date": datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
    }
    kwargs.update(overrides)
    return build_message(rendered, **kwargs)


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_bulk_headers_are_all_present() -> None:
    msg = parse(build().data)
    assert msg["From"] == "Example News <news@news.example.org>"
    assert msg["To"] == "Reader <reader@example.com>"
    assert msg["Subject"] == "Your climate digest"
    assert msg["Date"] == "Sat, 01 Mar 2025 09:30:00 +0000"
    assert msg["Message-ID"] == "<delivery.42.7@news.example.org>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Unsubscribe"] == (
        "<https://news.example.org/unsubscribe/TOKEN123>, "
        "<mailto:unsubscribe+TOKEN123@news.example.org>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == "Climate <tag-climate.news.example.org>"
    assert msg["Feedback-ID"] == "tag-climate:digest:newsletter"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Precedence"] == "bulk"


def test_envelope_uses_bare_addresses() -> None:
    out = build()
    assert out.envelope_from == "news@news.example.org"
    assert out.recipient == "reader@example.com"
    assert out.message_id == MESSAGE_ID


def test_mailto_is_optional_and_transactional_mail_has_no_list_headers() -> None:
    no_mailto = ListInfo("L <l.example.org>", "https://x.example.org/u/T", None, "a:b")
    rendered = Rendered(
        "S", "Leave: https://x.example.org/u/T\n", "<a href='https://x.example.org/u/T'>"
    )
    assert parse(build(list_info=no_mailto, rendered=rendered).data)["List-Unsubscribe"] == (
        "<https://x.example.org/u/T>"
    )
    plain = parse(build(list_info=None).data)
    assert plain["List-Unsubscribe"] is None
    assert plain["Precedence"] is None


def test_message_id_is_stable_so_retries_reuse_it() -> None:
    assert make_message_id("delivery", 42, 7, domain="news.example.org") == MESSAGE_ID
    assert make_message_id("delivery", 42, 8, domain="news.example.org") != MESSAGE_ID
    first, retry = build(), build(date=datetime(2025, 3, 1, 9, 45, tzinfo=UTC))
    assert parse(first.data)["Message-ID"] == parse(retry.data)["Message-ID"] == MESSAGE_ID


def test_message_id_rejects_parts_that_would_break_it() -> None:
    with pytest.raises(ValueError, match="parts"):
        make_message_id("a@b", domain="news.example.org")
    with pytest.raises(ValueError, match="domain"):
        make_message_id("a", domain="news.example.org>\r\nBcc: x")


def test_body_is_multipart_alternative_text_then_html() -> None:
    data = build().data
    assert re.search(rb"(?<!\r)\n", data) is None, "SMTP wants CRLF line endings only"
    msg = parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    # On the wire every line ends in CRLF (and a final one is added); nothing else changes.
    assert text.get_content().replace("\r\n", "\n") == RENDERED.text
    assert html.get_content().replace("\r\n", "\n") == RENDERED.html + "\n"


@pytest.mark.parametrize(
    "overrides",
    [
        {"rendered": Rendered("Hi\r\nBcc: victim@example.com", "t", "<html></html>")},
        {"rendered": Rendered("Hi\nthere", "t", "<html></html>")},
        {"to": "reader@example.com\r\nBcc: victim@example.com"},
        {"message_id": "<a@b>\nX: y"},
        {"list_info": ListInfo("L <l.x>", "https://x.example.org/u\r\nBcc: v@x", None, "a")},
        {"list_info": ListInfo("L <l.x>\r\n", "https://x.example.org/u", None, "a")},
        {"extra_headers": {"X-Campaign": "spring\rsale"}},
    ],
    ids=["subject-crlf", "subject-lf", "to", "message-id", "url", "list-id", "extra"],
)
def test_newline_in_any_header_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(HeaderInjection):
        build(**overrides)


def test_extra_headers_are_added() -> None:
    assert parse(build(extra_headers={"X-Campaign": "spring"}).data)["X-Campaign"] == "spring"


def test_subject_with_newlines_in_template_comes_out_on_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "email" / "multi"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("\n  Three new posts\n  about {{ tag }}\n\n")
    (folder / "body.txt").write_text("Posts about {{ tag }}.\n")
    (folder / "body.html").write_text("<html><body><p>{{ tag }}</p></body></html>")
    rendered = render("multi", {"tag": "climate"}, root=tmp_path)
    assert rendered.subject == "Three new posts about climate"
    assert parse(build(rendered=rendered, list_info=None).data)["Subject"] == (
        "Three new posts about climate"
    )


def test_html_is_escaped_text_is_not() -> None:
    context = {**SAMPLE_CONTEXTS["test"], "site_name": "<script>alert(1)</script>"}
    rendered = render("test", context)
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "<script>alert(1)</script>" in rendered.text  # plain text: nothing to escape


def test_css_is_inlined() -> None:
    html = render("test", SAMPLE_CONTEXTS["test"]).html
    assert "<style" not in html
    assert re.search(r'<td class="content"[^>]* style="[^"]*padding', html)


def test_missing_context_variable_fails_loudly() -> None:
    with pytest.raises(UndefinedError):
        render("test", {"site_name": "Example News"})


@pytest.mark.parametrize("name", template_names())
def test_every_template_renders(name: str) -> None:
    if name not in SAMPLE_CONTEXTS:
        pytest.fail(f"add a sample context for templates/email/{name} to SAMPLE_CONTEXTS")
    rendered = render(name, SAMPLE_CONTEXTS[name])
    assert rendered.subject.strip()
    assert "\n" not in rendered.subject
    assert rendered.text.strip()
    assert "<html" in rendered.html
    if "archive_url" in SAMPLE_CONTEXTS[name]:  # digest, instant, breaking: their web copy
        url = SAMPLE_CONTEXTS[name]["archive_url"]
        assert f"View in browser: {url}\n" in rendered.text
        assert f'href="{url}"' in rendered.html


def test_bulk_mail_must_show_the_unsubscribe_link_in_both_parts() -> None:
    url = LIST_INFO.unsubscribe_url
    no_text = Rendered("S", "No way out.\n", RENDERED.html)
    no_html = Rendered("S", f"Leave: {url}\n", "<html><body><p>No way out.</p></body></html>")
    with pytest.raises(ValueError, match=r"missing from the text part"):
        build(rendered=no_text)
    with pytest.raises(ValueError, match=r"missing from the HTML part"):
        build(rendered=no_html)
    with pytest.raises(ValueError, match=r"missing from the text and HTML part"):
        build(rendered=Rendered("S", "t", "<html></html>"))
    # Transactional mail (no list_info) has no such link to show.
    assert build(rendered=Rendered("S", "t", "<html></html>"), list_info=None)


def test_unsubscribe_link_may_be_html_escaped() -> None:
    url = "https://news.example.org/unsubscribe?token=T1&list=climate"
    info = ListInfo("L <l.example.org>", url, None, "a:b")
    rendered = Rendered(
        "S",
        f"Unsubscribe: {url}\n",
        '<p><a href="https://news.example.org/unsubscribe?token=T1&amp;list=climate">x</a></p>',
    )
    assert parse(build(rendered=rendered, list_info=info).data)["List-Unsubscribe"] == f"<{url}>"


def test_base_layout_footer_shows_unsubscribe_and_preferences_links(tmp_path: Path) -> None:
    """A list message template gets both links from `_base`, in both parts, and builds."""
    shutil.copytree(templates_dir() / "email" / "_base", tmp_path / "email" / "_base")
    folder = tmp_path / "email" / "digest"
    folder.mkdir()
    (folder / "subject.txt").write_text("Digest")
    (folder / "body.txt").write_text(
        '{% extends "_base/body.txt" %}{% block content %}Three posts.{% endblock %}'
    )
    (folder / "body.html").write_text(
        '{% extends "_base/body.html" %}{% block content %}<p>Three posts.</p>{% endblock %}'
    )
    url = "https://news.example.org/unsubscribe?token=T1&list=climate"
    preferences = "https://news.example.org/preferences?token=T1&x=1"
    context = {**SAMPLE_CONTEXTS["test"], "unsubscribe_url": url, "preferences_url": preferences}
    rendered = render("digest", context, root=tmp_path)
    for link in (url, preferences):
        assert link in rendered.text
        assert f'href="{link.replace("&", "&amp;")}"' in rendered.html
    assert rendered.text.index("-- \n") < rendered.text.index(url)  # below the signature line
    info = ListInfo("L <l.example.org>", url, None, "a:b")
    assert parse(build(rendered=rendered, list_info=info).data)["List-Id"] == "L <l.example.org>"

    # Without the list context (transactional mail) the footer has no such links,
    plain = render("digest", SAMPLE_CONTEXTS["test"], root=tmp_path)
    assert "nsubscribe" not in plain.text
    assert "nsubscribe" not in plain.html
    # and a list message cannot leave out its preferences link.
    with pytest.raises(UndefinedError):
        render("digest", {**SAMPLE_CONTEXTS["test"], "unsubscribe_url": url}, root=tmp_path)


# --- DKIM -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh private key file and the DNS TXT record publishing its public half."""
    key = tmp_path_factory.mktemp("dkim") / "private.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return key, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def verify(data: bytes, record: str) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"sel1._domainkey.news.example.org."
        return record.encode()

    return bool(dkim.verify(data, dnsfunc=dns))


def signed_headers(data: bytes) -> set[str]:
    signature = parse(data)["DKIM-Signature"]
    h = re.search(r"\bh=([^;]+)", "".join(str(signature).split()))
    assert h
    return set(h.group(1).lower().split(":"))


def test_dkim_signature_verifies_and_covers_one_click_headers(rsa_key: tuple[Path, str]) -> None:
    key, record = rsa_key
    signer = DkimSigner("sel1", "news.example.org", key.read_bytes())
    data = build(signer=signer).data
    assert data.startswith(b"DKIM-Signature:")
    assert verify(data, record)
    assert {"list-unsubscribe", "list-unsubscribe-post", "feedback-id", "list-id"} <= (
        signed_headers(data)
    )


def test_dkim_fails_when_unsubscribe_header_is_tampered(rsa_key: tuple[Path, str]) -> None:
    key, record = rsa_key
    data = build(signer=DkimSigner("sel1", "news.example.org", key.read_bytes())).data
    tampered = data.replace(b"/unsubscribe/TOKEN123", b"/unsubscribe/EVIL9999")
    assert tampered != data
    assert not verify(tampered, record)


def test_dkim_signs_only_headers_present(rsa_key: tuple[Path, str]) -> None:
    key, record = rsa_key
    data = build(list_info=None, signer=DkimSigner("sel1", "news.example.org", key.read_bytes()))
    assert verify(data.data, record)
    assert "list-unsubscribe" not in signed_headers(data.data)


def test_dkim_signer_from_settings(rsa_key: tuple[Path, str], tmp_path: Path) -> None:
    key, record = rsa_key

    def settings(**dkim: Any) -> Settings:
        return Settings(var_dir=tmp_path, mail_from="News <news@news.example.org>", **dkim)

    assert dkim_signer_from_settings(settings(dkim_selector="", dkim_key_file=None)) is None
    signer = dkim_signer_from_settings(settings(dkim_selector="sel1", dkim_key_file=key))
    assert signer is not None
    assert signer.domain == "news.example.org"  # from MAIL_FROM when DKIM_DOMAIN is empty
    assert verify(build(signer=signer).data, record)
    other = dkim_signer_from_settings(
        settings(dkim_selector="s", dkim_key_file=key, dkim_domain="example.org")
    )
    assert other is not None
    assert other.domain == "example.org"


def signed_header_names(data: bytes) -> list[str]:
    signature = parse(data)["DKIM-Signature"]
    h = re.search(r"\bh=([^;]+)", "".join(str(signature).split()))
    assert h
    return h.group(1).lower().split(":")


def test_dkim_over_signs_every_signed_header(rsa_key: tuple[Path, str]) -> None:
    key, _record = rsa_key
    data = build(signer=DkimSigner("sel1", "news.example.org", key.read_bytes())).data
    names = signed_header_names(data)
    assert "auto-submitted" in names
    for name in set(names):
        assert names.count(name) == 2, name  # once for the header, once for "no second one"


@pytest.mark.parametrize(
    "added",
    [
        b"List-Unsubscribe: <https://evil.example.net/u>\r\n",
        b"Subject: Your account is suspended\r\n",
        b"From: Bank <security@bank.example>\r\n",
        b"Auto-Submitted: no\r\n",
    ],
    ids=["list-unsubscribe", "subject", "from", "auto-submitted"],
)
def test_dkim_fails_when_a_second_signed_header_is_added(
    rsa_key: tuple[Path, str], added: bytes
) -> None:
    key, record = rsa_key
    data = build(signer=DkimSigner("sel1", "news.example.org", key.read_bytes())).data
    assert verify(data, record)
    assert not verify(added + data, record)  # above the signature, where readers look first
    signature_end = data.index(b"\r\nFrom:") + 2
    assert not verify(data[:signature_end] + added + data[signature_end:], record)
