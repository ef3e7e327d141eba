"""Breaking news on SQLite and PostgreSQL, sent over SMTP to a real server in this process:
the dry run's count, one edition per post, the post ledger, cancel (a batch stops, planning
stops, nothing is left open).

Real Celery workers on Redis are in test_breaking_workers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Settings
from service.digests import breaking, editions, planning, schedules, sweep
from service.digests.sending import send_batch
from service.mail.senders.smtp import SmtpSender
from service.models import (
    Cadence,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    SubscriberStatus,
    Tag,
)
from service.suppressions import suppress
from tests.digest_data import RecordingSender, post, reader, tag
from tests.smtp_server import Server

pytestmark = pytest.mark.smtp

Sessions = Callable[[], Session]


@pytest.fixture
def settings(smtp: Server) -> Settings:
    return Settings(
        secret_key="test-secret-key-0123456789abcdef",
        base_url="https://courier.example",
        mail_from="The Harbour Courier <news@courier.example>",
        mail_backend="smtp",
        smtp_url=smtp.url,
    )


@pytest.fixture
def smtp(start_server: Callable[..., Server]) -> Server:
    return start_server()


class Batches:
    """The planners' hand-off, kept; `send` runs each batch over SMTP as a worker would."""

    def __init__(self, sessions: Sessions, settings: Settings) -> None:
        self.sessions, self.settings = sessions, settings
        self.batches: list[tuple[int, list[int]]] = []
        self.sender = SmtpSender.from_settings(settings)

    def __call__(self, edition_id: int, ids: Sequence[int]) -> None:
        self.batches.append((edition_id, list(ids)))

    def send(self) -> None:
        batches, self.batches = self.batches, []
        for edition_id, ids in batches:
            send_batch(self.sessions, self.sender, self.settings, edition_id, ids)


@pytest.fixture
def batches(sessions: Sessions, settings: Settings) -> Iterator[Batches]:
    hand_off = Batches(sessions, settings)
    yield hand_off
    hand_off.sender.close()


def seed_newsroom(sessions: Sessions) -> int:
    """Readers of "port" in every state a breaking send must handle; returns the post's id."""
    with sessions() as s:
        port, city = tag(s, "port"), tag(s, "city")
        for i in range(12):
            reader(s, f"alert{i}@example.com", {port: Cadence.DAILY})
        reader(s, "instant@example.com", {port: Cadence.INSTANT, city: Cadence.DAILY})
        reader(s, "weekly@example.com", {port: Cadence.WEEKLY})
        reader(s, "off@example.com", {port: Cadence.DAILY}, breaking_alerts=False)
        reader(s, "left@example.com", {port: Cadence.DAILY}, status=SubscriberStatus.UNSUBSCRIBED)
        reader(s, "pending@example.com", {port: Cadence.DAILY}, status=SubscriberStatus.PENDING)
        reader(s, "paused@example.com", {port: Cadence.DAILY}, paused=True)
        reader(s, "Listed@Example.com", {port: Cadence.DAILY})
        suppress(s, "listed@example.com", reason="complained", source="operator")
        reader(s, "city@example.com", {city: Cadence.DAILY})
        urgent = post(s, "Ship aground at the pier", [port], published=datetime.now(UTC))
        s.commit()
        return urgent.id


EXPECTED = {f"alert{i}@example.com" for i in range(12)} | {
    "instant@example.com",
    "weekly@example.com",
}


def recipients(smtp: Server) -> list[str]:
    return [r for e in smtp.handler.received for r in e.rcpt_tos]


def test_the_dry_run_counts_exactly_the_readers_who_then_get_it(
    sessions: Sessions, settings: Settings, batches: Batches, smtp: Server
) -> None:
    post_id = seed_newsroom(sessions)
    with sessions() as s:
        preview = breaking.preview_breaking(s, settings, post_id)
        assert s.scalar(select(Edition.id)) is None  # a dry run writes nothing
    assert preview.readers == len(EXPECTED)
    assert preview.subject == "Breaking: Ship aground at the pier"
    assert "Ship aground at the pier" in preview.text
    assert "Ship aground at the pier" in preview.html
    for part in (preview.text, preview.html):  # nobody's address or personal links
        assert "@example.com" not in part
        assert "https://courier.example/unsubscribe/preview" in part

    with sessions() as s:
        sent = breaking.trigger_breaking(s, post_id, batches)
    assert (sent.created, sent.planned) == (True, len(EXPECTED))
    batches.send()
    assert sorted(recipients(smtp)) == sorted(EXPECTED)
    message = message_from_bytes(smtp.handler.received[0].content, policy=policy.default)  # type: ignore[arg-type]
    assert message["Subject"] == "Breaking: Ship aground at the pier"
    with sessions() as s:
        detail = editions.edition_detail(s, sent.edition_id)
    assert (detail.status, detail.sent, detail.planned, detail.progress) == (
        "done",
        len(EXPECTED),
        len(EXPECTED),
        100.0,
    )
    assert detail.first_sent_at is not None
    assert detail.finished_at is not None


