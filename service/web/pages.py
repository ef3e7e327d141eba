"""The readers' HTML pages (ARCHITECTURE.md, "HTTP"): subscribe, confirm, preferences, unsubscribe.

Server-rendered from `templates/web/` and usable without JavaScript. The handlers validate with
the JSON API's schemas and call `service.readers.accounts`, so a page and the API accept and
refuse the same input. Every form POST is CSRF-checked except RFC 8058's one-click
unsubscribe, which mail clients send without cookies. Errors in these routes (bad links, rate
limits, anything unexpected) answer with an HTML page; the JSON API keeps its JSON errors.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from service.mail.render import templates_dir
from service.models import Cadence, Subscriber, SubscriberStatus, Tag
from service.readers import accounts
from service.readers.mail import reader_urls
from service.readers.schemas import PreferencesIn, SubscribeIn, timezones
from service.readers.tokens import ALL_LISTS, InvalidToken, Purpose, Tokens
from service.web import csrf
from service.web.deps import (
    IntakeDep,
    SessionDep,
    SettingsDep,
    TokensDep,
    client_address,
    get_settings,
    get_tokens,
    rate_limit,
)

log = logging.getLogger(__name__)

CADENCE_LABELS = {
    Cadence.INSTANT: "Instantly",
    Cadence.DAILY: "Daily digest",
    Cadence.WEEKLY: "Weekly digest",
}

# Title and explanation of each error page; `link` is where the reader can go next.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("Bad request", "We could not understand this request."),
    403: ("Your session expired", "Your session expired, please reload the page and try again."),
    404: ("Page not found", "There is nothing at this address."),
    410: ("This link has expired", "This link has expired, subscribe again to get a new one."),
    422: ("Please check your input", "Some of what was sent is not valid."),
    429: ("Too many requests", "Please wait a little and try again."),
    500: ("Something went wrong", "We could not complete this. Please try again later."),
}


# -- rendering ------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def environment(root: Path) -> jinja2.Environment:
    """The web pages' Jinja2 environment (autoescaped; shared with the admin console later)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(root / "web"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    return env


