"""Mailgun's webhooks: one signed JSON event a request, each token honoured once.

What this relies on, from Mailgun's documentation:

- https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks — the
  body's ``signature`` object holds ``timestamp`` (Unix seconds), ``token`` (50 random
  characters) and ``signature``: the hex HMAC-SHA256 of timestamp and token concatenated,
  keyed with the webhook signing key. "Optionally, you can cache the token value locally and
  not honor any subsequent request with the same token. This will prevent replay attacks."
  "Optionally, you can check if the timestamp is not too far from the current time" — not
  too aggressively, as Mailgun's own delays vary: we allow an hour. For a subaccount's domain
  a ``parent-signature`` is the same HMAC with the primary account's key; either verifies.
- https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads — the
  body's ``event-data``: ``event`` (accepted, delivered, failed, opened, clicked,
  unsubscribed, complained, …), ``id``, ``timestamp``, ``recipient``, for ``failed`` a
  ``severity`` (``permanent`` or ``temporary``), a ``reason`` and ``delivery-status``
  (``code``, ``message``, ``description``), and ``message.headers`` with ``message-id``
  (without angle brackets). New fields may appear; unknown ones are kept, not required.

Tokens are remembered as `provider_events` rows with provider ``mailgun-token`` (unique like
every event id, so no table of their own and no migration), written in the same transaction
as the events: a request refused, or failing, leaves its token unused. A token seen before is
403. Mailgun documents the event ``id`` as unique only within a day, so the event id we
deduplicate on is that id with the event's own timestamp: a retry carries both unchanged.

Our Mailgun sender posts each message as MIME with its own Message-ID (`messages.mime`), which
Mailgun keeps; its answer, ``<that id>``, is the delivery's provider id. The event's
``message-id`` is the same id without brackets, so both ids are matched in bracket form.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.bounces.events import EventKind, MailEvent
from service.bounces.payloads import (
    MAX_ID,
    about,
    address,
    check_age,
    event_id,
    fallback_id,
    json_object,
    text,
    unix_time,
)
from service.bounces.webhooks import (
    BadPayload,
    Context,
    Forbidden,
    Unauthorized,
    WebhookRequest,
    handler,
)
from service.models import ProviderEvent

__all__ = ["TOKENS", "events", "parse", "remember_token", "verify"]

PROVIDER = "mailgun"
TOKENS = "mailgun-token"  # provider_events.provider of the tokens seen

EVENTS: Mapping[str, EventKind] = {
    "delivered": EventKind.DELIVERED,
    "complained": EventKind.COMPLAINT,
    "unsubscribed": EventKind.UNSUBSCRIBE,
}


@handler(PROVIDER)
def events(request: WebhookRequest, ctx: Context) -> list[MailEvent]:
    """Verify the signature, its age and its token, then read the event."""
    key = ctx.settings.mailgun_webhook_signing_key.get_secret_value()
    if not key:
        raise Unauthorized("Mailgun webhooks are not configured (MAILGUN_WEBHOOK_SIGNING_KEY).")
    body = json_object(request.body)
    now = datetime.now(UTC)
    token = verify(body, key, now=now)
    remember_token(ctx.session, token, now=now)
    return parse(body, received_at=now)


def verify(body: dict[str, Any], key: str, *, now: datetime) -> str:
    """The request's token, once its signature is right (else `Unauthorized`) and its
    timestamp within an hour of ``now`` (else `Forbidden`)."""
    signed = body.get("signature")
    if not isinstance(signed, dict):
        raise Unauthorized("No Mailgun signature in the body.")
    timestamp, token = text(signed, "timestamp"), text(signed, "token")
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    # Each compared in constant time, both always: a subaccount's event may verify by either.
    own = hmac.compare_digest(expected.encode(), text(signed, "signature").lower().encode())
    parent = hmac.compare_digest(
        expected.encode(), text(signed, "parent-signature").lower().encode()
    )
    if not (timestamp and token) or not (own | parent):
        raise Unauthorized("The Mailgun signature does not verify.")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise BadPayload("The signed timestamp is not Unix seconds.")
    if len(token) > MAX_ID:
        raise BadPayload("The token is longer than Mailgun's.")
    check_age(unix_time(timestamp, datetime.min.replace(tzinfo=UTC)), now)
    return token


def remember_token(session: Session, token: str, *, now: datetime) -> None:
    """Keep ``token`` as used; `Forbidden` if it was used before (a replayed request)."""
    seen = select(ProviderEvent.id).where(
        ProviderEvent.provider == TOKENS, ProviderEvent.event_id == token
    )
    if session.scalar(seen) is not None:
        raise Forbidden("This Mailgun token was used before: a replayed request.")
    try:
        with session.begin_nested():
            session.add(
                ProviderEvent(provider=TOKENS, event_id=token, payload={"seen": now.isoformat()})
            )
    except IntegrityError as exc:  # the same request, arriving twice at once
        raise Forbidden("This Mailgun token was used before: a replayed request.") from exc


def parse(body: dict[str, Any], *, received_at: datetime) -> list[MailEvent]:
    """The event of a verified body; `BadPayload` when there is none."""
    data = body.get("event-data")
    if not isinstance(data, dict):
        raise BadPayload("No event-data in the body.")
    name = text(data, "event")
    email = address(text(data, "recipient"))
    own_id = text(data, "id")
    occurred_at = unix_time(data.get("timestamp"), received_at)
    ours = _message_id(data)
    status = data.get("delivery-status")
    status = status if isinstance(status, dict) else {}
    detail = " — ".join(
        t
        for t in (
            name,
            text(data, "severity"),
            text(data, "reason"),
            text(status, "code"),
            text(status, "message") or text(status, "description"),
        )
        if t
    )
    return [
        MailEvent(
            provider=PROVIDER,
            event_id=event_id(own_id, str(int(occurred_at.timestamp())))
            if own_id
            else fallback_id(data),
            kind=about(_kind(name, data), email),
            email=email,
            occurred_at=occurred_at,
            message_id=ours,
            provider_message_id=ours,
            detail=detail,
            payload=data,
        )
    ]


def _kind(name: str, data: dict[str, Any]) -> EventKind:
    if name == "failed":
        # permanent: the address is gone (or on Mailgun's bounce list: reason suppress-bounce);
        # temporary: Mailgun gave up retrying for now (mailbox full, greylisted, …).
        severity = text(data, "severity")
        if severity == "permanent":
            return EventKind.HARD_BOUNCE
        if severity == "temporary":
            return EventKind.SOFT_BOUNCE
        return EventKind.OTHER
    # accepted, opened, clicked, stored, rejected (our request), …: evidence only.
    return EVENTS.get(name, EventKind.OTHER)


def _message_id(data: dict[str, Any]) -> str | None:
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    value = text(headers, "message-id") if isinstance(headers, dict) else ""
    value = value.strip("<>").strip()
    if not value or "@" not in value or any(c in value for c in "<> \t"):
        return None
    return f"<{value}>"
