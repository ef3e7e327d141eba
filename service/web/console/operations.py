"""The operators' console pages: sources, schedules, suppressions, subscribers.

Each form calls the same service function as the admin JSON API; a refusal comes back as the
page with the service's own message, a success as a redirect to the page with a notice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile  # what request.form() gives

from service.digests import schedules
from service.errors import http_status
from service.feeds import sources
from service.models import Cadence
from service.readers import bulk
from service.readers.lookup import find_subscribers
from service.suppressions import (
    SuppressionError,
    add_suppression,
    lift_history,
    lift_suppression,
)
from service.suppressions import search_suppressions as search
from service.web import csrf
from service.web.admin_bulk import MAX_IMPORT_BYTES
from service.web.admin_sources import FeedClientDep, PollsDep
from service.web.console.auth import ConsoleRoute, OperatorPage
from service.web.console.render import page
from service.web.deps import NotifierDep, RowId, SessionDep, SettingsDep
from service.web.pages import FormDep

router = APIRouter(route_class=ConsoleRoute)

# What a redirect's `?done=` shows: fixed texts, so a link cannot put words on the page.
NOTICES = {
    "added": "Added.",
    "saved": "Saved.",
    "removed": "Removed.",
    "polling": "Poll queued: a worker fetches the feed now; reload to see the result.",
    "lifted": "Suppression lifted: the address may be mailed again.",
    "suppressed": "The address is suppressed: nothing more goes to it.",
}


# The add-schedule form's starting values.
NEW_SCHEDULE = {
    "name": "",
    "cadence": "daily",
    "weekday": "",
    "send_time": "07:00",
    "template": "digest",
}


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _done(path: str, what: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?done={what}", status_code=303)


def _show(
    request: Request,
    editor: OperatorPage,
    section: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    done: str | None = None,
) -> HTMLResponse:
    """The section's page (`admin/<section>.html`), with a notice after a redirect."""
    return page(
        request,
        editor,
        f"{section}.html",
        context,
        section=section,
        status=status,
        notice=NOTICES.get(done or ""),
    )


def _interval(seconds: int) -> str:
    return f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds // 60} min"


# -- sources --------------------------------------------------------------------------------


def _sources_page(
    request: Request,
    editor: OperatorPage,
    session: SessionDep,
    *,
    values: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
    done: str | None = None,
) -> HTMLResponse:
    rows = [
        {**info.__dict__, "interval_text": _interval(info.interval_seconds)}
        for info in sources.list_sources(session)
    ]
    context: dict[str, Any] = {
        "sources": rows,
        "values": values or {"url": "", "tags": ""},
        "error": error,
    }
    return _show(request, editor, "sources", context, status=status, done=done)


@router.get("/admin/sources", response_class=HTMLResponse)
def sources_page(
    request: Request, editor: OperatorPage, session: SessionDep, done: str | None = None
) -> HTMLResponse:
    return _sources_page(request, editor, session, done=done)


@router.post("/admin/sources", response_class=HTMLResponse)
def add_source(
    request: Request,
    form: FormDep,
    editor: OperatorPage,
    session: SessionDep,
    client: FeedClientDep,
) -> Response:
    csrf.verify(request, form.get(csrf.FIELD))
    values = {"url": _text(form, "url"), "tags": _text(form, "tags")}
    slugs = [t.strip().lower() for t in values["tags"].replace(";", ",").split(",") if t.strip()]
    try:
        sources.add_source(session, client, values["url"], tag_slugs=slugs)
    except sources.SourceError as exc:
        session.rollback()
        return _sources_page(
            request, editor, session, values=values, error=str(exc), status=http_status(exc)
        )
    session.commit()
    return _done("/admin/sources", "added")


@router.post("/admin/sources/{source_id}/{action}", response_class=HTMLResponse)
def change_source(
    request: Request,
    source_id: RowId,
    action: str,
    form: FormDep,
    editor: OperatorPage,
    session: SessionDep,
    polls: PollsDep,
) -> Response:
    csrf.verify(request, form.get(csrf.FIELD))
    try:
        if action == "poll":
            sources.poll_now(session, source_id, polls)
        elif action in ("enable", "disable"):
            sources.update_source(session, source_id, enabled=action == "enable")
        elif action == "delete":
            sources.delete_source(session, source_id)
        else:
            return _sources_page(request, editor, session, error="Unknown action.", status=404)
    except sources.SourceError as exc:
        session.rollback()
        return _sources_page(request, editor, session, error=str(exc), status=http_status(exc))
    session.commit()  # a poll's task is sent after this
    done = {"poll": "polling", "delete": "removed"}.get(action, "saved")
    return _done("/admin/sources", done)


# -- schedules ------------------------------------------------------------------------------


def _schedules_page(
    request: Request,
    editor: OperatorPage,
    session: SessionDep,
    *,
    values: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
    done: str | None = None,
) -> HTMLResponse:
    context: dict[str, Any] = {
        "schedules": schedules.describe_schedules(session, datetime.now(UTC)),
        "values": NEW_SCHEDULE | (values or {}),
        "error": error,
    }
    return _show(request, editor, "schedules", context, status=status, done=done)


@router.get("/admin/schedules", response_class=HTMLResponse)
def schedules_page(
    request: Request, editor: OperatorPage, session: SessionDep, done: str | None = None
) -> HTMLResponse:
    return _schedules_page(request, editor, session, done=done)


