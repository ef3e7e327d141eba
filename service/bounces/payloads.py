"""Reading what a provider posted: its JSON, its fields, its times, and how old it may be.

Shared by the provider modules so each reads the same way: a body that is not the JSON the
provider documents is `BadPayload` (400); a genuine notification older than `MAX_AGE` is
`Forbidden` (403), so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from service.bounces.events import EventKind
from service.bounces.webhooks import BadPayload, Forbidden

MAX_AGE = timedelta(hours=1)
MAX_ID = 300  # provider_events.event_id


def json_body(body: bytes) -> Any:
    """The body as strict JSON, or `BadPayload`: no NaN or Infinity, and no NUL character,
    which no provider sends and PostgreSQL's text columns cannot hold."""
    if b"\\u0000" in body:
        raise BadPayload("The body holds a NUL character.")
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadPayload("The body is not JSON.") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_object(body: bytes) -> dict[str, Any]:
    value = json_body(body)
    if not isinstance(value, dict):
        raise BadPayload("The body is not a JSON object.")
    return value


def text(record: dict[str, Any], key: str) -> str:
    """A string field, stripped; "" when absent or not a string (a number is kept as text)."""
    value = record.get(key)
    if isinstance(value, bool):
        return ""
    if isinstance(value, int | str):
        return str(value).strip()
    return ""


def address(value: str) -> str:
    """``value`` if it looks like an email address, else ""."""
    local, at, domain = value.rpartition("@")
    if not (at and local and domain) or any(c.isspace() for c in value) or len(value) > 320:
        return ""
    return value


def about(kind: EventKind, email: str) -> EventKind:
    """An event that names no address can silence nobody: it is kept as evidence only."""
    return kind if email else EventKind.OTHER


def iso_time(value: object, default: datetime) -> datetime:
    """An ISO 8601 time (Postmark's `BouncedAt`…), made aware; ``default`` when unreadable."""
    if not isinstance(value, str) or not value.strip():
        return default
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return default
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def unix_time(value: object, default: datetime) -> datetime:
    """Seconds since 1970 as a number or a string of digits; ``default`` when unreadable."""
    try:
        seconds = float(value) if isinstance(value, int | float | str) else math.nan
        return datetime.fromtimestamp(seconds, UTC) if math.isfinite(seconds) else default
    except (ValueError, OverflowError, OSError):
        return default


def check_age(sent_at: datetime, now: datetime) -> None:
    """`Forbidden` for a notification sent more than `MAX_AGE` ago (or as far ahead)."""
    if abs(now - sent_at) > MAX_AGE:
        raise Forbidden(
            f"The notification was signed at {sent_at:%Y-%m-%d %H:%M:%S} UTC, more than an hour "
            "from now: refused as a possible replay."
        )


def fallback_id(record: object) -> str:
    """An id for a record that carries none: the same record always gets the same one, so a
    replay still changes nothing."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def event_id(*parts: str) -> str:
    """Parts joined by ":"; a hash of them when longer than the column takes."""
    joined = ":".join(parts)
    if len(joined) > MAX_ID:
        return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()
    return joined
