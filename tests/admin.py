"""The admin JSON API as a test drives it: the real app in the test's transaction, one token
per role."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx  # what starlette's TestClient runs on
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.auth import create_token
from service.config import Settings
from service.db import session_factory
from service.feeds.fetch import make_client
from service.models import Role
from service.web.admin_sources import get_feed_client
from tests.fakes import app_in_transaction, app_with_sync_intake


class RecordingPolls:
    """Keeps the source ids handed over for a poll (instead of a task each)."""

    def __init__(self) -> None:
        self.queued: list[int] = []

    def poll(self, session: Session, source_id: int) -> None:
        self.queued.append(source_id)


@dataclass
class AdminSite:
    client: TestClient
    tokens: dict[Role, str]
    polls: RecordingPolls = field(default_factory=RecordingPolls)

    def call(
        self, method: str, path: str, *, role: Role = Role.OPERATOR, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return self.client.request(method, path, headers=headers, **kwargs)


@contextmanager
def admin_site(db: Session, tmp_path: Path) -> Iterator[AdminSite]:
    """The site, with a feed-fetching client of its own that is closed afterwards."""
    tokens = {role: create_token(db, f"{role.value}-token", role) for role in Role}
    db.commit()
    app = app_in_transaction(Settings(var_dir=tmp_path), db)
    site = AdminSite(TestClient(app, raise_server_exceptions=False), tokens)
    app.state.polls = site.polls
    with make_client("newsletter-tests/1.0") as feed_client:
        app.dependency_overrides[get_feed_client] = lambda: feed_client
        yield site


@contextmanager
def committed_admin_site(engine: Engine, tmp_path: Path, **settings: Any) -> Iterator[AdminSite]:
    """The site on a database whose requests really commit (for workers and senders that open
    their own sessions); the caller's `sessions` fixture empties the tables afterwards."""
    with session_factory(engine)() as session:
        tokens = {role: create_token(session, f"{role.value}-token", role) for role in Role}
        session.commit()
    app = app_with_sync_intake(Settings(var_dir=tmp_path, **settings), engine)
    site = AdminSite(TestClient(app, raise_server_exceptions=False), tokens)
    app.state.polls = site.polls
    with make_client("newsletter-tests/1.0") as feed_client:
        app.dependency_overrides[get_feed_client] = lambda: feed_client
        yield site


def csrf_of(html: str) -> str:
    """The CSRF token a console page put in its forms."""
    import re

    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, token: str, next_page: str = "/admin") -> str:
    """Sign the client in to the console as a browser does; returns where it was sent."""
    form = client.get("/admin/login")
    answer = client.post(
        "/admin/login",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": next_page},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"])
