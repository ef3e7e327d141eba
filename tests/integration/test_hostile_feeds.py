"""Whatever a site serves, the poll records it on that source and the others go on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from service.db import session_factory
from service.feeds import poller
from service.feeds.fetch import make_client
from service.feeds.sources import SourceError, add_source
from service.feeds.store import tags_for
from service.models import Base, Post, Source
from tests.feed_server import FeedServer, answer, drip, endless, redirect

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
GOOD = (FIXTURES / "rss20_wordpress.xml").read_bytes()
TEN = (
    '<?xml version="1.0"?><rss version="2.0"><channel><title>Ten</title>'
    + "".join(
        f"<item><title>Story {n}</title><link>https://ten.example/{n}/</link></item>"
        for n in range(10)
    )
    + "</channel></rss>"
).encode()


@pytest.fixture
def sessions(engine: Engine) -> Iterator[Callable[[], Session]]:
    yield session_factory(engine)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def test_hostile_feeds_are_recorded_each_on_its_source(
    server: FeedServer, sessions: Callable[[], Session]
) -> None:
    hostile = {
        "/html": answer(
            200, (FIXTURES / "html_error_page.html").read_bytes(), {"Content-Type": "text/html"}
        ),
        "/truncated": answer(200, TEN[: len(TEN) * 6 // 10]),
        "/laughs": answer(200, (FIXTURES / "billion_laughs.xml").read_bytes()),
        "/huge": endless(50 * 1024 * 1024, content_length=False),
        "/drip": drip(b"<?xml version='1.0'?><rss>", every=1.0),
        "/loop": redirect("/loop"),
        "/missing": answer(404, b"no"),
        "/broken": answer(500, b"oops"),
        "/gone": answer(410, b""),
        "/wrong-type": answer(200, GOOD, {"Content-Type": "image/png"}),
        "/hostile-content": answer(200, (FIXTURES / "hostile_content.xml").read_bytes()),
        "/good": answer(200, GOOD, {"Content-Type": "application/rss+xml"}),
    }
    server.routes.update(hostile)
    with sessions() as session:
        ids = {}
        for path in hostile:
            source = Source(url=server.url(path), tags=tags_for(session, ["news"]))
            session.add(source)
            session.flush()
            ids[path] = source.id
        session.commit()
    started = time.monotonic()
    with make_client("newsletter-tests/1.0") as client:
        outcomes = {
            path: poller.poll_source(sessions, client, source_id, now=NOW, deadline=3.0)
            for path, source_id in ids.items()
        }
    assert time.monotonic() - started < 30  # the drip and the 50 MB body were cut short
    # Unexpanded, the billion-laughs feed is a harmless feed: its item is kept, safely.
    ok = {"/truncated", "/laughs", "/wrong-type", "/hostile-content", "/good"}
    for path, outcome in outcomes.items():
        if path in ok:
            # They share items, so the first stores them and the rest find them stored.
            assert outcome.result in ("new", "unchanged"), (path, outcome)
        elif path == "/gone":
            assert outcome.result == "disabled"
        else:
            assert outcome.result == "error", (path, outcome)
    assert sum(outcomes[p].new for p in ok) >= 5
    assert 3 <= outcomes["/truncated"].new < 10  # the complete items before the cut
    with sessions() as session:
        for path, source_id in ids.items():
            polled = session.get(Source, source_id)
            assert polled is not None
            assert polled.lease_until is None  # released whatever happened
            assert (polled.last_error is not None) == (path not in ok), path
        summaries = " ".join(session.scalars(select(Post.summary_html)))
        assert "<script" not in summaries
        assert "javascript:" not in summaries
        assert " onerror=" not in summaries
        texts = " ".join(session.scalars(select(Post.title))) + summaries
        assert "lol" * 10 not in texts  # no entity was ever expanded


def test_a_tag_page_leads_to_its_feed(server: FeedServer, sessions: Callable[[], Session]) -> None:
    page = (
        b'<html><head><link rel="alternate" type="application/rss+xml" '
        b'href="/tag/transport/feed/"></head><body>Transport</body></html>'
    )
    server.routes["/tag/transport/"] = answer(200, page, {"Content-Type": "text/html"})
    server.routes["/tag/transport/feed/"] = answer(200, GOOD)
    server.routes["/about/"] = answer(200, b"<html><body>About us</body></html>")
    with sessions() as session, make_client("newsletter-tests/1.0") as client:
        source = add_source(session, client, server.url("/tag/transport/"), tag_slugs=["transport"])
        assert source.url == server.url("/tag/transport/feed/")
        with pytest.raises(SourceError, match="names no feed"):
            add_source(session, client, server.url("/about/"), tag_slugs=["about"])
        with pytest.raises(SourceError, match="already a source"):
            add_source(session, client, server.url("/tag/transport/feed/"), tag_slugs=["x"])
        with pytest.raises(SourceError, match="slugs"):
            add_source(session, client, server.url("/tag/transport/feed/"), tag_slugs=["Bad Tag"])
