"""Store normalized items as posts: one post per article, however many feeds carry it.

An item is matched to a post by this source's GUID, then by canonical URL, then by GUID from
any source; so the same article in two tag feeds is one post with both tags, and a GUID that
changes while the URL stays is still the same post. An edited item updates its post, so mail
rendered later shows the correction.

A batch costs a fixed handful of statements, whatever its size: one lookup, one
``INSERT … ON CONFLICT (url) DO NOTHING RETURNING`` for the new posts, one insert each for
post tags and source items, one executemany UPDATE for edited posts. A post that a concurrent
poll inserted between the lookup and the insert is found by its URL and treated as existing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Executable,
    String,
    Table,
    bindparam,
    func,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from service.feeds.types import Item
from service.models import Post, Source, SourceItem, Tag, post_tags

posts = cast(Table, Post.__table__)
source_items = cast(Table, SourceItem.__table__)


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


@dataclass(eq=False)
class _Post:
    """A post as the store needs it: existing (``id`` set) or about to be inserted."""

    id: int | None
    url: str
    content_hash: str
    values: dict[str, Any] | None = None  # the row to insert, or the columns to update
    tag_ids: set[int] = field(default_factory=set)


def store_items(
    session: Session,
    items: Sequence[Item],
    *,
    source: Source | None,
    tags: Sequence[Tag | int],
    now: datetime | None = None,
) -> StoreResult:
    """Insert or update ``items``; ``tags`` (or their ids) go on every one, plus categories if
    the source turns them into tags. ``source`` is None for posts pushed by the CMS."""
    now = now or datetime.now(UTC)
    result = StoreResult()
    unique = list({item.guid: item for item in reversed(items)}.values())[::-1]  # first wins
    if not unique:
        return result
    if session.new or session.dirty:
        session.flush()  # once, as autoflush would: what follows is Core, on the connection
    conn = session.connection()
    source_id = source.id if source is not None else None
    by_guid, by_url, by_any_guid = _existing(conn, source_id, unique)
    categories = _category_tags(session, unique) if source and source.categories_as_tags else {}
    tag_ids = {tag if isinstance(tag, int) else tag.id for tag in tags}
    new: dict[str, _Post] = {}  # by URL, in item order
    edited: dict[int, _Post] = {}
    links: list[tuple[_Post, str]] = []  # this source's GUIDs not yet linked to their post
    for item in unique:
        post = by_guid.get(item.guid) or by_url.get(item.url) or by_any_guid.get(item.guid)
        if post is None:
            post = new[item.url] = _Post(None, item.url, item.content_hash, _row(item, now))
            result.new += 1
        elif post.content_hash != item.content_hash:
            _edit(post, item)
            if post.id is not None:
                edited[post.id] = post
            result.updated += 1
        else:
            result.unchanged += 1
        post.tag_ids |= tag_ids
        if categories:
            post.tag_ids.update(categories[s].id for c in item.categories if (s := slugify(c)))
        if source_id is not None and item.guid not in by_guid:
            links.append((post, item.guid))
            by_guid[item.guid] = post
        by_url[item.url] = post
    for post in _insert(conn, list(new.values())):
        # Another poll stored the same article a moment ago: that post is this one, and
        # it takes this item's text if that differs.
        del new[post.url]
        result.new -= 1
        result.unchanged += 1
        if post.content_hash != cast(dict[str, Any], post.values)["content_hash"]:
            edited[cast(int, post.id)] = post
    result.new_post_ids = [cast(int, p.id) for p in new.values()]
    _update(conn, edited.values())
    _link(conn, list({id(p): p for p in by_url.values()}.values()), links, source_id)
    _expire(session, by_url.values())  # every post the batch touched
    return result


def _row(item: Item, now: datetime) -> dict[str, Any]:
    return {
        "url": item.url,
        "guid": item.guid,
        "title": item.title,
        "summary_html": item.summary_html,
        "author": item.author,
        "published_at": item.published_at,
        "first_seen_at": now,
        "updated_at": now,
        "content_hash": item.content_hash,
    }


def _edit(post: _Post, item: Item) -> None:
    """The edited item's text on the post; its first date and a known author stand."""
    if post.values is None:  # a stored post: the UPDATE keeps its date and author (COALESCE)
        post.values = {"author": item.author, "published_at": item.published_at}
    else:  # a row this batch inserts: merge the edit into it
        post.values["author"] = item.author or post.values["author"]
        post.values["published_at"] = post.values["published_at"] or item.published_at
    post.values |= {
        "title": item.title,
        "summary_html": item.summary_html,
        "content_hash": item.content_hash,
    }
    post.content_hash = item.content_hash


def _existing(
    conn: Connection, source_id: int | None, items: Sequence[Item]
) -> tuple[dict[str, _Post], dict[str, _Post], dict[str, _Post]]:
    """The three lookups for the whole batch in one statement of (kind, key, post) rows."""
    params = {"urls": [i.url for i in items], "guids": [i.guid for i in items]}
    if source_id is None:
        rows = conn.execute(_LOOKUP, params)
    else:
        rows = conn.execute(_LOOKUP_IN_SOURCE, params | {"source_id": source_id})
    known: dict[int, _Post] = {}  # one object per post, however many keys reach it
    found: dict[str, dict[str, _Post]] = {"g": {}, "u": {}, "a": {}}
    for kind, key, post_id, url, content_hash in rows:
        found[kind][key] = known.setdefault(post_id, _Post(post_id, url, content_hash))
    return found["g"], found["u"], found["a"]


