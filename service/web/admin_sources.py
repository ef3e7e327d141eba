"""Operators' JSON API over feed sources: list, add, change, delete, poll now."""

from __future__ import annotations

from typing import Annotated, Literal

import httpx
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.feeds import sources
from service.feeds.sources import PollQueue, SourceError, SourceInfo
from service.readers.schemas import Slug
from service.web.admin_errors import ADMIN_ERRORS, CONFLICT, INVALID, NOT_FOUND, answered
from service.web.deps import OperatorDep, RowId, SessionDep

router = APIRouter(prefix="/api/admin/sources", tags=["admin: sources"], responses=ADMIN_ERRORS)

Interval = Annotated[
    int,
    Field(
        ge=sources.MIN_INTERVAL_SECONDS,
        le=sources.MAX_INTERVAL_SECONDS,
        description="Seconds between polls before the poller adapts to the feed",
    ),
]


def get_polls(request: Request) -> PollQueue:
    polls: PollQueue = request.app.state.polls
    return polls


def get_feed_client() -> httpx.Client:
    from service.tasks import http_client  # the workers' client: same User-Agent and limits

    return http_client()


PollsDep = Annotated[PollQueue, Depends(get_polls)]
FeedClientDep = Annotated[httpx.Client, Depends(get_feed_client)]


class SourceIn(BaseModel):
    """A feed URL (RSS, Atom, JSON Feed) or a tag page that names its feed."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    tags: list[Slug] = Field(min_length=1, max_length=50)
    categories_as_tags: bool = False
    interval_seconds: Interval = 900


class SourcePatch(BaseModel):
    """What to change; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    tags: list[Slug] | None = Field(default=None, min_length=1, max_length=50)
    interval_seconds: Interval | None = None
    enabled: bool | None = None
    categories_as_tags: bool | None = None


class PollQueued(BaseModel):
    source_id: int
    queued: Literal[True] = True
    detail: str = (
        "Poll queued; a worker runs it shortly. The source's last_polled_at and last_result "
        "show the outcome."
    )


@router.get("")
def list_sources(session: SessionDep, _: OperatorDep) -> list[SourceInfo]:
    """Every source with its poll state: last result and error, errors in a row, next poll."""
    return sources.list_sources(session)


@router.post("", status_code=201, responses=CONFLICT | INVALID)
def add_source(
    body: SourceIn, session: SessionDep, client: FeedClientDep, _: OperatorDep
) -> SourceInfo:
    """Add a feed after fetching it once to check it is one (an HTML page's
    `<link rel=alternate>` is followed); 409 if it is already a source."""
    with answered(SourceError):
        source = sources.add_source(
            session,
            client,
            body.url,
            tag_slugs=body.tags,
            categories_as_tags=body.categories_as_tags,
            interval_seconds=body.interval_seconds,
        )
    info = SourceInfo.of(source)
    session.commit()
    return info


@router.get("/{source_id}", responses=NOT_FOUND)
def get_source(source_id: RowId, session: SessionDep, _: OperatorDep) -> SourceInfo:
    """One source with its poll state."""
    with answered(SourceError):
        return sources.get_source(session, source_id)


@router.patch("/{source_id}", responses=NOT_FOUND | INVALID)
def update_source(
    source_id: RowId, body: SourcePatch, session: SessionDep, _: OperatorDep
) -> SourceInfo:
    """Change tags (for posts stored from now on), interval, enabled or categories-as-tags.
    Enabling a disabled source clears its error count and polls it at the next tick."""
    with answered(SourceError):
        info = sources.update_source(
            session,
            source_id,
            tag_slugs=body.tags,
            interval_seconds=body.interval_seconds,
            enabled=body.enabled,
            categories_as_tags=body.categories_as_tags,
        )
    session.commit()
    return info


@router.delete("/{source_id}", status_code=204, responses=NOT_FOUND | CONFLICT)
def delete_source(source_id: RowId, session: SessionDep, _: OperatorDep) -> Response:
    """Stop polling the source and forget it; the posts it brought stay."""
    with answered(SourceError):
        sources.delete_source(session, source_id)
    session.commit()
    return Response(status_code=204)


@router.post("/{source_id}/poll", status_code=202, responses=NOT_FOUND | CONFLICT)
def poll_source(
    source_id: RowId, session: SessionDep, polls: PollsDep, _: OperatorDep
) -> PollQueued:
    """Poll the source now: the poll is queued for a worker (202), not run in the request;
    409 if the source is disabled."""
    with answered(SourceError):
        sources.poll_now(session, source_id, polls)
    session.commit()  # the task is sent after this commit
    return PollQueued(source_id=source_id)
