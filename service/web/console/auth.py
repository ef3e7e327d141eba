"""The console's sign-in: an admin token, typed once, exchanged for a signed session cookie.

The cookie holds the token's row id and a prefix of its hash, signed and dated with the
secret key; each request looks the row up again, so deleting a token signs its browser
sessions out too. The cookie is HttpOnly (scripts never see it), SameSite=Strict (another
site's links and forms arrive without it) and Secure when the site is served over HTTPS.
Every form POST also carries the double-submit CSRF token (`service.web.csrf`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from service.auth import GRANTS
from service.config import Settings
from service.models import ApiToken, Role
from service.web.deps import SessionDep, SettingsDep
from service.web.pages import PageRoute, error_page

COOKIE = "newsletter_console"
LIFETIME = timedelta(hours=12)  # a working day; then the token is asked for again
_SALT = "newsletter.console"
_HASH_PREFIX = 16  # enough of the token's hash to tell a re-created token from the old one


@dataclass(frozen=True)
class Editor:
    """Who is signed in: the token's name and role, never the token."""

    token_id: int
    name: str
    role: Role

    @property
    def is_operator(self) -> bool:
        return self.role == Role.OPERATOR


class SignInRequired(Exception):
    """No valid console session: the page sends the browser to the sign-in form."""


class NotAllowed(Exception):
    """Signed in, but the role may not open this page."""


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(reversed(settings.secret_keys())), salt=_SALT)


def start_session(response: Response, settings: Settings, token: ApiToken) -> None:
    value = _serializer(settings).dumps({"t": token.id, "h": token.token_sha256[:_HASH_PREFIX]})
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(LIFETIME.total_seconds()),
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=settings.base_url.startswith("https://"),
    )


def end_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/admin", httponly=True, samesite="strict")


def signed_in(request: Request, session: Session, settings: Settings) -> Editor | None:
    """The session's token, if the cookie is genuine, fresh, and its token still exists."""
    value = request.cookies.get(COOKIE)
    if not value or len(value) > 500:
        return None
    try:
        data = _serializer(settings).loads(value, max_age=int(LIFETIME.total_seconds()))
    except BadData:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("t"), int):
        return None
    row = session.get(ApiToken, data["t"])
    if row is None or row.token_sha256[:_HASH_PREFIX] != data.get("h"):
        return None
    return Editor(row.id, row.name, row.role)


def _require(needed: Role) -> Callable[..., Editor]:
    def check(request: Request, session: SessionDep, settings: SettingsDep) -> Editor:
        editor = signed_in(request, session, settings)
        if editor is None:
            raise SignInRequired()
        if needed not in GRANTS[editor.role]:
            raise NotAllowed()
        return editor

    return check


EditorPage = Annotated[Editor, Depends(_require(Role.EDITOR))]
OperatorPage = Annotated[Editor, Depends(_require(Role.OPERATOR))]


def sign_in_url(request: Request) -> str:
    """The sign-in form, remembering a console page to come back to (never another site)."""
    path = request.url.path
    target = path + (f"?{request.url.query}" if request.url.query else "")
    return "/admin/login" + (f"?next={quote(target, safe='')}" if path != "/admin" else "")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only (no open redirect)."""
    ours = value == "/admin" or (value or "").startswith(("/admin/", "/admin?"))
    if (
        value
        and ours
        and not value.startswith("/admin/login")
        and not ("//" in value or "\\" in value)
    ):
        return value
    return "/admin"


class ConsoleRoute(PageRoute):
    """A console page: errors are HTML pages; no session sends the browser to sign in."""

    def error_response(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, SignInRequired):
            return RedirectResponse(sign_in_url(request), status_code=303)
        if isinstance(exc, NotAllowed):
            return error_page(
                request,
                403,
                title="Not for this role",
                message="This page is for operators. Sign in with an operator token.",
                link=("/admin", "Back to the console"),
            )
        return super().error_response(request, exc)
