"""Each tag as an Atom feed and a JSON Feed, with an ETag so readers' clients can poll cheaply."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.models import Post, Tag, post_tags
from service.web.deps import SessionDep, SettingsDep

router = APIRouter(tags=["feeds"])

LIMIT = 50
FEED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/atom+xml": {}, "application/feed+json": {}}},
    304: {"description": "Not modified since the ETag sent"},
    404: {"description": "No such tag"},
}
ATOM = "http://www.w3.org/2005/Atom"


def _tag_and_posts(session: Session, slug: str) -> tuple[Tag, list[Post]]:
    tag = session.scalars(select(Tag).where(Tag.slug == slug)).one_or_none()
    if tag is None:
        raise HTTPException(404, detail="No such tag.")
    when = func.coalesce(Post.published_at, Post.first_seen_at)
    posts = list(
        session.scalars(
            select(Post)
            .join(post_tags, post_tags.c.post_id == Post.id)
            .where(post_tags.c.tag_id == tag.id)
            .order_by(when.desc(), Post.id.desc())
            .limit(LIMIT)
        )
    )
    return tag, posts


def _etag(kind: str, tag: Tag, posts: list[Post]) -> str:
    # Changes when a post is added, removed or edited; cheap to compare.
    state = "|".join(f"{p.id}:{p.content_hash}" for p in posts)
    return (
        '"'
        + hashlib.sha256(f"{kind}|{tag.slug}|{tag.name}|{state}".encode()).hexdigest()[:32]
        + '"'
    )


def _when(post: Post) -> datetime:
    return post.published_at or post.first_seen_at


def _not_modified(request: Request, etag: str) -> bool:
    sent = request.headers.get("if-none-match", "")
    return etag in [t.strip() for t in sent.split(",")] or sent.strip() == "*"


@router.get("/feeds/{slug}.atom", response_class=Response, responses=FEED_RESPONSES)
def atom(slug: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """The tag's latest posts as Atom 1.0."""
    return _serve(request, session, settings, slug, "atom")


@router.get("/feeds/{slug}.json", response_class=Response, responses=FEED_RESPONSES)
def json_feed(slug: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """The tag's latest posts as JSON Feed 1.1."""
    return _serve(request, session, settings, slug, "json")


def _serve(
    request: Request, session: Session, settings: Settings, slug: str, kind: str
) -> Response:
    tag, posts = _tag_and_posts(session, slug)
    etag = _etag(kind, tag, posts)
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    if kind == "atom":
        body = ET.tostring(_atom(tag, posts, settings), encoding="utf-8", xml_declaration=True)
        return Response(body, media_type="application/atom+xml; charset=utf-8", headers=headers)
    feed = jsonable_encoder(_json_feed(tag, posts, settings))
    return JSONResponse(feed, media_type="application/feed+json", headers=headers)


def _atom(tag: Tag, posts: list[Post], settings: Settings) -> ET.Element:
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    self_url = f"{settings.base_url}/feeds/{tag.slug}.atom"

    def add(parent: ET.Element, name: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{name}", attrs)
        element.text = text
        return element

    add(feed, "id", self_url)
    add(feed, "title", f"{settings.display_name}: {tag.name}")
    add(feed, "updated", max((_when(p) for p in posts), default=datetime.now(UTC)).isoformat())
    add(feed, "link", rel="self", href=self_url, type="application/atom+xml")
    add(feed, "link", rel="alternate", href=f"{settings.base_url}/archive/{tag.slug}")
    for post in posts:
        entry = add(feed, "entry")
        add(entry, "id", post.guid if post.guid.startswith(("http", "urn:", "tag:")) else post.url)
        add(entry, "title", post.title)
        add(entry, "link", rel="alternate", href=post.url)
        add(entry, "published", _when(post).isoformat())
        add(entry, "updated", post.updated_at.isoformat())
        if post.author:
            add(add(entry, "author"), "name", post.author)
        add(entry, "summary", post.summary_html, type="html")  # sanitized when stored
    return feed


def _json_feed(tag: Tag, posts: list[Post], settings: Settings) -> dict[str, Any]:
    return {
        "version": "https://jsonfeed.org/version/1.1",
        "title": f"{settings.display_name}: {tag.name}",
        "home_page_url": f"{settings.base_url}/archive/{tag.slug}",
        "feed_url": f"{settings.base_url}/feeds/{tag.slug}.json",
        "items": [
            {
                "id": post.guid,
                "url": post.url,
                "title": post.title,
                "content_html": post.summary_html,
                "date_published": _when(post).isoformat(),
                "date_modified": post.updated_at.isoformat(),
                **({"authors": [{"name": post.author}]} if post.author else {}),
                "tags": [tag.name],
            }
            for post in posts
        ],
    }
