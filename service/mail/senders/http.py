"""What the HTTP mail API senders share: one client setup, one reading of HTTP statuses.

Every provider answers a whole-call problem the same way: 401/403 (credentials, account),
404 (wrong endpoint, region or sending domain: configuration), 429 (slow down, often with
`Retry-After`), 5xx (their trouble). Each sender refines only what its documentation adds,
usually the meaning of a 400/422 body.

A transport failure (refused, reset, timed out) is a `TemporaryError`. After the request went
out it is ambiguous (the provider may have queued the mail); as with SMTP, only the caller's
retry policy decides whether to send again.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from service.httpdate import retry_after
from service.mail.errors import (
    BackendRejected,
    MailError,
    MessageRejected,
    RateLimited,
    TemporaryError,
)
from service.mail.message import MessageParts, OutgoingMessage

__all__ = [
    "TIMEOUT",
    "body_text",
    "error_for_status",
    "make_client",
    "parts_of",
    "post",
    "read_json",
    "retry_after",
]

# Connecting should be quick; an answer to a large batch may take a while.
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
USER_AGENT = "newsletter/0.1 (mail sender)"


def make_client() -> httpx.Client:
    """A client with timeouts on every step (httpx's default of 5 s is short for a batch)."""
    return httpx.Client(
        timeout=TIMEOUT,
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )


def post(client: httpx.Client, url: str, **kwargs: Any) -> httpx.Response:
    """POST, with httpx's transport failures turned into `TemporaryError`."""
    try:
        return client.post(url, **kwargs)
    except httpx.TransportError as exc:  # connect, read and write errors and timeouts
        raise TemporaryError(f"{type(exc).__name__}: {exc}") from exc


def error_for_status(response: httpx.Response, detail: str) -> MailError:
    """The error an unsuccessful answer means when its body says nothing more precise: any
    other 4xx refuses the message (413 too large, 400/422 invalid)."""
    status = response.status_code
    if status == 429:
        return RateLimited(detail, status, retry_after(response.headers.get("Retry-After")))
    if status in (401, 403, 404):
        return BackendRejected(detail, status)
    if status >= 500 or status == 408:
        return TemporaryError(detail, status)
    return MessageRejected(detail, status)


def read_json(response: httpx.Response) -> Any:
    """The JSON body, or None when there is none or it is not JSON."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def body_text(response: httpx.Response, limit: int = 500) -> str:
    """The raw body for an error's detail when it could not be read as the provider documents
    (an HTML page from a proxy, an empty body)."""
    text = response.text.strip()
    return (text[:limit] + "…" if len(text) > limit else text) or response.reason_phrase


def parts_of(message: OutgoingMessage) -> MessageParts:
    """The JSON-API view of a message; every message `personalize` builds has one."""
    if message.parts is None:
        raise ValueError(f"{message.message_id}: no MessageParts; build it with personalize()")
    return message.parts
