"""Operators manage feed sources through the JSON API, on SQLite and PostgreSQL, against a real
local feed server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from service import tasks
from service.config import Settings, get_settings
from service.feeds import poller
from service.feeds.fetch import make_client
from service.models import Post, Source
from tests.admin import AdminSite, admin_site, committed_admin_site
from tests.feed_server import FeedServer, answer
from tests.processes import service_env, start_worker, stop, wait_for

RSS = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>Courier transport</title>'
    b"<link>https://courier.example/</link>"
    b"<item><title>Tram line approved</title><link>https://courier.example/tram/</link>"
    b"<guid>https://courier.example/tram/</guid></item>"
    b"</channel></rss>"
)
XML = {"Content-Type": "application/rss+xml"}
FEED = "/tag/transport/feed/"


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        srv.routes[FEED] = answer(200, RSS, XML)
        srv.routes["/tag/transport/"] = answer(
            200,
            b'<html><head><link rel="alternate" type="application/rss+xml" '
            b'href="/tag/transport/feed/"></head></html>',
            {"Content-Type": "text/html"},
        )
        srv.routes["/about/"] = answer(200, b"<html><body>About</body></html>")
        yield srv


@pytest.fixture
def site(db: Session, tmp_path: Path) -> Iterator[AdminSite]:
    with admin_site(db, tmp_path) as site:
        yield site


def _add(site: AdminSite, url: str, **extra: Any) -> dict[str, Any]:
    body = {"url": url, "tags": ["transport"], **extra}
    added = site.call("POST", "/api/admin/sources", json=body)
    assert added.status_code == 201, added.text
    source: dict[str, Any] = added.json()
    return source


def test_add_list_change_and_delete_a_source(site: AdminSite, server: FeedServer) -> None:
    added = _add(site, server.url("/tag/transport/"), tags=["transport", "city"])
    assert added["url"] == server.url(FEED)  # the tag page led to its feed
    assert added["tags"] == ["city", "transport"]
    assert (added["enabled"], added["interval_seconds"]) == (True, 900)
    assert (added["last_error"], added["consecutive_errors"]) == (None, 0)
    assert (added["last_polled_at"], added["next_poll_at"]) == (None, None)  # due at once

    listed = site.call("GET", "/api/admin/sources").json()
    assert [s["id"] for s in listed] == [added["id"]]
    path = f"/api/admin/sources/{added['id']}"
    assert site.call("GET", path).json() == listed[0]

    changed = site.call(
        "PATCH", path, json={"tags": ["trams"], "interval_seconds": 3600, "enabled": False}
    )
    assert changed.status_code == 200, changed.text
    again = site.call("GET", path).json()
    assert again == changed.json()
    assert (again["tags"], again["interval_seconds"], again["enabled"]) == (["trams"], 3600, False)
    assert again["url"] == added["url"]  # untouched by the patch

    assert site.call("DELETE", path).status_code == 204
    assert site.call("GET", path).status_code == 404
    assert site.call("GET", "/api/admin/sources").json() == []


def test_the_list_shows_what_the_last_poll_did(
    site: AdminSite, server: FeedServer, db: Session
) -> None:
    source = _add(site, server.url(FEED))
    server.routes[FEED] = answer(503, b"down for maintenance")
    connection = db.get_bind()

    def sessions() -> Session:
        return Session(bind=connection, join_transaction_mode="create_savepoint")

    before = datetime.now(UTC)
    with make_client("newsletter-tests/1.0") as client:
        poller.poll_source(sessions, client, source["id"])
    [shown] = site.call("GET", "/api/admin/sources").json()
    assert shown["consecutive_errors"] == 1
    assert "503" in shown["last_error"]
    assert shown["last_result"].startswith("error")
    assert datetime.fromisoformat(shown["last_polled_at"]) >= before
    assert datetime.fromisoformat(shown["next_poll_at"]) > before  # backed off


def test_enabling_a_disabled_source_clears_its_errors_and_makes_it_due(
    site: AdminSite, server: FeedServer, db: Session
) -> None:
    source = _add(site, server.url(FEED))
    db.execute(
        update(Source)
        .where(Source.id == source["id"])
        .values(
            enabled=False,
            consecutive_errors=6,
            last_error="gone",
            next_poll_at=datetime.now(UTC) + timedelta(days=1),
        )
    )
    enabled = site.call("PATCH", f"/api/admin/sources/{source['id']}", json={"enabled": True})
    assert enabled.status_code == 200
    shown = enabled.json()
    assert (shown["enabled"], shown["consecutive_errors"], shown["next_poll_at"]) == (True, 0, None)
    assert shown["last_error"] == "gone"  # kept for the record until a poll succeeds


def test_a_shorter_interval_brings_a_far_next_poll_closer(
    site: AdminSite, server: FeedServer, db: Session
) -> None:
    source = _add(site, server.url(FEED), interval_seconds=86_400)
    later = datetime.now(UTC) + timedelta(hours=20)
    db.execute(update(Source).where(Source.id == source["id"]).values(next_poll_at=later))
    path = f"/api/admin/sources/{source['id']}"
    shown = site.call("PATCH", path, json={"interval_seconds": 600}).json()
    assert datetime.fromisoformat(shown["next_poll_at"]) <= datetime.now(UTC) + timedelta(
        seconds=600
    )


def test_poll_now_is_queued_for_a_worker(site: AdminSite, server: FeedServer) -> None:
    source = _add(site, server.url(FEED))
    queued = site.call("POST", f"/api/admin/sources/{source['id']}/poll")
    assert queued.status_code == 202
    assert queued.json()["queued"] is True
    assert "queued" in queued.json()["detail"].lower()
    assert site.polls.queued == [source["id"]]

    path = f"/api/admin/sources/{source['id']}"
    site.call("PATCH", path, json={"enabled": False})
    refused = site.call("POST", f"{path}/poll")
    assert refused.status_code == 409
    assert "disabled" in refused.json()["detail"]
    assert site.polls.queued == [source["id"]]  # nothing more queued


def test_a_known_feed_is_refused_without_fetching_it_again(
    site: AdminSite, server: FeedServer
) -> None:
    _add(site, server.url(FEED))
    fetches = len(server.requests)
    again = site.call(
        "POST", "/api/admin/sources", json={"url": server.url(FEED), "tags": ["other"]}
    )
    assert again.status_code == 409
    assert "already a source" in again.json()["detail"]
    assert len(server.requests) == fetches
    # Reached through its tag page, the same feed is found after the fetch.
    via_page = site.call(
        "POST", "/api/admin/sources", json={"url": server.url("/tag/transport/"), "tags": ["x"]}
    )
    assert via_page.status_code == 409


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "/about/", "tags": ["about"]}, "names no feed"),
        ({"url": "/missing/", "tags": ["about"]}, "cannot fetch"),
        ({"url": "ftp://example.org/feed", "tags": ["about"]}, "cannot fetch"),
        ({"url": FEED, "tags": ["Bad Tag"]}, "tags"),
        ({"url": FEED, "tags": []}, "tags"),
        ({"url": FEED, "tags": ["ok"], "interval_seconds": 10}, "interval_seconds"),
        ({"url": FEED, "tags": ["ok"], "colour": "red"}, "colour"),
    ],
)
def test_bad_sources_are_422_with_a_reason(
    site: AdminSite, server: FeedServer, body: dict[str, Any], message: str
) -> None:
    if body["url"].startswith("/"):
        body = {**body, "url": server.url(body["url"])}
    refused = site.call("POST", "/api/admin/sources", json=body)
    assert refused.status_code == 422
    assert message in refused.text
    assert site.call("GET", "/api/admin/sources").json() == []


def test_bad_changes_are_422_and_change_nothing(site: AdminSite, server: FeedServer) -> None:
    source = _add(site, server.url(FEED))
    path = f"/api/admin/sources/{source['id']}"
    for body in ({"interval_seconds": 5}, {"tags": ["Not A Slug"]}, {"url": "http://x.test/"}):
        assert site.call("PATCH", path, json=body).status_code == 422, body
    assert site.call("GET", path).json() == source


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/poll")]
)
def test_an_unknown_source_is_404(site: AdminSite, method: str, suffix: str) -> None:
    missing = site.call(method, f"/api/admin/sources/4040{suffix}", json={})
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no source with id 4040"


@pytest.mark.process
def test_poll_now_is_run_by_a_real_worker(
    engine: Engine,
    sessions: Callable[[], Session],
    redis_url: str,
    var_dir: Path,
    tmp_path: Path,
    server: FeedServer,
) -> None:
    """The route enqueues `poll_source` after its commit; a worker process polls the feed."""
    env = service_env(
        var_dir,
        database_url=engine.url.render_as_string(hide_password=False),
        broker_url=redis_url,
    )
    log = tmp_path / "worker.log"
    tasks.configure(Settings(var_dir=var_dir, broker_url=redis_url))
    worker = start_worker(env, log, queues="poll,priority")
    try:
        with committed_admin_site(engine, var_dir) as site:
            site.client.app.state.polls = tasks.TaskPolls()  # type: ignore[attr-defined]
            source = _add(site, server.url(FEED))
            queued = site.call("POST", f"/api/admin/sources/{source['id']}/poll")
            assert queued.status_code == 202, queued.text

            def polled() -> bool:
                with sessions() as s:
                    return s.get_one(Source, source["id"]).last_polled_at is not None

            wait_for(polled, 30, "the worker's poll", log)
            shown = site.call("GET", f"/api/admin/sources/{source['id']}").json()
    finally:
        assert stop(worker) == 0
        tasks.configure(get_settings())
    assert shown["last_result"] == "1 new, 0 updated"
    with sessions() as s:
        [tram] = s.scalars(select(Post)).all()
        assert tram.title == "Tram line approved"
        assert [t.slug for t in tram.tags] == ["transport"]
    # The worker fetched it (with the service's User-Agent), not this test's client.
    agents = {r.headers.get("user-agent") for r in server.requests if r.path == FEED}
    assert len(agents) == 2
