"""The suppression list: addresses we never mail, looked up by a hash of the address.

The hash lets an erased reader stay unmailable without the service keeping their address.
Sending checks the list at send time (`digests.sending`), so an entry added here silences the
address from the next send on, and a lifted one lets it receive mail again.

Each entry keeps its evidence (the feedback events that made it, see `bounces.policy`). An
operator's lift is recorded, not forgotten: the entry moves to `lifted_suppressions` with who
lifted it, when and why, so the list itself only ever holds suppressions in force.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.errors import Conflict, NotFound
from service.models import (
    LiftedSuppression,
    ProviderEvent,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from service.readers.schemas import normalize_email

REASON = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_NOTE = 2000
MAX_PAGE = 200
MAX_EVIDENCE = 20  # events kept per entry, the latest
MAX_BY = 100
# An address inside a diagnostic ("550 5.1.1 <ann@example.org>: unknown"), hidden for erased
# readers, whose address the service must not keep.
ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+")
# A stronger reason replaces a weaker one on an entry that exists; equals keep the first.
RANK = {"erased": 3, "complained": 2}


class SuppressionError(ValueError):
    """An entry that cannot be added: the message says why."""


class SuppressionNotFound(SuppressionError, NotFound):
    """No entry has this id."""


class AlreadySuppressed(SuppressionError, Conflict):
    """The address is on the list already."""


@dataclass(frozen=True)
class Evidence:
    """One event behind a suppression: where it came from, what and when, the diagnostic."""

    provider: str  # ses, postmark, sendgrid, mailgun, smtp, or the backend that refused it
    event_id: str | None  # the provider's id (None: a refusal while sending)
    kind: str  # hard_bounce, soft_bounce, complaint, refused
    occurred_at: datetime | None
    detail: str = ""
    delivery_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        at = self.occurred_at.isoformat() if self.occurred_at else None
        return {**self.__dict__, "occurred_at": at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        at = data.get("occurred_at")
        return cls(
            provider=str(data.get("provider", "")),
            event_id=data.get("event_id"),
            kind=str(data.get("kind", "")),
            occurred_at=datetime.fromisoformat(at) if isinstance(at, str) else None,
            detail=str(data.get("detail") or ""),
            delivery_id=data.get("delivery_id"),
        )

    def without_address(self) -> Evidence:
        return Evidence(**{**self.__dict__, "detail": ADDRESS.sub("<address>", self.detail)})


def _evidence(stored: list[dict[str, Any]] | None) -> list[Evidence]:
    return [Evidence.from_json(item) for item in stored or []]


@dataclass(frozen=True)
class SuppressionInfo:
    id: int
    email: str | None  # None: an erased reader, kept only as a hash
    reason: str  # bounced, soft_bounced, complained, erased, manual, …
    source: str  # who added it: operator, reader, or the mail backend's name
    note: str | None
    created_at: datetime
    evidence: list[Evidence] = field(default_factory=list)  # oldest first

    @classmethod
    def of(cls, entry: Suppression) -> SuppressionInfo:
        return cls(
            entry.id,
            entry.email,
            entry.reason,
            entry.source,
            entry.note,
            entry.created_at,
            _evidence(entry.evidence),
        )


@dataclass(frozen=True)
class LiftInfo:
    """A lifted suppression: what it was, and who lifted it, when and why."""

    id: int
    email: str | None
    reason: str
    source: str
    note: str | None
    evidence: list[Evidence]
    suppressed_at: datetime
    lifted_at: datetime
    lifted_by: str
    lift_note: str | None

    @classmethod
    def of(cls, row: LiftedSuppression) -> LiftInfo:
        return cls(
            row.id,
            row.email,
            row.reason,
            row.source,
            row.note,
            _evidence(row.evidence),
            row.suppressed_at,
            row.lifted_at,
            row.lifted_by,
            row.lift_note,
        )


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
    session: Session,
    email: str,
    *,
    reason: str,
    source: str,
    keep_address: bool = True,
    evidence: Sequence[Evidence] = (),
) -> Suppression:
    """Add ``email`` to the list, or add to its entry; returns the entry.

    An entry that exists keeps its reason unless the new one is stronger (erased, then
    complained, then the rest), and gains the new evidence. ``keep_address=False`` (erasure)
    forgets the address everywhere the suppression machinery kept it; an entry without an
    address never gets one back.
    """
    digest = email_hash(email)
    entry = session.scalar(select(Suppression).where(Suppression.email_hash == digest))
    if entry is None:
        entry = Suppression(email_hash=digest, reason=reason, source=source, email=email)
        session.add(entry)
    elif RANK.get(reason, 1) > RANK.get(entry.reason, 1):
        entry.reason, entry.source = reason, source
    if keep_address and entry.email is not None:
        entry.email = email
    if evidence:
        found = _evidence(entry.evidence) + list(evidence)
        entry.evidence = [e.to_json() for e in found[-MAX_EVIDENCE:]]
    if not keep_address or entry.email is None:
        _forget(session, entry)
    session.flush()
    return entry


def _forget(session: Session, entry: Suppression) -> None:
    """Keep only the hash: no address, no note, no address in a diagnostic; the same for
    the address's lifted entries and stored feedback events."""
    entry.email = entry.note = None
    entry.evidence = [e.without_address().to_json() for e in _evidence(entry.evidence)] or None
    for row in session.scalars(
        select(LiftedSuppression).where(LiftedSuppression.email_hash == entry.email_hash)
    ):
        row.email = row.note = row.lift_note = None
        row.evidence = [e.without_address().to_json() for e in _evidence(row.evidence)] or None
    session.execute(
        update(ProviderEvent)
        .where(ProviderEvent.email_hash == entry.email_hash)
        .values(payload={"erased": True})
        .execution_options(synchronize_session=False)
    )


