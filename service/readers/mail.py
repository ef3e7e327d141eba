"""The two messages a reader's own action triggers: the confirmation and the preferences link.

They are transactional (one reader asked for them), so they carry no List-Unsubscribe; they
are built when the worker runs, from the database as it is then, and skipped when the reader's
state no longer calls for them (confirmed meanwhile, unsubscribed, suppressed).
"""

from __future__ import annotations

import enum

from sqlalchemy.orm import Session

from service.config import Settings
from service.mail import OutgoingMessage, build_message, make_message_id, render
from service.mail.message import dkim_signer_from_settings
from service.mail.senders import Sender
from service.models import Subscriber, SubscriberStatus
from service.readers.tokens import Purpose, TokenData, Tokens
from service.suppressions import is_suppressed


class ReaderMail(enum.StrEnum):
    CONFIRM = "confirm"
    MANAGE = "manage"


def reader_urls(settings: Settings, tokens: Tokens, subscriber: Subscriber) -> dict[str, str]:
    """The signed links every message to a reader carries."""
    manage = tokens.make(Purpose.MANAGE, TokenData(subscriber.id))
    unsubscribe = tokens.make(Purpose.UNSUBSCRIBE, TokenData(subscriber.id))
    return {
        "preferences_url": f"{settings.base_url}/preferences/{manage}",
        "unsubscribe_url": f"{settings.base_url}/unsubscribe/{unsubscribe}",
    }


def send_reader_mail(
    session: Session,
    sender: Sender,
    settings: Settings,
    kind: ReaderMail,
    subscriber_id: int,
    request_id: str,
) -> str | None:
    """Send ``kind`` to the reader if it still applies; the backend's id, or None if skipped.

    ``request_id`` is fixed when the request is made, so a retried task reuses the Message-ID
    while a second request makes a new message.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or is_suppressed(session, subscriber.email):
        return None
    message = build_reader_mail(settings, Tokens(settings), kind, subscriber, request_id)
    return None if message is None else sender.send(message)


def build_reader_mail(
    settings: Settings, tokens: Tokens, kind: ReaderMail, subscriber: Subscriber, request_id: str
) -> OutgoingMessage | None:
    """The message ``kind`` for ``subscriber`` as it is now; None when it no longer applies.

    Also what the template preview shows, for an invented reader and placeholder tokens.
    """
    context: dict[str, object] = {"site_name": settings.display_name, "base_url": settings.base_url}
    if kind is ReaderMail.CONFIRM:
        if subscriber.status != SubscriberStatus.PENDING or not subscriber.confirm_nonce:
            return None
        token = tokens.make(
            Purpose.CONFIRM, TokenData(subscriber.id, nonce=subscriber.confirm_nonce)
        )
        context["confirm_url"] = f"{settings.base_url}/confirm/{token}"
        context["tags"] = [
            {"name": s.tag.name, "cadence": s.cadence.value}
            for s in sorted(subscriber.subscriptions, key=lambda s: s.tag.name)
        ]
    else:
        if subscriber.status != SubscriberStatus.ACTIVE:
            return None
        context |= reader_urls(settings, tokens, subscriber)
    return build_message(
        render(kind.value, context),
        to=subscriber.email,
        mail_from=settings.mail_from,
        message_id=make_message_id(
            kind.value, subscriber.id, request_id, domain=settings.public_host
        ),
        signer=dkim_signer_from_settings(settings),
    )
