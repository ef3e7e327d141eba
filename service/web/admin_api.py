"""The operators' JSON API. Here: the CMS push of a post, the webhook alternative to polling."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.feeds.normalize import normalize_entry
from service.feeds.store import store_items, tags_for
from service.feeds.types import FeedEntry
from service.models import Post
from service.readers.schemas import Slug
from service.web.deps import AnnouncerDep, OperatorDep, SessionDep

router = APIRouter(tags=["admin"])

Text = Annotated[str, StringConstraints(max_length=1000)]
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid admin token"},
    403: {"description": "The token's role may not do this"},
}


class IngestIn(BaseModel):
    """One post as the CMS publishes it; cleaned exactly like a polled feed item."""

    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    title: Text
    summary_html: Annotated[str, StringConstraints(max_length=200_000)] = ""
    author: Annotated[str, StringConstraints(max_length=300)] | None = None
    published_at: datetime | None = None
    guid: Annotated[str, StringConstraints(max_length=2000)] | None = None
    tags: list[Slug] = Field(min_length=1, max_length=50)


class IngestOut(BaseModel):
    post_id: int
    result: Literal["new", "updated", "unchanged"]


@router.post("/api/admin/ingest", responses=ADMIN_ERRORS)
def ingest(
    body: IngestIn, session: SessionDep, announcer: AnnouncerDep, _: OperatorDep
) -> IngestOut:
    """Store (or update) one post pushed by the CMS on publish; a new one goes to the tags'
    instant readers at once."""
    now = datetime.now(UTC)
    entry = FeedEntry(
        guid=body.guid,
        link=str(body.url),
        title=body.title,
        summary=body.summary_html,
        author=body.author,
        published=body.published_at,
    )
    item = normalize_entry(entry, feed_url=str(body.url), site_url=None, now=now)
    if item is None:
        raise HTTPException(422, detail="The post has no usable http(s) URL.")
    result = store_items(session, [item], source=None, tags=tags_for(session, body.tags), now=now)
    if result.new_post_ids:
        announcer.new_posts(session, result.new_post_ids)
    session.commit()
    post_id = result.new_post_ids[0] if result.new_post_ids else _post_id(session, item.url)
    outcome: Literal["new", "updated", "unchanged"] = (
        "new" if result.new else "updated" if result.updated else "unchanged"
    )
    return IngestOut(post_id=post_id, result=outcome)


def _post_id(session: Session, url: str) -> int:
    return session.scalars(select(Post.id).where(Post.url == url)).one()
