"""Addresses that name their delivery, signed so nobody else can make one.

A bulk message leaves with the envelope sender ``bounces+<delivery id>-<tag>@domain`` (VERP,
from `BOUNCE_ADDRESS`) and the Message-ID ``<d.<edition>.<delivery>.<tag>@host>``. A bounce
comes back to the first and usually quotes the second, so either tells which delivery it is
about. ``<tag>`` is a truncated HMAC of the ids under the secret key: delivery ids are
sequential, and without it anyone could mail a made-up bounce to ``bounces+123@`` and get
reader 123 suppressed. With it, only someone who saw the message (its reader, or a server it
passed) can name its delivery, and that only concerns that reader.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING

from service.mail.message import make_message_id

if TYPE_CHECKING:
    from service.config import Settings

__all__ = [
    "bounce_address",
    "delivery_from_address",
    "delivery_from_message_id",
    "delivery_message_id",
]

TAG_LENGTH = 12  # hex digits: 48 bits, far beyond guessing by mail
_VERP = re.compile(rf"\+(\d{{1,18}})-([0-9a-f]{{{TAG_LENGTH}}})@")
_MESSAGE_ID = re.compile(rf"<d\.(\d{{1,18}})\.(\d{{1,18}})\.([0-9a-f]{{{TAG_LENGTH}}})@[^>]+>")


def _tag(key: str, purpose: str, *ids: int) -> str:
    data = ":".join([purpose, *map(str, ids)]).encode()
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()[:TAG_LENGTH]


def _valid(settings: Settings, tag: str, purpose: str, *ids: int) -> bool:
    # Every key verifies (rotation: the first signs), compared in constant time.
    return any(hmac.compare_digest(_tag(key, purpose, *ids), tag) for key in settings.secret_keys())


def bounce_address(settings: Settings, delivery_id: int) -> str | None:
    """The envelope sender of this delivery's message; None when `BOUNCE_ADDRESS` is unset.

    >>> from service.config import Settings
    >>> s = Settings(secret_key="k" * 32, bounce_address="bounces@news.example.org")
    >>> bounce_address(s, 42)
    'bounces+42-5c13f58ed8ca@news.example.org'
    """
    if not settings.bounce_address:
        return None
    local, _, domain = settings.bounce_address.rpartition("@")
    tag = _tag(settings.secret_keys()[0], "verp", delivery_id)
    return f"{local}+{delivery_id}-{tag}@{domain}"


def delivery_from_address(settings: Settings, address: str) -> int | None:
    """The delivery a VERP address names, if its tag is ours (any local part, any domain: an
    address made under an earlier `BOUNCE_ADDRESS` still counts)."""
    match = _VERP.search(address.lower())
    if match is None:
        return None
    delivery_id = int(match[1])
    return delivery_id if _valid(settings, match[2], "verp", delivery_id) else None


def delivery_message_id(settings: Settings, edition_id: int, delivery_id: int) -> str:
    """The Message-ID of a delivery's message: the same on every retry."""
    tag = _tag(settings.secret_keys()[0], "message-id", edition_id, delivery_id)
    return make_message_id("d", edition_id, delivery_id, tag, domain=settings.public_host)


def delivery_from_message_id(settings: Settings, message_id: str) -> tuple[int, int] | None:
    """(edition id, delivery id) of one of our delivery Message-IDs, if its tag is ours."""
    match = _MESSAGE_ID.fullmatch(message_id.strip().lower())
    if match is None:
        return None
    edition_id, delivery_id = int(match[1]), int(match[2])
    if not _valid(settings, match[3], "message-id", edition_id, delivery_id):
        return None
    return edition_id, delivery_id
