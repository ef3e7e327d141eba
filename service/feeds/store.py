"""Store normalized items as posts: one post per article, however many feeds carry it.

An item is matched to a post by this source's GUID, then by canonical URL, then by GUID from
any source; so the same article in two tag feeds is one post with both tags, and a GUID that
changes while the URL stays is still the same post. An edited item updates its post, so mail
rendered later shows the correction.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from service.feeds.types import Item
from service.models import Post, Source, SourceItem, Tag


@dataclass
class StoreResult:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    new_post_ids: list[int] = field(default_factory=list)


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:100]


def tags_for(session: Session, slugs_or_names: Iterable[str]) -> list[Tag]:
    """The tags with these slugs (or names, slugified), created when missing."""
    wanted = {slugify(s): s for s in slugs_or_names if slugify(s)}
    found = {t.slug: t for t in session.scalars(select(Tag).where(Tag.slug.in_(wanted)))}
    for slug, name in wanted.items():
        if slug not in found:
            found[slug] = _create_tag(session, slug, name)
    return list(found.values())


def _create_tag(session: Session, slug: str, name: str) -> Tag:
    tag = Tag(slug=slug, name=name if name != slug else slug.replace("-", " ").title())
    try:
        with session.begin_nested():
            session.add(tag)
    except IntegrityError:  # created by a concurrent poll a moment ago
        return session.scalars(select(Tag).where(Tag.slug == slug)).one()
    return tag


def store_items(
    session: Session,
    items: Sequence[Item],
    *,
    source: Source | None,
    tags: Sequence[Tag],
    now: datetime | None = None,
) -> StoreResult:
    """Insert or update ``items``; ``tags`` go on every one (plus categories, if the source
    turns them into tags). ``source`` is None for posts pushed by the CMS."""
    now = now or datetime.now(UTC)
    result = StoreResult()
    unique = list({item.guid: item for item in reversed(items)}.values())[::-1]  # first wins
    by_guid, by_url, by_any_guid = _existing(session, source, unique)
    category_tags = source is not None and source.categories_as_tags
    for item in unique:
        post = by_guid.get(item.guid) or by_url.get(item.url) or by_any_guid.get(item.guid)
        item_tags = [*tags, *tags_for(session, item.categories)] if category_tags else list(tags)
        if post is None:
            post, created = _insert(session, item, now)
            if created:
                result.new += 1
                result.new_post_ids.append(post.id)
            else:
                result.unchanged += 1
        elif post.content_hash != item.content_hash:
            _update(post, item)
            result.updated += 1
        else:
            result.unchanged += 1
        for tag in item_tags:
            if tag not in post.tags:
                post.tags.append(tag)
        if source is not None and item.guid not in by_guid:
            session.add(SourceItem(source_id=source.id, guid=item.guid, post_id=post.id))
            by_guid[item.guid] = post
        by_url[item.url] = post
    session.flush()
    return result


def _existing(
    session: Session, source: Source | None, items: Sequence[Item]
) -> tuple[dict[str, Post], dict[str, Post], dict[str, Post]]:
    """Three lookups for the whole batch, not three per item."""
    guids, urls = [i.guid for i in items], [i.url for i in items]
    load = selectinload(Post.tags)
    by_guid: dict[str, Post] = {}
    if source is not None:
        rows = session.execute(
            select(SourceItem.guid, Post)
            .join(Post, Post.id == SourceItem.post_id)
            .where(SourceItem.source_id == source.id, SourceItem.guid.in_(guids))
            .options(load)
        )
        by_guid = {guid: post for guid, post in rows}
    by_url = {
        p.url: p for p in session.scalars(select(Post).where(Post.url.in_(urls)).options(load))
    }
    by_any_guid = {
        p.guid: p for p in session.scalars(select(Post).where(Post.guid.in_(guids)).options(load))
    }
    return by_guid, by_url, by_any_guid


def _insert(session: Session, item: Item, now: datetime) -> tuple[Post, bool]:
    post = Post(
        url=item.url,
        guid=item.guid,
        title=item.title,
        summary_html=item.summary_html,
        author=item.author,
        published_at=item.published_at,
        first_seen_at=now,
        updated_at=now,
        content_hash=item.content_hash,
        tags=[],
    )
    try:
        with session.begin_nested():
            session.add(post)
    except IntegrityError:
        # Another feed stored the same article at the same moment: that post is this one.
        existing = session.scalars(
            select(Post).where(Post.url == item.url).options(selectinload(Post.tags))
        ).one()
        if existing.content_hash != item.content_hash:
            _update(existing, item)
        return existing, False
    return post, True


def _update(post: Post, item: Item) -> None:
    post.title = item.title
    post.summary_html = item.summary_html
    post.author = item.author or post.author
    post.published_at = post.published_at or item.published_at  # the first date stands
    post.content_hash = item.content_hash
