"""Postmark's webhooks: Bounce, SpamComplaint, Delivery and SubscriptionChange records.

What this relies on, from Postmark's documentation:

- https://postmarkapp.com/developer/webhooks/webhooks-overview — Postmark signs nothing; the
  webhook URL carries HTTP basic credentials, ``https://<username>:<password>@example.com/…``,
  which reach us as an ``Authorization: Basic`` header. So the URL to give Postmark is
  ``https://USER:PASSWORD@our-host/webhooks/postmark``, with `POSTMARK_WEBHOOK_USER` and
  `POSTMARK_WEBHOOK_PASSWORD`; both are compared in constant time, and nothing tells which
  of the two was wrong. With either setting empty every request is refused.
- https://postmarkapp.com/developer/webhooks/bounce-webhook — one JSON object per request:
  ``{"RecordType": "Bounce", "ID", "Type", "TypeCode", "MessageID", "Email", "BouncedAt",
  "Details", "Description", "MessageStream", "Metadata", …}``; ``BouncedAt`` in ISO 8601.
- https://postmarkapp.com/developer/webhooks/spam-complaint-webhook — the same fields with
  ``"RecordType": "SpamComplaint"`` and ``"Type": "SpamComplaint"``.
- https://postmarkapp.com/developer/webhooks/delivery-webhook — ``{"RecordType": "Delivery",
  "MessageID", "Recipient", "DeliveredAt", "Details", …}``: no id of its own.
- https://postmarkapp.com/developer/webhooks/subscription-change-webhook — ``{"RecordType":
  "SubscriptionChange", "MessageID" (null for manual suppressions and reactivations),
  "Recipient", "ChangedAt", "Origin" (Recipient, Customer, Admin), "SuppressSending",
  "SuppressionReason" (HardBounce, SpamComplaint, ManualSuppression; null on reactivation)}``;
  "if a recipient unsubscribes, they will be suppressed with the SuppressionReason of
  ManualSuppression".
- https://postmarkapp.com/developer/api/bounce-api — the bounce types, mapped in `BOUNCE_TYPES`.

``MessageID`` is what Postmark answered our send with, which the Postmark sender keeps as the
delivery's provider id (`service.mail.senders.postmark`), so an event finds its delivery.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from service.bounces.events import EventKind, MailEvent
from service.bounces.payloads import (
    about,
    address,
    event_id,
    fallback_id,
    iso_time,
    json_object,
    text,
)
from service.bounces.webhooks import Context, Unauthorized, WebhookRequest, handler

__all__ = ["BOUNCE_TYPES", "check_credentials", "events", "parse"]

PROVIDER = "postmark"

# Postmark's bounce `Type` → what it means for the address. Hard: the address will never take
# mail. Soft: counts towards the soft-bounce rule (several in a row suppress), never alone.
# Other: kept as evidence, no effect (the mail arrived, or the fault is ours or Postmark's).
#
# | Type                  | Postmark's description                                   | ours        |
# |-----------------------|----------------------------------------------------------|-------------|
# | HardBounce            | unknown user, mailbox not found                          | hard        |
# | BadEmailAddress       | not a valid email address                                | hard        |
# | SoftBounce            | mailbox full, account disabled, over quota               | soft        |
# | Transient             | message delayed, could not deliver for now               | soft        |
# | DnsError              | a temporary DNS error                                    | soft        |
# | SpamNotification      | blocked by the user, or classified as spam or bulk mail  | soft        |
# | Blocked               | ISP block: content or blocklisting                       | soft        |
# | Unknown               | unable to classify the bounce                            | soft        |
# | SpamComplaint         | the subscriber marked the message as spam                | complaint   |
# | Unsubscribe           | an unsubscribe or remove request                         | unsubscribe |
# | AutoResponder         | out of office, on vacation: the mail arrived             | other       |
# | ChallengeVerification | a challenge asking to confirm we sent it                 | other       |
# | AddressChange         | the recipient asks for another address                   | other       |
# | Subscribe             | a subscribe request                                      | other       |
# | VirusNotification     | a virus warning about the message                        | other       |
# | OpenRelayTest         | a test of whether the server is an open relay            | other       |
# | ManuallyDeactivated   | deactivated by hand in Postmark                          | other       |
# | Unconfirmed           | registration not confirmed                               | other       |
# | SMTPApiError          | Postmark's SMTP API refused the message (ours)           | other       |
# | InboundError          | inbound processing failed (not our outbound mail)        | other       |
# | DMARCPolicy           | rejected by our domain's DMARC policy (ours)             | other       |
# | TemplateRenderingFailed | a Postmark template failed to render (ours)            | other       |
# Any other type: other.
BOUNCE_TYPES: Mapping[str, EventKind] = {
    "HardBounce": EventKind.HARD_BOUNCE,
    "BadEmailAddress": EventKind.HARD_BOUNCE,
    "SoftBounce": EventKind.SOFT_BOUNCE,
    "Transient": EventKind.SOFT_BOUNCE,
    "DnsError": EventKind.SOFT_BOUNCE,
    "SpamNotification": EventKind.SOFT_BOUNCE,
    "Blocked": EventKind.SOFT_BOUNCE,
    "Unknown": EventKind.SOFT_BOUNCE,
    "SpamComplaint": EventKind.COMPLAINT,
    "Unsubscribe": EventKind.UNSUBSCRIBE,
}

REALM = {"WWW-Authenticate": 'Basic realm="postmark webhooks"'}


class BadCredentials(Unauthorized):
    headers = REALM


@handler(PROVIDER)
def events(request: WebhookRequest, ctx: Context) -> list[MailEvent]:
    """Check the URL's credentials, then read the one record Postmark posts."""
    settings = ctx.settings
    check_credentials(
        request.headers.get("authorization", ""),
        user=settings.postmark_webhook_user,
        password=settings.postmark_webhook_password.get_secret_value(),
    )
    return parse(request.body, received_at=datetime.now(UTC))


