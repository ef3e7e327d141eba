"""Double-submit CSRF protection for HTML forms (reader pages now, the admin console later).

A page that shows a form calls `issue`: the same random value goes into an HttpOnly,
SameSite=Lax cookie and into the form's hidden field. A POST is accepted only when the field
matches the cookie (`verify`); another site can make a browser send the cookie, but cannot
read it to put it in the form.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "newsletter_csrf"
FIELD = "csrf_token"
_MAX_LENGTH = 100  # a cookie value longer than this was not made here


class CsrfError(Exception):
    """The form's token is missing or does not match the cookie: the page is stale or forged."""


def _cookie(request: Request) -> str | None:
    value = request.cookies.get(COOKIE)
    return value if value and len(value) <= _MAX_LENGTH else None


def token(request: Request) -> str:
    """The value to embed in a form: the browser's current one, so several tabs keep working."""
    return _cookie(request) or secrets.token_urlsafe(32)


def issue(response: Response, value: str, *, secure: bool) -> None:
    """Set (or refresh) the cookie that must come back with ``value`` in the form."""
    response.set_cookie(
        COOKIE, value, httponly=True, samesite="lax", secure=secure, path="/", max_age=86400
    )


def verify(request: Request, submitted: object) -> None:
    """Raise `CsrfError` unless the form's ``submitted`` value equals the cookie's."""
    cookie = _cookie(request)
    if not cookie or not isinstance(submitted, str) or not submitted:
        raise CsrfError()
    if not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise CsrfError()
