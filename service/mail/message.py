"""Build the one message type every sender takes: `OutgoingMessage`, bytes ready for the wire.

Bulk mail gets the headers mailbox providers require (RFC 8058 one-click unsubscribe, List-Id,
Feedback-ID) and, when a key is configured, a DKIM signature whose h= covers (over-signs) them.
Its rendered body must show the unsubscribe URL in both the text and the HTML part.
"""

from __future__ import annotations

import copy
import html
import re
import secrets
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
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
    "EncodedBody",
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

# A bare dot-atom address: parseaddr would return it as it is (the common case, 20x faster).
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
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
    data: bytes  # the whole message as sent over SMTP (DKIM-signed when a key is set)
    parts: MessageParts | None = None  # the same message in pieces, for JSON mail APIs
    # The SMTP envelope sender (MAIL FROM) when it is not ``envelope_from``: this delivery's
    # VERP bounce address. Only the SMTP sender uses it; the HTTP APIs set their own.
    return_path: str | None = None

    @property
    def mail_from_envelope(self) -> str:
        """The address for SMTP's MAIL FROM, where bounces go."""
        return self.return_path or self.envelope_from


@dataclass(frozen=True)
class MessageParts:
    """A message as HTTP mail APIs take it (JSON fields, not MIME).

    `template` is shared by every reader personalized from one prepared body, and `values` are
    this reader's slot values: an API that personalizes itself (Mailgun's recipient-variables)
    sends one request per template; the others read `text` and `html`.
    """

    mail_from: str
    to: str
    subject: str
    headers: tuple[tuple[str, str], ...]  # all but From, To, Subject, Date, Message-ID, MIME
    template: PreparedMessage
    values: Mapping[str, str]

    @property
    def text(self) -> str:
        return _fill(self.template.rendered.text, self.values, html_part=False)

    @property
    def html(self) -> str:
        return _fill(self.template.rendered.html, self.values, html_part=True)


def slot(name: str) -> str:
    """A placeholder a template prints where a per-reader value goes (`{{ unsubscribe_url }}`
    rendered as ``%%nl:unsubscribe_url%%``). Nothing in it is changed by HTML escaping or CSS
    inlining, so it survives rendering unchanged in both parts."""
    if not _SLOT_NAME.match(name):
        raise ValueError(f"slot names are [a-z_]+: {name!r}")
    return f"%%nl:{name}%%"


_SLOT_NAME = re.compile(r"^[a-z_]+$")
_SLOT = re.compile(r"%%nl:([a-z_]+)%%")


def _fill(
    template: str, values: Mapping[str, str], *, html_part: bool, partial: bool = False
) -> str:
    """``template`` with its slots filled (``partial``: those in ``values``, the rest kept)."""

    def value(m: re.Match[str]) -> str:
        if partial and m.group(1) not in values:
            return m.group(0)
        v = values[m.group(1)]
        return html.escape(v) if html_part else v

    return _SLOT.sub(value, template)


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
    """One message for one reader: `prepare` and `personalize` in one step."""
    if list_info is None:
        prepared = prepare(rendered, mail_from=mail_from, date=date, extra_headers=extra_headers)
        return prepared.personalize(to=to, message_id=message_id, signer=signer)
    prepared = prepare(
        rendered,
        mail_from=mail_from,
        list_id=list_info.list_id,
        feedback_id=list_info.feedback_id,
        unsubscribe_mailto=list_info.unsubscribe_mailto,
        date=date,
        extra_headers=extra_headers,
    )
    return prepared.personalize(
        to=to, message_id=message_id, unsubscribe_url=list_info.unsubscribe_url, signer=signer
    )


