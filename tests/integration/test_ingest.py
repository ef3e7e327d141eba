"""The CMS push: an operator token stores a post through the same cleaning as a polled item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth import create_token
from service.config import Settings
from service.models import Post, Role
from tests.fakes import app_in_transaction


@pytest.fixture
def site(db: Session, tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    tokens = {role.value: create_token(db, f"{role.value}-1", role) for role in Role}
    db.commit()
    app = app_in_transaction(Settings(var_dir=tmp_path), db)
    return TestClient(app, raise_server_exceptions=False), tokens


POST: dict[str, Any] = {
    "url": "https://courier.example/tram-line/?utm_source=cms#top",
    "title": "Council approves the tram line &amp; more",
    "summary_html": (
        '<p onclick="x()">Vote <a href="/votes/12">details</a></p><script>bad()</script>'
    ),
    "tags": ["transport", "city-hall"],
}


def _push(client: TestClient, token: str | None, body: dict[str, Any] = POST) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/api/admin/ingest", json=body, headers=headers)


def test_only_an_operator_may_push(site: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = site
    assert _push(client, None).status_code == 401
    assert _push(client, "nl_not-a-real-token").status_code == 401
    assert _push(client, tokens["editor"]).status_code == 403
    assert _push(client, tokens["operator"]).status_code == 200


def test_a_pushed_post_is_cleaned_like_a_polled_one(
    site: tuple[TestClient, dict[str, str]], db: Session
) -> None:
    client, tokens = site
    answer = _push(client, tokens["operator"]).json()
    assert answer["result"] == "new"
    post = db.get(Post, answer["post_id"])
    assert post is not None
    assert post.url == "https://courier.example/tram-line/"  # canonical: no tracking, no fragment
    assert post.title == "Council approves the tram line & more"  # plain text
    assert "script" not in post.summary_html
    assert "onclick" not in post.summary_html
    assert 'href="https://courier.example/votes/12"' in post.summary_html  # made absolute
    assert sorted(t.slug for t in post.tags) == ["city-hall", "transport"]


def test_a_new_post_is_announced_for_instant_mail_once(
    site: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = site
    announcer = client.app.state.announcer  # type: ignore[attr-defined]
    first = _push(client, tokens["operator"]).json()
    _push(client, tokens["operator"], {**POST, "title": "Council approves the tram line"})
    assert announcer.announced == [[first["post_id"]]]  # the edit is not news again


def test_pushing_again_updates_and_never_duplicates(
    site: tuple[TestClient, dict[str, str]], db: Session
) -> None:
    client, tokens = site
    first = _push(client, tokens["operator"]).json()
    assert _push(client, tokens["operator"]).json() == {**first, "result": "unchanged"}
    edited = _push(client, tokens["operator"], {**POST, "title": "Tram line approved"}).json()
    assert edited == {**first, "result": "updated"}
    assert len(db.scalars(select(Post)).all()) == 1


@pytest.mark.parametrize(
    "body",
    [
        {**POST, "url": "javascript:alert(1)"},
        {**POST, "tags": []},
        {**POST, "tags": ["Bad Slug"]},
        {k: v for k, v in POST.items() if k != "title"},
    ],
)
def test_bad_pushes_are_422(site: tuple[TestClient, dict[str, str]], body: dict[str, Any]) -> None:
    client, tokens = site
    assert _push(client, tokens["operator"], body).status_code == 422