@router.post("/admin/schedules", response_class=HTMLResponse)
def add_schedule(
    request: Request, form: FormDep, editor: OperatorPage, session: SessionDep
) -> Response:
    csrf.verify(request, form.get(csrf.FIELD))
    names = ("name", "cadence", "weekday", "send_time", "template")
    values = {name: _text(form, name) for name in names}
    try:
        schedules.add_schedule(
            session,
            values["name"],
            schedules.parse_cadence(values["cadence"] or Cadence.DAILY.value),
            at=schedules.parse_time(values["send_time"] or "07:00"),
            weekday=schedules.parse_weekday(values["weekday"] or None),
            template=values["template"] or "digest",
        )
    except schedules.ScheduleError as exc:
        session.rollback()
        return _schedules_page(
            request, editor, session, values=values, error=str(exc), status=http_status(exc)
        )
    session.commit()
    return _done("/admin/schedules", "added")


@router.post("/admin/schedules/{schedule_id}", response_class=HTMLResponse)
def change_schedule(
    request: Request, schedule_id: RowId, form: FormDep, editor: OperatorPage, session: SessionDep
) -> Response:
    csrf.verify(request, form.get(csrf.FIELD))
    try:
        schedule = schedules.find_schedule(session, schedule_id, lock=True)
        at = _text(form, "send_time")
        schedules.update_schedule(
            session,
            schedule,
            at=schedules.parse_time(at) if at else None,
            enabled=_text(form, "enabled") == "1" if "enabled" in form else None,
        )
    except schedules.ScheduleError as exc:
        session.rollback()
        return _schedules_page(request, editor, session, error=str(exc), status=http_status(exc))
    session.commit()
    return _done("/admin/schedules", "saved")


# -- suppressions ---------------------------------------------------------------------------


def _suppressions_page(
    request: Request,
    editor: OperatorPage,
    session: SessionDep,
    q: str | None = None,
    *,
    error: str | None = None,
    status: int = 200,
    done: str | None = None,
) -> HTMLResponse:
    found = search(session, q or None, limit=100)
    context = {
        "suppressions": found.items,
        "total": found.total,
        "lifts": lift_history(session, q or None, limit=50),
        "q": q,
        "error": error,
    }
    return _show(request, editor, "suppressions", context, status=status, done=done)


@router.get("/admin/suppressions", response_class=HTMLResponse)
def suppressions_page(
    request: Request,
    editor: OperatorPage,
    session: SessionDep,
    q: str | None = None,
    done: str | None = None,
) -> HTMLResponse:
    return _suppressions_page(request, editor, session, (q or "")[:320], done=done)


@router.post("/admin/suppressions", response_class=HTMLResponse)
def suppress(
    request: Request, form: FormDep, editor: OperatorPage, session: SessionDep
) -> Response:
    csrf.verify(request, form.get(csrf.FIELD))
    try:
        add_suppression(session, _text(form, "email"), note=_text(form, "note") or None)
    except SuppressionError as exc:
        session.rollback()
        return _suppressions_page(request, editor, session, error=str(exc), status=http_status(exc))
    session.commit()
    return _done("/admin/suppressions", "suppressed")


@router.post("/admin/suppressions/{suppression_id}/lift", response_class=HTMLResponse)
def lift(
    request: Request,
    suppression_id: RowId,
    form: FormDep,
    editor: OperatorPage,
    session: SessionDep,
) -> Response:
    csrf.verify(request, form.get(csrf.FIELD))
    try:
        lift_suppression(session, suppression_id, by=editor.name, note=_text(form, "note") or None)
    except SuppressionError as exc:
        session.rollback()
        return _suppressions_page(request, editor, session, error=str(exc), status=http_status(exc))
    session.commit()
    return _done("/admin/suppressions", "lifted")


# -- subscribers ----------------------------------------------------------------------------


@router.get("/admin/subscribers", response_class=HTMLResponse)
def subscribers_page(
    request: Request, editor: OperatorPage, session: SessionDep, email: str | None = None
) -> HTMLResponse:
    address = (email or "").strip()[:320]
    found = find_subscribers(session, address) if address else []
    context: dict[str, Any] = {"email": address, "found": found, "report": None, "error": None}
    return _show(request, editor, "subscribers", context)


def _subscribers_page(
    request: Request,
    editor: OperatorPage,
    *,
    report: bulk.ImportReport | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    context: dict[str, Any] = {"email": "", "found": [], "report": report, "error": error}
    return _show(request, editor, "subscribers", context, status=status)


@router.post("/admin/subscribers/import", response_class=HTMLResponse)
async def import_subscribers(
    request: Request,
    editor: OperatorPage,
    session: SessionDep,
    settings: SettingsDep,
    notify: NotifierDep,
) -> HTMLResponse:
    """A CSV upload from the page's form: the same import and report as the API's."""
    # The sign-in check only read: end its transaction before the import writes in its own.
    await run_in_threadpool(session.rollback)
    length = request.headers.get("content-length", "")
    if not length.isdigit() or int(length) > MAX_IMPORT_BYTES:
        limit = f"The file is too large: at most {MAX_IMPORT_BYTES // 2**20} MiB."
        return _subscribers_page(request, editor, error=limit, status=413)
    async with request.form(max_files=1, max_fields=5) as form:
        csrf.verify(request, form.get(csrf.FIELD))
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return _subscribers_page(request, editor, error="Choose a CSV file.", status=422)
        try:
            report = await run_in_threadpool(
                bulk.import_csv,
                request.app.state.sessions,
                upload.file,
                source=f"import:{upload.filename}",
                settings=settings,
                notify=notify,
            )
        except bulk.ImportFileError as exc:
            return _subscribers_page(request, editor, error=str(exc), status=422)
    return _subscribers_page(request, editor, report=report)


@router.get("/admin/subscribers/export")
def export_subscribers(request: Request, _: OperatorPage) -> StreamingResponse:
    return StreamingResponse(
        bulk.export_csv(request.app.state.sessions),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="subscribers.csv"'},
    )
