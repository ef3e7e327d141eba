"""The operators' console pages drive the same services as the admin API: sources, schedules,
suppressions and the subscriber lookup, each form CSRF-checked, each refusal explained."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.bounces.events import EventKind, MailEvent
from service.bounces.policy import record
from service.models import (
    Cadence,
    Role,
    Schedule,
    Source,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Tag,
)
from service.suppressions import email_hash
from tests.admin import AdminSite, admin_site, csrf_of, sign_in
from tests.feed_server import FeedServer, answer

RSS = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>Harbour news</title>'
    b"<link>https://courier.example/</link>"
    b"<item><title>Ferry timetable</title><link>https://courier.example/ferry/</link></item>"
    b"</channel></rss>"
)


@pytest.fixture
def site(db: Session, tmp_path: Path) -> Iterator[AdminSite]:
    with admin_site(db, tmp_path) as site:
        sign_in(site.client, site.tokens[Role.OPERATOR])
        yield site


def post_form(site: AdminSite, page: str, action: str, **fields: str) -> tuple[int, str]:
    """Submit a form of ``page`` as a browser does; the answer after redirects."""
    token = csrf_of(site.client.get(page).text)
    answer = site.client.post(action, data={"csrf_token": token, **fields})
    return answer.status_code, answer.text


def test_an_operator_adds_polls_disables_and_removes_a_source(site: AdminSite, db: Session) -> None:
    with FeedServer() as server:
        server.routes["/harbour/feed/"] = answer(200, RSS, {"Content-Type": "application/rss+xml"})
        status, html = post_form(
            site,
            "/admin/sources",
            "/admin/sources",
            url=server.url("/harbour/feed/"),
            tags="harbour, ferries",
        )
    assert status == 200
    assert "Added." in html
    assert server.url("/harbour/feed/") in html
    source = db.scalars(select(Source)).one()
    assert sorted(t.slug for t in source.tags) == ["ferries", "harbour"]

    status, html = post_form(site, "/admin/sources", f"/admin/sources/{source.id}/poll")
    assert "Poll queued" in html
    assert site.polls.queued == [source.id]

    post_form(site, "/admin/sources", f"/admin/sources/{source.id}/disable")
    db.refresh(source)
    assert source.enabled is False
    status, html = post_form(site, "/admin/sources", f"/admin/sources/{source.id}/poll")
    assert status == 409
    assert "disabled" in html  # the service's own reason, on the page
    assert site.polls.queued == [source.id]

    post_form(site, "/admin/sources", f"/admin/sources/{source.id}/delete")
    assert db.scalars(select(Source)).all() == []


def test_a_source_that_is_not_a_feed_is_refused_and_the_form_kept(site: AdminSite) -> None:
    with FeedServer() as server:
        server.routes["/about/"] = answer(200, b"<html><body>About us</body></html>")
        status, html = post_form(
            site, "/admin/sources", "/admin/sources", url=server.url("/about/"), tags="harbour"
        )
    assert status == 422
    assert 'role="alert"' in html
    assert server.url("/about/") in html  # what the operator typed is still in the form


def test_schedules_are_added_and_changed_from_the_console(site: AdminSite, db: Session) -> None:
    status, html = post_form(
        site,
        "/admin/schedules",
        "/admin/schedules",
        name="weekend",
        cadence="weekly",
        weekday="sat",
        send_time="09:30",
        template="digest",
    )
    assert status == 200
    assert "weekend" in html
    schedule = db.scalars(select(Schedule)).one()
    assert (schedule.cadence, schedule.weekday, str(schedule.send_time)) == (
        Cadence.WEEKLY,
        5,
        "09:30:00",
    )
    post_form(
        site, "/admin/schedules", f"/admin/schedules/{schedule.id}", send_time="06:15", enabled="0"
    )
    db.refresh(schedule)
    assert (str(schedule.send_time), schedule.enabled) == ("06:15:00", False)

    status, html = post_form(
        site, "/admin/schedules", "/admin/schedules", name="bad", send_time="25:99"
    )
    assert status == 422
    assert 'role="alert"' in html


def test_an_address_is_suppressed_found_and_lifted(site: AdminSite, db: Session) -> None:
    status, html = post_form(
        site,
        "/admin/suppressions",
        "/admin/suppressions",
        email="Angry.Reader@example.net",
        note="asked by phone",
    )
    assert "nothing more goes to it" in html
    row = db.scalars(select(Suppression)).one()
    assert row.email_hash == email_hash("angry.reader@example.net")
    found = site.client.get("/admin/suppressions", params={"q": "angry"}).text
    assert "asked by phone" in found
    status, html = post_form(site, "/admin/suppressions", "/admin/suppressions", email="nope")
    assert status == 422
    status, html = post_form(
        site, "/admin/suppressions", f"/admin/suppressions/{row.id}/lift", note="called back"
    )
    assert "Suppression lifted" in html
    assert db.scalars(select(Suppression)).all() == []
    lifted = html.split('id="lifted"')[1]  # the history: who lifted what, and why
    assert "Angry.Reader@example.net" in lifted
    assert "operator-token" in lifted
    assert "called back" in lifted


def test_a_suppression_shows_the_events_behind_it(site: AdminSite, db: Session) -> None:
    at = datetime(2026, 11, 27, 8, 15, tzinfo=UTC)
    record(
        db,
        [
            MailEvent(
                "ses",
                "ses-bounce-77",
                EventKind.HARD_BOUNCE,
                "gone@example.net",
                at,
                detail="550 5.1.1 mailbox unknown",
            )
        ],
    )
    db.commit()
    html = site.client.get("/admin/suppressions").text
    assert "gone@example.net" in html
    assert "bounced" in html
    assert "ses-bounce-77" in html
    assert "550 5.1.1 mailbox unknown" in html
    assert "2026-11-27 08:15 UTC" in html


def test_the_subscriber_lookup_shows_subscriptions(site: AdminSite, db: Session) -> None:
    tag = Tag(slug="harbour", name="Harbour")
    reader = Subscriber(
        email="sailor@example.net", status=SubscriberStatus.ACTIVE, timezone="Europe/Lisbon"
    )
    reader.subscriptions.append(Subscription(tag=tag, cadence=Cadence.WEEKLY))
    db.add(reader)
    db.commit()
    html = site.client.get("/admin/subscribers", params={"email": "SAILOR@example.net"}).text
    assert "sailor@example.net" in html
    assert "Europe/Lisbon" in html
    assert "weekly" in html
    assert (
        "No reader with that address"
        in site.client.get("/admin/subscribers", params={"email": "nobody@example.net"}).text
    )


def test_a_csv_uploaded_on_the_page_is_imported_with_its_report(
    site: AdminSite, db: Session
) -> None:
    db.add(Tag(slug="harbour", name="Harbour"))
    db.commit()
    csv = (
        "email,tags,cadence,timezone,send_hour,consented_at\n"
        "deckhand@example.net,harbour,daily,Europe/Lisbon,7,2026-01-05T10:00:00Z\n"
        "not-an-address,harbour,daily,UTC,,\n"
    )
    token = csrf_of(site.client.get("/admin/subscribers").text)
    answer = site.client.post(
        "/admin/subscribers/import",
        data={"csrf_token": token},
        files={"file": ("readers.csv", csv.encode(), "text/csv")},
    )
    assert answer.status_code == 200, answer.text
    assert "1 imported active" in answer.text
    assert "1 rejected" in answer.text
    assert "not-an-address" in answer.text  # the bad row, named with its line
    reader = db.scalars(select(Subscriber).where(Subscriber.email == "deckhand@example.net")).one()
    assert (reader.status, reader.timezone, reader.send_hour) == (
        SubscriberStatus.ACTIVE,
        "Europe/Lisbon",
        7,
    )
    exported = site.client.get("/admin/subscribers/export")
    assert exported.headers["content-type"].startswith("text/csv")
    assert "deckhand@example.net" in exported.text


@pytest.mark.parametrize(
    "path",
    ["/admin/sources/99999999999999999999999/poll", "/admin/suppressions/3000000000/lift"],
)
def test_absurd_ids_are_refused_not_crashed_on(site: AdminSite, path: str) -> None:
    status, html = post_form(site, "/admin/sources", path)
    assert status == 422
    assert "Please check your input" in html
