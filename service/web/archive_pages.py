"""The public archive pages (ARCHITECTURE.md, "HTTP"): `/archive/{tag}`, one edition per tag,
and `/archive/editions/{id}`, the page a mail's "View in browser" opens.

Nothing here depends on who asks: the pages carry no reader's name or token, so they are
cacheable (an ETag from what they show, answered with 304, and `Cache-Control: public`). What an
edition carried comes from `service.digests.archive`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from service.digests import archive
from service.web.deps import SessionDep
from service.web.pages import PageRoute, error_page, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# A finished edition's page changes only when a post is edited; one still sending, every batch.
MAX_AGE_DONE, MAX_AGE_OPEN = 3600, 60
MAX_TAGS = 50  # a ?tags= list longer than anyone follows is cut here


def _headers(version: str, max_age: int) -> dict[str, str]:
    return {"ETag": f'"{version}"', "Cache-Control": f"public, max-age={max_age}"}


def _matches(request: Request, version: str) -> bool:
    sent = request.headers.get("if-none-match", "")
    return f'"{version}"' in [t.strip() for t in sent.split(",")]


def _answer(
    request: Request, version: str, max_age: int, page: Callable[[], HTMLResponse]
) -> Response:
    """304 when the client holds this version, else the page, with cache headers either way."""
    headers = _headers(version, max_age)
    if _matches(request, version):
        # No new Content-Security-Policy: its nonce must stay the one of the stored body.
        return Response(status_code=304, headers=headers)
    response = page()
    response.headers.update(headers)  # after render(), which says no-store by default
    return response


def _not_found(request: Request) -> HTMLResponse:
    return error_page(
        request, 404, message="There is no such edition in the archive.", link=("/", "Subscribe")
    )


def _edition_id(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None


def _edition(
    request: Request, session: Session, edition_id: int, slugs: list[str] | None, tag: str | None
) -> Response:
    page = archive.edition_page(session, edition_id, slugs)
    if page is None or (tag is not None and [s.slug for s in page.sections] != [tag]):
        return _not_found(request)
    max_age = MAX_AGE_DONE if page.edition.done else MAX_AGE_OPEN
    context = {"page": page, "tag": tag}
    return _answer(
        request,
        f"{page.version}-{tag or ''}",
        max_age,
        lambda: render(request, "archive_edition.html", context),
    )


@router.get("/archive/editions/{edition_id}", response_model=None)
def edition(
    request: Request,
    edition_id: str,
    session: SessionDep,
    tags: Annotated[str | None, Query(max_length=5000)] = None,
) -> Response:
    """A sent edition as a web page; ``tags`` (comma-separated slugs) shows those tags' posts in
    that order, as the mail did, else every tag it carried."""
    number = _edition_id(edition_id)
    if number is None:
        return _not_found(request)
    slugs = [s.strip() for s in tags.split(",") if s.strip()][:MAX_TAGS] if tags else None
    return _edition(request, session, number, slugs, None)


@router.get("/archive/{tag}", response_model=None)
def tag_archive(
    request: Request,
    tag: str,
    session: SessionDep,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    """The tag's sent editions, newest first; ``before`` pages to older ones."""
    found = archive.tag_archive(session, tag, before=before)
    if found is None:
        return error_page(request, 404, message="There is no such topic.", link=("/", "Subscribe"))
    context = {"archive": found, "before": before}
    return _answer(
        request, found.version, MAX_AGE_OPEN, lambda: render(request, "archive_tag.html", context)
    )


@router.get("/archive/{tag}/{edition_id}", response_model=None)
def tag_edition(request: Request, tag: str, edition_id: str, session: SessionDep) -> Response:
    """One sent edition of the tag: the posts of that tag it carried."""
    number = _edition_id(edition_id)
    if number is None:
        return _not_found(request)
    return _edition(request, session, number, [tag], tag)
