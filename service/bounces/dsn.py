"""Read a bounce: which recipients failed, how badly, and where the bounce was addressed.

flufl.bounce (Mailman's detectors) decides whether a message is a bounce at all and which
recipients it reports: RFC 3464 delivery status notifications first, then the formats of
servers that never learnt RFC 3464. It calls a recipient whose `Action` is `failed` a permanent
failure and one that is only `delayed` a temporary one. We sort further by the RFC 3463 status
code of that recipient, where the report gives one:

- failed with a 5.x.x status (or none): a hard bounce (5.1.1 no such user);
- failed with a 4.x.x status: a soft bounce; the server kept trying on a temporary condition
  (4.2.2 mailbox full) and then gave up;
- delayed: not counted. The server is still trying and the mail may yet arrive; if it does
  not, a `failed` report follows. Counting warnings too would count one message several times.

A message in which flufl.bounce finds no failed recipient (an out-of-office reply, a reader
answering the digest) is no bounce.
"""

from __future__ import annotations

import email
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from flufl.bounce import all_failures

from service.bounces.events import EventKind

__all__ = ["Failure", "Report", "read"]

# Headers naming where a bounce was delivered: a VERP address shows up in one of them.
_SENT_TO = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to", "cc")
_STATUS = re.compile(r"^\s*([245])\.\d{1,3}\.\d{1,3}\b")
_MESSAGE_ID_LINE = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]{1,250}>)", re.I | re.M)
MAX_EVENT_ID = 300  # provider_events.event_id


@dataclass(frozen=True)
class Failure:
    """One recipient the bounce reports as failed."""

    address: str  # as the report names it (the original recipient when it says so)
    kind: EventKind  # HARD_BOUNCE or SOFT_BOUNCE
    status: str = ""  # RFC 3463, e.g. "5.1.1"; empty when the report has none
    diagnostic: str = ""  # the remote server's words, e.g. "smtp; 550 5.1.1 User unknown"

    @property
    def detail(self) -> str:
        return " ".join(p for p in (self.status, self.diagnostic) if p)[:500]


@dataclass(frozen=True)
class Report:
    """What one message in the bounce mailbox says."""

    message_id: str  # the bounce's own Message-ID; a digest of its bytes when it has none
    date: datetime
    failures: list[Failure] = field(default_factory=list)
    delayed: list[str] = field(default_factory=list)  # recipients still being retried
    sent_to: list[str] = field(default_factory=list)  # where the bounce was addressed
    original_ids: list[str] = field(default_factory=list)  # Message-IDs of the bounced mail

    @property
    def is_bounce(self) -> bool:
        return bool(self.failures or self.delayed)

    def event_id(self, failure: Failure) -> str:
        """Unique per bounce and recipient: reading the same bounce again gives the same id."""
        event_id = f"{self.message_id}/{failure.address}"
        if len(event_id) > MAX_EVENT_ID:
            event_id = "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
        return event_id


def read(data: bytes) -> Report:
    """Parse one message of the bounce mailbox."""
    msg = email.message_from_bytes(data)
    temporary, permanent = all_failures(msg)
    blocks = _status_blocks(msg)
    failures = []
    for raw in sorted(permanent):
        address = raw.decode("ascii").lower()
        status, diagnostic = blocks.get(address, ("", ""))
        kind = EventKind.SOFT_BOUNCE if status.startswith("4") else EventKind.HARD_BOUNCE
        failures.append(Failure(address, kind, status, diagnostic))
    failed = {f.address for f in failures}
    delayed = sorted({a.decode("ascii").lower() for a in temporary} - failed)
    own_id = (msg.get("message-id") or "").strip()
    return Report(
        message_id=own_id[:250] or "sha256:" + hashlib.sha256(data).hexdigest(),
        date=_date(msg),
        failures=failures,
        delayed=delayed,
        sent_to=_sent_to(msg),
        original_ids=_original_ids(msg, data, own_id),
    )


def _status_blocks(msg: Message) -> dict[str, tuple[str, str]]:
    """Recipient → (status, diagnostic) from the message/delivery-status parts, each recipient
    named as flufl.bounce names it (Original-Recipient when rfc822, else Final-Recipient); the
    worse status wins when one is reported twice."""
    found: dict[str, tuple[str, str]] = {}
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        blocks = part.get_payload()
        assert isinstance(blocks, list)
        for block in blocks[1:]:  # the first block is about the reporting server
            if not isinstance(block, Message):
                continue
            address = _recipient(block)
            if not address:
                continue
            match = _STATUS.match(str(block.get("status", "")))
            status = match.group(0).strip() if match else ""
            diagnostic = " ".join(str(block.get("diagnostic-code", "")).split())
            if address not in found or status > found[address][0]:  # "5…" > "4…" > ""
                found[address] = (status, diagnostic)
    return found


def _recipient(block: Message) -> str:
    for header in ("original-recipient", "final-recipient"):
        value = str(block.get(header, ""))
        kind, _, address = value.partition(";")
        if kind.strip().lower() == "rfc822" and address.strip():
            return parseaddr(address.strip())[1].lower()
    return ""


def _sent_to(msg: Message) -> list[str]:
    values = [str(v) for name in _SENT_TO for v in msg.get_all(name, [])]
    found = [a.lower() for _name, a in getaddresses(values) if "@" in a]
    return list(dict.fromkeys(found))


def _original_ids(msg: Message, data: bytes, own_id: str) -> list[str]:
    """Message-IDs of the message that bounced: from the returned message or its headers (RFC
    3464's third part), else any Message-ID line quoted in the bounce's text."""
    ids: list[str] = []
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822" and part.is_multipart():
            inner = part.get_payload()
            assert isinstance(inner, list)
            ids += [str(m.get("message-id", "")) for m in inner[:1] if isinstance(m, Message)]
        elif kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                headers = HeaderParser().parsestr(payload.decode("utf-8", "replace"))
                ids.append(str(headers.get("message-id", "")))
    ids += [m.decode("ascii", "replace") for m in _MESSAGE_ID_LINE.findall(data)]
    unique: list[str] = []
    for one in (i.strip() for i in ids):
        if one and one != own_id and one not in unique:
            unique.append(one)
    return unique


def _date(msg: Message) -> datetime:
    try:
        when = parsedate_to_datetime(str(msg.get("date", "")))
    except (TypeError, ValueError):
        return datetime.now(UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)
