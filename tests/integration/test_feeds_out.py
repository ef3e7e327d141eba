"""Each tag's outbound Atom and JSON feeds: valid (parsed back), and cheap to poll (ETag, 304)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.config import Settings
from service.feeds.store import store_items, tags_for
from service.feeds.types import Item
from tests.fakes import app_in_transaction

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _item(n: int) -> Item:
    title, summary = f"Tram line story {n} & more", f"<p>Part {n} of the <em>tram</em> saga</p>"
    return Item(
        guid=f"https://courier.example/{n}/",
        url=f"https://courier.example/{n}/",
        title=title,
        summary_html=summary,
        author="Courier staff",
        published_at=NOW - timedelta(hours=n),
        categories=(),
        content_hash=hashlib.sha256(f"{title}{summary}".encode()).hexdigest(),
    )


@pytest.fixture
def client(db: Session, tmp_path: Path) -> TestClient:
    store_items(
        db, [_item(n) for n in range(1, 4)], source=None, tags=tags_for(db, ["transport"]), now=NOW
    )
    db.commit()
    app = app_in_transaction(Settings(var_dir=tmp_path, base_url="https://news.example.org"), db)
    return TestClient(app, raise_server_exceptions=False)


def test_the_atom_feed_parses_back_newest_first(client: TestClient) -> None:
    response = client.get("/feeds/transport.atom")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(response.content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10"
    assert [e.title for e in feed.entries] == [f"Tram line story {n} & more" for n in (1, 2, 3)]
    assert feed.entries[0].link == "https://courier.example/1/"
    assert "<em>tram</em>" in feed.entries[0].summary


def test_the_json_feed_is_json_feed_1_1(client: TestClient) -> None:
    data = client.get("/feeds/transport.json").json()
    assert data["version"] == "https://jsonfeed.org/version/1.1"
    assert data["feed_url"] == "https://news.example.org/feeds/transport.json"
    assert next(i["url"] for i in data["items"]) == "https://courier.example/1/"
    assert all(
        {"id", "url", "title", "content_html", "date_published"} <= set(i) for i in data["items"]
    )


@pytest.mark.parametrize("kind", ["atom", "json"])
def test_an_unchanged_feed_answers_304(client: TestClient, kind: str) -> None:
    first = client.get(f"/feeds/transport.{kind}")
    again = client.get(f"/feeds/transport.{kind}", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


def test_an_unknown_tag_is_404(client: TestClient) -> None:
    assert client.get("/feeds/nope.atom").status_code == 404