def _matching(
    email: InstrumentedAttribute[str | None], digest: InstrumentedAttribute[str], query: str | None
) -> list[ColumnElement[bool]]:
    """Entries whose address contains ``query`` (any case), or whose hash is its hash."""
    if not query or not query.strip():
        return []
    text = query.strip().lower()
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return [or_(func.lower(email).like(pattern, escape="\\"), digest == email_hash(text))]


def search_suppressions(
    session: Session, query: str | None = None, *, limit: int = 50, offset: int = 0
) -> SuppressionPage:
    """Entries whose address contains ``query`` (any case), newest first, a page at a time.

    A whole address also finds an erased reader's entry, which keeps only the hash.
    """
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise SuppressionError(f"limit must be 1 to {MAX_PAGE} and offset at least 0")
    where = _matching(Suppression.email, Suppression.email_hash, query)
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


def lift_suppression(
    session: Session,
    suppression_id: int,
    *,
    by: str = "operator",
    note: str | None = None,
    now: datetime | None = None,
) -> LiftInfo:
    """Take an entry off the list, recording who lifted it, when and why. Caller commits.

    The address may be mailed again. A reader the policy marked `bounced` becomes active
    again (pending if they never confirmed); one who unsubscribed, complained (that
    unsubscribed them from everything) or was erased still gets nothing until they subscribe
    again: that was their choice, not the mail system's.
    """
    if note is not None and len(note) > MAX_NOTE:
        raise SuppressionError(f"note must be at most {MAX_NOTE} characters")
    entry = session.get(Suppression, suppression_id, with_for_update=True)
    if entry is None:
        raise SuppressionNotFound(f"no suppression with id {suppression_id}")
    lifted = LiftedSuppression(
        email_hash=entry.email_hash,
        email=entry.email,
        reason=entry.reason,
        source=entry.source,
        note=entry.note,
        evidence=entry.evidence,
        suppressed_at=entry.created_at,
        lifted_at=now or datetime.now(UTC),
        lifted_by=(by.strip() or "operator")[:MAX_BY],
        lift_note=(note or "").strip() or None,
    )
    session.add(lifted)
    if entry.email is not None:
        reader = session.scalar(
            select(Subscriber).where(func.lower(Subscriber.email) == entry.email.lower())
        )
        if reader is not None and reader.status == SubscriberStatus.BOUNCED:
            confirmed = reader.consented_at is not None
            reader.status = SubscriberStatus.ACTIVE if confirmed else SubscriberStatus.PENDING
    session.delete(entry)
    session.flush()
    return LiftInfo.of(lifted)


def lift_history(session: Session, query: str | None = None, *, limit: int = 50) -> list[LiftInfo]:
    """Lifted suppressions, newest first; ``query`` as in `search_suppressions`."""
    if not 1 <= limit <= MAX_PAGE:
        raise SuppressionError(f"limit must be 1 to {MAX_PAGE}")
    rows = session.scalars(
        select(LiftedSuppression)
        .where(*_matching(LiftedSuppression.email, LiftedSuppression.email_hash, query))
        .order_by(LiftedSuppression.lifted_at.desc(), LiftedSuppression.id.desc())
        .limit(limit)
    )
    return [LiftInfo.of(r) for r in rows]
