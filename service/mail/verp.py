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

__all__ = ["DeliveryIds"]

TAG_LENGTH = 12  # hex digits: 48 bits, far beyond guessing by mail
_VERP = re.compile(rf"\+(\d{{1,18}})-([0-9a-f]{{{TAG_LENGTH}}})@")
_MESSAGE_ID = re.compile(rf"<d\.(\d{{1,18}})\.(\d{{1,18}})\.([0-9a-f]{{{TAG_LENGTH}}})@[^>]+>")


class DeliveryIds:
    """Makes and checks the signed addresses and Message-IDs; keep one per batch (the keys are
    read once: about 3 us a message)."""

    def __init__(self, settings: Settings) -> None:
        keys = settings.secret_keys()  # the first signs, all verify (rotation)
        self._macs = [hmac.new(k.encode(), digestmod=hashlib.sha256) for k in keys]
        self._bounce = settings.bounce_address.rpartition("@")
        self._host = settings.public_host

    def _tag(self, purpose: str, *ids: int, mac: hmac.HMAC | None = None) -> str:
        one = (mac or self._macs[0]).copy()
        one.update(":".join([purpose, *map(str, ids)]).encode())
        return one.hexdigest()[:TAG_LENGTH]

    def _valid(self, tag: str, purpose: str, *ids: int) -> bool:
        return any(
            hmac.compare_digest(self._tag(purpose, *ids, mac=mac), tag) for mac in self._macs
        )

    def bounce_address(self, delivery_id: int) -> str | None:
        """The envelope sender of this delivery's message; None when `BOUNCE_ADDRESS` is unset.

        >>> from service.config import Settings
        >>> s = Settings(secret_key="k" * 32, bounce_address="bounces@news.example.org")
        >>> DeliveryIds(s).bounce_address(42)
        'bounces+42-5c13f58ed8ca@news.example.org'
        """
        local, _, domain = self._bounce
        if not domain:
            return None
        return f"{local}+{delivery_id}-{self._tag('verp', delivery_id)}@{domain}"

    def from_address(self, address: str) -> int | None:
        """The delivery a VERP address names, if its tag is ours (any local part, any domain:
        an address made under an earlier `BOUNCE_ADDRESS` still counts)."""
        match = _VERP.search(address.lower())
        if match is None:
            return None
        delivery_id = int(match[1])
        return delivery_id if self._valid(match[2], "verp", delivery_id) else None

    def message_id(self, edition_id: int, delivery_id: int) -> str:
        """The Message-ID of a delivery's message: the same on every retry."""
        tag = self._tag("message-id", edition_id, delivery_id)
        return make_message_id("d", edition_id, delivery_id, tag, domain=self._host)

    def from_message_id(self, message_id: str) -> tuple[int, int] | None:
        """(edition id, delivery id) of one of our delivery Message-IDs, if its tag is ours."""
        match = _MESSAGE_ID.fullmatch(message_id.strip().lower())
        if match is None:
            return None
        edition_id, delivery_id = int(match[1]), int(match[2])
        if not self._valid(match[3], "message-id", edition_id, delivery_id):
            return None
        return edition_id, delivery_id
