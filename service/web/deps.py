"""What route handlers share: the session, the reader behind a token, the limiter."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Query, Request
from sqlalchemy.orm import Session

from service.auth import allows, authenticate
from service.config import Settings
from service.digests.planning import Announcer
from service.models import ApiToken, Role, Subscriber
from service.readers.accounts import Intake, Notifier, load_subscriber
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


def get_announcer(request: Request) -> Announcer:
    announcer: Announcer = request.app.state.announcer
    return announcer


def get_intake(request: Request) -> Intake:
    intake: Intake = request.app.state.intake
    return intake


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


# A row id in a path, bounded so an absurd number is a 422, not a database overflow (500).
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]

SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TokensDep = Annotated[Tokens, Depends(get_tokens)]
NotifierDep = Annotated[Notifier, Depends(get_notifier)]
IntakeDep = Annotated[Intake, Depends(get_intake)]
AnnouncerDep = Annotated[Announcer, Depends(get_announcer)]


SubscriberToken = Annotated[
    str | None, Header(description="The token from a preferences link", max_length=2000)
]


def _reader(session: Session, tokens: Tokens, token: str | None, *, lock: bool) -> Subscriber:
    if not token:
        raise HTTPException(401, detail="X-Subscriber-Token is required.")
    try:
        return load_subscriber(session, tokens.read(Purpose.MANAGE, token), lock=lock)
    except InvalidToken as exc:
        raise HTTPException(401, detail="Invalid or expired token.") from exc


def current_reader(
    session: SessionDep, tokens: TokensDep, x_subscriber_token: SubscriberToken = None
) -> Subscriber:
    return _reader(session, tokens, x_subscriber_token, lock=False)


def reader_for_update(
    session: SessionDep, tokens: TokensDep, x_subscriber_token: SubscriberToken = None
) -> Subscriber:
    """The reader, row-locked: two changes at once queue instead of colliding."""
    return _reader(session, tokens, x_subscriber_token, lock=True)


ReaderDep = Annotated[Subscriber, Depends(current_reader)]
WritableReaderDep = Annotated[Subscriber, Depends(reader_for_update)]


def _admin(needed: Role) -> Callable[..., ApiToken]:
    def check(
        session: SessionDep,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> ApiToken:
        scheme, _, token = (authorization or "").partition(" ")
        row = authenticate(session, token.strip()) if scheme.lower() == "bearer" else None
        if row is None:
            # Same answer for a missing, malformed or unknown token: nothing to learn from it.
            raise HTTPException(
                401,
                detail="A valid admin token is required.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not allows(row, needed):
            raise HTTPException(403, detail="This token's role may not do this.")
        session.commit()  # records last_used_at
        return row

    return check


OperatorDep = Annotated[ApiToken, Depends(_admin(Role.OPERATOR))]
EditorDep = Annotated[ApiToken, Depends(_admin(Role.EDITOR))]