def test_an_editors_subject_line_and_the_post_by_url(
    sessions: Sessions, settings: Settings, batches: Batches, smtp: Server
) -> None:
    seed_newsroom(sessions)
    url = "https://COURIER.example/ship-aground-at-the-pier?utm_source=cms#top"
    with sessions() as s:
        preview = breaking.preview_breaking(s, settings, url, "  Ship aground:\n pier closed ")
        assert preview.subject == "Ship aground: pier closed"
        sent = breaking.trigger_breaking(s, url, batches, "Ship aground: pier closed")
    batches.send()
    subjects = {
        str(message_from_bytes(e.content, policy=policy.default)["Subject"])  # type: ignore[arg-type]
        for e in smtp.handler.received
    }
    assert subjects == {"Ship aground: pier closed"}
    with sessions() as s:
        assert editions.edition_detail(s, sent.edition_id).subject == "Ship aground: pier closed"
        with pytest.raises(breaking.PostNotFound):
            breaking.preview_breaking(s, settings, "https://courier.example/no-such-story")
        with pytest.raises(breaking.PostNotFound):
            breaking.trigger_breaking(s, 999_999, batches)


def test_a_second_trigger_returns_the_same_edition_and_sends_nothing(
    sessions: Sessions, settings: Settings, batches: Batches, smtp: Server
) -> None:
    post_id = seed_newsroom(sessions)
    with sessions() as s:
        first = breaking.trigger_breaking(s, post_id, batches)
    batches.send()
    with sessions() as s:
        port = s.scalars(select(Tag).where(Tag.slug == "port")).one()
        reader(s, "newcomer@example.com", {port: Cadence.DAILY})  # follows after the send
        s.commit()
        again = breaking.trigger_breaking(s, post_id, batches, "A new subject")
        preview = breaking.preview_breaking(s, settings, post_id)
    assert (again.edition_id, again.created, again.planned) == (first.edition_id, False, 0)
    assert batches.batches == []  # nothing handed to the workers
    assert (preview.edition_id, preview.readers) == (first.edition_id, 0)
    batches.send()
    assert sorted(recipients(smtp)) == sorted(EXPECTED)  # each once


def test_the_post_is_left_out_of_those_readers_next_daily_digest(
    sessions: Sessions, settings: Settings, batches: Batches, smtp: Server
) -> None:
    now = datetime.now(UTC)
    with sessions() as s:
        schedules.add_schedule(s, "morning", Cadence.DAILY)
        port = tag(s, "port")
        reader(s, "alerts@example.com", {port: Cadence.DAILY})
        reader(s, "quiet@example.com", {port: Cadence.DAILY}, breaking_alerts=False)
        urgent = post(s, "Ship aground at the pier", [port], published=now - timedelta(hours=2))
        post(s, "Market hours change", [port], published=now - timedelta(hours=3))
        s.commit()
        urgent_id = urgent.id
    with sessions() as s:
        breaking.trigger_breaking(s, urgent_id, batches)
    batches.send()
    assert recipients(smtp) == ["alerts@example.com"]
    with sessions() as s:
        planning.plan_digests(s, batches, datetime.now(UTC), force=True)
    batches.send()
    digests = {
        e.rcpt_tos[0]: message_from_bytes(e.content, policy=policy.default)  # type: ignore[arg-type]
        for e in smtp.handler.received[1:]
    }

    def text(to: str) -> str:
        body = digests[to].get_body(("plain",))
        assert body is not None
        return str(body.get_content())

    assert "Ship aground" not in text("alerts@example.com")  # it had the breaking mail
    assert "Market hours change" in text("alerts@example.com")
    assert "Ship aground" in text("quiet@example.com")  # alerts off: the digest carries it


