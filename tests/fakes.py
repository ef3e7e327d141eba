"""Stand-ins for the task queue in web tests: the requests' effects, run in the test."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.config import Settings
from service.readers import accounts
from service.readers.schemas import SubscribeIn
from service.web.app import create_app


class SyncIntake:
    """Handles a subscribe request at once, as the worker would, with the app's notifier.

    Reads the app's sessions and notifier when called, so a test may replace them first.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def subscribe(self, request: SubscribeIn, source: str) -> None:
        state = self.app.state
        with state.sessions() as session:
            accounts.subscribe(
                session, request, settings=state.settings, notify=state.notifier, source=source
            )
            session.commit()


class RecordingAnnouncer:
    """Keeps the post ids handed over for instant mail (instead of a task per push)."""

    def __init__(self) -> None:
        self.announced: list[list[int]] = []

    def new_posts(self, session: Session, post_ids: Sequence[int]) -> None:
        self.announced.append(list(post_ids))


def app_with_sync_intake(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The real app, with subscribe requests handled in the test instead of by a worker, and
    new posts recorded instead of enqueued."""
    app = create_app(settings, engine)
    app.state.intake = SyncIntake(app)
    app.state.announcer = RecordingAnnouncer()
    return app


def app_in_transaction(settings: Settings, db: Session) -> FastAPI:
    """The app with every request's session inside the test's transaction (rolled back after)."""
    app = app_with_sync_intake(settings)
    connection = db.get_bind()
    app.state.sessions = lambda: Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    return app
