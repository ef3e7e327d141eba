"""Breaking news and edition figures for editors and operators (JSON).

Editors may preview and send breaking news, read every edition's figures and cancel a
breaking edition; cancelling a digest or instant mail is an operator's call (it is the
operators' programme, and one cancel stops mail to every reader of a schedule's period).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import select

from service.digests import breaking, editions
from service.digests.planning import Dispatch
from service.models import Edition, EditionKind, EditionStatus, Role
from service.web.admin_api import ADMIN_ERRORS
from service.web.deps import EditorDep, Offset, RowId, SessionDep, SettingsDep

router = APIRouter(tags=["editions"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such post or edition"}}


class BreakingIn(BaseModel):
    """The post by id or by URL (exactly one), an optional subject line, and whether only
    to preview."""

    model_config = ConfigDict(extra="forbid")

    post_id: Annotated[int, Field(ge=1)] | None = None
    url: AnyHttpUrl | None = None
    subject: Annotated[str, StringConstraints(max_length=breaking.SUBJECT_MAX)] | None = None
    dry_run: bool = False

    @model_validator(mode="after")
    def one_post(self) -> BreakingIn:
        if (self.post_id is None) == (self.url is None):
            raise ValueError("give either post_id or url")
        return self


class BreakingPreviewOut(BaseModel):
    dry_run: Literal[True] = True
    post_id: int
    post_title: str
    post_url: str
    readers: int = Field(description="Readers a send now would reach (0: it was sent before).")
    subject: str
    html: str = Field(description="The HTML part, for a placeholder reader.")
    text: str = Field(description="The text part, for a placeholder reader.")
    edition_id: int | None = Field(description="The post's edition, if it was triggered before.")


class BreakingSendOut(BaseModel):
    dry_run: Literal[False] = False
    edition_id: int
    created: bool = Field(description="False: the post's edition existed; nothing new was sent.")
    planned: int = Field(description="Deliveries this request planned.")
    status: str


class EditionOut(BaseModel):
    id: int
    key: str
    kind: str
    status: str
    title: str
    subject: str | None
    planned: int
    sent: int
    failed: int
    skipped: int
    suppressed: int
    unknown: int
    left: int
    progress: float = Field(description="Percent of planned deliveries in a final state.")
    paused_reason: str | None
    created_at: datetime
    finished_at: datetime | None


class EditionPageOut(BaseModel):
    items: list[EditionOut]
    total: int
    offset: int
    limit: int


class FeedbackOut(BaseModel):
    """Bounces and complaints reported for the sent deliveries, and their rates (0 to 1)."""

    sent: int
    bounced: int = Field(description="Sent deliveries with a hard or a soft bounce.")
    hard_bounced: int
    complained: int
    bounce_rate: float
    complaint_rate: float
    complaint_warning: bool = Field(description="The complaint rate is above 0.1%.")


class BackendOut(BaseModel):
    backend: str
    sent: int
    failed: int
    unknown: int
    sending: int
    retrying: int
    feedback: FeedbackOut


class ErrorOut(BaseModel):
    error: str
    backend: str | None
    count: int


class EditionDetailOut(EditionOut):
    queued: int
    sending: int
    cancelled: int
    post_id: int | None
    schedule_id: int | None
    period_start: datetime | None
    period_end: datetime | None
    first_sent_at: datetime | None
    last_sent_at: datetime | None
    backends: list[BackendOut]
    errors: list[ErrorOut]
    feedback: FeedbackOut


@router.post(
    "/api/admin/breaking",
    summary="Preview or send breaking news for one post",
    responses={**ADMIN_ERRORS, **NOT_FOUND},
)
def send_breaking(
    body: BreakingIn,
    session: SessionDep,
    settings: SettingsDep,
    dispatch: Annotated[Dispatch, Depends(get_breaking_dispatch)],
    _: EditorDep,
) -> BreakingPreviewOut | BreakingSendOut:
    """`dry_run`: how many readers a send reaches now (active readers of the post's tags with
    breaking alerts on, less suppressions) and the rendered mail. Otherwise: creates the post's
    one breaking edition and hands it to the workers' priority queue; a second request returns
    the same edition and sends nothing."""
    post: int | str = body.post_id if body.post_id is not None else str(body.url)
    try:
        if body.dry_run:
            preview = breaking.preview_breaking(session, settings, post, body.subject)
            return BreakingPreviewOut(**preview.__dict__)
        sent = breaking.trigger_breaking(session, post, dispatch, body.subject)
        return BreakingSendOut(**sent.__dict__)
    except breaking.PostNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    except breaking.BreakingError as exc:
        raise HTTPException(422, detail=str(exc)) from exc


@router.get("/api/admin/editions", summary="Editions, newest first", responses=ADMIN_ERRORS)
def list_editions(
    session: SessionDep,
    _: EditorDep,
    kind: EditionKind | None = None,
    status: EditionStatus | None = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> EditionPageOut:
    """Each edition with its figures: planned, sent, failed, skipped, suppressed, unknown."""
    page = editions.list_editions(session, kind=kind, status=status, offset=offset, limit=limit)
    return EditionPageOut(
        items=[EditionOut(**e.__dict__) for e in page.items],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
    )


@router.get(
    "/api/admin/editions/{edition_id}",
    summary="One edition's live figures",
    responses={**ADMIN_ERRORS, **NOT_FOUND},
)
def edition_detail(edition_id: RowId, session: SessionDep, _: EditorDep) -> EditionDetailOut:
    """Figures counted from the deliveries now (poll it while the edition sends), per
    backend, the first distinct errors, the pause reason and the timings."""
    try:
        return _detail_out(editions.edition_detail(session, edition_id))
    except editions.EditionNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc


@router.post(
    "/api/admin/editions/{edition_id}/cancel",
    summary="Cancel an edition",
    responses={
        **ADMIN_ERRORS,
        **NOT_FOUND,
        409: {"description": "The edition is done: nothing left to cancel"},
    },
)
def cancel_edition(edition_id: RowId, session: SessionDep, token: EditorDep) -> EditionDetailOut:
    """Stop what has not been handed to a sender: queued deliveries end `skipped`
    ("cancelled"); when this returns, nothing more of the edition goes out. Editors may cancel
    breaking news; other editions need an operator."""
    kind = session.scalar(select(Edition.kind).where(Edition.id == edition_id))
    if kind is None:
        raise HTTPException(404, detail=f"no edition {edition_id}")
    if not editions.may_cancel(Role(token.role), kind):
        raise HTTPException(403, detail="Only an operator may cancel this edition.")
    try:
        return _detail_out(editions.cancel_edition(session, edition_id))
    except editions.EditionNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    except editions.EditionFinished as exc:
        raise HTTPException(409, detail=str(exc)) from exc


def get_breaking_dispatch(request: Request) -> Dispatch:
    """The workers' priority queue; a test app puts its own hand-off in the app's state."""
    from service.tasks import dispatch_priority

    dispatch: Dispatch = getattr(request.app.state, "breaking_dispatch", dispatch_priority)
    return dispatch


def _detail_out(detail: editions.EditionDetail) -> EditionDetailOut:
    values = dict(detail.__dict__)
    values["backends"] = [
        BackendOut(**{**b.__dict__, "feedback": FeedbackOut(**b.feedback.__dict__)})
        for b in detail.backends
    ]
    values["errors"] = [ErrorOut(**e.__dict__) for e in detail.errors]
    values["feedback"] = FeedbackOut(**detail.feedback.__dict__)
    return EditionDetailOut(**values)
