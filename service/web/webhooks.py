"""``POST /webhooks/{provider}``: bounces, complaints and deliveries from the mail providers.

Verified by the provider's own scheme (see `service.bounces.providers`), stored once by event
id, then the suppression policy (`service.bounces.policy`). A bad signature is 401/403 and
changes nothing; a replayed event is 200 and changes nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from service.bounces import providers  # noqa: F401 - registers the handlers
from service.bounces.policy import record
from service.bounces.webhooks import (
    HANDLERS,
    MAX_BODY,
    Context,
    Handler,
    WebhookError,
    WebhookRequest,
)
from service.config import Settings
from service.web.deps import SessionDep, SettingsDep

router = APIRouter(tags=["webhooks"])


@router.post(
    "/webhooks/{provider}",
    responses={
        400: {"description": "Not a payload this provider sends"},
        401: {"description": "Missing or bad credentials or signature"},
        403: {"description": "Genuine, but not for this service (topic, age)"},
        404: {"description": "No such provider"},
        413: {"description": "Body too large"},
        503: {"description": "Verification needs something unreachable now; retry later"},
    },
)
async def webhook(
    provider: str, request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Take one notification from ``provider`` (ses, postmark, sendgrid, mailgun)."""
    handle = HANDLERS.get(provider)
    if handle is None:
        raise HTTPException(404, detail="No such provider.")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_BODY:
            raise HTTPException(413, detail="Body too large.")
    incoming = WebhookRequest(
        body=bytes(body),
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        url=str(request.url),
    )
    return await run_in_threadpool(_handle, handle, incoming, session, settings)


def _handle(
    handle: Handler, incoming: WebhookRequest, session: Session, settings: Settings
) -> dict[str, Any]:
    from service.tasks import http_client  # the service's outbound client and its limits

    try:
        events = handle(incoming, Context(settings, session, http_client()))
    except WebhookError as exc:
        session.rollback()
        raise HTTPException(
            exc.status, detail=str(exc) or "Rejected.", headers=dict(exc.headers or {}) or None
        ) from exc
    done = record(session, events)
    session.commit()
    return {"stored": done.stored, "replayed": done.replayed}
