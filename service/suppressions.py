"""The suppression list: addresses we never mail, looked up by a hash of the address.

The hash lets an erased reader stay unmailable without the service keeping their address.
Sending checks the list at send time (`digests.sending`), so an entry added here silences the
address from the next send on, and a lifted one lets it receive mail again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from service.errors import Conflict, NotFound
from service.models import Suppression
from service.readers.schemas import normalize_email

REASON = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_NOTE = 2000
MAX_PAGE = 200


class SuppressionError(ValueError):
    """An entry that cannot be added: the message says why."""


class SuppressionNotFound(SuppressionError, NotFound):
    """No entry has this id."""


class AlreadySuppressed(SuppressionError, Conflict):
    """The address is on the list already."""


@dataclass(frozen=True)
class SuppressionInfo:
    id: int
    email: str | None  # None: an erased reader, kept only as a hash
    reason: str  # bounced, complained, erased, manual, …
    source: str  # who added it: operator, reader, or the mail backend's name
    note: str | None
    created_at: datetime

    @classmethod
    def of(cls, entry: Suppression) -> SuppressionInfo:
        return cls(entry.id, entry.email, entry.reason, entry.source, entry.note, entry.created_at)


@dataclass(frozen=True)
class SuppressionPage:
    items: list[SuppressionInfo]  # newest first
    total: int  # entries matching the search, on every page
    limit: int
    offset: int


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def is_suppressed(session: Session, email: str) -> bool:
    query = select(Suppression.id).where(Suppression.email_hash == email_hash(email))
    return session.scalar(query) is not None


def suppress(
    session: Session, email: str, *, reason: str, source: str, keep_address: bool = True
) -> Suppression:
    """Add ``email`` to the list (or update its reason); returns the entry."""
    entry = session.scalar(select(Suppression).where(Suppression.email_hash == email_hash(email)))
    if entry is None:
        entry = Suppression(email_hash=email_hash(email), reason=reason, source=source)
        session.add(entry)
    entry.reason, entry.source = reason, source
    entry.email = email if keep_address else None
    if not keep_address:
        entry.note = None  # a note could name the person
    session.flush()
    return entry


def search_suppressions(
    session: Session, query: str | None = None, *, limit: int = 50, offset: int = 0
) -> SuppressionPage:
    """Entries whose address contains ``query`` (any case), newest first, a page at a time.

    A whole address also finds an erased reader's entry, which keeps only the hash.
    """
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise SuppressionError(f"limit must be 1 to {MAX_PAGE} and offset at least 0")
    where = []
    if query and query.strip():
        text = query.strip().lower()
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(
            or_(
                func.lower(Suppression.email).like(pattern, escape="\\"),
                Suppression.email_hash == email_hash(text),
            )
        )
    total = session.scalar(select(func.count()).select_from(Suppression).where(*where)) or 0
    rows = session.scalars(
        select(Suppression)
        .where(*where)
        .order_by(Suppression.created_at.desc(), Suppression.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return SuppressionPage([SuppressionInfo.of(r) for r in rows], total, limit, offset)


def add_suppression(
    session: Session,
    email: str,
    *,
    reason: str = "manual",
    note: str | None = None,
    source: str = "operator",
) -> SuppressionInfo:
    """Put an address on the list: no mail goes to it from the next send on. Caller commits."""
    try:
        address = normalize_email(email)
    except ValueError as exc:
        raise SuppressionError(f"not an email address: {exc}") from exc
    if not REASON.match(reason):
        raise SuppressionError("reason must be a short lowercase word, e.g. manual or abuse")
    if note is not None and len(note) > MAX_NOTE:
        raise SuppressionError(f"note must be at most {MAX_NOTE} characters")
    existing = session.scalar(
        select(Suppression).where(Suppression.email_hash == email_hash(address))
    )
    if existing is not None:
        raise AlreadySuppressed(
            f"{address} is suppressed already (entry {existing.id}, reason {existing.reason})"
        )
    entry = Suppression(
        email_hash=email_hash(address), email=address, reason=reason, source=source, note=note
    )
    session.add(entry)
    session.flush()
    return SuppressionInfo.of(entry)


def lift_suppression(session: Session, suppression_id: int) -> SuppressionInfo:
    """Take an entry off the list; the address may be mailed again. Caller commits.

    The reader's own state is untouched: one who unsubscribed, bounced or was erased still
    gets nothing until they subscribe again.
    """
    entry = session.get(Suppression, suppression_id, with_for_update=True)
    if entry is None:
        raise SuppressionNotFound(f"no suppression with id {suppression_id}")
    info = SuppressionInfo.of(entry)
    session.delete(entry)
    session.flush()
    return info
