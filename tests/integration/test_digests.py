"""Digests end to end on SQLite and PostgreSQL: who is due, what each reader gets, the ledgers.

The sender here is a recording one (our own Protocol); the real SMTP server, Celery worker and
Redis are in the drills (test_delivery_drills.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, time, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.digests import planning, schedules, sweep
from service.digests.sending import BatchReport, send_batch
from service.mail import MessageRejected, RecipientRejected, TemporaryError
from service.models import (
    Cadence,
    DeliveredPost,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
)
from service.suppressions import is_suppressed, suppress
from tests.digest_data import RecordingSender, merge, post, reader, tag

Sessions = Callable[[], Session]
# Saturday 28 March 2026, 22:30 UTC: 07:30 on Sunday in Tokyo, 00:30 on Sunday in Kyiv (EU
# clocks go forward at 01:00 UTC that Sunday).
NOW = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: object) -> Settings:
    return Settings(
        secret_key="test-secret-key-0123456789abcdef",
        base_url="https://courier.example",
        mail_from="The Harbour Courier <news@courier.example>",
    )


class Run:
    """Plan at a moment, then send every batch the planner handed off."""

    def __init__(self, sessions: Sessions, settings: Settings, sender: RecordingSender) -> None:
        self.sessions, self.settings, self.sender = sessions, settings, sender
        self.batches: list[tuple[int, list[int]]] = []

    def dispatch(self, edition_id: int, ids: Sequence[int]) -> None:
        self.batches.append((edition_id, list(ids)))

    def plan(self, now: datetime, **kwargs: object) -> list[planning.Planned]:
        with self.sessions() as session:
            return planning.plan_digests(session, self.dispatch, now, **kwargs)  # type: ignore[arg-type]

    def send(self, now: datetime) -> BatchReport:
        batches, self.batches = self.batches, []
        reports = [
            send_batch(self.sessions, self.sender, self.settings, e, ids, now=now)
            for e, ids in batches
        ]
        return merge(reports)

    def __call__(self, now: datetime, **kwargs: object) -> BatchReport:
        self.plan(now, **kwargs)
        return self.send(now)


@pytest.fixture
def run(sessions: Sessions, settings: Settings) -> Run:
    return Run(sessions, settings, RecordingSender())


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def text_of(data: bytes) -> str:
    msg = parse(data)
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def daily(session: Session, at: time = time(7, 0)) -> None:
    schedules.add_schedule(session, "morning", Cadence.DAILY, at=at)


def daily_readers(sessions: Sessions, names: list[str], headline: str) -> None:
    """A daily schedule, readers ``name@example.com`` in Tokyo following "world" daily (due
    at NOW), and one post of the last hour."""
    with sessions() as s:
        daily(s)
        world = tag(s, "world")
        for name in names:
            reader(s, f"{name}@example.com", {world: Cadence.DAILY}, timezone="Asia/Tokyo")
        post(s, headline, [world], published=NOW - timedelta(hours=1))
        s.commit()


def test_each_reader_gets_the_daily_at_seven_in_their_own_zone(run: Run) -> None:
    with run.sessions() as s:
        daily(s)
        world = tag(s, "world")
        reader(s, "tokyo@example.com", {world: Cadence.DAILY}, timezone="Asia/Tokyo")
        reader(s, "kyiv@example.com", {world: Cadence.DAILY}, timezone="Europe/Kyiv")
        post(s, "Harbour reopens", [world], published=NOW - timedelta(hours=3))
        s.commit()

    assert run(NOW).counts["sent"] == 1
    assert [m.recipient for m in run.sender.sent] == ["tokyo@example.com"]
    # Kyiv's 07:00 that Sunday is 04:00 UTC (summer time began at 03:00 local): not at 03:59.
    assert run(datetime(2026, 3, 29, 3, 59, tzinfo=UTC)).counts["sent"] == 0
    assert run(datetime(2026, 3, 29, 4, 0, tzinfo=UTC)).counts["sent"] == 1
    assert run.sender.sent[-1].recipient == "kyiv@example.com"
    # Both readers are in one edition: the schedule's 29 March.
    with run.sessions() as s:
        keys = s.scalars(select(Edition.key)).all()
    assert len(keys) == 1
    assert keys[0].endswith(":2026-03-29")


def test_a_readers_own_hour_overrides_the_schedule(run: Run) -> None:
    with run.sessions() as s:
        daily(s)
        world = tag(s, "world")
        reader(s, "late@example.com", {world: Cadence.DAILY}, timezone="Asia/Tokyo", send_hour=9)
        post(s, "Ferry timetable", [world], published=NOW - timedelta(hours=3))
        s.commit()
    assert run(NOW).counts["sent"] == 0  # 07:30 in Tokyo
    assert run(NOW + timedelta(hours=1, minutes=30)).counts["sent"] == 1  # 09:00


def test_running_twice_in_a_period_sends_nothing_the_second_time(run: Run) -> None:
    daily_readers(run.sessions, [f"r{i}" for i in range(5)], "Storm warning")
    assert run(NOW).counts["sent"] == 5
    planned = run.plan(NOW + timedelta(minutes=5), force=True)
    assert sum(p.deliveries for p in planned) == 0
    assert run.send(NOW).counts["sent"] == 0
    assert len(run.sender.sent) == 5


def test_digest_lists_a_post_once_groups_by_tag_and_carries_both_links(run: Run) -> None:
    with run.sessions() as s:
        daily(s)
        port, weather = tag(s, "port"), tag(s, "weather")
        reader(
            s, "a@example.com", {port: Cadence.DAILY, weather: Cadence.DAILY}, timezone="Asia/Tokyo"
        )
        post(s, "Fog closes the port", [port, weather], published=NOW - timedelta(hours=2))
        post(s, "Crane strike ends", [port], published=NOW - timedelta(hours=5))
        post(s, "Old news", [port], published=NOW - timedelta(days=3))
        s.commit()
    run(NOW)
    (message,) = run.sender.sent
    text = text_of(message.data)
    assert text.count("- Fog closes the port\n") == 1  # the headline list
    assert text.count("\nFog closes the port\n") == 1  # one group only, though in both tags
    assert "Crane strike ends" in text
    assert "Old news" not in text
    assert text.index("== Port ==") < text.index("\nFog closes the port\n")
    msg = parse(message.data)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://courier.example/unsubscribe/" in text
    assert "https://courier.example/preferences/" in text
    assert "Sun 29 Mar, 05:30 JST" in text  # the time in the reader's zone
    assert len(message.data) < 100_000


def test_the_post_ledger_instant_then_daily_and_no_empty_digest(run: Run) -> None:
    with run.sessions() as s:
        daily(s)
        port = tag(s, "port")
        sub = reader(s, "both@example.com", {port: Cadence.INSTANT}, timezone="Asia/Tokyo")
        other = tag(s, "weather")
        s.add_all([])
        from service.models import Subscription

        s.add(Subscription(subscriber_id=sub.id, tag_id=other.id, cadence=Cadence.DAILY))
        p1 = post(s, "Fog over the bay", [port, other], published=NOW - timedelta(hours=2))
        s.commit()
        post_id = p1.id
    with run.sessions() as s:
        planned = planning.plan_instant(s, [post_id], run.dispatch)
    assert planned is not None
    assert planned.deliveries == 1
    assert run.send(NOW - timedelta(hours=1)).counts["sent"] == 1
    # The daily follows "weather", which the instant mail's post also carries: already sent.
    report = run(NOW)
    assert report.counts["sent"] == 0
    assert report.counts["skipped"] == 1
    assert len(run.sender.sent) == 1


def test_the_post_ledger_breaking_then_daily(run: Run) -> None:
    with run.sessions() as s:
        daily(s)
        port = tag(s, "port")
        reader(s, "alerts@example.com", {port: Cadence.DAILY}, timezone="Asia/Tokyo")
        reader(
            s,
            "quiet@example.com",
            {port: Cadence.DAILY},
            timezone="Asia/Tokyo",
            breaking_alerts=False,
        )
        urgent = post(s, "Ship aground at the pier", [port], published=NOW - timedelta(hours=2))
        post(s, "Market hours change", [port], published=NOW - timedelta(hours=3))
        s.commit()
        urgent_id = urgent.id
    with run.sessions() as s:
        planned = planning.plan_breaking(s, urgent_id, run.dispatch)
        again = planning.plan_breaking(s, urgent_id, run.dispatch)  # a second trigger
    assert planned is not None
    assert again is not None
    assert (planned.deliveries, again.deliveries) == (1, 0)
    assert run.send(NOW - timedelta(hours=1)).counts["sent"] == 1
    (alert,) = run.sender.sent
    assert parse(alert.data)["Subject"] == "Breaking: Ship aground at the pier"
    run(NOW)
    digests = {m.recipient: text_of(m.data) for m in run.sender.sent[1:]}
    assert "Ship aground" not in digests["alerts@example.com"]  # already had it
    assert "Market hours change" in digests["alerts@example.com"]
    assert "Ship aground" in digests["quiet@example.com"]  # alerts off: the digest carries it


def test_a_sources_backlog_sends_no_instant_mail(sessions: Sessions) -> None:
    from service.models import Source, SourceItem

    with sessions() as s:
        port = tag(s, "port")
        first_poll = NOW - timedelta(hours=1)
        source = Source(url="https://courier.example/feed", first_polled_at=first_poll, tags=[port])
        s.add(source)
        s.flush()
        backlog = post(
            s, "Backlog item", [port], published=NOW - timedelta(days=2), seen=first_poll
        )
        fresh = post(s, "Fresh item", [port], published=NOW - timedelta(minutes=5), seen=NOW)
        old_dated = post(
            s, "Old but new to us", [port], published=NOW - timedelta(days=1), seen=NOW
        )
        for p in (backlog, fresh, old_dated):
            s.add(SourceItem(source_id=source.id, guid=p.guid, post_id=p.id))
        s.commit()
        ids = [backlog.id, fresh.id, old_dated.id]
        assert planning.instant_posts(s, ids) == [fresh.id]


def test_suppressed_unsubscribed_and_paused_are_checked_at_send_time(run: Run) -> None:
    daily_readers(run.sessions, ["ok", "gone", "listed", "paused"], "Tide tables")
    run.plan(NOW)
    with run.sessions() as s:  # after planning, before sending
        subs = {x.email: x for x in s.scalars(select(Subscriber))}
        subs["gone@example.com"].status = SubscriberStatus.UNSUBSCRIBED
        subs["paused@example.com"].paused = True
        suppress(s, "listed@example.com", reason="complained", source="test")
        s.commit()
    report = run.send(NOW)
    assert [m.recipient for m in run.sender.sent] == ["ok@example.com"]
    assert report.counts == {"sent": 1, "suppressed": 2, "skipped": 1}


def test_failures_end_where_they_should(sessions: Sessions, settings: Settings) -> None:
    sender = RecordingSender(
        fail={
            "bad@example.com": RecipientRejected("no such user", 550),
            "spam@example.com": MessageRejected("looks like spam", 554),
            "busy@example.com": TemporaryError("try later", 451),
        }
    )
    run = Run(sessions, settings, sender)
    daily_readers(sessions, ["ok", "bad", "spam", "busy"], "Lighthouse relit")
    report = run(NOW)
    assert report.counts == {"sent": 1, "failed": 2}
    with sessions() as s:
        status = {d.subscriber_id: (d.status, d.attempts) for d in s.scalars(select(Delivery))}
        assert sorted(str(st) for st, _ in status.values()) == [
            "failed",
            "failed",
            "queued",
            "sent",
        ]
        assert is_suppressed(s, "bad@example.com")
        assert not is_suppressed(s, "spam@example.com")
        busy_id = report.retry_ids[0]
        # The retried delivery keeps its posts: its own ledger rows do not hide them.
        assert s.scalar(select(DeliveredPost.post_id).where(DeliveredPost.delivery_id == busy_id))
        edition_id = s.scalars(select(Edition.id)).one()
    del sender.fail["busy@example.com"]
    again = send_batch(sessions, sender, settings, edition_id, report.retry_ids, now=NOW)
    assert again.counts == {"sent": 1}
    assert [m.recipient for m in sender.sent] == ["ok@example.com", "busy@example.com"]
    with sessions() as s:
        edition = s.scalars(select(Edition)).one()
        assert edition.status == EditionStatus.DONE
        assert (edition.planned, edition.sent, edition.failed) == (4, 2, 2)


def test_a_backend_that_keeps_failing_pauses_the_edition(
    sessions: Sessions, settings: Settings
) -> None:
    from service.mail import BackendRejected

    sender = RecordingSender(
        fail={f"r{i}@example.com": BackendRejected("535 authentication failed") for i in range(3)}
    )
    run = Run(sessions, settings, sender)
    daily_readers(sessions, [f"r{i}" for i in range(3)], "Bridge closed")
    report = run(NOW)
    assert report.counts["sent"] == 0
    with sessions() as s:
        edition = s.scalars(select(Edition)).one()
        assert edition.paused_reason
        assert "refused" in edition.paused_reason
        queued = s.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.QUEUED)).all()
        assert len(queued) == 3  # nothing lost, nothing failed: waiting for the backend


def test_sweep_marks_expired_leases_unknown_and_requeues_lost_batches(run: Run) -> None:
    daily_readers(run.sessions, [f"r{i}" for i in range(3)], "Quay repairs")
    run.plan(NOW)
    run.batches.clear()  # the send task was lost with its worker
    with run.sessions() as s:
        first = s.scalars(select(Delivery).order_by(Delivery.id)).first()
        assert first is not None
        first.status, first.claimed_at = DeliveryStatus.SENDING, NOW  # killed mid-send
        s.commit()
    later = NOW + sweep.LEASE + timedelta(minutes=1)
    with run.sessions() as s:
        report = sweep.sweep(s, run.dispatch, later)
    assert (report.unknown, report.resumed_editions, report.requeued) == (1, 1, 2)
    assert run.send(later).counts["sent"] == 2
    with run.sessions() as s:
        edition = s.scalars(select(Edition)).one()
        assert (edition.sent, edition.unknown, edition.status) == (2, 1, EditionStatus.DONE)
    # The unknown one is never resent.
    with run.sessions() as s:
        assert sweep.sweep(s, run.dispatch, later + timedelta(hours=1)).requeued == 0


@pytest.fixture
def count_queries(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    yield statements
    event.remove(engine, "before_cursor_execute", record)


def test_query_counts_do_not_grow_with_readers(
    sessions: Sessions, settings: Settings, count_queries: list[str]
) -> None:
    def scenario(n: int, offset: int, now: datetime) -> tuple[int, int]:
        sender = RecordingSender(batch_size=500)
        run = Run(sessions, settings, sender)
        with sessions() as s:
            s.execute(update(Subscriber).values(paused=True))  # earlier scenarios' readers
            world = tag(s, f"world{offset}")
            for i in range(n):
                reader(
                    s, f"q{offset}-{i}@example.com", {world: Cadence.DAILY}, timezone="Asia/Tokyo"
                )
            post(s, f"Item {offset}", [world], published=now - timedelta(hours=1))
            s.commit()
        count_queries.clear()
        run.plan(now)
        plan = len(count_queries)
        count_queries.clear()
        assert run.send(now).counts["sent"] == n
        return plan, len(count_queries)

    with sessions() as s:
        daily(s)
        s.commit()
    small = scenario(10, 1, NOW)
    large = scenario(300, 2, NOW + timedelta(days=1))  # a new period: a new edition, as before
    assert small == large, f"queries grew with readers: {small} vs {large}"


def test_a_batch_api_claims_what_one_call_carries(sessions: Sessions, settings: Settings) -> None:
    """Postmark (faked as its documentation answers): one call for the batch, one reader's
    inactive-recipient error fails and suppresses that reader alone."""
    import json

    import httpx

    from service.mail.senders.postmark import PostmarkSender

    calls: list[list[dict[str, object]]] = []

    def postmark(request: httpx.Request) -> httpx.Response:
        batch = json.loads(request.content)
        calls.append(batch)
        return httpx.Response(
            200,
            json=[
                {
                    "ErrorCode": 406,
                    "Message": "You tried to send to a recipient that has been marked as inactive.",
                    "To": m["To"],
                }
                if m["To"] == "r3@example.com"
                else {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{i}", "To": m["To"]}
                for i, m in enumerate(batch)
            ],
        )

    client = httpx.Client(transport=httpx.MockTransport(postmark))
    sender = PostmarkSender("token", client=client)
    daily_readers(sessions, [f"r{i}" for i in range(12)], "Regatta postponed")
    batches: list[tuple[int, list[int]]] = []
    with sessions() as s:
        planning.plan_digests(s, lambda e, ids: batches.append((e, list(ids))), NOW)
    ((edition_id, ids),) = batches
    report = send_batch(sessions, sender, settings, edition_id, ids, now=NOW)
    assert len(calls) == 1
    assert sorted(str(m["To"]) for m in calls[0]) == sorted(f"r{i}@example.com" for i in range(12))
    assert report.counts == {"sent": 11, "failed": 1}
    with sessions() as s:
        assert is_suppressed(s, "r3@example.com")
        ids_sent = set(s.scalars(select(Delivery.provider_id).where(Delivery.status == "sent")))
        assert len(ids_sent) == 11


@pytest.mark.parametrize(("status", "pauses"), [(503, True), (429, False)])
def test_failed_batch_calls_pause_after_ten_in_a_row_but_a_rate_limit_never(
    sessions: Sessions, settings: Settings, status: int, pauses: bool
) -> None:
    """A failed call is one failed attempt however many messages it carried; ten in a row
    pause the edition, unless they were 429s: a rate limit only delays (Retry-After)."""
    import httpx

    from service.mail.senders.postmark import PostmarkSender

    calls: list[int] = []

    def postmark(request: httpx.Request) -> httpx.Response:
        calls.append(status)
        if status == 429:
            limited = {"ErrorCode": 429, "Message": "Rate limit exceeded"}
            return httpx.Response(429, json=limited, headers={"Retry-After": "30"})
        return httpx.Response(503, text="Service Unavailable")

    sender = PostmarkSender("token", client=httpx.Client(transport=httpx.MockTransport(postmark)))
    daily_readers(sessions, [f"r{i}" for i in range(12)], "Ferry strike")
    batches: list[list[int]] = []
    with sessions() as s:
        planning.plan_digests(s, lambda e, ids: batches.append(list(ids)), NOW)
        edition_id = s.scalars(select(Edition.id)).one()
    ((everyone,),) = [batches]
    whole = send_batch(sessions, sender, settings, edition_id, everyone, now=NOW)
    assert (len(calls), whole.paused) == (1, None)  # one call of 12 messages: one failure
    if status == 429:
        assert whole.retry_in >= 30
    reports = [send_batch(sessions, sender, settings, edition_id, [i], now=NOW) for i in everyone]
    with sessions() as s:
        edition = s.scalars(select(Edition)).one()
        queued = s.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.QUEUED)).all()
    assert len(queued) == 12  # nothing lost, nothing failed
    if pauses:
        assert len(calls) == 10  # the tenth failed call paused it; no call after that
        assert edition.paused_reason
        assert "10 failed attempts in a row" in edition.paused_reason
        assert reports[-1].paused
    else:
        assert len(calls) == 13
        assert edition.paused_reason is None
        assert edition.backend_failures == 0
