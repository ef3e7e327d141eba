"""Domain errors as HTTP answers for the admin API (see service/errors.py for the tree)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import HTTPException

from service.errors import http_status
from service.web.admin_api import ADMIN_ERRORS

__all__ = ["ADMIN_ERRORS", "CONFLICT", "INVALID", "NOT_FOUND", "answered"]

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such id"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "Clashes with what is stored; `detail` says how"}
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"description": "Bad input; `detail` says what to change"}
}


@contextmanager
def answered(*errors: type[Exception]) -> Iterator[None]:
    """Turn ``errors`` raised inside into 404, 409 or 422 with the error's message."""
    try:
        yield
    except errors as exc:
        raise HTTPException(http_status(exc), detail=str(exc)) from exc
