"""The suppression list: addresses we never mail, looked up by a hash of the address.

The hash lets an erased reader stay unmailable without the service keeping their address.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Suppression


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def is_suppressed(session: Session, email: str) -> bool:
    query = select(Suppression.id).where(Suppression.email_hash == email_hash(email))
    return session.scalar(query) is not None


def suppress(
    session: Session, email: str, *, reason: str, source: str, keep_address: bool = True
) -> Suppression:
    """Add ``email`` to the list (or update its reason); returns the entry."""
    entry = session.scalar(select(Suppression).where(Suppression.email_hash == email_hash(email)))
    if entry is None:
        entry = Suppression(email_hash=email_hash(email), reason=reason, source=source)
        session.add(entry)
    entry.reason, entry.source = reason, source
    entry.email = email if keep_address else None
    if not keep_address:
        entry.note = None  # a note could name the person
    session.flush()
    return entry
