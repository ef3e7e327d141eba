"""The breaking-news and editions routes: who may call them, and what an editor sees."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth import create_token
from service.config import Settings
from service.digests import editions
from service.models import Cadence, Delivery, Edition, EditionKind, EditionStatus, Role
from tests.digest_data import post, reader, tag
from tests.fakes import app_in_transaction


class Site:
    def __init__(self, db: Session, tmp_path: Path) -> None:
        self.tokens = {role.value: create_token(db, f"{role.value}-1", role) for role in Role}
        port = tag(db, "port")
        for i in range(3):
            reader(db, f"r{i}@example.com", {port: Cadence.DAILY})
        self.post_id = post(db, "Ship aground", [port], published=datetime.now(UTC)).id
        self.digest = Edition(key="digest:1:2026-11-27", kind=EditionKind.DIGEST)
        db.add(self.digest)
        db.commit()
        app = app_in_transaction(Settings(var_dir=tmp_path, base_url="https://courier.example"), db)
        self.handed: list[tuple[int, list[int]]] = []
        app.state.breaking_dispatch = self.hand_off
        self.client = TestClient(app, raise_server_exceptions=False)

    def hand_off(self, edition_id: int, ids: Sequence[int]) -> None:
        self.handed.append((edition_id, list(ids)))

    def call(self, method: str, path: str, role: str | None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return self.client.request(method, path, headers=headers, **kwargs)


@pytest.fixture
def site(db: Session, tmp_path: Path) -> Site:
    return Site(db, tmp_path)


def test_every_route_wants_a_token(site: Site) -> None:
    routes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/admin/breaking", {"json": {"post_id": site.post_id, "dry_run": True}}),
        ("GET", "/api/admin/editions", {}),
        ("GET", f"/api/admin/editions/{site.digest.id}", {}),
        ("POST", f"/api/admin/editions/{site.digest.id}/cancel", {}),
    ]
    for method, path, kwargs in routes:
        assert site.call(method, path, None, **kwargs).status_code == 401, path
        wrong = site.client.request(
            method, path, headers={"Authorization": "Bearer nl_not-a-real-token"}, **kwargs
        )
        assert wrong.status_code == 401, path
        assert wrong.json() == {"detail": "A valid admin token is required."}  # no hint
    assert site.handed == []


def test_an_editor_previews_sends_watches_and_cancels_breaking_news(site: Site) -> None:
    body = {"post_id": site.post_id, "subject": "Ship aground at the pier", "dry_run": True}
    preview = site.call("POST", "/api/admin/breaking", "editor", json=body)
    assert preview.status_code == 200, preview.text
    assert preview.json()["readers"] == 3
    assert preview.json()["subject"] == "Ship aground at the pier"
    assert "@example.com" not in preview.json()["html"]
    assert site.handed == []

    sent = site.call("POST", "/api/admin/breaking", "editor", json={**body, "dry_run": False})
    assert sent.status_code == 200, sent.text
    edition_id = sent.json()["edition_id"]
    assert sent.json()["created"] is True
    assert sent.json()["planned"] == 3
    assert [len(ids) for _, ids in site.handed] == [3]
    again = site.call("POST", "/api/admin/breaking", "editor", json={**body, "dry_run": False})
    assert again.json()["edition_id"] == edition_id
    assert again.json()["created"] is False
    assert len(site.handed) == 1

    listed = site.call("GET", "/api/admin/editions?kind=breaking", "editor").json()
    assert [e["id"] for e in listed["items"]] == [edition_id]
    detail = site.call("GET", f"/api/admin/editions/{edition_id}", "editor").json()
    assert (detail["planned"], detail["queued"], detail["progress"]) == (3, 3, 0.0)

    cancelled = site.call("POST", f"/api/admin/editions/{edition_id}/cancel", "editor")
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["cancelled"]) == ("cancelled", 3)


def test_only_an_operator_cancels_a_digest(site: Site, db: Session) -> None:
    path = f"/api/admin/editions/{site.digest.id}/cancel"
    denied = site.call("POST", path, "editor")
    assert denied.status_code == 403
    assert db.get(Edition, site.digest.id).status == EditionStatus.PLANNED  # type: ignore[union-attr]
    # An editor may still read the digest's figures.
    assert site.call("GET", f"/api/admin/editions/{site.digest.id}", "editor").status_code == 200
    assert site.call("POST", path, "operator").json()["status"] == "cancelled"
    assert site.call("POST", path, "operator").status_code == 200  # again: no change


def test_unknown_ids_404_finished_409_bad_input_422(site: Site, db: Session) -> None:
    breaking = "/api/admin/breaking"
    missing = site.call("POST", breaking, "editor", json={"post_id": 999_999})
    assert missing.status_code == 404
    by_url = site.call("POST", breaking, "editor", json={"url": "https://courier.example/nope"})
    assert by_url.status_code == 404
    both = {"post_id": site.post_id, "url": "https://courier.example/ship-aground"}
    assert site.call("POST", breaking, "editor", json=both).status_code == 422
    assert site.call("POST", breaking, "editor", json={}).status_code == 422
    long = {"post_id": site.post_id, "subject": "x" * 201}
    assert site.call("POST", breaking, "editor", json=long).status_code == 422
    assert site.call("GET", "/api/admin/editions/999999", "editor").status_code == 404
    assert site.call("POST", "/api/admin/editions/999999/cancel", "operator").status_code == 404
    assert site.call("GET", "/api/admin/editions?status=paused", "editor").status_code == 422

    site.digest.status = EditionStatus.DONE
    db.commit()
    done = site.call("POST", f"/api/admin/editions/{site.digest.id}/cancel", "operator")
    assert done.status_code == 409
    assert db.scalars(select(Delivery)).all() == []
    with pytest.raises(editions.EditionFinished):
        editions.cancel_edition(db, site.digest.id)


def test_absurd_ids_are_a_422_not_a_crash(site: Site) -> None:
    for path in ["/api/admin/editions/99999999999999999999", "/api/admin/editions/0"]:
        answer = site.call("GET", path, "editor")
        assert answer.status_code == 422, path
    odd = site.call("POST", "/api/admin/breaking", "editor", json={"post_id": 2**40})
    assert odd.status_code in (404, 422)
