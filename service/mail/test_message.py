"""The operator's "does mail work?" message: `newsletter mail test ADDRESS`."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from service.config import Settings
from service.mail.message import build_message, dkim_signer_from_settings, make_message_id
from service.mail.render import render
from service.mail.senders import Sender


def send_test_message(sender: Sender, settings: Settings, to: str) -> str:
    """Render and send the `test` template to ``to``; returns the backend's id for it."""
    sent_at = datetime.now(UTC)
    rendered = render(
        "test",
        {"site_name": settings.display_name, "base_url": settings.base_url, "sent_at": sent_at},
    )
    message = build_message(
        rendered,
        to=to,
        mail_from=settings.mail_from,
        message_id=make_message_id("test", secrets.token_hex(8), domain=settings.public_host),
        signer=dkim_signer_from_settings(settings),
    )
    return sender.send(message)
