"""An operator looks a reader up by address: status, preferences, subscriptions, recent mail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from service.models import (
    Cadence,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    Role,
    SubscriberStatus,
)
from service.suppressions import suppress
from tests.admin import AdminSite, admin_site
from tests.digest_data import reader, tag

PATH = "/api/admin/subscribers"
T0 = datetime(2026, 11, 1, 7, 0, tzinfo=UTC)


@pytest.fixture
def site(db: Session, tmp_path: Path) -> Iterator[AdminSite]:
    with admin_site(db, tmp_path) as site:
        yield site


def test_a_reader_with_subscriptions_and_their_last_twenty_deliveries(
    site: AdminSite, db: Session
) -> None:
    ann = reader(
        db,
        "Ann@Example.org",
        {tag(db, "port"): Cadence.INSTANT, tag(db, "climate"): Cadence.WEEKLY},
        timezone="Europe/Kyiv",
        send_hour=8,
        breaking_alerts=False,
    )
    reader(db, "bob@example.org", {})
    for day in range(25):
        edition = Edition(key=f"digest:1:{day}", kind=EditionKind.DIGEST)
        db.add(edition)
        db.flush()
        failed = day == 24
        db.add(
            Delivery(
                edition_id=edition.id,
                subscriber_id=ann.id,
                status=DeliveryStatus.FAILED if failed else DeliveryStatus.SENT,
                sent_at=None if failed else T0 + timedelta(days=day),
                error="550 mailbox unavailable" if failed else None,
            )
        )
    db.commit()

    found = site.call("GET", PATH, params={"email": "  ann@EXAMPLE.org "})
    assert found.status_code == 200
    [record] = found.json()
    assert (record["id"], record["email"], record["status"]) == (
        ann.id,
        "Ann@Example.org",
        "active",
    )
    assert (record["timezone"], record["send_hour"], record["breaking_alerts"]) == (
        "Europe/Kyiv",
        8,
        False,
    )
    assert record["suppressed"] is False
    assert record["subscriptions"] == [
        {"tag": "climate", "cadence": "weekly"},
        {"tag": "port", "cadence": "instant"},
    ]
    recent = record["recent_deliveries"]
    assert len(recent) == 20
    assert [d["edition_key"] for d in recent] == [f"digest:1:{d}" for d in range(24, 4, -1)]
    assert (recent[0]["status"], recent[0]["error"], recent[0]["sent_at"]) == (
        "failed",
        "550 mailbox unavailable",
        None,
    )
    assert recent[1]["edition_kind"] == "digest"
    assert datetime.fromisoformat(recent[1]["sent_at"]) == T0 + timedelta(days=23)


def test_a_suppressed_reader_says_so(site: AdminSite, db: Session) -> None:
    reader(db, "cy@example.org", {}, status=SubscriberStatus.BOUNCED)
    suppress(db, "cy@example.org", reason="bounced", source="smtp")
    db.commit()
    [record] = site.call("GET", PATH, params={"email": "cy@example.org"}).json()
    assert (record["status"], record["suppressed"]) == ("bounced", True)
    assert record["recent_deliveries"] == []


def test_an_unknown_or_partial_address_finds_nobody(site: AdminSite, db: Session) -> None:
    reader(db, "dana@example.org", {})
    db.commit()
    for email in ("nobody@example.org", "dana", "%@example.org", "dana@example.org.evil"):
        found = site.call("GET", PATH, params={"email": email})
        assert (found.status_code, found.json()) == (200, []), email
    assert site.call("GET", PATH).status_code == 422  # the address is required


def test_editors_may_not_look_readers_up(site: AdminSite, db: Session) -> None:
    reader(db, "dana@example.org", {})
    db.commit()
    refused = site.call("GET", PATH, params={"email": "dana@example.org"}, role=Role.EDITOR)
    assert refused.status_code == 403
    assert "dana" not in refused.text
