"""Admin API tokens: shown once at creation, stored only as a SHA-256, each with one role.

Operators may do everything; editors may preview and send breaking news and read figures.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import ApiToken, Role

PREFIX = "nl_"  # recognisable in a leaked-secrets scan

# What each role may do; an operator may do whatever an editor may.
GRANTS: dict[Role, set[Role]] = {
    Role.OPERATOR: {Role.OPERATOR, Role.EDITOR},
    Role.EDITOR: {Role.EDITOR},
}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, role: Role) -> str:
    """Store a new token for ``name`` and return it: the only time it is ever visible."""
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_sha256=_digest(token), role=role))
    session.flush()
    return token


def authenticate(session: Session, token: str) -> ApiToken | None:
    """The token's row, or None. The lookup is by digest, so timing says nothing of the token."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = _digest(token)
    row = session.scalars(select(ApiToken).where(ApiToken.token_sha256 == digest)).one_or_none()
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    row.last_used_at = datetime.now(UTC)
    return row


def allows(token: ApiToken, needed: Role) -> bool:
    return needed in GRANTS[token.role]