def _category_tags(session: Session, items: Sequence[Item]) -> dict[str, Tag]:
    """The tags of every item's categories, by slug: one lookup for the batch."""
    names: dict[str, str] = {}
    for item in items:
        for slug, name in {slugify(c): c for c in item.categories}.items():
            if slug:
                names.setdefault(slug, name)  # named as the first item names it
    return {tag.slug: tag for tag in tags_for(session, names.values())} if names else {}


def _insert(conn: Connection, new: list[_Post]) -> list[_Post]:
    """Insert the new posts and set their ids. Those another poll inserted first come back
    holding the stored post's id and content hash (``values`` still holds this batch's row)."""
    if not new:
        return []
    # Sorted by URL: concurrent batches take the unique index's locks in one order (no deadlock).
    rows = sorted((cast(dict[str, Any], p.values) for p in new), key=lambda r: r["url"])
    returned = conn.execute(_INSERTS[conn.dialect.name].posts, rows)
    inserted: dict[str, int] = {url: post_id for url, post_id in returned}
    lost = []
    for post in new:
        post.id = inserted.get(post.url)
        if post.id is None:
            lost.append(post)
    if lost:
        stored = conn.execute(_BY_URL, {"urls": [p.url for p in lost]})
        by_url = {p.url: p for p in lost}
        for url, post_id, content_hash in stored:
            by_url[url].id, by_url[url].content_hash = post_id, content_hash
    return lost


def _update(conn: Connection, edited: Iterable[_Post]) -> None:
    """Edited posts in one executemany UPDATE; the first date and a known author stand."""
    rows = [
        {"b_id": p.id, **{f"b_{k}": cast(dict[str, Any], p.values)[k] for k in _UPDATED}}
        for p in sorted(edited, key=lambda p: cast(int, p.id))  # one lock order
    ]
    if rows:
        conn.execute(_UPDATE, rows)


def _link(
    conn: Connection, every: list[_Post], links: list[tuple[_Post, str]], source_id: int | None
) -> None:
    """Post tags and source items, one insert each; links that exist already are skipped."""
    pairs = sorted({(cast(int, p.id), tag_id) for p in every for tag_id in p.tag_ids})
    if pairs:
        rows = [{"post_id": p, "tag_id": t} for p, t in pairs]
        conn.execute(_INSERTS[conn.dialect.name].post_tags, rows)
    if links and source_id is not None:
        links_rows = [{"source_id": source_id, "guid": g, "post_id": p.id} for p, g in links]
        conn.execute(_INSERTS[conn.dialect.name].source_items, links_rows)


def _expire(session: Session, touched: Iterable[_Post]) -> None:
    """Posts this session already holds reload what the statements above changed."""
    if not session.identity_map:
        return
    for post in touched:
        held = session.identity_map.get(identity_key(Post, post.id))
        if held is not None:
            session.expire(held)


# -- statements, built once: a statement object keeps its cache key, so running one again skips
# building and hashing it (a third of the store's time went there) --------------------------------

_c = posts.c
_POST_COLUMNS = (_c.id, _c.url, _c.content_hash)
_URLS = bindparam("urls", type_=String, expanding=True)
_GUIDS = bindparam("guids", type_=String, expanding=True)
_BY_URL = select(_c.url, _c.id, _c.content_hash).where(_c.url.in_(_URLS))
_LOOKUPS = (
    select(literal_column("'u'"), _c.url, *_POST_COLUMNS).where(_c.url.in_(_URLS)),
    select(literal_column("'a'"), _c.guid, *_POST_COLUMNS).where(_c.guid.in_(_GUIDS)),
)
_LOOKUP = union_all(*_LOOKUPS)
_LOOKUP_IN_SOURCE = union_all(
    *_LOOKUPS,
    select(literal_column("'g'"), source_items.c.guid, *_POST_COLUMNS)
    .join(posts, _c.id == source_items.c.post_id)
    .where(source_items.c.source_id == bindparam("source_id"), source_items.c.guid.in_(_GUIDS)),
)
_UPDATED = ("title", "summary_html", "author", "published_at", "content_hash")
_UPDATE = (
    update(posts)
    .where(_c.id == bindparam("b_id"))
    .values(
        title=bindparam("b_title", type_=_c.title.type),
        summary_html=bindparam("b_summary_html", type_=_c.summary_html.type),
        author=func.coalesce(bindparam("b_author", type_=_c.author.type), _c.author),
        published_at=func.coalesce(
            _c.published_at, bindparam("b_published_at", type_=_c.published_at.type)
        ),
        content_hash=bindparam("b_content_hash", type_=_c.content_hash.type),
    )
)


@dataclass(frozen=True)
class _Inserts:
    """The ON CONFLICT DO NOTHING inserts, in one SQL dialect's spelling."""

    posts: Executable
    post_tags: Executable
    source_items: Executable

    @classmethod
    def using(cls, insert: Callable[[Table], postgresql.Insert | sqlite.Insert]) -> _Inserts:
        return cls(
            posts=insert(posts)
            .on_conflict_do_nothing(index_elements=["url"])
            .returning(_c.url, _c.id),
            # RETURNING (read by no one) makes SQLAlchemy send the rows as one multi-row
            # INSERT; without it psycopg runs an executemany as one query per row.
            post_tags=insert(post_tags).on_conflict_do_nothing().returning(post_tags.c.post_id),
            source_items=insert(source_items)
            .on_conflict_do_nothing(index_elements=["source_id", "guid"])
            .returning(source_items.c.id),
        )


_INSERTS = {
    "postgresql": _Inserts.using(postgresql.insert),
    "sqlite": _Inserts.using(sqlite.insert),
}
