"""The operator's "does mail work?" message: `newsletter mail test ADDRESS`."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from service.config import Settings
from service.mail.message import (
    OutgoingMessage,
    build_message,
    dkim_signer_from_settings,
    make_message_id,
)
from service.mail.render import render
from service.mail.senders import Sender


def send_test_message(sender: Sender, settings: Settings, to: str) -> str:
    """Render and send the `test` template to ``to``; returns the backend's id for it."""
    return sender.send(build_test_message(settings, to, datetime.now(UTC)))


def build_test_message(settings: Settings, to: str, sent_at: datetime) -> OutgoingMessage:
    """The `test` message to ``to`` (the template preview shows it too)."""
    rendered = render(
        "test",
        {"site_name": settings.display_name, "base_url": settings.base_url, "sent_at": sent_at},
    )
    return build_message(
        rendered,
        to=to,
        mail_from=settings.mail_from,
        message_id=make_message_id("test", secrets.token_hex(8), domain=settings.public_host),
        signer=dkim_signer_from_settings(settings),
    )
