"""Storing feed items: one post per article across tag feeds, edits applied, races survived."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, func, select, text
from sqlalchemy.orm import Session

from service import migrate
from service.db import make_engine, session_factory
from service.feeds.store import slugify, store_items, tags_for
from service.feeds.types import Item
from service.models import Base, Post, Source, SourceItem, post_tags

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def item(
    n: int,
    *,
    guid: str | None = None,
    url: str | None = None,
    title: str | None = None,
    categories: tuple[str, ...] = (),
) -> Item:
    title = title or f"Council story {n}"
    summary = f"<p>Summary {n}</p>"
    return Item(
        guid=guid or f"https://courier.example/{n}/",
        url=url or f"https://courier.example/{n}/",
        title=title,
        summary_html=summary,
        author=None,
        published_at=NOW - timedelta(hours=n),
        categories=categories,
        content_hash=hashlib.sha256(f"{title}{summary}".encode()).hexdigest(),
    )


def source(db: Session, slug: str, *, categories_as_tags: bool = False) -> Source:
    src = Source(
        url=f"https://courier.example/tag/{slug}/feed/",
        tags=tags_for(db, [slug]),
        categories_as_tags=categories_as_tags,
    )
    db.add(src)
    db.flush()
    return src


def test_the_same_article_in_two_tag_feeds_is_one_post_with_both_tags(db: Session) -> None:
    ukraine, economy = source(db, "ukraine"), source(db, "economy")
    first = store_items(db, [item(1), item(2)], source=ukraine, tags=ukraine.tags, now=NOW)
    second = store_items(db, [item(2), item(3)], source=economy, tags=economy.tags, now=NOW)
    assert (first.new, second.new, second.unchanged) == (2, 1, 1)
    shared = db.scalars(select(Post).where(Post.url == "https://courier.example/2/")).one()
    assert sorted(t.slug for t in shared.tags) == ["economy", "ukraine"]
    assert db.scalar(select(func.count()).select_from(Post)) == 3


def test_a_changed_guid_with_the_same_url_is_the_same_post(db: Session) -> None:
    feed = source(db, "ukraine")
    store_items(db, [item(1, guid="old-guid")], source=feed, tags=feed.tags, now=NOW)
    result = store_items(db, [item(1, guid="new-guid")], source=feed, tags=feed.tags, now=NOW)
    assert result.new == 0
    assert db.scalar(select(func.count()).select_from(Post)) == 1
    guids = set(db.scalars(select(SourceItem.guid)))
    assert guids == {"old-guid", "new-guid"}


def test_an_edited_post_is_updated_and_keeps_its_first_date(db: Session) -> None:
    feed = source(db, "ukraine")
    store_items(db, [item(1)], source=feed, tags=feed.tags, now=NOW)
    corrected = item(1, title="Council story 1 (corrected)")
    result = store_items(db, [corrected], source=feed, tags=feed.tags, now=NOW + timedelta(hours=1))
    assert (result.new, result.updated) == (0, 1)
    post = db.scalars(select(Post)).one()
    assert post.title == "Council story 1 (corrected)"
    assert post.published_at == NOW - timedelta(hours=1)


def test_duplicate_guids_in_one_feed_store_once(db: Session) -> None:
    feed = source(db, "ukraine")
    result = store_items(
        db, [item(1), item(1, title="again")], source=feed, tags=feed.tags, now=NOW
    )
    assert result.new == 1
    assert db.scalars(select(Post.title)).one() == "Council story 1"  # the first one wins


def test_feed_categories_become_tags_when_the_source_asks(db: Session) -> None:
    plain, tagging = source(db, "ukraine"), source(db, "world", categories_as_tags=True)
    store_items(db, [item(1, categories=("Kyiv Region",))], source=plain, tags=plain.tags, now=NOW)
    store_items(
        db, [item(2, categories=("Kyiv Region",))], source=tagging, tags=tagging.tags, now=NOW
    )
    tags = {p.url: sorted(t.slug for t in p.tags) for p in db.scalars(select(Post))}
    assert tags["https://courier.example/1/"] == ["ukraine"]
    assert tags["https://courier.example/2/"] == ["kyiv-region", "world"]


def test_pushed_posts_have_no_source(db: Session) -> None:
    result = store_items(db, [item(1)], source=None, tags=tags_for(db, ["breaking"]), now=NOW)
    assert result.new == 1
    assert db.scalar(select(func.count()).select_from(SourceItem)) == 0


def test_slugs() -> None:
    assert slugify("Kyiv Région / News") == "kyiv-region-news"


def test_a_cold_batch_of_ten_costs_a_fixed_handful_of_statements(db: Session) -> None:
    feed = source(db, "ukraine")
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    bind = db.connection()
    event.listen(bind, "before_cursor_execute", count)
    try:
        result = store_items(db, [item(n) for n in range(10)], source=feed, tags=feed.tags, now=NOW)
    finally:
        event.remove(bind, "before_cursor_execute", count)
    assert result.new == 10
    # One lookup, then one insert each for posts, post tags and source items.
    assert [s.split()[0] + " " + s.split()[2] for s in statements] == [
        "SELECT posts.url,",
        "INSERT posts",
        "INSERT post_tags",
        "INSERT source_items",
    ], statements
    assert db.scalar(select(func.count()).select_from(post_tags)) == 10


def test_one_url_twice_in_a_feed_is_one_post_with_the_later_text(db: Session) -> None:
    feed = source(db, "ukraine")
    first = item(1, guid="a", url="https://courier.example/1/")
    again = item(1, guid="b", url="https://courier.example/1/", title="Council story 1, edited")
    result = store_items(db, [first, again], source=feed, tags=feed.tags, now=NOW)
    assert (result.new, result.updated, len(result.new_post_ids)) == (1, 1, 1)
    post = db.scalars(select(Post)).one()
    assert (post.id, post.title) == (result.new_post_ids[0], "Council story 1, edited")
    assert set(db.scalars(select(SourceItem.guid))) == {"a", "b"}


def test_an_edit_without_author_or_date_keeps_the_stored_ones(db: Session) -> None:
    feed = source(db, "ukraine")
    original = replace(item(1), author="Nell Harper")
    store_items(db, [original], source=feed, tags=feed.tags, now=NOW)
    post = db.scalars(select(Post)).one()  # held by the session while the store updates it
    edited = replace(item(1, title="Council story 1 (corrected)"), published_at=None)
    result = store_items(db, [edited], source=feed, tags=feed.tags, now=NOW)
    assert result.updated == 1
    assert (post.title, post.author) == ("Council story 1 (corrected)", "Nell Harper")
    assert post.published_at == NOW - timedelta(hours=1)


def test_a_known_post_gains_a_new_feeds_tag_and_keeps_its_own(db: Session) -> None:
    ukraine, world = source(db, "ukraine"), source(db, "world", categories_as_tags=True)
    store_items(db, [item(1)], source=ukraine, tags=ukraine.tags, now=NOW)
    post = db.scalars(select(Post)).one()
    assert [t.slug for t in post.tags] == ["ukraine"]
    again = item(1, categories=("Kyiv Region", "kyiv region", "Ukraine"))
    result = store_items(db, [again], source=world, tags=world.tags, now=NOW)
    assert (result.new, result.unchanged) == (0, 1)
    assert sorted(t.slug for t in post.tags) == ["kyiv-region", "ukraine", "world"]


@pytest.mark.postgres
def test_two_polls_racing_for_one_article_make_one_post_with_both_tags(
    postgres_url: str,
) -> None:
    """Poll B looks the article up before poll A commits it, so B's insert conflicts, waits
    for A, and B takes A's post (and its own tag on it) instead of failing."""
    engine = make_engine(postgres_url)
    migrate.upgrade(engine)
    factory = session_factory(engine)
    url = "https://courier.example/race/"
    try:
        with factory() as setup:
            ukraine, economy = source(setup, "race-ukraine"), source(setup, "race-economy")
            ids = (ukraine.id, economy.id)
            setup.commit()
        with factory() as a, factory() as b, ThreadPoolExecutor(1) as pool:
            feed_a, feed_b = a.get_one(Source, ids[0]), b.get_one(Source, ids[1])
            try:
                first = store_items(a, [item(1, url=url)], source=feed_a, tags=feed_a.tags)
                assert first.new == 1
                # B cannot see A's uncommitted row: its insert waits on A's unique key.
                b_done = pool.submit(
                    store_items, b, [item(1, url=url, title="Edited")], source=feed_b,
                    tags=feed_b.tags,
                )  # fmt: skip
                assert _waits_on_a_lock(engine), "B's insert never waited for A"
                a.commit()
            finally:
                a.rollback()  # whatever failed above, B must not wait for A for ever
            second = b_done.result(timeout=10)
            b.commit()
        assert (second.new, second.unchanged, second.new_post_ids) == (0, 1, [])
        with factory() as check:
            post = check.scalars(select(Post).where(Post.url == url)).one()
            assert sorted(t.slug for t in post.tags) == ["race-economy", "race-ukraine"]
            assert post.title == "Edited"  # B's text differed: B's poll updated the post
            assert check.scalar(select(func.count()).select_from(SourceItem)) == 2
    finally:
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(delete(table))
        engine.dispose()


def _waits_on_a_lock(engine: Engine, seconds: float = 10.0) -> bool:
    ends = time.monotonic() + seconds
    with engine.connect() as conn:
        while time.monotonic() < ends:
            waiting = conn.scalar(
                text(
                    "select count(*) from pg_stat_activity "
                    "where datname = current_database() and wait_event_type = 'Lock'"
                )
            )
            conn.rollback()  # a fresh snapshot of pg_stat_activity next time
            if waiting:
                return True
            time.sleep(0.05)
    return False
