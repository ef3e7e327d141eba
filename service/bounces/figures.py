"""Bounce and complaint rates per edition and per mail backend, from the stored events.

An event counts once it is mapped to its delivery (`provider_events.delivery_id`); a rate is
the deliveries that bounced (or drew a complaint) over the deliveries `sent`. Deliveries are
counted, not events: a provider that reports one message's bounce twice under two ids, or a
soft bounce followed by a hard one, still makes one bounced delivery, so a rate stays a share.

Gmail and Yahoo want complaints under 0.3% of the mail; the console warns above 0.1%.
Each figure is two grouped queries over the editions asked for (indexed by edition, status
and delivery), so `/metrics` can compute them at scrape time for the recent editions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, case, distinct, func, select
from sqlalchemy.orm import Session

from service.bounces.events import EventKind
from service.models import Delivery, DeliveryStatus, Edition, EditionStatus, ProviderEvent

__all__ = [
    "COMPLAINT_WARNING",
    "RECENT_EDITIONS",
    "Feedback",
    "RecentFeedback",
    "by_edition",
    "percent",
    "recent",
]

COMPLAINT_WARNING = 0.001  # a complaint rate above this is shown as a warning (0.1%)
RECENT_EDITIONS = 20  # the editions `/metrics` reports on, newest first

_BOUNCES = (EventKind.HARD_BOUNCE.value, EventKind.SOFT_BOUNCE.value)
_COMPLAINT = EventKind.COMPLAINT.value


@dataclass(frozen=True)
class Feedback:
    """What came back for a set of sent deliveries."""

    sent: int = 0
    bounced: int = 0  # deliveries with a hard or a soft bounce
    hard_bounced: int = 0  # … of which a hard one
    complained: int = 0  # deliveries a reader marked as spam
    bounce_rate: float = 0.0  # bounced / sent
    complaint_rate: float = 0.0  # complained / sent
    complaint_warning: bool = False  # the complaint rate is above COMPLAINT_WARNING

    @classmethod
    def of(cls, sent: int, bounced: int, hard_bounced: int, complained: int) -> Feedback:
        complaint_rate = complained / sent if sent else 0.0
        return cls(
            sent=sent,
            bounced=bounced,
            hard_bounced=hard_bounced,
            complained=complained,
            bounce_rate=bounced / sent if sent else 0.0,
            complaint_rate=complaint_rate,
            complaint_warning=complaint_rate > COMPLAINT_WARNING,
        )

    def __add__(self, other: Feedback) -> Feedback:
        return Feedback.of(
            self.sent + other.sent,
            self.bounced + other.bounced,
            self.hard_bounced + other.hard_bounced,
            self.complained + other.complained,
        )


def percent(rate: float) -> str:
    """0.002 → "0.2%": two decimals at most, no trailing zeros."""
    return f"{rate * 100:.2f}".rstrip("0").rstrip(".") + "%"


def by_edition(session: Session, edition_ids: Sequence[int]) -> dict[int, dict[str, Feedback]]:
    """Each edition's feedback per backend (editions with nothing sent are left out)."""
    if not edition_ids:
        return {}
    counts: dict[tuple[int, str], list[int]] = {}
    for edition_id, backend, sent in session.execute(
        select(Delivery.edition_id, Delivery.backend, func.count())
        .where(Delivery.edition_id.in_(edition_ids), Delivery.status == DeliveryStatus.SENT)
        .group_by(Delivery.edition_id, Delivery.backend)
    ):
        counts[(edition_id, backend or "")] = [sent, 0, 0, 0]

    def deliveries_with(*kinds: str) -> ColumnElement[int]:
        return func.count(distinct(case((ProviderEvent.kind.in_(kinds), Delivery.id))))

    for edition_id, backend, bounced, hard, complained in session.execute(
        select(
            Delivery.edition_id,
            Delivery.backend,
            deliveries_with(*_BOUNCES),
            deliveries_with(EventKind.HARD_BOUNCE.value),
            deliveries_with(_COMPLAINT),
        )
        .join(ProviderEvent, ProviderEvent.delivery_id == Delivery.id)
        .where(
            Delivery.edition_id.in_(edition_ids), ProviderEvent.kind.in_([*_BOUNCES, _COMPLAINT])
        )
        .group_by(Delivery.edition_id, Delivery.backend)
    ):
        row = counts.setdefault((edition_id, backend or ""), [0, 0, 0, 0])
        row[1:] = [bounced, hard, complained]
    found: dict[int, dict[str, Feedback]] = {}
    for (edition_id, backend), (sent, bounced, hard, complained) in sorted(counts.items()):
        found.setdefault(edition_id, {})[backend] = Feedback.of(sent, bounced, hard, complained)
    return found


def total(per_backend: dict[str, Feedback]) -> Feedback:
    result = Feedback()
    for figures in per_backend.values():
        result += figures
    return result


@dataclass(frozen=True)
class RecentFeedback:
    editions: list[tuple[int, str, Feedback]]  # (edition id, kind, figures), newest first
    backends: dict[str, Feedback]  # summed over those editions


def recent(session: Session, limit: int = RECENT_EDITIONS) -> RecentFeedback:
    """The latest ``limit`` editions that have begun sending, and their backends' totals."""
    rows = session.execute(
        select(Edition.id, Edition.kind)
        .where(Edition.status != EditionStatus.PLANNED)
        .order_by(Edition.id.desc())
        .limit(limit)
    ).all()
    figures = by_edition(session, [edition_id for edition_id, _ in rows])
    backends: dict[str, Feedback] = {}
    editions = []
    for edition_id, kind in rows:
        mine = figures.get(edition_id, {})
        editions.append((edition_id, str(kind), total(mine)))
        for backend, f in mine.items():
            backends[backend] = backends.get(backend, Feedback()) + f
    return RecentFeedback(editions, backends)
