"""The outbox viewer: what the `outbox` backend wrote, list and message, both parts and the
headers. The newcomer's window into what the service sends."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from service.mail import outbox_view
from service.web.console.auth import ConsoleRoute, OperatorPage
from service.web.console.render import page, sandboxed
from service.web.deps import SettingsDep
from service.web.pages import error_page

router = APIRouter(route_class=ConsoleRoute)

PAGE_SIZE = 50


@router.get("/admin/outbox", response_class=HTMLResponse)
def outbox_page(
    request: Request, editor: OperatorPage, settings: SettingsDep, before: str | None = None
) -> HTMLResponse:
    folder = settings.outbox_dir
    messages = outbox_view.list_messages(folder, limit=PAGE_SIZE + 1, before=before)
    older = None
    if len(messages) > PAGE_SIZE:
        messages = messages[:PAGE_SIZE]
        older = "/admin/outbox?" + urlencode({"before": messages[-1].id})
    context = {
        "messages": messages,
        "older": older,
        "folder": folder.resolve(),
        "backend": settings.mail_backend,
    }
    return page(request, editor, "outbox.html", context, section="outbox")


@router.get("/admin/outbox/{message_id}", response_class=HTMLResponse)
def outbox_message(
    request: Request, message_id: str, editor: OperatorPage, settings: SettingsDep
) -> HTMLResponse:
    try:
        found = outbox_view.open_message(settings.outbox_dir, message_id)
    except outbox_view.MessageNotFound:
        return error_page(request, 404, link=("/admin/outbox", "The outbox"))
    subject = next((v for n, v in found.headers if n.lower() == "subject"), "")
    context = {"m": found, "subject": subject}
    return page(request, editor, "outbox_message.html", context, section="outbox")


@router.get("/admin/outbox/{message_id}/html")
def outbox_html(
    request: Request, message_id: str, _: OperatorPage, settings: SettingsDep
) -> Response:
    """The message's HTML part, for the page's sandboxed frame."""
    try:
        found = outbox_view.open_message(settings.outbox_dir, message_id)
    except outbox_view.MessageNotFound:
        return error_page(request, 404)
    if found.html is None:
        return error_page(request, 404, message="This message has no HTML part.")
    return sandboxed(found.html)
