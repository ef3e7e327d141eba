"""SendGrid's Event Webhook, signed: a JSON array of events, each handled.

What this relies on, from Twilio SendGrid's documentation:

- https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
  — with the Signed Event Webhook, SendGrid signs with an ECDSA key pair and shows the public
  "verification key" (base64 of its DER form, without PEM framing). Each request carries
  ``X-Twilio-Email-Event-Webhook-Signature`` (base64 of a DER ECDSA signature) and
  ``X-Twilio-Email-Event-Webhook-Timestamp``; the signature covers the timestamp followed by
  the raw body, hashed with SHA-256 (P-256 keys). SendGrid's own verifier
  (sendgrid-python, ``sendgrid/helpers/eventwebhook``) checks ``timestamp + payload`` with the
  key read from ``-----BEGIN PUBLIC KEY-----\\n<key>\\n-----END PUBLIC KEY-----``.
- https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event — the events:
  ``processed``, ``deferred``, ``delivered``, ``bounce`` (``type`` is ``bounce`` for a
  permanent rejection, ``blocked`` for a temporary one), ``dropped`` (with a ``reason`` such
  as "Bounced Address", "Unsubscribed Address", "Spam Reporting Address", "Invalid"),
  ``spamreport``, ``unsubscribe``, ``group_unsubscribe``, ``group_resubscribe``, ``open``,
  ``click``. Every event has ``email``, ``timestamp`` (Unix seconds), ``sg_event_id`` (unique:
  what we deduplicate on) and ``sg_message_id``; the ``custom_args`` of the send appear as
  top-level fields of each event.

Which delivery an event is about: our sender sets ``custom_args.message_id`` to the message's
own Message-ID (`service.mail.senders.sendgrid`), which comes back as ``message_id``. The
``sg_message_id`` starts with the ``X-Message-Id`` of the whole send call, which up to 1000
deliveries share, so it is kept as evidence but would not name one delivery; without our
``message_id`` the reader is found by address.

A request older than an hour (by its signed timestamp) is refused (403), so a captured
request cannot be replayed later; within the hour a replay repeats event ids seen before and
changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service.bounces.events import EventKind, MailEvent
from service.bounces.payloads import (
    about,
    address,
    check_age,
    event_id,
    fallback_id,
    json_body,
    text,
    unix_time,
)
from service.bounces.webhooks import (
    BadPayload,
    Context,
    Unauthorized,
    WebhookRequest,
    handler,
)

__all__ = ["events", "parse", "public_key", "verify"]

PROVIDER = "sendgrid"
SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"

# event → kind; `bounce` and `dropped` depend on more than their name (see `_kind`).
EVENTS: Mapping[str, EventKind] = {
    "delivered": EventKind.DELIVERED,
    "spamreport": EventKind.COMPLAINT,
    "unsubscribe": EventKind.UNSUBSCRIBE,
    "group_unsubscribe": EventKind.UNSUBSCRIBE,  # we send with no groups: all mail is one list
}
# Why SendGrid dropped a message without trying: what it knows of the address already.
DROP_REASONS: Mapping[str, EventKind] = {
    "bounced address": EventKind.HARD_BOUNCE,  # on SendGrid's bounce list: it bounced before
    "invalid": EventKind.HARD_BOUNCE,  # not a valid address
    "spam reporting address": EventKind.COMPLAINT,
    "unsubscribed address": EventKind.UNSUBSCRIBE,
}
_MESSAGE_ID = re.compile(r"^<[^<>\s]+@[^<>\s]+>$")


@handler(PROVIDER)
def events(request: WebhookRequest, ctx: Context) -> list[MailEvent]:
    """Verify the signature and the age, then read every event of the batch."""
    configured = ctx.settings.sendgrid_webhook_public_key
    if not configured:
        raise Unauthorized("SendGrid webhooks are not configured (SENDGRID_WEBHOOK_PUBLIC_KEY).")
    now = datetime.now(UTC)
    verify(request, public_key(configured), now=now)
    return parse(request.body, received_at=now)


@lru_cache(maxsize=4)
def public_key(configured: str) -> ec.EllipticCurvePublicKey:
    """The key as SendGrid shows it (base64 DER) or as PEM; `ValueError` if it is not a P-256
    public key."""
    value = configured.strip()
    try:
        if value.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(value.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a public key in base64 DER or PEM: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("SendGrid's verification key is an ECDSA P-256 public key")
    return key


def verify(request: WebhookRequest, key: ec.EllipticCurvePublicKey, *, now: datetime) -> None:
    """`Unauthorized` unless the signature over timestamp + body verifies with ``key``;
    `Forbidden` when the signed timestamp is more than an hour away from ``now``."""
    signature = request.headers.get(SIGNATURE, "").strip()
    timestamp = request.headers.get(TIMESTAMP, "").strip()
    if not signature or not timestamp:
        raise Unauthorized("Missing SendGrid signature headers.")
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature) as exc:
        raise Unauthorized("The SendGrid signature does not verify.") from exc
    if not timestamp.isascii() or not timestamp.isdigit():
        raise BadPayload("The signed timestamp is not Unix seconds.")
    check_age(unix_time(timestamp, datetime.min.replace(tzinfo=UTC)), now)


def parse(body: bytes, *, received_at: datetime) -> list[MailEvent]:
    """One `MailEvent` per event of the array; `BadPayload` if the body is not one."""
    batch = json_body(body)
    if not isinstance(batch, list) or not all(isinstance(e, dict) for e in batch):
        raise BadPayload("The body is not a JSON array of events.")
    return [_event(e, received_at) for e in batch]


def _event(raw: dict[str, Any], received_at: datetime) -> MailEvent:
    email = address(text(raw, "email"))
    own_id = text(raw, "sg_event_id")
    ours = text(raw, "message_id")  # our custom arg
    name = text(raw, "event")
    return MailEvent(
        provider=PROVIDER,
        event_id=event_id(own_id) if own_id else fallback_id(raw),
        kind=about(_kind(name, raw), email),
        email=email,
        occurred_at=unix_time(raw.get("timestamp"), received_at),
        message_id=ours if _MESSAGE_ID.match(ours) else None,
        provider_message_id=text(raw, "sg_message_id") or None,
        detail=" — ".join(
            t for t in (name, text(raw, "type"), text(raw, "status"), text(raw, "reason")) if t
        ),
        payload=raw,
    )


def _kind(name: str, raw: dict[str, Any]) -> EventKind:
    if name == "bounce":
        # `blocked`: refused for now (reputation, content, rate); `bounce`: for good.
        blocked = text(raw, "type") == "blocked"
        return EventKind.SOFT_BOUNCE if blocked else EventKind.HARD_BOUNCE
    if name == "dropped":
        return DROP_REASONS.get(text(raw, "reason").lower(), EventKind.OTHER)
    # processed, deferred (SendGrid retries), open, click, group_resubscribe, …: evidence.
    return EVENTS.get(name, EventKind.OTHER)
