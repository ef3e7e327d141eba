"""Signed reader tokens: who the reader is, for what purpose, and (for some) until when.

Each purpose has its own salt, so a token made for one page is refused by every other. The
first configured secret key signs and all of them verify, so keys rotate without breaking
links already in inboxes. Tokens are bearer secrets: never log them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from service.config import Settings

ALL_LISTS = "*"


class Purpose(enum.StrEnum):
    CONFIRM = "confirm"  # the double opt-in link
    MANAGE = "manage"  # preferences page and the /api/me routes
    UNSUBSCRIBE = "unsubscribe"  # List-Unsubscribe and the footer link


# How long a link works. Confirmation is short (the mail is expected at once); links in
# newsletters live in inboxes for months, and one-click unsubscribe must keep working.
MAX_AGE: dict[Purpose, timedelta | None] = {
    Purpose.CONFIRM: timedelta(days=7),
    Purpose.MANAGE: timedelta(days=365),
    Purpose.UNSUBSCRIBE: None,
}


class InvalidToken(Exception):
    """The token is forged, damaged, for another purpose, or expired (``expired`` says)."""

    def __init__(self, expired: bool = False) -> None:
        super().__init__("expired" if expired else "invalid")
        self.expired = expired


@dataclass(frozen=True)
class TokenData:
    subscriber_id: int
    scope: str = ALL_LISTS  # unsubscribe: one tag's slug, or every list
    nonce: str | None = None  # confirm: must match the subscriber's current nonce


class Tokens:
    def __init__(self, settings: Settings) -> None:
        # itsdangerous signs with the last key and verifies with all.
        self._keys = list(reversed(settings.secret_keys()))

    def _serializer(self, purpose: Purpose) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._keys, salt=f"newsletter.{purpose}")

    def make(self, purpose: Purpose, data: TokenData) -> str:
        payload: dict[str, object] = {"s": data.subscriber_id}
        if data.scope != ALL_LISTS:
            payload["l"] = data.scope
        if data.nonce is not None:
            payload["n"] = data.nonce
        return self._serializer(purpose).dumps(payload)

    def read(self, purpose: Purpose, token: str) -> TokenData:
        max_age = MAX_AGE[purpose]
        try:
            payload = self._serializer(purpose).loads(
                token, max_age=int(max_age.total_seconds()) if max_age else None
            )
        except SignatureExpired as exc:
            raise InvalidToken(expired=True) from exc
        except BadData as exc:  # bad signature, bad base64, bad JSON: all just "invalid"
            raise InvalidToken() from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("s"), int):
            raise InvalidToken()
        scope, nonce = payload.get("l", ALL_LISTS), payload.get("n")
        if not isinstance(scope, str) or not (nonce is None or isinstance(nonce, str)):
            raise InvalidToken()
        return TokenData(payload["s"], scope, nonce)
