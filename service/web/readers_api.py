"""The readers' JSON API (ARCHITECTURE.md, "HTTP")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.readers import accounts
from service.readers.schemas import Accepted, ExportOut, MeOut, PreferencesIn, SubscribeIn, TagOut
from service.web.deps import (
    IntakeDep,
    ReaderDep,
    SessionDep,
    SettingsDep,
    WritableReaderDep,
    client_address,
    rate_limit,
)

router = APIRouter(tags=["readers"])

TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {"description": "Rate limited; `Retry-After` says when to try again"}
}
BAD_TOKEN: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid or expired `X-Subscriber-Token`"}
}


@router.post("/api/subscriptions", status_code=202, responses=TOO_MANY)
def subscribe(
    body: SubscribeIn,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    intake: IntakeDep,
) -> Accepted:
    """Subscribe an address to tags; a confirmation mail follows.

    The answer, and the work done before it, are the same whether the address is new,
    pending, already subscribed or suppressed, so it cannot tell who reads what.
    """
    rate_limit(request, "subscribe-ip", client_address(request))
    rate_limit(request, "subscribe-address", body.email)
    accounts.screen_request(session, body, settings, request.app.state.known_tags)
    session.rollback()  # if it read: end the transaction (and SQLite's lock) before handing over
    intake.subscribe(body, source="api")
    return Accepted()


@router.get("/api/me", responses=BAD_TOKEN)
def read_me(reader: ReaderDep) -> MeOut:
    """The reader's profile and subscriptions."""
    return accounts.me(reader)


@router.patch("/api/me", responses=BAD_TOKEN)
def update_me(body: PreferencesIn, reader: WritableReaderDep, session: SessionDep) -> MeOut:
    """Change tags (a tag set to null is dropped), cadence, hour, time zone, alerts, pause."""
    accounts.update_preferences(session, reader, body)
    session.commit()
    return accounts.me(reader)


@router.get("/api/me/export", responses=BAD_TOKEN)
def export_me(reader: ReaderDep, session: SessionDep) -> ExportOut:
    """Everything the service holds about the reader."""
    return accounts.export(session, reader)


@router.delete("/api/me", status_code=204, responses=BAD_TOKEN)
def erase_me(reader: WritableReaderDep, session: SessionDep) -> Response:
    """Erase the reader's data; only a hash of the address stays, so it is never mailed again."""
    accounts.erase(session, reader)
    session.commit()
    return Response(status_code=204)


@router.get("/api/tags")
def list_tags(session: SessionDep) -> list[TagOut]:
    """Tags readers can follow, with how many posts each has."""
    return accounts.tags_with_counts(session)
