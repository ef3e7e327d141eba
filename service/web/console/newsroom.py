"""The newsroom's console pages: editions and their live figures, breaking news, templates."""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from starlette.datastructures import FormData

from service.bounces import figures
from service.digests import breaking, editions, preview
from service.digests.planning import Dispatch
from service.models import EditionKind, EditionStatus, Post, Role
from service.tasks import enqueue, send_template_test
from service.web import csrf
from service.web.admin_bulk import SampleSendIn
from service.web.admin_editions import get_breaking_dispatch
from service.web.console.auth import ConsoleRoute, EditorPage, OperatorPage
from service.web.console.render import page, sandboxed
from service.web.deps import Offset, RowId, SessionDep, SettingsDep
from service.web.pages import FormDep, error_page, when

router = APIRouter(route_class=ConsoleRoute)

FIGURES = ["planned", "sent", "failed", "skipped", "suppressed", "unknown", "queued", "sending"]
PAGE_SIZE = 25
BreakingDispatch = Annotated[Dispatch, Depends(get_breaking_dispatch)]


def _percent(progress: float) -> int:
    return math.floor(progress)  # 100% only when every delivery is final


# -- editions -------------------------------------------------------------------------------


@router.get("/admin/editions", response_class=HTMLResponse)
def editions_page(
    request: Request,
    editor: EditorPage,
    session: SessionDep,
    kind: EditionKind | None = None,
    status: EditionStatus | None = None,
    offset: Offset = 0,
) -> HTMLResponse:
    found = editions.list_editions(
        session, kind=kind, status=status, offset=offset, limit=PAGE_SIZE
    )
    filters = {name: v.value for name, v in (("kind", kind), ("status", status)) if v}

    def at(start: int) -> str:
        return "/admin/editions?" + urlencode({**filters, "offset": start})

    context = {
        "editions": found.items,
        "kinds": [k.value for k in EditionKind],
        "statuses": [s.value for s in EditionStatus],
        "kind": kind.value if kind else "",
        "status": status.value if status else "",
        "newer": at(max(0, offset - PAGE_SIZE)) if offset else None,
        "older": at(offset + PAGE_SIZE) if offset + PAGE_SIZE < found.total else None,
    }
    return page(request, editor, "editions.html", context, section="editions")


@router.get("/admin/editions/{edition_id}", response_class=HTMLResponse)
def edition_page(
    request: Request, edition_id: RowId, editor: EditorPage, session: SessionDep
) -> HTMLResponse:
    try:
        detail = editions.edition_detail(session, edition_id)
    except editions.EditionNotFound:
        return error_page(request, 404, link=("/admin/editions", "All editions"))
    live = detail.status in (EditionStatus.PLANNED, EditionStatus.SENDING)
    context = {
        "e": detail,
        "percent": _percent(detail.progress),
        "figure_names": FIGURES,
        "can_cancel": live and editions.may_cancel(editor.role, detail.kind),
        "rate": figures.percent,
        "complaint_limit": figures.percent(figures.COMPLAINT_WARNING),
    }
    return page(request, editor, "edition.html", context, section="editions")