def check_credentials(authorization: str, *, user: str, password: str) -> None:
    """`Unauthorized` unless ``authorization`` is Basic with exactly ``user`` and ``password``.

    Both parts are always compared, each in constant time, so neither the answer nor its
    timing tells a guesser which part was right.
    """
    if not user or not password:
        raise BadCredentials("Postmark webhooks are not configured (POSTMARK_WEBHOOK_USER).")
    given_user, given_password = _basic(authorization)
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    if not (user_ok & password_ok):
        raise BadCredentials("Wrong or missing webhook credentials.")


def _basic(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    given_user, _, given_password = decoded.partition(":")
    return given_user, given_password


def parse(body: bytes, *, received_at: datetime) -> list[MailEvent]:
    """The record's event; `BadPayload` for what Postmark does not send."""
    record = json_object(body)
    kind = text(record, "RecordType")
    if not kind and "BouncedAt" in record:  # the classic bounce hook has no RecordType
        kind = "Bounce"
    if kind in ("Bounce", "SpamComplaint"):
        return [_bounce(kind, record, received_at)]
    if kind == "Delivery":
        return [_delivery(record, received_at)]
    if kind == "SubscriptionChange":
        return [_subscription_change(record, received_at)]
    # Open, Click, and record types to come: kept, no effect.
    return [
        MailEvent(
            provider=PROVIDER,
            event_id=event_id(kind or "Unknown", fallback_id(record)),
            kind=EventKind.OTHER,
            email=address(text(record, "Recipient") or text(record, "Email")),
            occurred_at=received_at,
            provider_message_id=text(record, "MessageID") or None,
            detail=kind,
            payload=record,
        )
    ]


def _bounce(record_type: str, record: dict[str, Any], received_at: datetime) -> MailEvent:
    bounce_type = text(record, "Type")
    if record_type == "SpamComplaint":
        kind = EventKind.COMPLAINT
    else:
        kind = BOUNCE_TYPES.get(bounce_type, EventKind.OTHER)
    own_id = text(record, "ID")
    email = address(text(record, "Email"))
    return MailEvent(
        provider=PROVIDER,
        event_id=event_id(record_type, own_id) if own_id else fallback_id(record),
        kind=about(kind, email),
        email=email,
        occurred_at=iso_time(record.get("BouncedAt"), received_at),
        provider_message_id=text(record, "MessageID") or None,
        detail=" — ".join(t for t in (bounce_type, text(record, "Details")) if t),
        payload=record,
    )


def _delivery(record: dict[str, Any], received_at: datetime) -> MailEvent:
    # No id of its own: a message is delivered to a recipient once.
    message = text(record, "MessageID")
    recipient = address(text(record, "Recipient"))
    return MailEvent(
        provider=PROVIDER,
        event_id=event_id("Delivery", message, recipient.lower())
        if message
        else fallback_id(record),
        kind=about(EventKind.DELIVERED, recipient),
        email=recipient,
        occurred_at=iso_time(record.get("DeliveredAt"), received_at),
        provider_message_id=message or None,
        detail=text(record, "Details"),
        payload=record,
    )


def _subscription_change(record: dict[str, Any], received_at: datetime) -> MailEvent:
    """An address added to or removed from the stream's suppression list.

    A hard bounce or a complaint does here what it does as a bounce record (the same address
    is suppressed once, whichever arrives first); a suppression the recipient asked for is
    their unsubscribe. One made by hand in Postmark (Origin Customer or Admin) and a
    reactivation are kept without effect: our own list is the operator's to change.
    """
    suppress = record.get("SuppressSending") is True
    reason = text(record, "SuppressionReason")
    origin = text(record, "Origin")
    kind = EventKind.OTHER
    if suppress and reason == "HardBounce":
        kind = EventKind.HARD_BOUNCE
    elif suppress and reason == "SpamComplaint":
        kind = EventKind.COMPLAINT
    elif suppress and reason == "ManualSuppression" and origin == "Recipient":
        kind = EventKind.UNSUBSCRIBE
    recipient = address(text(record, "Recipient"))
    changed_at = text(record, "ChangedAt")
    state = "suppressed" if suppress else "reactivated"
    return MailEvent(
        provider=PROVIDER,
        event_id=event_id("SubscriptionChange", recipient.lower(), changed_at, state)
        if changed_at
        else fallback_id(record),
        kind=about(kind, recipient),
        email=recipient,
        occurred_at=iso_time(record.get("ChangedAt"), received_at),
        provider_message_id=text(record, "MessageID") or None,
        detail=" ".join(t for t in (state, reason, f"by {origin}" if origin else "") if t),
        payload=record,
    )
