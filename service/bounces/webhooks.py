"""The provider webhooks' common ground: what a provider module receives and may raise.

Each provider module (``service.bounces.providers.<name>``) verifies the request the way the
provider documents and turns it into `MailEvent`s; ``POST /webhooks/{provider}`` (in
``service.web.webhooks``) records them with `policy.record`. A request that fails
verification changes nothing.

    WebhookError
     ├── Unauthorized   401: no or bad credentials / signature
     ├── Forbidden      403: genuine, but not for us (another topic, a stale message)
     ├── BadPayload     400: not what the provider sends
     └── Unavailable    503: what verification needs is unreachable now (providers retry)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session

from service.bounces.events import MailEvent
from service.config import Settings

MAX_BODY = 1024 * 1024  # providers batch, but no documented payload comes near this


class WebhookError(Exception):
    status = 400
    headers: Mapping[str, str] | None = None  # sent with the error, e.g. WWW-Authenticate


class Unauthorized(WebhookError):
    status = 401


class Forbidden(WebhookError):
    status = 403


class BadPayload(WebhookError):
    status = 400


class Unavailable(WebhookError):
    status = 503


@dataclass(frozen=True)
class WebhookRequest:
    """The request as received: the raw body (signatures cover bytes), lower-cased header
    names, the query string, and the URL the provider called."""

    body: bytes
    headers: Mapping[str, str]
    query: Mapping[str, str]
    url: str


@dataclass(frozen=True)
class Context:
    """What a provider module may use besides the request."""

    settings: Settings
    session: Session  # e.g. to remember Mailgun's tokens against replay
    client: httpx.Client  # e.g. to fetch SNS's signing certificate or confirm a subscription


# name → the function that verifies a request and returns its events
Handler = Callable[[WebhookRequest, Context], list[MailEvent]]
HANDLERS: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    """Register a provider module's entry point under ``name`` (the URL's {provider})."""

    def register(function: Handler) -> Handler:
        HANDLERS[name] = function
        return function

    return register
