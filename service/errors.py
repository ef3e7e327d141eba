"""Two marks a domain error can carry, so every caller answers it the same way.

A domain module raises its own error (``SourceError``, ``ScheduleError``, ``SuppressionError``:
each a ``ValueError`` whose message says what to change). A subclass that also inherits one of
these marks says more:

ValueError              bad input: the API answers 422, the CLI prints it and exits 1
├── … + NotFound        the id names nothing: 404
└── … + Conflict        the change clashes with what is stored (a duplicate, a busy row): 409
"""

from __future__ import annotations


class NotFound(LookupError):
    """The thing asked for does not exist."""


class Conflict(Exception):
    """The request is valid but clashes with the stored state."""


def http_status(exc: Exception) -> int:
    """The HTTP status an error of a domain module stands for."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    return 422