def test_cancel_stops_a_running_batch_before_its_next_claim(
    sessions: Sessions, settings: Settings
) -> None:
    with sessions() as s:
        port = tag(s, "port")
        for i in range(30):
            reader(s, f"r{i:02d}@example.com", {port: Cadence.DAILY})
        urgent = post(s, "Ship aground at the pier", [port], published=datetime.now(UTC))
        s.commit()
        post_id = urgent.id
    handed: list[tuple[int, list[int]]] = []
    with sessions() as s:
        sent = breaking.trigger_breaking(s, post_id, lambda e, ids: handed.append((e, list(ids))))

    class CancelsAtTen(RecordingSender):
        """The editor cancels while the batch's tenth message is with the server."""

        def send(self, message: object) -> str:
            if len(self.sent) == 9:
                with sessions() as s:
                    editions.cancel_edition(s, sent.edition_id, wait=0)
            return super().send(message)  # type: ignore[arg-type]

    sender = CancelsAtTen()
    ((edition_id, ids),) = handed
    report = send_batch(sessions, sender, settings, edition_id, ids)
    assert len(sender.sent) == 10  # the one in flight went out; no claim after the cancel
    assert report.counts["sent"] == 10
    later = datetime.now(UTC) + timedelta(hours=1)
    with sessions() as s:
        detail = editions.edition_detail(s, edition_id)
        statuses = set(s.scalars(select(Delivery.status).where(Delivery.edition_id == edition_id)))
        resumed = sweep.sweep(s, lambda e, ids: handed.append((e, list(ids))), later)
    assert statuses == {DeliveryStatus.SENT, DeliveryStatus.SKIPPED}
    assert (detail.status, detail.sent, detail.cancelled, detail.left) == ("cancelled", 10, 20, 0)
    assert resumed.resumed_editions == 0  # the sweep never resumes a cancelled edition
    assert len(handed) == 1
    with sessions() as s, pytest.raises(editions.EditionNotFound):
        editions.cancel_edition(s, 999_999)


def test_cancel_during_planning_leaves_no_row_open(sessions: Sessions, settings: Settings) -> None:
    with sessions() as s:
        port = tag(s, "port")
        for i in range(25):
            reader(s, f"r{i:02d}@example.com", {port: Cadence.DAILY})
        post_id = post(s, "Ship aground", [port], published=datetime.now(UTC)).id
        s.commit()
    handed: list[list[int]] = []

    def cancel_after_first_chunk(edition_id: int, ids: Sequence[int]) -> None:
        handed.append(list(ids))
        if len(handed) == 1:
            with sessions() as other:
                editions.cancel_edition(other, edition_id, wait=0)

    with sessions() as s:
        sent = breaking.trigger_breaking(s, post_id, cancel_after_first_chunk, chunk=10)
    assert len(handed) == 1  # the chunks after the cancel were never handed to a worker
    with sessions() as s:
        rows = s.execute(
            select(Delivery.status, Delivery.error).where(Delivery.edition_id == sent.edition_id)
        ).all()
        detail = editions.edition_detail(s, sent.edition_id)
    assert {(str(st), err) for st, err in rows} == {("skipped", "cancelled")}
    assert detail.status == "cancelled"
    assert detail.planned == len(rows)
    assert detail.left == 0


def test_a_finished_edition_cannot_be_cancelled(
    sessions: Sessions, settings: Settings, batches: Batches
) -> None:
    post_id = seed_newsroom(sessions)
    with sessions() as s:
        sent = breaking.trigger_breaking(s, post_id, batches)
    batches.send()
    with sessions() as s, pytest.raises(editions.EditionFinished):
        editions.cancel_edition(s, sent.edition_id)
    with sessions() as s:
        assert s.get(Edition, sent.edition_id).status == EditionStatus.DONE  # type: ignore[union-attr]


def test_editions_list_newest_first_with_filters_and_paging(
    sessions: Sessions, settings: Settings, batches: Batches
) -> None:
    with sessions() as s:
        port = tag(s, "port")
        reader(s, "a@example.com", {port: Cadence.DAILY})
        ids = [post(s, f"Story {n}", [port], published=datetime.now(UTC)).id for n in range(3)]
        s.commit()
    with sessions() as s:
        made = [breaking.trigger_breaking(s, i, batches).edition_id for i in ids]
        editions.cancel_edition(s, made[0], wait=0)
        page = editions.list_editions(s, limit=2)
        cancelled = editions.list_editions(s, status=EditionStatus.CANCELLED)
        second = editions.list_editions(s, offset=2, limit=2)
    assert [e.id for e in page.items] == [made[2], made[1]]
    assert page.total == 3
    assert [e.title for e in page.items] == ["Story 2", "Story 1"]
    assert [e.id for e in cancelled.items] == [made[0]]
    assert [e.id for e in second.items] == [made[0]]
