"""`newsletter demo` gives a fresh install tags and posts, once however often it runs."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service import demo
from service.models import Post, Tag
from service.readers.accounts import tags_with_counts


def test_demo_seeds_tags_and_overlapping_posts_once(db: Session) -> None:
    assert demo.seed(db) == (len(demo.TAGS), len(demo.POSTS))
    assert demo.seed(db) == (0, 0)
    assert db.scalar(select(func.count()).select_from(Post)) == len(demo.POSTS)
    counts = {t.slug: t.posts for t in tags_with_counts(db)}
    assert set(counts) == set(demo.TAGS)
    assert all(n > 0 for n in counts.values())
    assert sum(counts.values()) > len(demo.POSTS)  # some posts carry two tags
    transport = db.scalars(select(Tag).where(Tag.slug == "transport")).one()
    assert transport.name == "Transport"
