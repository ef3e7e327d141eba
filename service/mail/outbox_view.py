"""Read the outbox (`MAIL_BACKEND=outbox`): list its .eml files and open one, for `/admin/outbox`.

The outbox sender (`senders/outbox.py`) writes `<UTC timestamp>-<hash>.eml` by an atomic
rename (a dot-named temp file first), so names sort in time order and a listed file is whole.

A message id here is a bare file name that exists in the folder: anything with a path in it
(`../x`, `/etc/passwd`, `a/b.eml`), a percent-encoded name, a dot-file, a symlink or a folder is
`MessageNotFound`, the same as a name that is not there. Files are opened as what they are,
data: a corrupt or half-written file never raises here, it comes back with what could be read
and its `problems` listed. HTML parts are returned as stored; show them only in a sandboxed
iframe (no scripts, no same-origin), never inline in the console's page.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path

__all__ = [
    "MAX_LIMIT",
    "Attachment",
    "MessageNotFound",
    "MessageSummary",
    "MessageView",
    "list_messages",
    "open_message",
    "read_raw",
]

MAX_LIMIT = 500  # messages a listing returns at most
HEAD_BYTES = 64 * 1024  # a listing reads this much of each file for its headers
MAX_OPEN = 20 * 1024 * 1024  # a bigger file shows its headers only
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}\.eml")
_STAMP = re.compile(r"(\d{8}T\d{6}\d{6})Z-")


class MessageNotFound(LookupError):
    """No message by that id in the outbox (or the id is not a bare file name)."""


@dataclass(frozen=True)
class MessageSummary:
    id: str  # the file name
    date: datetime | None  # the Date header, else the time in the file name
    mail_from: str
    to: str
    subject: str
    size: int  # bytes on disk


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int  # decoded bytes


@dataclass(frozen=True)
class MessageView:
    id: str
    size: int
    headers: list[tuple[str, str]]  # in file order, decoded (RFC 2047) where they can be
    text: str | None  # the text/plain body, as a mail client would pick it
    html: str | None  # the text/html body, as stored: sandbox it
    attachments: list[Attachment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be read, and why

    def header(self, name: str) -> str:
        """The first header of that name ("" if absent)."""
        return next((v for n, v in self.headers if n.lower() == name.lower()), "")

    @property
    def subject(self) -> str:
        return self.header("Subject")


def _path(folder: Path, message_id: str) -> Path:
    if not isinstance(message_id, str) or not _NAME.fullmatch(message_id):
        raise MessageNotFound(message_id)
    path = Path(folder) / message_id
    try:
        mode = path.lstat().st_mode
    except (OSError, ValueError) as exc:
        raise MessageNotFound(message_id) from exc
    if not stat.S_ISREG(mode):  # a symlink could point anywhere
        raise MessageNotFound(message_id)
    return path


def _names(folder: Path) -> list[str]:
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [e.name for e in entries if _NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False)]


def list_messages(folder: Path, limit: int = 50, before: str | None = None) -> list[MessageSummary]:
    """The newest ``limit`` messages (by file name, which starts with the UTC time they were
    written), those named below ``before`` when given: pass the last id of a page to get the
    next. A file that vanishes meanwhile is left out."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    names = sorted(_names(folder), reverse=True)
    if before is not None:
        names = [n for n in names if n < before]
    summaries: list[MessageSummary] = []
    for name in names:
        if len(summaries) == limit:
            break
        summary = _summary(Path(folder) / name)
        if summary is not None:
            summaries.append(summary)
    return summaries


def _summary(path: Path) -> MessageSummary | None:
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(HEAD_BYTES)
    except OSError:
        return None
    end = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0), default=-1)
    headers = BytesHeaderParser(policy=policy.default).parsebytes(
        head[: end + 2] if end >= 0 else head
    )
    return MessageSummary(
        id=path.name,
        date=_date(headers, path.name),
        mail_from=_get(headers, "From"),
        to=_get(headers, "To"),
        subject=_get(headers, "Subject"),
        size=size,
    )


def _get(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # the email package's header classes raise many kinds on bad input
        return _raw(message, name)
    return "" if value is None else _clean(str(value))


def _raw(message: Message, name: str) -> str:
    for n, v in message.raw_items():
        if n.lower() == name.lower():
            return _clean(str(v))
    return ""


def _clean(value: str) -> str:
    # Unfolded, and no control characters (a console shows it in one line).
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


def _date(headers: Message, name: str) -> datetime | None:
    try:
        date = parsedate_to_datetime(_raw(headers, "Date"))
        return date.astimezone(UTC) if date.tzinfo else date.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError):
        pass
    stamp = _STAMP.match(name)
    if stamp:
        return datetime.strptime(stamp.group(1), "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    return None


def read_raw(folder: Path, message_id: str) -> bytes:
    """The file as stored (to download it)."""
    try:
        return _path(folder, message_id).read_bytes()
    except OSError as exc:
        raise MessageNotFound(message_id) from exc


def open_message(folder: Path, message_id: str) -> MessageView:
    """One message's headers, text and HTML parts and attachments."""
    path = _path(folder, message_id)
    problems: list[str] = []
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(MAX_OPEN + 1)
    except OSError as exc:
        raise MessageNotFound(message_id) from exc
    if len(data) > MAX_OPEN:
        problems.append(f"larger than {MAX_OPEN // 2**20} MB: only its headers are shown")
        data = data[:HEAD_BYTES]
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
    except Exception as exc:  # the parser is lenient; anything that still escapes is a problem
        return MessageView(message_id, size, [], None, None, [], [f"unreadable: {exc}"])
    assert isinstance(message, EmailMessage)
    headers = [(name, _value(name, raw)) for name, raw in message.raw_items()]
    if not headers:
        problems.append("no headers: this is not a mail message")
    text = _body(message, "plain", problems)
    html = _body(message, "html", problems)
    attachments = _attachments(message, problems)
    problems += _defects(message)
    return MessageView(message_id, size, headers, text, html, attachments, problems)


def _value(name: str, raw: str) -> str:
    try:
        value = str(policy.default.header_fetch_parse(name, raw))
    except Exception:  # a malformed header: show it raw
        value = raw
    return _clean(value)


def _body(message: EmailMessage, subtype: str, problems: list[str]) -> str | None:
    try:
        part = message.get_body((subtype,))
    except Exception as exc:
        problems.append(f"text/{subtype} part: {exc}")
        return None
    if part is None:
        return None
    try:
        return str(part.get_content())
    except Exception as exc:  # unknown charset, bad transfer encoding
        problems.append(f"text/{subtype} part: {type(exc).__name__}: {exc}")
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None


def _attachments(message: EmailMessage, problems: list[str]) -> list[Attachment]:
    found: list[Attachment] = []
    try:
        for part in message.iter_attachments():
            payload = part.get_payload(decode=True)
            found.append(
                Attachment(
                    part.get_filename(),
                    part.get_content_type(),
                    len(payload) if isinstance(payload, bytes) else 0,
                )
            )
    except Exception as exc:
        problems.append(f"attachments: {exc}")
    return found


def _defects(message: EmailMessage) -> list[str]:
    seen: list[str] = []
    for part in message.walk():
        for defect in part.defects:
            text = f"{type(defect).__name__}: {defect}" if str(defect) else type(defect).__name__
            if text not in seen:
                seen.append(text)
    return seen
