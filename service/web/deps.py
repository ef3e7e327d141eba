"""What route handlers share: the session, the reader behind a token, the limiter."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session

from service.config import Settings
from service.models import Subscriber
from service.readers.accounts import Notifier, load_subscriber
from service.readers.ratelimit import RateLimiter
from service.readers.tokens import InvalidToken, Purpose, Tokens


def get_session(request: Request) -> Iterator[Session]:
    """A session for this request; handlers commit explicitly, anything else rolls back."""
    with request.app.state.sessions() as session:
        yield session


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_tokens(request: Request) -> Tokens:
    tokens: Tokens = request.app.state.tokens
    return tokens


def get_notifier(request: Request) -> Notifier:
    notifier: Notifier = request.app.state.notifier
    return notifier


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limit(request: Request, rule: str, key: str) -> None:
    limiter: RateLimiter = request.app.state.limiter
    wait = limiter.hit(rule, key)
    if wait is not None:
        raise HTTPException(
            429,
            detail="Too many requests; try again later.",
            headers={"Retry-After": str(math.ceil(wait))},
        )


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TokensDep = Annotated[Tokens, Depends(get_tokens)]
NotifierDep = Annotated[Notifier, Depends(get_notifier)]


def current_reader(
    session: SessionDep,
    tokens: TokensDep,
    x_subscriber_token: Annotated[
        str | None, Header(description="The token from a preferences link", max_length=2000)
    ] = None,
) -> Subscriber:
    if not x_subscriber_token:
        raise HTTPException(401, detail="X-Subscriber-Token is required.")
    try:
        return load_subscriber(session, tokens.read(Purpose.MANAGE, x_subscriber_token))
    except InvalidToken as exc:
        raise HTTPException(401, detail="Invalid or expired token.") from exc


ReaderDep = Annotated[Subscriber, Depends(current_reader)]