def when(moment: datetime | None) -> str:
    """A stored time as the console shows it: to the minute, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


def _security_headers(nonce: str, allow: str = "") -> dict[str, str]:
    return {
        # Only our own inline style and script run; no framing (clickjacking the buttons).
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            + allow
        ),
        "Referrer-Policy": "no-referrer",  # page URLs carry reader tokens
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    with_form: bool = False,
    headers: Mapping[str, str] | None = None,
    allow: str = "",
) -> HTMLResponse:
    """Render ``name``; ``with_form`` pages get a CSRF token in the context and the cookie.
    ``allow`` adds policy directives (the console's `connect-src` and `frame-src`)."""
    settings = get_settings(request)
    nonce = secrets.token_urlsafe(16)
    token = csrf.token(request) if with_form else ""
    html = (
        environment(templates_dir())
        .get_template(name)
        .render(
            site_name=settings.display_name,
            nonce=nonce,
            csrf_field=csrf.FIELD,
            csrf_token=token,
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
    response.headers.update(_security_headers(nonce, allow))
    if with_form:
        csrf.issue(response, token, secure=settings.base_url.startswith("https://"))
    return response


def error_page(
    request: Request,
    status: int,
    *,
    title: str | None = None,
    message: str | None = None,
    link: tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    default_title, default_message = ERRORS.get(status, ERRORS[500 if status >= 500 else 400])
    context = {
        "title": title or default_title,
        "message": message or default_message,
        "link": link,
    }
    return render(request, "error.html", context, status=status, headers=headers)


def _bad_link(request: Request, exc: InvalidToken) -> HTMLResponse:
    if exc.expired:
        return error_page(request, 410, link=("/subscribe", "Subscribe again"))
    return error_page(
        request,
        400,
        title="This link is not valid",
        message="It may be incomplete, or replaced by a newer one. Copy the whole link from "
        "the message, or subscribe again.",
        link=("/subscribe", "Go to the subscribe page"),
    )


class PageRoute(APIRoute):
    """A route whose errors are HTML pages, never a traceback and never the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return self.error_response(request, exc)

        return page_handler

    def error_response(self, request: Request, exc: Exception) -> Response:
        """The page for an error a handler (or a dependency) raised."""
        if isinstance(exc, InvalidToken):  # also an erased reader's old links
            return _bad_link(request, exc)
        if isinstance(exc, csrf.CsrfError):
            return error_page(request, 403)
        if isinstance(exc, HTTPException):  # rate limits, unreadable form bodies
            return error_page(request, exc.status_code, headers=exc.headers)
        if isinstance(exc, RequestValidationError):
            return error_page(request, 422)
        # The route template only: the path holds the reader's token.
        log.error("unhandled error in a page", extra={"route": self.path}, exc_info=exc)
        return error_page(request, 500)


router = APIRouter(route_class=PageRoute, include_in_schema=False)


FORM_PART_LIMIT = 64 * 1024  # no form here takes more than a few hundred bytes a field


async def _form(request: Request) -> FormData:
    # Parsed here (async) so the handlers can stay synchronous, like the rest of the app.
    # No file uploads and small parts: the parse runs before any token or CSRF check.
    return await request.form(max_files=0, max_fields=300, max_part_size=FORM_PART_LIMIT)


FormDep = Annotated[FormData, Depends(_form)]


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None  # a file upload is no answer


@lru_cache(maxsize=1)
def _zones() -> list[str]:
    return sorted(timezones())


def _field_errors(exc: ValidationError, known: set[str], fallback: str) -> dict[str, str]:
    """One message per form field; errors on fields the form does not show go to ``fallback``."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        found = _field_of(error)
        if found is not None:
            name, message = found
            errors.setdefault(name if name in known else fallback, message)
    return errors


def _field_of(error: ErrorDetails) -> tuple[str, str] | None:
    loc, message = error["loc"], error["msg"].removeprefix("Value error, ")
    if error["type"] == "string_pattern_mismatch":
        return "tags", "unknown topic"  # only tag slugs have a pattern
    if not loc:  # a check over the whole model names the field in its message ("tags: ...")
        name, _, rest = message.partition(": ")
        return name, rest or message
    if loc[0] in ("cadence", "tags") and len(loc) > 1 and isinstance(loc[-1], str):
        if loc[0] == "cadence" and len(loc) == 2:
            return None  # the one-cadence-for-all branch of the union: forms send one per tag
        return f"cadence-{loc[-1]}", message
    return str(loc[0]), message


def _status_line(subscriber: Subscriber) -> str:
    if subscriber.status == SubscriberStatus.PENDING:
        return "Your subscription is not confirmed yet."
    if subscriber.status != SubscriberStatus.ACTIVE:
        return "You are not subscribed to anything at the moment."
    return "Your digests are paused." if subscriber.paused else "You are subscribed."


# -- subscribe ------------------------------------------------------------------------------


@dataclass
class SubscribeForm:
    """What the subscribe form holds, as the reader typed it (kept when it is refused)."""

    email: str = ""
    tags: list[str] = field(default_factory=list)
    cadences: dict[str, str] = field(default_factory=dict)
    timezone: str = "UTC"
    send_hour: str = ""

    @classmethod
    def from_form(cls, form: FormData) -> SubscribeForm:
        tags = [t for t in form.getlist("tags") if isinstance(t, str)]
        return cls(
            email=_text(form, "email") or "",
            tags=list(dict.fromkeys(tags)),
            cadences={
                key.removeprefix("cadence-"): value
                for key, value in form.multi_items()
                if key.startswith("cadence-") and isinstance(value, str)
            },
            timezone=_text(form, "timezone") or "UTC",
            send_hour=_text(form, "send_hour") or "",
        )

    def validate(self) -> SubscribeIn:
        # Only ticked tags count; a missing cadence is reported by the schema, per tag.
        return SubscribeIn.model_validate(
            {
                "email": self.email,
                "tags": self.tags,
                "cadence": {t: self.cadences[t] for t in self.tags if t in self.cadences},
                "timezone": self.timezone,
                "send_hour": self.send_hour or None,
            }
        )


def _subscribe_page(
    request: Request,
    session: Session,
    values: SubscribeForm,
    *,
    errors: Mapping[str, str] | None = None,
    detect_zone: bool = False,
) -> HTMLResponse:
    tags = accounts.tags_with_counts(session)
    labels = {"email": "Email address", "tags": "Topics", "timezone": "Time zone"}
    labels |= {"send_hour": "Hour"} | {f"cadence-{t.slug}": f"How often: {t.name}" for t in tags}
    context = {
        "tags": tags,
        "cadences": CADENCE_LABELS,
        "zones": _zones(),
        "values": values,
        "errors": errors or {},
        "labels": labels,
        "detect_zone": detect_zone,
    }
    return render(request, "subscribe.html", context, status=422 if errors else 200, with_form=True)


@router.get("/", response_class=HTMLResponse)
@router.get("/subscribe", response_class=HTMLResponse)
def subscribe_form(request: Request, session: SessionDep) -> HTMLResponse:
    return _subscribe_page(request, session, SubscribeForm(), detect_zone=True)


@router.post("/subscribe", response_class=HTMLResponse)
def subscribe(
    request: Request,
    form: FormDep,
    session: SessionDep,
    settings: SettingsDep,
    intake: IntakeDep,
) -> HTMLResponse:
    csrf.verify(request, form.get(csrf.FIELD))
    values = SubscribeForm.from_form(form)
    known = {"email", "tags", "timezone", "send_hour"} | {f"cadence-{t}" for t in values.tags}
    try:
        body = values.validate()
    except ValidationError as exc:
        return _subscribe_page(request, session, values, errors=_field_errors(exc, known, "tags"))
    # The API's rules, in the API's order (its body is validated before the handler runs).
    rate_limit(request, "subscribe-ip", client_address(request))
    rate_limit(request, "subscribe-address", body.email)
    try:
        accounts.check_request(session, body, settings)
    except accounts.ReaderError as exc:
        return _subscribe_page(request, session, values, errors={exc.field: exc.message})
    session.rollback()  # it only read: end the transaction (and SQLite's lock) before handing over
    intake.subscribe(body, source="web form")
    # The same page, after the same work, for every address (no enumeration).
    return render(request, "check_inbox.html", {})


# -- confirm --------------------------------------------------------------------------------


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(
    request: Request, token: str, session: SessionDep, tokens: TokensDep
) -> HTMLResponse:
    # Checks the link but changes nothing: mail scanners open links before readers do.
    subscriber = accounts.load_subscriber(session, tokens.read(Purpose.CONFIRM, token))
    # What is being confirmed, as it stands now (a later subscribe may have added topics).
    topics = sorted((s.tag.name, s.cadence.value) for s in subscriber.subscriptions)
    return render(request, "confirm.html", {"token": token, "topics": topics}, with_form=True)


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(
    request: Request,
    token: str,
    form: FormDep,
    session: SessionDep,
    settings: SettingsDep,
    tokens: TokensDep,
) -> HTMLResponse:
    csrf.verify(request, form.get(csrf.FIELD))
    data = tokens.read(Purpose.CONFIRM, token)
    try:
        subscriber = accounts.confirm(session, data, source="web")
    except accounts.AlreadyConfirmed:
        # A used link proves nothing any more (it may sit in a scanner's log): no new links.
        return render(request, "confirmed.html", {"already": True})
    session.commit()
    urls = reader_urls(settings, tokens, subscriber)
    return render(request, "confirmed.html", {"already": False, **urls})


# -- preferences ----------------------------------------------------------------------------


@dataclass
class PreferencesForm:
    """The preferences form's values: cadence per tag slug ("" = not subscribed), and so on."""

    cadences: dict[str, str]
    timezone: str | None
    send_hour: str | None
    breaking_alerts: bool
    paused: bool

    @classmethod
    def of(cls, subscriber: Subscriber) -> PreferencesForm:
        return cls(
            cadences={s.tag.slug: s.cadence.value for s in subscriber.subscriptions},
            timezone=subscriber.timezone,
            send_hour="" if subscriber.send_hour is None else str(subscriber.send_hour),
            breaking_alerts=subscriber.breaking_alerts,
            paused=subscriber.paused,
        )

    @classmethod
    def from_form(cls, form: FormData) -> PreferencesForm:
        return cls(
            cadences={
                key.removeprefix("cadence-"): value
                for key, value in form.multi_items()
                if key.startswith("cadence-") and isinstance(value, str)
            },
            timezone=_text(form, "timezone"),
            send_hour=_text(form, "send_hour"),
            # An unticked checkbox is simply absent from the form.
            breaking_alerts="breaking_alerts" in form,
            paused="paused" in form,
        )

    def validate(self) -> PreferencesIn:
        changes: dict[str, Any] = {"breaking_alerts": self.breaking_alerts, "paused": self.paused}
        if self.cadences:
            changes["tags"] = {slug: value or None for slug, value in self.cadences.items()}
        if self.timezone is not None:
            changes["timezone"] = self.timezone
        if self.send_hour is not None:
            changes["send_hour"] = self.send_hour or None
        return PreferencesIn.model_validate(changes)


@dataclass(frozen=True)
class Reader:
    """The reader a preferences link names, with the link's token (forms post back to it)."""

    subscriber: Subscriber
    token: str


def _manage(session: Session, tokens: Tokens, token: str, *, lock: bool = False) -> Reader:
    data = tokens.read(Purpose.MANAGE, token)
    return Reader(accounts.load_subscriber(session, data, lock=lock), token)


def _preferences_page(
    request: Request,
    session: Session,
    reader: Reader,
    values: PreferencesForm,
    *,
    errors: Mapping[str, str] | None = None,
    saved: bool = False,
) -> HTMLResponse:
    settings, tokens = get_settings(request), get_tokens(request)
    tags = accounts.tags_with_counts(session)
    labels = {"timezone": "Time zone", "send_hour": "Hour", "tags": "Topics"}
    labels |= {f"cadence-{t.slug}": t.name for t in tags} | {"erase-confirm": "Erase my data"}
    context = {
        "token": reader.token,
        "email": reader.subscriber.email,
        "status_line": _status_line(reader.subscriber),
        "tags": tags,
        "cadences": CADENCE_LABELS,
        "zones": _zones(),
        "values": values,
        "errors": errors or {},
        "labels": labels,
        "saved": saved,
        "unsubscribe_url": reader_urls(settings, tokens, reader.subscriber)["unsubscribe_url"],
    }
    status = 422 if errors else 200
    return render(request, "preferences.html", context, status=status, with_form=True)


@router.get("/preferences/{token}", response_class=HTMLResponse)
def preferences_page(
    request: Request, token: str, session: SessionDep, tokens: TokensDep
) -> HTMLResponse:
    reader = _manage(session, tokens, token)
    return _preferences_page(request, session, reader, PreferencesForm.of(reader.subscriber))


@router.post("/preferences/{token}", response_class=HTMLResponse)
def update_preferences(
    request: Request, token: str, form: FormDep, session: SessionDep, tokens: TokensDep
) -> HTMLResponse:
    csrf.verify(request, form.get(csrf.FIELD))
    reader = _manage(session, tokens, token, lock=True)
    values = PreferencesForm.from_form(form)
    known = {"timezone", "send_hour", "tags"} | {f"cadence-{s}" for s in values.cadences}
    try:
        accounts.update_preferences(session, reader.subscriber, values.validate())
    except ValidationError as exc:
        errors = _field_errors(exc, known, "tags")
        return _preferences_page(request, session, reader, values, errors=errors)
    except accounts.ReaderError as exc:
        errors = {exc.field if exc.field in known else "tags": exc.message}
        return _preferences_page(request, session, reader, values, errors=errors)
    session.commit()
    values = PreferencesForm.of(reader.subscriber)
    return _preferences_page(request, session, reader, values, saved=True)


@router.get("/preferences/{token}/export")
def export(token: str, session: SessionDep, tokens: TokensDep) -> Response:
    reader = _manage(session, tokens, token)
    return Response(
        accounts.export(session, reader.subscriber).model_dump_json(indent=2),
        media_type="application/json",
        headers={
            "Content-Disposition": 'attachment; filename="newsletter-data.json"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/preferences/{token}/erase", response_class=HTMLResponse)
def erase(
    request: Request, token: str, form: FormDep, session: SessionDep, tokens: TokensDep
) -> HTMLResponse:
    csrf.verify(request, form.get(csrf.FIELD))
    reader = _manage(session, tokens, token, lock=True)
    if _text(form, "confirm") != "yes":
        errors = {"erase-confirm": "Tick the box to confirm that your data should be erased."}
        values = PreferencesForm.of(reader.subscriber)
        return _preferences_page(request, session, reader, values, errors=errors)
    accounts.erase(session, reader.subscriber)
    session.commit()
    return render(request, "erased.html", {})


# -- unsubscribe ----------------------------------------------------------------------------


def _list_name(session: Session, scope: str) -> str | None:
    """The tag's name for a one-tag token, None for an everything token."""
    if scope == ALL_LISTS:
        return None
    return session.scalar(select(Tag.name).where(Tag.slug == scope)) or scope


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(
    request: Request, token: str, session: SessionDep, tokens: TokensDep
) -> HTMLResponse:
    # Only shows the buttons: link scanners and prefetchers GET every link in a mail.
    data = tokens.read(Purpose.UNSUBSCRIBE, token)
    subscriber = accounts.load_subscriber(session, data)
    context = {
        "token": token,
        # Masked: unsubscribe links are forwarded with the mail they sit in.
        "email": _masked(subscriber.email),
        "list_name": _list_name(session, data.scope),
    }
    return render(request, "unsubscribe.html", context, with_form=True)


@router.post("/unsubscribe/{token}", response_model=None)
def unsubscribe(
    request: Request,
    token: str,
    form: FormDep,
    session: SessionDep,
    settings: SettingsDep,
    tokens: TokensDep,
) -> Response:
    if _text(form, "List-Unsubscribe") == "One-Click":
        # RFC 8058: a mail client posts this with no cookie; the token alone authorizes it,
        # and the answer is neither a redirect nor sets a cookie.
        data = tokens.read(Purpose.UNSUBSCRIBE, token)
        subscriber = accounts.load_subscriber(session, data, lock=True)
        accounts.unsubscribe(session, subscriber, data.scope)
        session.commit()
        return PlainTextResponse("You are unsubscribed.\n", headers={"Cache-Control": "no-store"})
    csrf.verify(request, form.get(csrf.FIELD))
    data = tokens.read(Purpose.UNSUBSCRIBE, token)
    subscriber = accounts.load_subscriber(session, data, lock=True)
    choice = _text(form, "scope")
    if choice not in ("token", "all"):
        return error_page(request, 422, message="Choose what to unsubscribe from.")
    scope = data.scope if choice == "token" else ALL_LISTS
    accounts.unsubscribe(session, subscriber, scope)
    session.commit()
    # No preferences link here: an unsubscribe link never expires and gets forwarded, so it
    # must not open the reader's preferences, export or erasure.
    return render(request, "unsubscribed.html", {"list_name": _list_name(session, scope)})


def _masked(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'•' * 3}@{domain}"
