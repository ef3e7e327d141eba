"""Bounce and complaint rates per edition and per backend, from the stored events mapped to
their deliveries: in the edition's figures, on the console's edition page (with a warning
above 0.1% complaints), in the admin API and in `/metrics`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from service.bounces.events import EventKind, MailEvent
from service.bounces.figures import recent
from service.bounces.policy import record
from service.digests.editions import edition_detail
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Role,
    Subscriber,
    SubscriberStatus,
)
from tests.admin import AdminSite, admin_site, sign_in

AT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
def site(db: Session, tmp_path: Path) -> Iterator[AdminSite]:
    with admin_site(db, tmp_path) as site:
        sign_in(site.client, site.tokens[Role.EDITOR])
        yield site


def sent_edition(db: Session, key: str, sent: int, backend: str = "postmark") -> list[int]:
    """A finished digest with ``sent`` deliveries sent through ``backend``; their ids."""
    edition = Edition(key=key, kind=EditionKind.DIGEST, status=EditionStatus.DONE, sent=sent)
    db.add(edition)
    db.flush()
    db.execute(
        insert(Subscriber),
        [
            {"email": f"{key}-{n}@example.com", "status": SubscriberStatus.ACTIVE}
            for n in range(sent)
        ],
    )
    readers = db.scalars(select(Subscriber.id).where(Subscriber.email.like(f"{key}-%"))).all()
    db.execute(
        insert(Delivery),
        [
            {
                "edition_id": edition.id,
                "subscriber_id": r,
                "status": DeliveryStatus.SENT,
                "backend": backend,
            }
            for r in readers
        ],
    )
    return list(
        db.scalars(
            select(Delivery.id).where(Delivery.edition_id == edition.id).order_by(Delivery.id)
        )
    )


def feedback(kind: EventKind, delivery_id: int, event_id: str) -> MailEvent:
    """As a webhook hands it over: the delivery named (VERP or our Message-ID found it)."""
    return MailEvent(
        "postmark", event_id, kind, f"r{delivery_id}@example.com", AT, delivery_id=delivery_id
    )


@pytest.fixture
def edition_ids(db: Session) -> tuple[int, int]:
    """Edition A: 1,000 sent, 2 complaints, 3 bounced deliveries (one soft then hard).
    Edition B: 1,000 sent through ses, 1 complaint: 0.1%, which does not pass 0.1%."""
    a = sent_edition(db, "a", 1000)
    b = sent_edition(db, "b", 1000, backend="ses")
    record(
        db,
        [
            feedback(EventKind.COMPLAINT, a[0], "c1"),
            feedback(EventKind.COMPLAINT, a[1], "c2"),
            feedback(EventKind.HARD_BOUNCE, a[2], "h1"),
            feedback(EventKind.SOFT_BOUNCE, a[3], "s1"),
            feedback(EventKind.HARD_BOUNCE, a[3], "h2"),  # the same delivery: one bounced
            feedback(EventKind.SOFT_BOUNCE, a[4], "s2"),
            feedback(EventKind.DELIVERED, a[5], "d1"),  # no bounce
            feedback(EventKind.COMPLAINT, b[0], "c3"),
        ],
    )
    record(db, [feedback(EventKind.COMPLAINT, a[0], "c1")])  # a replay counts nothing
    edition_a = db.scalar(select(Delivery.edition_id).where(Delivery.id == a[0]))
    edition_b = db.scalar(select(Delivery.edition_id).where(Delivery.id == b[0]))
    assert edition_a is not None
    assert edition_b is not None
    return edition_a, edition_b


def test_an_editions_rates_count_its_bounced_and_complained_deliveries(
    db: Session, edition_ids: tuple[int, int]
) -> None:
    a, b = edition_ids
    f = edition_detail(db, a).feedback
    assert (f.sent, f.bounced, f.hard_bounced, f.complained) == (1000, 3, 2, 2)
    assert (f.bounce_rate, f.complaint_rate, f.complaint_warning) == (0.003, 0.002, True)
    [backend] = edition_detail(db, a).backends
    assert (backend.backend, backend.feedback.complained) == ("postmark", 2)
    other = edition_detail(db, b).feedback
    assert (other.complaint_rate, other.complaint_warning) == (0.001, False)

    found = recent(db)
    assert found.backends["postmark"].complaint_rate == 0.002
    assert found.backends["ses"].complained == 1


def test_the_edition_page_shows_the_rates_and_warns_above_a_tenth_of_a_percent(
    site: AdminSite, edition_ids: tuple[int, int]
) -> None:
    a, b = edition_ids
    page = site.client.get(f"/admin/editions/{a}").text
    assert "Of 1000 sent" in page
    assert "(0.2%)" in page  # complaints
    assert "(0.3%," in page  # bounces
    assert 'id="complaint-warning"' in page
    assert "Complaint rate 0.2% is above\n  0.1%" in page
    calm = site.client.get(f"/admin/editions/{b}").text
    assert "(0.1%)" in calm
    assert 'id="complaint-warning"' not in calm


def test_the_api_and_metrics_carry_the_rates(site: AdminSite, edition_ids: tuple[int, int]) -> None:
    a, b = edition_ids
    detail = site.call("GET", f"/api/admin/editions/{a}", role=Role.EDITOR).json()
    assert detail["feedback"]["complaint_rate"] == 0.002
    assert detail["feedback"]["complaint_warning"] is True
    assert detail["backends"][0]["feedback"]["bounced"] == 3

    metrics = site.client.get("/metrics").text
    assert "newsletter_feedback_figures_up 1.0" in metrics
    assert f'newsletter_edition_complaint_rate{{edition="{a}",kind="digest"}} 0.002' in metrics
    assert f'newsletter_edition_complaint_rate{{edition="{b}",kind="digest"}} 0.001' in metrics
    assert f'newsletter_edition_sent_deliveries{{edition="{a}",kind="digest"}} 1000.0' in metrics
    assert f'newsletter_edition_bounced_deliveries{{edition="{a}",kind="digest"}} 3.0' in metrics
    assert 'newsletter_backend_complaint_rate{backend="postmark"} 0.002' in metrics
    assert 'newsletter_backend_bounce_rate{backend="ses"} 0.0' in metrics