@router.get("/admin/editions/{edition_id}/figures")
def edition_figures(edition_id: RowId, _: EditorPage, session: SessionDep) -> Response:
    """What the edition page polls while the edition sends."""
    try:
        detail = editions.edition_detail(session, edition_id)
    except editions.EditionNotFound:
        return JSONResponse({"detail": "no such edition"}, status_code=404)
    body: dict[str, Any] = {name: getattr(detail, name) for name in FIGURES}
    body |= {
        "status": detail.status,
        "percent": _percent(detail.progress),
        "paused_reason": detail.paused_reason,
        "finished_at": when(detail.finished_at) if detail.finished_at else None,
        "first_sent_at": when(detail.first_sent_at) if detail.first_sent_at else None,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/admin/editions/{edition_id}/cancel")
def cancel(
    request: Request, edition_id: RowId, form: FormDep, editor: EditorPage, session: SessionDep
) -> Response:
    csrf.verify(request, form.get(csrf.FIELD))
    try:
        detail = editions.edition_detail(session, edition_id)
        if not editions.may_cancel(Role(editor.role), detail.kind):
            return error_page(request, 403, message="Only an operator may cancel this edition.")
        editions.cancel_edition(session, edition_id)
    except editions.EditionNotFound:
        return error_page(request, 404)
    except editions.EditionFinished as exc:
        return error_page(request, 409, title="Already finished", message=str(exc))
    return RedirectResponse(f"/admin/editions/{edition_id}", status_code=303)


# -- breaking news --------------------------------------------------------------------------


def _breaking_page(
    request: Request,
    editor: EditorPage,
    session: SessionDep,
    values: dict[str, str],
    *,
    preview: dict[str, Any] | None = None,
    error: str | None = None,
) -> HTMLResponse:
    recent = session.execute(select(Post.id, Post.title).order_by(Post.id.desc()).limit(5)).all()
    context = {"values": values, "preview": preview, "error": error, "recent": recent}
    status = 422 if error else 200
    return page(request, editor, "breaking.html", context, section="breaking", status=status)


def _values(form: FormData) -> dict[str, str]:
    """The form's post and subject, as typed (kept when the page comes back with an error)."""
    return {name: str(form.get(name) or "").strip() for name in ("post", "subject")}


@router.get("/admin/breaking", response_class=HTMLResponse)
def breaking_form(
    request: Request, editor: EditorPage, session: SessionDep, post: str = ""
) -> HTMLResponse:
    return _breaking_page(request, editor, session, {"post": post[:2000], "subject": ""})


@router.post("/admin/breaking/preview", response_class=HTMLResponse)
def breaking_preview(
    request: Request,
    form: FormDep,
    editor: EditorPage,
    session: SessionDep,
    settings: SettingsDep,
) -> HTMLResponse:
    csrf.verify(request, form.get(csrf.FIELD))
    values = _values(form)
    try:
        found = breaking.preview_breaking(session, settings, values["post"], values["subject"])
    except breaking.BreakingError as exc:
        return _breaking_page(request, editor, session, values, error=str(exc))
    frame = "/admin/breaking/preview.html?" + urlencode(values)
    preview = {
        "readers": found.readers,
        "subject": found.subject,
        "text": found.text,
        "frame": frame,
        "already": found.edition_id,
    }
    return _breaking_page(request, editor, session, values, preview=preview)


@router.get("/admin/breaking/preview.html")
def breaking_preview_html(
    request: Request,
    _: EditorPage,
    session: SessionDep,
    settings: SettingsDep,
    post: str = "",
    subject: str = "",
) -> Response:
    """The preview's HTML part, for the page's sandboxed frame."""
    try:
        found = breaking.preview_breaking(session, settings, post, subject or None)
    except breaking.BreakingError as exc:
        return error_page(request, 404, message=str(exc))
    return sandboxed(found.html)


@router.post("/admin/breaking/send")
def breaking_send(
    request: Request,
    form: FormDep,
    editor: EditorPage,
    session: SessionDep,
    dispatch: BreakingDispatch,
) -> Response:
    csrf.verify(request, form.get(csrf.FIELD))
    values = _values(form)
    try:
        sent = breaking.trigger_breaking(session, values["post"], dispatch, values["subject"])
    except breaking.BreakingError as exc:
        return _breaking_page(request, editor, session, values, error=str(exc))
    return RedirectResponse(f"/admin/editions/{sent.edition_id}", status_code=303)


# -- templates ------------------------------------------------------------------------------


def _template_names() -> list[str]:
    return [name for name, _ in preview.templates()]


@router.get("/admin/templates", response_class=HTMLResponse)
def templates_page(request: Request, editor: EditorPage) -> Response:
    names = _template_names()
    if not names:
        context: dict[str, Any] = {
            "templates": [],
            "name": "",
            "preview": None,
            "to": None,
            "error": None,
        }
        return page(request, editor, "templates.html", context, section="templates")
    return RedirectResponse(f"/admin/templates/{names[0]}", status_code=303)


def _template_page(
    request: Request,
    editor: EditorPage,
    settings: SettingsDep,
    name: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    to: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    if name not in _template_names():
        return error_page(request, 404, link=("/admin/templates", "All templates"))
    context = {
        "templates": _template_names(),
        "name": name,
        "preview": preview.sample(settings, name),
        "to": to,
        "error": error,
    }
    return page(
        request,
        editor,
        "templates.html",
        context,
        section="templates",
        notice=notice,
        status=status,
    )


@router.get("/admin/templates/{name}", response_class=HTMLResponse)
def template_page(
    request: Request, name: str, editor: EditorPage, settings: SettingsDep
) -> HTMLResponse:
    return _template_page(request, editor, settings, name)


@router.get("/admin/templates/{name}/preview.html")
def template_html(request: Request, name: str, _: EditorPage, settings: SettingsDep) -> Response:
    """The sample's HTML part, for the page's sandboxed frame."""
    if name not in _template_names():
        return error_page(request, 404)
    return sandboxed(preview.sample(settings, name).html)


@router.post("/admin/templates/{name}/test-send", response_class=HTMLResponse)
def template_test_send(
    request: Request,
    name: str,
    form: FormDep,
    editor: OperatorPage,
    session: SessionDep,
    settings: SettingsDep,
) -> HTMLResponse:
    csrf.verify(request, form.get(csrf.FIELD))
    to = str(form.get("to") or "").strip()
    try:
        address = SampleSendIn(to=to).to
    except ValidationError:
        error = "That is not an email address we can send to."
        return _template_page(request, editor, settings, name, error=error, to=to, status=422)
    if name not in _template_names():
        return error_page(request, 404)
    enqueue(session, send_template_test, name, address)
    session.commit()
    notice = f"A test of “{name}” is on its way to {address}."
    return _template_page(request, editor, settings, name, notice=notice, to=address)
