"""Readiness checks: can this process reach its database and its broker right now?"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kombu.connection import Connection
from sqlalchemy import Engine, text

from service.config import Settings

CHECK_TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_database(engine: Engine) -> Check:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))  # a DEFERRED read on SQLite: never waits for writers
    except Exception as exc:  # any driver error means "not ready"; the reason is reported
        return Check("database", False, _reason(exc))
    return Check("database", True, engine.dialect.name)


def check_broker(settings: Settings) -> Check:
    if settings.is_embedded_broker:
        queue_dir = settings.var_dir / "broker" / "queue"
        if queue_dir.is_dir() and os.access(queue_dir, os.W_OK):
            return Check("broker", True, "embedded")
        return Check("broker", False, f"queue folder {queue_dir} is missing or read-only")
    try:
        with Connection(settings.broker_url, connect_timeout=CHECK_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT)
            scheme = conn.transport_cls
    except Exception as exc:  # kombu raises transport-specific errors; all mean "not ready"
        return Check("broker", False, _reason(exc))
    return Check("broker", True, str(scheme))


def redacted_broker_url(url: str) -> str:
    """The broker URL with its password masked, fit to print."""
    return str(Connection(url).as_uri())


def _reason(exc: BaseException) -> str:
    # First line only: enough to act on, without echoing connection strings or passwords.
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]
