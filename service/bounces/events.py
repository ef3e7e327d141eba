"""The one shape every feedback source produces: a `MailEvent` per recipient."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class EventKind(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"  # the address does not exist or never will take our mail
    SOFT_BOUNCE = "soft_bounce"  # mailbox full, greylisted, temporarily refused
    COMPLAINT = "complaint"  # the reader marked the mail as spam
    DELIVERED = "delivered"  # the receiving server accepted it
    UNSUBSCRIBE = "unsubscribe"  # the provider's own unsubscribe (list-unsubscribe it handled)
    OTHER = "other"  # opens, clicks, unknown types: stored, no effect


@dataclass(frozen=True)
class MailEvent:
    """One thing that happened to one message for one recipient.

    ``event_id`` is unique per provider (a replay carries the same one, and changes nothing);
    a notification naming several recipients becomes several events with derived ids. Which
    delivery it concerns is found from ``delivery_id`` (a VERP address), else our
    ``message_id`` (the Message-ID header, stable per delivery), else the provider's own id.
    """

    provider: str  # ses | postmark | sendgrid | mailgun | smtp
    event_id: str
    kind: EventKind
    email: str
    occurred_at: datetime
    delivery_id: int | None = None
    message_id: str | None = None
    provider_message_id: str | None = None
    detail: str = ""  # the diagnostic: status code and text, complaint type
    payload: dict[str, Any] = field(default_factory=dict)  # the evidence, as received
