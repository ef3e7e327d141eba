"""Storing feed items: one post per article across tag feeds, edits applied, races survived."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.feeds.store import slugify, store_items, tags_for
from service.feeds.types import Item
from service.models import Post, Source, SourceItem

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
