"""Fault drills: PostgreSQL restarted while polls are in flight; a mail provider answering 429
for a minute. Real Celery workers on Redis, each drill with its own faulty server: a private
PostgreSQL cluster on a free port (tests/private_postgres.py) and a local Postmark API
(tests/postmark_api.py). The machine's shared servers are never stopped or restarted.

Each drill prints its figures (`pytest -s` shows them); README "Fault drills" quotes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from service import migrate, tasks
from service.config import Settings, get_settings
from service.db import make_engine, session_factory
from service.digests import planning, schedules
from service.feeds import poller
from service.feeds.store import tags_for
from service.models import Cadence, Delivery, Edition, Post, Source, SourceItem
from tests import private_postgres
from tests.conftest import _postgres_database, service_unavailable
from tests.digest_data import post, reader, tag
from tests.feed_server import FeedServer, Handler, Route, answer
from tests.postmark_api import PostmarkAPI
from tests.private_postgres import PrivatePostgres
from tests.processes import PYTHON, service_env, start, start_worker, stop, wait_for

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis]

SETTINGS = {
    "secret_key": "drill-secret-key-0123456789abcdef",
    "base_url": "https://courier.example",
    "mail_from": "news@courier.example",
}


@pytest.fixture
def broker(redis_url: str, var_dir: Path) -> Iterator[str]:
    """This process's tasks go to the test's Redis database; the defaults come back after."""
    tasks.configure(Settings(var_dir=var_dir, broker_url=redis_url))
    yield redis_url
    tasks.configure(get_settings())


# -- PostgreSQL restarted mid-poll -----------------------------------------------------------

SOURCES = 40
ITEMS = 5  # per feed: 4 of its own and 1 it shares with the next feed
FEED_DELAY = 1.0  # seconds each feed takes to answer: polls are in flight when the server stops
OUTAGE = 3.0  # seconds PostgreSQL stays down


def rss(n: int) -> bytes:
    now = datetime.now(UTC)
    items = "".join(
        f"<item><title>Harbour story {k}</title>"
        f"<link>https://harbour.example/story-{k}</link><guid>harbour-{k}</guid>"
        f"<pubDate>{format_datetime(now - timedelta(hours=k), usegmt=True)}</pubDate></item>"
        for k in range(n * (ITEMS - 1), n * (ITEMS - 1) + ITEMS)
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Harbour Herald</title>'
        f"<link>https://harbour.example/</link>{items}</channel></rss>"
    ).encode()


def slow_feed(n: int) -> Route:
    body = answer(200, rss(n), {"Content-Type": "application/rss+xml"})

    def route(h: Handler) -> None:
        time.sleep(FEED_DELAY)
        body(h)

    return route


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    if reason := private_postgres.available():
        service_unavailable("a private PostgreSQL server", reason)
    with PrivatePostgres() as pg:
        yield pg


def test_postgres_restarted_mid_poll_every_source_ends_polled_once(
    private_pg: PrivatePostgres, broker: str, tmp_path: Path
) -> None:
    engine: Engine = make_engine(private_pg.url)
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    with FeedServer() as feeds:
        for n in range(SOURCES):
            feeds.routes[f"/feed/{n}.xml"] = slow_feed(n)
        with sessions() as s:
            tags = tags_for(s, ["harbour"])
            ids = []
            for n in range(SOURCES):
                source = Source(url=feeds.url(f"/feed/{n}.xml"), tags=tags)
                s.add(source)
                s.flush()
                ids.append(source.id)
            s.commit()

        log = tmp_path / "worker.log"
        env = service_env(
            tmp_path / "var", database_url=private_pg.url, broker_url=broker, **SETTINGS
        )
        argv = [PYTHON, "-m", "service", "worker", "--queues", "poll", "--concurrency", "4"]
        worker = start(argv, env, log)
        try:
            wait_for(lambda: " ready." in log.read_text(errors="replace"), 30, "the worker", log)
            started = time.monotonic()
            for source_id in ids:
                tasks.poll_source.delay(source_id)

            def polled() -> int:
                with sessions() as s:
                    return (
                        s.scalar(
                            select(func.count()).where(
                                Source.last_polled_at.is_not(None), Source.lease_until.is_(None)
                            )
                        )
                        or 0
                    )

            wait_for(lambda: polled() >= 8, 60, "the first polls", log)
            engine.dispose()
            private_pg.stop("fast")  # every connection is cut; the polls in flight come back
            stopped = time.monotonic()
            time.sleep(OUTAGE)
            private_pg.start()
            restarted = time.monotonic()
            wait_for(lambda: polled() == SOURCES, 90, "every source polled", log)
            recovered = time.monotonic()
            assert worker.poll() is None, "the worker died with the database"
        finally:
            stop(worker)
        requests = len(feeds.requests)

    with sessions() as s:
        rows = s.scalars(select(Source).order_by(Source.id)).all()
        posts = s.scalar(select(func.count()).select_from(Post))
        urls = s.scalar(select(func.count(func.distinct(Post.url))))
        links = select(SourceItem.source_id, func.count()).group_by(SourceItem.source_id)
        items = {source_id: count for source_id, count in s.execute(links)}
    engine.dispose()

    retried = [r for r in rows if r.last_result and poller.INTERRUPTED in r.last_result]
    print(
        f"\nPostgreSQL drill: {SOURCES} sources, {FEED_DELAY}s feeds, server down "
        f"{restarted - stopped:.1f}s after {stopped - started:.1f}s; every source polled "
        f"{recovered - restarted:.1f}s after the restart; {len(retried)} polls interrupted and "
        f"retried ({requests - SOURCES} cut after their fetch, fetched again; the others "
        f"refused at their claim); {posts} posts stored"
    )
    # Every source polled once for good: lease released, no error left, its items all linked.
    assert all(r.lease_until is None and r.consecutive_errors == 0 for r in rows)
    assert all(r.last_result and not r.last_result.startswith("error") for r in rows), [
        r.last_result for r in rows
    ]
    assert items == {r.id: ITEMS for r in rows}
    # No post stored twice: the shared items are one post each.
    assert posts == urls == SOURCES * (ITEMS - 1) + 1
    # The polls the restart cut were recorded as such and retried (a second fetch each).
    assert retried, "no poll was in flight when the server stopped"
    assert requests >= SOURCES + 1
    assert all(r.last_error is None for r in rows)


# -- a provider answering 429 for a minute ---------------------------------------------------

READERS = 60
CHUNK = 20  # three send tasks of 20: three Postmark batch calls per round
LIMITED_FOR = 60.0
RETRY_AFTER = 20


@pytest.fixture
def drill_db() -> Iterator[Engine]:
    for url in _postgres_database():
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield engine
        engine.dispose()


def test_provider_429_for_a_minute_every_delivery_final_once(
    drill_db: Engine, broker: str, tmp_path: Path
) -> None:
    sessions = session_factory(drill_db)
    with sessions() as s:
        schedules.add_schedule(s, "morning", Cadence.DAILY)
        port = tag(s, "port")
        for i in range(READERS):
            reader(s, f"r{i:03d}@example.com", {port: Cadence.DAILY})
        post(s, "Harbour reopens", [port], published=datetime.now(UTC) - timedelta(hours=1))
        s.commit()

    with PostmarkAPI("drill-token", limited_for=LIMITED_FOR, retry_after=RETRY_AFTER) as api:
        env = service_env(
            tmp_path / "var",
            database_url=drill_db.url.render_as_string(hide_password=False),
            broker_url=broker,
            mail_backend="postmark",
            postmark_server_token="drill-token",
            postmark_api_url=api.url,
            **SETTINGS,
        )
        worker = start_worker(env, tmp_path / "worker.log", queues="mail")
        try:
            with sessions() as s:
                planning.plan_digests(s, tasks.dispatch, datetime.now(UTC), force=True, chunk=CHUNK)

            def sent() -> bool:
                with sessions() as s:
                    paused = s.scalar(select(Edition.paused_reason))
                    assert paused is None, f"the edition paused: {paused}"
                    done = select(func.count()).where(Delivery.status == "sent")
                    return s.scalar(done) == READERS

            wait_for(sent, 120, "every delivery sent", tmp_path / "worker.log")
            assert worker.poll() is None
        finally:
            stop(worker)

    with sessions() as s:
        edition = s.scalars(select(Edition)).one()
        attempts = [n for (n,) in s.execute(select(Delivery.attempts))]
        by_status = select(Delivery.status, func.count()).group_by(Delivery.status)
        statuses = {str(status): count for status, count in s.execute(by_status)}
    assert api.first_call is not None
    limited = [c for c in api.calls if c.status == 429]
    ok = [c for c in api.calls if c.status == 200]
    first_ok = min(c.at for c in ok) - api.first_call
    gaps = [
        later.at - earlier.at
        for address in api.accepted()
        for earlier, later in zip(api.calls_for(address), api.calls_for(address)[1:], strict=False)
    ]
    print(
        f"\n429 drill: {READERS} readers in {READERS // CHUNK} batches; {len(limited)} calls "
        f"answered 429 (Retry-After {RETRY_AFTER}s) over {LIMITED_FOR:.0f}s, then {len(ok)} "
        f"accepted, the first {first_ok:.1f}s after the first call; shortest retry gap "
        f"{min(gaps):.1f}s; attempts per delivery {sorted(set(attempts))}; edition "
        f"{edition.status}, sent {edition.sent}, failed {edition.failed}, "
        f"paused {edition.paused_reason!r}"
    )
    # Every delivery final, and each reader's message accepted exactly once.
    assert statuses == {"sent": READERS}
    accepted = api.accepted()
    assert len(accepted) == READERS
    assert set(accepted.values()) == {1}, "a reader's message was accepted twice"
    # The rate limit was real and lasted its minute; every retry waited as Retry-After said.
    assert len(limited) >= READERS // CHUNK * 2
    assert first_ok >= LIMITED_FOR
    assert min(gaps) >= RETRY_AFTER - 0.5
    # The figures: a rate limit delays an edition but does not pause it; each delivery's
    # attempts are the calls that carried it.
    assert edition.paused_reason is None
    assert (str(edition.status), edition.sent, edition.failed) == ("done", READERS, 0)
    per_reader = {
        f"r{i:03d}@example.com": len(api.calls_for(f"r{i:03d}@example.com")) for i in range(READERS)
    }
    assert sorted(attempts) == sorted(per_reader.values())
