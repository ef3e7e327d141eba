"""Signing in and out of the console."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.auth import authenticate
from service.web import csrf
from service.web.console.auth import (
    ConsoleRoute,
    end_session,
    safe_next,
    signed_in,
    start_session,
)
from service.web.console.render import page
from service.web.deps import SessionDep, SettingsDep, client_address, rate_limit
from service.web.pages import FormDep

router = APIRouter(route_class=ConsoleRoute)


@router.get("/admin/login", response_class=HTMLResponse)
def login_form(
    request: Request, session: SessionDep, settings: SettingsDep, next: str | None = None
) -> Response:
    if signed_in(request, session, settings):
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, None, "login.html", {"next": safe_next(next), "error": None})


@router.post("/admin/login", response_class=HTMLResponse)
def login(request: Request, form: FormDep, session: SessionDep, settings: SettingsDep) -> Response:
    csrf.verify(request, form.get(csrf.FIELD))
    rate_limit(request, "sign-in-ip", client_address(request))
    value, target = form.get("token"), form.get("next")
    next_page = safe_next(target if isinstance(target, str) else None)
    token = authenticate(session, value.strip()) if isinstance(value, str) else None
    if token is None:
        error = "That token is not valid. Check it was copied whole, or ask for a new one."
        context = {"next": next_page, "error": error}
        return page(request, None, "login.html", context, status=401)
    session.commit()  # records last_used_at
    response = RedirectResponse(next_page, status_code=303)
    start_session(response, settings, token)
    # A new form token with the new session: one planted before sign-in is worth nothing.
    csrf.issue(response, secrets.token_urlsafe(32), secure=settings.base_url.startswith("https"))
    return response


@router.post("/admin/logout")
def logout(request: Request, form: FormDep) -> Response:
    csrf.verify(request, form.get(csrf.FIELD))
    response = RedirectResponse("/admin/login", status_code=303)
    end_session(response)
    return response


@router.get("/admin")
def home() -> Response:
    return RedirectResponse("/admin/editions", status_code=303)
