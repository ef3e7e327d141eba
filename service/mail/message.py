"""Build the one message type every sender takes: `OutgoingMessage`, bytes ready for the wire.

Bulk mail gets the headers mailbox providers require (RFC 8058 one-click unsubscribe, List-Id,
Feedback-ID) and, when a key is configured, a DKIM signature whose h= covers (over-signs) them.
Its rendered body must show the unsubscribe URL in both the text and the HTML part.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, parseaddr
from typing import TYPE_CHECKING

import dkim

from service.mail.errors import HeaderInjection
from service.mail.render import Rendered

if TYPE_CHECKING:
    from service.config import Settings

__all__ = [
    "DkimSigner",
    "ListInfo",
    "OutgoingMessage",
    "build_message",
    "dkim_signer_from_settings",
    "make_message_id",
]

# Signed when present. dkimpy's default list leaves out List-Unsubscribe-Post and Feedback-ID;
# an unsigned one-click header could be added in transit, so name them explicitly. Each is also
# over-signed (named once more than it occurs, RFC 6376 section 8.15): the extra name stands for
# a header that is absent, so one added later, e.g. a second List-Unsubscribe or Subject placed
# above ours where a reader's client may show it, breaks the signature.
DKIM_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Feedback-ID",
    "Auto-Submitted",
)

_ID_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class ListInfo:
    """What makes a message bulk mail: where and how the reader leaves the list."""

    list_id: str  # e.g. "Climate <tag-climate.news.example.org>"
    unsubscribe_url: str  # https URL accepting the RFC 8058 one-click POST
    unsubscribe_mailto: str | None
    feedback_id: str  # e.g. "tag-climate:digest:newsletter"


@dataclass(frozen=True)
class OutgoingMessage:
    envelope_from: str
    recipient: str
    message_id: str
    data: bytes


def make_message_id(*parts: str | int, domain: str) -> str:
    """A stable Message-ID: the same delivery gets the same id on every retry.

    >>> make_message_id("delivery", 42, 7, domain="news.example.org")
    '<delivery.42.7@news.example.org>'
    """
    texts = [str(p) for p in parts]
    if not texts or not all(_ID_PART.match(t) for t in texts):
        raise ValueError(f"message id parts must be [A-Za-z0-9_-]+: {parts!r}")
    if not _DOMAIN.match(domain):
        raise ValueError(f"not a domain: {domain!r}")
    return f"<{'.'.join(texts)}@{domain}>"


def build_message(
    rendered: Rendered,
    *,
    to: str,
    mail_from: str,
    message_id: str,
    list_info: ListInfo | None = None,
    date: datetime | None = None,
    extra_headers: Mapping[str, str] | None = None,
    signer: DkimSigner | None = None,
) -> OutgoingMessage:
    headers: list[tuple[str, str]] = [
        ("From", mail_from),
        ("To", to),
        ("Subject", rendered.subject),
        # "+0000" rather than "GMT": the email package rewrites it so anyway (RFC 5322 form).
        ("Date", format_datetime((date or datetime.now(UTC)).astimezone(UTC))),
        ("Message-ID", message_id),
    ]
    if list_info is not None:
        targets = [f"<{list_info.unsubscribe_url}>"]
        if list_info.unsubscribe_mailto:
            targets.append(f"<mailto:{list_info.unsubscribe_mailto.removeprefix('mailto:')}>")
        headers += [
            ("List-Unsubscribe", ", ".join(targets)),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("List-Id", list_info.list_id),
            ("Feedback-ID", list_info.feedback_id),
            ("Auto-Submitted", "auto-generated"),
            ("Precedence", "bulk"),
        ]
    headers += list((extra_headers or {}).items())
    for name, value in headers:
        # Check everything first: a newline in any value would let a reader's input add headers.
        if any(c in name or c in value for c in "\r\n"):
            raise HeaderInjection(f"CR or LF in header {name!r}")

    if list_info is not None:
        # Bulk mail shows a visible way out in both parts, not only the List-Unsubscribe header
        # that some clients never display. The HTML part may carry the URL escaped (&amp;).
        url = list_info.unsubscribe_url
        missing = [
            part
            for part, present in (
                ("text", url in rendered.text),
                ("HTML", url in html.unescape(rendered.html)),
            )
            if not present
        ]
        if missing:
            raise ValueError(
                f"bulk mail must show its unsubscribe link {url!r} in the body: "
                f"missing from the {' and '.join(missing)} part"
            )

    envelope_from = parseaddr(mail_from)[1]
    recipient = parseaddr(to)[1]
    if "@" not in envelope_from or "@" not in recipient:
        raise ValueError(f"need full addresses: from {mail_from!r}, to {to!r}")

    msg = EmailMessage(policy=policy.SMTP)  # CRLF line endings, as on the wire
    for name, value in headers:
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    # quoted-printable keeps the body 7-bit clean, so no server needs 8BITMIME.
    msg.set_content(rendered.text, charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    data = msg.as_bytes()
    if signer is not None:
        data = signer.sign(data)
    return OutgoingMessage(
        envelope_from=envelope_from, recipient=recipient, message_id=message_id, data=data
    )


class DkimSigner:
    def __init__(self, selector: str, domain: str, private_key_pem: bytes) -> None:
        self.selector = selector
        self.domain = domain
        self._key = private_key_pem

    def sign(self, data: bytes) -> bytes:
        """`data` with a DKIM-Signature header prepended."""
        counts = Counter(k.lower() for k in BytesHeaderParser().parsebytes(data))
        # Present headers only, each named once more than it occurs (over-signing).
        include = [
            name.encode()
            for name in (h.lower() for h in DKIM_HEADERS)
            if counts[name]
            for _ in range(counts[name] + 1)
        ]
        signature: bytes = dkim.sign(
            data,
            self.selector.encode(),
            self.domain.encode(),
            self._key,
            include_headers=include,
        )
        return signature + data


def dkim_signer_from_settings(settings: Settings) -> DkimSigner | None:
    if not (settings.dkim_selector and settings.dkim_key_file):
        return None
    domain = settings.dkim_domain or parseaddr(settings.mail_from)[1].rpartition("@")[2]
    return DkimSigner(settings.dkim_selector, domain, settings.dkim_key_file.read_bytes())
