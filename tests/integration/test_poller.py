"""Polling against a real local HTTP server: new posts, 304s, errors kept per source."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, delete, event, select, update
from sqlalchemy.orm import Session

from service.db import session_factory
from service.feeds import poller
from service.feeds.fetch import fetch_feed, make_client
from service.feeds.store import tags_for
from service.models import Base, Post, Source

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def rss(items: list[tuple[str, str]], ttl: int | None = None) -> bytes:
    body = "".join(
        f"<item><title>{title}</title><link>https://courier.example/{slug}/</link>"
        f"<guid>https://courier.example/{slug}/</guid>"
        f"<pubDate>{format_datetime(NOW - timedelta(hours=i), usegmt=True)}</pubDate></item>"
        for i, (slug, title) in enumerate(items)
    )
    extra = f"<ttl>{ttl}</ttl>" if ttl else ""
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Courier</title>'
        f"<link>https://courier.example/</link>{extra}{body}</channel></rss>"
    ).encode()


class Site:
    """Routes of a fake news site: path → (status, headers, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.honour_etag = True

    def handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append((self.path, dict(self.headers)))
                status, headers, body = site.routes.get(self.path, (404, {}, b"not found"))
                etag = headers.get("ETag")
                if site.honour_etag and etag and self.headers.get("If-None-Match") == etag:
                    status, body = 304, b""
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def site() -> Iterator[tuple[Site, str]]:
    fake = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def sessions(engine: Engine) -> Iterator[Callable[[], Session]]:
    factory = session_factory(engine)
    yield factory
    with engine.begin() as conn:  # polls commit for real: leave the database empty
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with make_client("newsletter-tests/1.0") as http:
        yield http


def add_source(sessions: Callable[[], Session], url: str, slug: str = "transport") -> int:
    with sessions() as session:
        source = Source(url=url, tags=tags_for(session, [slug]))
        session.add(source)
        session.commit()
        return source.id


def state(sessions: Callable[[], Session], source_id: int) -> Source:
    with sessions() as session:
        found = session.get(Source, source_id)
        assert found is not None
        return found


def test_new_posts_then_not_modified(
    site: tuple[Site, str], sessions: Callable[[], Session], client: httpx.Client
) -> None:
    fake, base = site
    fake.routes["/tag/transport/feed/"] = (
        200,
        {"ETag": '"v1"', "Content-Type": "application/rss+xml"},
        rss([("tram", "Tram"), ("bus", "Bus")]),
    )
    source_id = add_source(sessions, f"{base}/tag/transport/feed/")
    first = poller.poll_source(sessions, client, source_id, now=NOW)
    assert (first.result, first.new) == ("new", 2)
    second = poller.poll_source(sessions, client, source_id, now=NOW + timedelta(minutes=10))
    assert second.result == "not modified"
    assert fake.requests[-1][1].get("If-None-Match") == '"v1"'  # the validator went back raw
    src = state(sessions, source_id)
    assert (src.etag, src.consecutive_errors, src.last_result) == ('"v1"', 0, "not modified")
    assert src.next_poll_at is not None
    assert src.next_poll_at > NOW + timedelta(minutes=10)
    with sessions() as session:
        posts = session.scalars(select(Post)).all()
        assert sorted(p.title for p in posts) == ["Bus", "Tram"]
        assert all([t.slug for t in p.tags] == ["transport"] for p in posts)


def test_the_same_bytes_skip_the_parse_and_an_edit_updates(
    site: tuple[Site, str], sessions: Callable[[], Session], client: httpx.Client
) -> None:
    fake, base = site
    fake.honour_etag = False  # a server with broken validators
    fake.routes["/feed"] = (200, {}, rss([("tram", "Tram")]))
    source_id = add_source(sessions, f"{base}/feed")
    assert poller.poll_source(sessions, client, source_id, now=NOW).result == "new"
    assert poller.poll_source(sessions, client, source_id, now=NOW).result == "unchanged"
    fake.routes["/feed"] = (200, {}, rss([("tram", "Tram line (corrected)")]))
    outcome = poller.poll_source(sessions, client, source_id, now=NOW)
    assert (outcome.result, outcome.updated) == ("updated", 1)
    with sessions() as session:
        assert session.scalars(select(Post.title)).one() == "Tram line (corrected)"


def test_one_broken_feed_is_recorded_and_the_others_go_on(
    site: tuple[Site, str], sessions: Callable[[], Session], client: httpx.Client
) -> None:
    fake, base = site
    fake.routes["/good"] = (200, {}, rss([("tram", "Tram")]))
    fake.routes["/html"] = (200, {"Content-Type": "text/html"}, b"<html><body>Oops</body></html>")
    good, missing, html = (add_source(sessions, f"{base}{p}") for p in ("/good", "/gone", "/html"))
    results = {i: poller.poll_source(sessions, client, i, now=NOW) for i in (missing, html, good)}
    assert results[good].result == "new"
    assert results[missing].result == "error"
    assert results[html].result == "error"
    for broken in (missing, html):
        src = state(sessions, broken)
        assert src.consecutive_errors == 1
        assert src.last_error
        assert src.enabled
    again = poller.poll_source(sessions, client, missing, now=NOW + timedelta(hours=1))
    assert again.result == "error"
    assert state(sessions, missing).consecutive_errors == 2
    backoff = state(sessions, missing).next_poll_at
    assert backoff is not None
    assert backoff - (NOW + timedelta(hours=1)) > timedelta(minutes=50)  # backs off, capped later


def test_gone_disables_and_moved_permanently_follows(
    site: tuple[Site, str], sessions: Callable[[], Session], client: httpx.Client
) -> None:
    fake, base = site
    fake.routes["/old"] = (410, {}, b"")
    fake.routes["/moved"] = (301, {"Location": f"{base}/new"}, b"")
    fake.routes["/new"] = (200, {}, rss([("tram", "Tram")]))
    gone, moved = add_source(sessions, f"{base}/old"), add_source(sessions, f"{base}/moved")
    assert poller.poll_source(sessions, client, gone, now=NOW).result == "disabled"
    assert not state(sessions, gone).enabled
    assert poller.poll_source(sessions, client, moved, now=NOW).result == "new"
    assert state(sessions, moved).url == f"{base}/new"


def test_one_poll_in_flight_per_source(
    site: tuple[Site, str], sessions: Callable[[], Session], client: httpx.Client
) -> None:
    fake, base = site
    fake.routes["/feed"] = (200, {}, rss([("tram", "Tram")]))
    source_id = add_source(sessions, f"{base}/feed")
    with sessions() as session:
        assert poller.claim(session, source_id, NOW) is not None  # another worker holds it
    assert poller.poll_source(sessions, client, source_id, now=NOW).result == "busy"
    later = NOW + poller.LEASE + timedelta(seconds=1)  # that worker died: its lease ran out
    assert poller.poll_source(sessions, client, source_id, now=later).result == "new"


def test_a_retry_of_an_interrupted_poll_takes_its_own_lease_back_and_says_so(
    site: tuple[Site, str], sessions: Callable[[], Session], client: httpx.Client
) -> None:
    """The database went away mid-poll (the drill in test_fault_drills_db.py restarts a real
    server): the retry names the lease the first try held and need not wait for it to expire."""
    fake, base = site
    fake.routes["/feed"] = (200, {}, rss([("tram", "Tram")]))
    source_id = add_source(sessions, f"{base}/feed")
    with sessions() as session:
        first_try = poller.claim(session, source_id, NOW)
    assert first_try is not None
    assert first_try.lease_until is not None
    someone_elses = poller.Resume(first_try.lease_until - timedelta(seconds=1), "gone")
    later = NOW + timedelta(seconds=5)
    assert (
        poller.poll_source(sessions, client, source_id, now=later, resume=someone_elses).result
        == "busy"
    )
    resume = poller.Resume(first_try.lease_until, "server closed the connection unexpectedly")
    outcome = poller.poll_source(sessions, client, source_id, now=later, resume=resume)
    assert (outcome.result, outcome.new) == ("new", 1)
    source = state(sessions, source_id)
    assert source.last_result == "1 new, 0 updated (retried: database unavailable mid-poll)"
    assert (source.consecutive_errors, source.last_error, source.lease_until) == (0, None, None)


def test_the_next_poll_honours_ttl(
    site: tuple[Site, str], sessions: Callable[[], Session], client: httpx.Client
) -> None:
    fake, base = site
    fake.routes["/feed"] = (200, {}, rss([("a", "A"), ("b", "B")], ttl=180))
    source_id = add_source(sessions, f"{base}/feed")
    poller.poll_source(sessions, client, source_id, now=NOW)
    next_poll = state(sessions, source_id).next_poll_at
    assert next_poll is not None
    assert next_poll - NOW >= timedelta(minutes=180) * 0.9


def test_due_sources_are_held_while_their_poll_is_queued(sessions: Callable[[], Session]) -> None:
    first = add_source(sessions, "http://127.0.0.1:9/a")
    second = add_source(sessions, "http://127.0.0.1:9/b")
    with sessions() as session:
        assert sorted(poller.due_sources(session, NOW)) == [first, second]
        session.commit()
    with sessions() as session:
        assert poller.due_sources(session, NOW + timedelta(minutes=1)) == []


def test_a_cold_poll_costs_seven_statements_and_two_commits(
    site: tuple[Site, str],
    sessions: Callable[[], Session],
    client: httpx.Client,
    engine: Engine,
) -> None:
    fake, base = site
    fake.routes["/feed"] = (200, {}, rss([(f"story-{n}", f"Story {n}") for n in range(10)]))
    source_id = add_source(sessions, f"{base}/feed")
    statements: list[str] = []
    commits: list[object] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE, sent as a statement
            statements.append(" ".join(statement.split()[:3]))

    def commit(conn: object) -> None:
        commits.append(conn)

    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine, "commit", commit)
    try:
        outcome = poller.poll_source(sessions, client, source_id, now=NOW)
    finally:
        event.remove(engine, "before_cursor_execute", count)
        event.remove(engine, "commit", commit)
    assert (outcome.result, outcome.new) == ("new", 10)
    # The claim, the source's tags, one lookup, three inserts, the source's new state.
    assert statements == [
        "UPDATE sources SET",
        "SELECT source_tags.tag_id FROM",
        "SELECT 'u', posts.url,",
        "INSERT INTO posts",
        "INSERT INTO post_tags",
        "INSERT INTO source_items",
        "UPDATE sources SET",
    ], statements
    assert len(commits) == 2


def test_an_operators_edit_during_the_fetch_stands(
    site: tuple[Site, str],
    sessions: Callable[[], Session],
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, base = site
    fake.routes["/feed"] = (200, {}, rss([("tram", "Tram")]))
    source_id = add_source(sessions, f"{base}/feed")

    def disabled_meanwhile(*args: Any, **kwargs: Any) -> Any:
        with sessions() as session:  # the operator, while the poll waits for the site
            session.execute(
                update(Source)
                .where(Source.id == source_id)
                .values(enabled=False, interval_seconds=3600)
            )
            session.commit()
        return fetch_feed(*args, **kwargs)

    monkeypatch.setattr(poller, "fetch_feed", disabled_meanwhile)
    assert poller.poll_source(sessions, client, source_id, now=NOW).result == "new"
    src = state(sessions, source_id)
    assert (src.enabled, src.interval_seconds) == (False, 3600)  # not written over by the poll
    assert (src.last_result, src.lease_until, src.last_polled_at) == ("1 new, 0 updated", None, NOW)