def prepare(
    rendered: Rendered | EncodedBody,
    *,
    mail_from: str,
    list_id: str | None = None,
    feedback_id: str | None = None,
    unsubscribe_mailto: str | None = None,
    date: datetime | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> PreparedMessage:
    """Encode a rendered message once for many readers (render once per tag set).

    The text and HTML parts may hold `slot` placeholders; `PreparedMessage.personalize` fills
    them and adds the headers that differ per reader (To, Message-ID, List-Unsubscribe) by
    joining bytes, so the cost per reader stays far below a full render and MIME build.
    With `list_id` the message is bulk mail: it gets the RFC 8058 and feedback headers and must
    show its unsubscribe link (the `unsubscribe_url` slot or the literal URL) in both parts.
    An `EncodedBody` given for ``rendered`` is not encoded again.
    """
    bulk = list_id is not None
    headers: list[tuple[str, str]] = [
        ("From", mail_from),
        ("Subject", rendered.subject),
        # "+0000" rather than "GMT": the email package rewrites it so anyway (RFC 5322 form).
        ("Date", format_datetime((date or datetime.now(UTC)).astimezone(UTC))),
    ]
    if bulk:
        headers += [
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("List-Id", list_id or ""),
            ("Feedback-ID", feedback_id or ""),
            ("Auto-Submitted", "auto-generated"),
            ("Precedence", "bulk"),
        ]
    headers += list((extra_headers or {}).items())
    _check_headers(headers)
    if unsubscribe_mailto is not None:
        _check_headers([("List-Unsubscribe", unsubscribe_mailto)])
    envelope_from = parseaddr(mail_from)[1]
    if "@" not in envelope_from:
        raise ValueError(f"need a full address: from {mail_from!r}")
    return PreparedMessage(
        rendered=rendered,
        envelope_from=envelope_from,
        mail_from=mail_from,
        headers=tuple(headers),
        bulk=bulk,
        unsubscribe_mailto=unsubscribe_mailto,
    )


class EncodedBody:
    """A rendered body with both parts quoted-printable encoded and cut at their slots: the
    costly half of `prepare`, kept apart from the headers (which hold the date) so that one
    body serves many batches, and `fill` makes variants of it by joining bytes."""

    def __init__(
        self,
        rendered: Rendered | Callable[[], Rendered],
        text: _Segments,
        html: _Segments,
        *,
        subject: str | None = None,
    ) -> None:
        self._rendered = rendered  # or how to make it: most bodies never need the text
        self.subject = subject if subject is not None else self.rendered.subject
        self.text = text
        self.html = html
        self.slots = frozenset(text[1]) | frozenset(html[1])

    @classmethod
    def encode(cls, rendered: Rendered) -> EncodedBody:
        return cls(
            rendered,
            _qp_segments(rendered.text, html_part=False),
            _qp_segments(rendered.html, html_part=True),
        )

    @property
    def rendered(self) -> Rendered:
        if callable(self._rendered):
            self._rendered = self._rendered()
        return self._rendered

    def fill(self, values: Mapping[str, str]) -> EncodedBody:
        """The body with the slots named in ``values`` filled for good (in both parts, not in
        the subject), e.g. a digest's times in one zone: only the values are encoded.

        The bytes differ from encoding the filled text (each value starts a fresh line after
        a soft break, as personalized values do); the text they carry is the same.
        """

        def rendered() -> Rendered:
            r = self.rendered
            text = _fill(r.text, values, html_part=False, partial=True)
            return Rendered(r.subject, text, _fill(r.html, values, html_part=True, partial=True))

        return EncodedBody(
            rendered,
            _partial_qp(self.text, values, html_part=False),
            _partial_qp(self.html, values, html_part=True),
            subject=self.subject,
        )

    def pack(self) -> PackedBody:
        """The body compressed to about a tenth, for a cache; `PackedBody.unpack` restores it."""
        r = self.rendered
        # One stream, each part next to its encoding: zlib finds one in the other (half the
        # size of four streams).
        parts = (
            r.text.encode(),
            b"\0".join(self.text[0]),  # quoted-printable never leaves a NUL
            r.html.encode(),
            b"\0".join(self.html[0]),
        )
        return PackedBody(
            subject=self.subject,
            data=zlib.compress(b"".join(parts), 6),
            sizes=tuple(len(p) for p in parts),
            text_slots=self.text[1],
            html_slots=self.html[1],
        )


@dataclass(frozen=True)
class PackedBody:
    subject: str
    data: bytes
    sizes: tuple[int, ...]
    text_slots: tuple[str, ...]
    html_slots: tuple[str, ...]

    def _parts(self) -> list[bytes]:
        data, parts, start = zlib.decompress(self.data), [], 0
        for size in self.sizes:
            parts.append(data[start : start + size])
            start += size
        return parts

    def unpack(self) -> EncodedBody:
        def rendered() -> Rendered:  # decompressed again only when asked for
            text, _, html, _ = self._parts()
            return Rendered(self.subject, text.decode(), html.decode())

        _, text_qp, _, html_qp = self._parts()
        return EncodedBody(
            rendered,
            (tuple(text_qp.split(b"\0")), self.text_slots),
            (tuple(html_qp.split(b"\0")), self.html_slots),
            subject=self.subject,
        )


class PreparedMessage:
    """A rendered message with its MIME encoding done; see `prepare`."""

    def __init__(
        self,
        *,
        rendered: Rendered | EncodedBody,
        envelope_from: str,
        mail_from: str,
        headers: tuple[tuple[str, str], ...],
        bulk: bool,
        unsubscribe_mailto: str | None,
    ) -> None:
        body = rendered if isinstance(rendered, EncodedBody) else EncodedBody.encode(rendered)
        self._body = body
        self.envelope_from = envelope_from
        self.mail_from = mail_from
        self.bulk = bulk
        self.unsubscribe_mailto = unsubscribe_mailto
        self.slots = body.slots
        self._headers = headers
        # "=_" never occurs in quoted-printable text ("=" is always "=3D" or an escape), so
        # the boundary cannot collide with the body.
        boundary = f"=_nl_{secrets.token_hex(12)}"
        self._head = (
            _encode_headers(headers)
            + (
                f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"'
                "\r\n\r\n"
            ).encode()
        )
        part_head = '--{b}\r\nContent-Type: text/{kind}; charset="utf-8"\r\n'
        part_head += "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        self._text, self._html = body.text, body.html
        self._text_head = part_head.format(b=boundary, kind="plain").encode()
        self._html_head = ("\r\n" + part_head.format(b=boundary, kind="html")).encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()

    @property
    def rendered(self) -> Rendered:
        return self._body.rendered

    def fill(self, values: Mapping[str, str]) -> PreparedMessage:
        """This message with some slots filled for every reader (see `EncodedBody.fill`); the
        headers, boundary included, are shared."""
        filled = copy.copy(self)
        filled._body = self._body.fill(values)
        filled.slots = filled._body.slots
        filled._text, filled._html = filled._body.text, filled._body.html
        return filled

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Headers shared by every reader, without From and Subject (see `MessageParts`)."""
        return tuple(h for h in self._headers if h[0] not in ("From", "Subject", "Date"))

    def personalize(
        self,
        *,
        to: str,
        message_id: str,
        unsubscribe_url: str | None = None,
        values: Mapping[str, str] | None = None,
        signer: DkimSigner | None = None,
        return_path: str | None = None,
    ) -> OutgoingMessage:
        """This reader's message. ``return_path`` is its own envelope sender (a VERP bounce
        address); it is no header (the receiving server writes Return-Path from the envelope),
        so the bytes shared by every reader stay as they are."""
        values = dict(values or {})
        if unsubscribe_url is not None:
            values.setdefault("unsubscribe_url", unsubscribe_url)
        missing = self.slots - values.keys()
        if missing:
            raise ValueError(f"no value for slot(s) {sorted(missing)}")
        own: list[tuple[str, str]] = [("To", to), ("Message-ID", message_id)]
        if self.bulk:
            if unsubscribe_url is None:
                raise ValueError("bulk mail needs an unsubscribe URL")
            targets = [f"<{unsubscribe_url}>"]
            if self.unsubscribe_mailto:
                targets.append(f"<mailto:{self.unsubscribe_mailto.removeprefix('mailto:')}>")
            own.append(("List-Unsubscribe", ", ".join(targets)))
        _check_headers(own)
        if unsubscribe_url is not None and self.bulk:
            self._check_unsubscribe_shown(unsubscribe_url)
        for value in values.values():
            if "\r" in value or "\n" in value:
                raise HeaderInjection("CR or LF in a personalized value")
        recipient = to if _PLAIN_ADDRESS.fullmatch(to) else parseaddr(to)[1]
        if "@" not in recipient:
            raise ValueError(f"need a full address: to {to!r}")
        if return_path is not None and not _PLAIN_ADDRESS.fullmatch(return_path):
            raise ValueError(f"need a bare address: return path {return_path!r}")
        data = b"".join(
            [
                _encode_headers(own),
                self._head,
                self._text_head,
                _fill_qp(self._text, values, html_part=False),
                self._html_head,
                _fill_qp(self._html, values, html_part=True),
                self._tail,
            ]
        )
        if signer is not None:
            data = signer.sign(data)
        parts = MessageParts(
            mail_from=self.mail_from,
            to=to,
            subject=self._body.subject,
            headers=tuple(h for h in own if h[0] == "List-Unsubscribe") + self.headers,
            template=self,
            values=values,
        )
        return OutgoingMessage(
            envelope_from=self.envelope_from,
            recipient=recipient,
            message_id=message_id,
            data=data,
            parts=parts,
            return_path=return_path,
        )

    def _check_unsubscribe_shown(self, url: str) -> None:
        # Bulk mail shows a visible way out in both parts, not only the List-Unsubscribe header
        # that some clients never display. The HTML part may carry the URL escaped (&amp;).
        if "unsubscribe_url" in self.slots:
            shown = {
                "text": "unsubscribe_url" in self._text[1],
                "HTML": "unsubscribe_url" in self._html[1],
            }
        else:
            shown = {
                "text": url in self.rendered.text,
                "HTML": url in html.unescape(self.rendered.html),
            }
        missing = [part for part, present in shown.items() if not present]
        if missing:
            raise ValueError(
                f"bulk mail must show its unsubscribe link {url!r} in the body: "
                f"missing from the {' and '.join(missing)} part"
            )


def _check_headers(headers: list[tuple[str, str]]) -> None:
    for name, value in headers:
        # Check everything first: a newline in any value would let a reader's input add headers.
        if any(c in name or c in value for c in "\r\n"):
            raise HeaderInjection(f"CR or LF in header {name!r}")


def _encode_headers(headers: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> bytes:
    out: list[bytes] = []
    for name, value in headers:
        line = f"{name}: {value}"
        folded = _fold_ascii(line) if line.isascii() else None
        if folded is not None:
            out.append(folded)  # the common case, without the email package
        else:
            # RFC 2047 words for non-ASCII: the email package knows how.
            out.append(policy.SMTP.header_factory(name, value).fold(policy=policy.SMTP).encode())
    return b"".join(out)


def _fold_ascii(line: str) -> bytes | None:
    """An ASCII header line folded at its spaces, so lines keep within 78 characters where a
    space allows; never inside a word. The email package would turn a long word into RFC 2047
    encoded words, which hides the URL of a List-Unsubscribe from every mailbox provider
    (encoded words belong in text, not in a URL). None when a line would pass 998."""
    if len(line) <= 78:
        return line.encode() + b"\r\n"
    lines: list[str] = []
    name, _, rest = line.partition(" ")
    current = f"{name} "  # never fold right after "Name:"
    for i, word in enumerate(rest.split(" ")):
        if i == 0 or not word or len(current) + 1 + len(word) <= 78:
            current = current + word if i == 0 else f"{current} {word}"
        else:
            lines.append(current)
            current = f" {word}"  # the space that was there starts the next line
    lines.append(current)
    if any(len(piece) > 998 for piece in lines):
        return None
    return "\r\n".join(lines).encode() + b"\r\n"


# A body is kept as quoted-printable bytes cut at its slots: [bytes, slot, bytes, slot, bytes].
# Each cut ends its line with a soft break, so a reader's value (encoded on its own) starts on
# a fresh line and every line stays within the 76 characters quoted-printable allows.
_Segments = tuple[tuple[bytes, ...], tuple[str, ...]]


def _qp_segments(text: str, *, html_part: bool) -> _Segments:
    text = text.replace("\r\n", "\n")
    pieces = _SLOT.split(text if text.endswith("\n") else text + "\n")
    literals = tuple(_qp(p, soft_end=i < len(pieces) - 1) for i, p in enumerate(pieces[0::2]))
    return literals, tuple(pieces[1::2])


def _qp(text: str, *, soft_end: bool) -> bytes:
    if len(text) <= _QP_LINE and text.isascii() and text.isprintable() and "=" not in text:
        # A short value with nothing to escape (personalized links, a digest's times).
        encoded = text.encode() if not text.endswith(" ") else _qp_encode(text.encode())
    else:
        encoded = _qp_encode(text.encode("utf-8"))
    if soft_end and encoded:
        encoded += b"=\r\n"
    return encoded


# Bytes quoted-printable leaves as they are ("=" is escaped first, on its own).
_QP_SAFE = bytes(range(32, 127)) + b"\t\r\n"
_QP_LINE = 76


def _qp_encode(data: bytes) -> bytes:
    """`email.quoprimime.body_encode(data as Latin-1, 76, "\\r\\n")`, byte for byte, about
    four times faster: escaping is a few `bytes.replace` (one per distinct byte to escape) and
    only lines longer than 76 or ending in white space take the slow path below."""
    if not data:
        return b""
    body = data.replace(b"=", b"=3D")
    for byte in set(body.translate(None, _QP_SAFE)):
        body = body.replace(bytes((byte,)), b"=%02X" % byte)
    out: list[bytes] = []
    append = out.append
    for line in body.splitlines():
        if len(line) <= _QP_LINE and not line.endswith((b" ", b"\t")):
            append(line)
            continue
        # Cut into pieces of at most 75 characters and a soft break, never inside an escape.
        start, laststart = 0, len(line) - 1 - _QP_LINE
        while start <= laststart:
            stop = start + _QP_LINE - 1
            if line[stop - 2] == 0x3D:  # "="
                append(line[start : stop - 1])
                start = stop - 2
            elif line[stop - 1] == 0x3D:
                append(line[start:stop])
                start = stop - 1
            else:
                append(line[start:stop] + b"=")
                start = stop
        if line.endswith((b" ", b"\t")):  # white space ending a line is escaped
            room, last = start - laststart, line[-1]
            if room >= 3:
                tail = b"=%02X" % last
            elif room == 2:
                tail = line[-1:] + b"=\r\n"
            else:
                tail = b"=\r\n=%02X" % last
            append(line[start:-1] + tail)
        else:
            append(line[start:])
    if body.endswith((b"\r", b"\n")):
        append(b"")
    return b"\r\n".join(out)


def _partial_qp(segments: _Segments, values: Mapping[str, str], *, html_part: bool) -> _Segments:
    """The segments with the slots named in ``values`` filled: their neighbours joined."""
    literals, names = segments
    pieces: list[list[bytes]] = [[literals[0]]]
    left: list[str] = []
    for i, (name, literal) in enumerate(zip(names, literals[1:], strict=True)):
        if name not in values:
            left.append(name)
            pieces.append([literal])
            continue
        value = html.escape(values[name]) if html_part else values[name]
        last = i == len(names) - 1 and not literal
        pieces[-1] += [_qp(value, soft_end=not last), literal]
    return tuple(b"".join(p) for p in pieces), tuple(left)


def _fill_qp(segments: _Segments, values: Mapping[str, str], *, html_part: bool) -> bytes:
    literals, left = _partial_qp(segments, values, html_part=html_part)
    assert not left, f"no value for slot(s) {left}"
    return literals[0]


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
