"""The newsroom's console pages: breaking news previewed then sent, editions with live figures,
cancel, and template previews, each behind the editor's session and CSRF token."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth import create_token
from service.config import Settings
from service.models import Cadence, Delivery, DeliveryStatus, Edition, EditionKind, Role
from tests.admin import csrf_of, sign_in
from tests.digest_data import post, reader, tag
from tests.fakes import app_in_transaction


class Desk:
    """The app with a breaking hand-off that keeps the batches, three readers and a post."""

    def __init__(self, db: Session, tmp_path: Path) -> None:
        self.tokens = {role: create_token(db, f"{role.value}-desk", role) for role in Role}
        harbour = tag(db, "harbour")
        for i in range(3):
            reader(db, f"sailor{i}@example.com", {harbour: Cadence.DAILY})
        self.post_id = post(db, "Storm closes the harbour", [harbour], published=None).id
        self.digest = Edition(key="digest:1:2026-11-27", kind=EditionKind.DIGEST)
        db.add(self.digest)
        db.commit()
        settings = Settings(var_dir=tmp_path, base_url="https://courier.example")
        app = app_in_transaction(settings, db)
        self.handed: list[tuple[int, list[int]]] = []
        app.state.breaking_dispatch = self.hand_off
        # https, as the site is: its cookies are Secure.
        self.client = TestClient(app, base_url="https://testserver", raise_server_exceptions=False)

    def hand_off(self, edition_id: int, ids: Sequence[int]) -> None:
        self.handed.append((edition_id, list(ids)))

    def submit(self, page: str, action: str, **fields: str) -> tuple[int, str]:
        token = csrf_of(self.client.get(page).text)
        answer = self.client.post(action, data={"csrf_token": token, **fields})
        return answer.status_code, answer.text


@pytest.fixture
def desk(db: Session, tmp_path: Path) -> Desk:
    desk = Desk(db, tmp_path)
    sign_in(desk.client, desk.tokens[Role.EDITOR])
    return desk


def test_an_editor_previews_then_sends_breaking_news_once(desk: Desk) -> None:
    status, html = desk.submit(
        "/admin/breaking", "/admin/breaking/preview", post=str(desk.post_id), subject=""
    )
    assert status == 200
    assert '<p id="reach"><b>3</b> readers would get this now' in html
    assert "Send to 3 readers now" in html
    assert "@example.com" not in html  # a placeholder reader, nobody's address or links
    assert desk.handed == []  # a preview sends nothing

    frame = desk.client.get(f"/admin/breaking/preview.html?post={desk.post_id}&subject=")
    assert frame.status_code == 200
    assert "Storm closes the harbour" in frame.text
    assert frame.headers["content-security-policy"].startswith("sandbox;")

    status, html = desk.submit(
        "/admin/breaking", "/admin/breaking/send", post=str(desk.post_id), subject="Storm!"
    )
    assert status == 200
    assert "<h1>Storm!</h1>" in html  # the edition's page, with the editor's subject
    assert [len(ids) for _, ids in desk.handed] == [3]
    edition_id = desk.handed[0][0]

    figures = desk.client.get(f"/admin/editions/{edition_id}/figures").json()
    assert (figures["planned"], figures["queued"], figures["percent"]) == (3, 3, 0)
    assert (figures["status"], figures["finished_at"]) == ("sending", None)

    # The same post again: the same edition, nothing new handed to the workers.
    desk.submit("/admin/breaking", "/admin/breaking/send", post=str(desk.post_id), subject="")
    assert len(desk.handed) == 1
    assert "Storm!" in desk.client.get("/admin/editions").text


def test_an_unknown_post_is_explained_on_the_page(desk: Desk) -> None:
    status, html = desk.submit(
        "/admin/breaking", "/admin/breaking/preview", post="https://nowhere.example/x", subject=""
    )
    assert status == 422
    assert 'role="alert"' in html
    assert "https://nowhere.example/x" in html  # kept in the form


def test_an_editor_cancels_breaking_news_but_not_a_digest(desk: Desk) -> None:
    desk.submit("/admin/breaking", "/admin/breaking/send", post=str(desk.post_id), subject="")
    edition_id = desk.handed[0][0]
    page = f"/admin/editions/{edition_id}"
    assert "Cancel what has not been sent" in desk.client.get(page).text
    status, html = desk.submit(page, f"{page}/cancel")
    assert "Cancel what has not been sent" not in html
    assert status == 200
    figures = desk.client.get(f"{page}/figures").json()
    assert (figures["status"], figures["skipped"], figures["percent"]) == ("cancelled", 3, 100)

    digest = f"/admin/editions/{desk.digest.id}"
    assert "Cancel what has not been sent" not in desk.client.get(digest).text
    status, _ = desk.submit(digest, f"{digest}/cancel")
    assert status == 403


def test_editions_page_filters_and_404s(desk: Desk) -> None:
    desk.submit("/admin/breaking", "/admin/breaking/send", post=str(desk.post_id), subject="")
    breaking_only = desk.client.get("/admin/editions", params={"kind": "breaking"}).text
    assert "Storm closes the harbour" in breaking_only
    assert "digest:1:2026-11-27" not in breaking_only
    assert desk.client.get("/admin/editions/999999").status_code == 404
    assert desk.client.get("/admin/editions/999999/figures").status_code == 404


def test_templates_preview_in_a_sandboxed_frame_and_test_send_is_for_operators(
    desk: Desk,
) -> None:
    page = desk.client.get("/admin/templates/digest")
    assert page.status_code == 200
    assert 'sandbox src="/admin/templates/digest/preview.html"' in page.text
    assert "Send a test" not in page.text  # editors preview; operators send tests
    frame = desk.client.get("/admin/templates/digest/preview.html")
    assert frame.headers["content-security-policy"].startswith("sandbox;")
    assert "<html" in frame.text.lower()
    status, _ = desk.submit(
        "/admin/templates/digest", "/admin/templates/digest/test-send", to="me@example.org"
    )
    assert status == 403
    assert desk.client.get("/admin/templates/no-such").status_code == 404


def test_a_stale_form_is_refused(desk: Desk) -> None:
    answer = desk.client.post(
        "/admin/breaking/send", data={"csrf_token": "forged", "post": str(desk.post_id)}
    )
    assert answer.status_code == 403
    assert desk.handed == []


@pytest.mark.parametrize("odd", ["²", "٣", "9" * 30, "0"])
def test_odd_post_numbers_are_no_post(desk: Desk, odd: str) -> None:
    status, html = desk.submit("/admin/breaking", "/admin/breaking/preview", post=odd, subject="")
    assert status == 422
    assert "no post" in html
    assert desk.client.get("/admin/breaking/preview.html", params={"post": odd}).status_code == 404
    assert desk.client.get("/admin/editions/99999999999999999999").status_code == 422


def test_first_errors_never_name_a_reader(desk: Desk, db: Session) -> None:
    desk.submit("/admin/breaking", "/admin/breaking/send", post=str(desk.post_id), subject="")
    edition_id = desk.handed[0][0]
    for n, row in enumerate(db.scalars(select(Delivery).where(Delivery.edition_id == edition_id))):
        row.status, row.backend = DeliveryStatus.FAILED, "smtp"
        row.error = f"550 5.1.1 <sailor{n}@example.com>: Recipient address rejected"
    db.commit()
    page = desk.client.get(f"/admin/editions/{edition_id}").text
    assert "@example.com" not in page
    assert "550 5.1.1 &lt;&lt;address&gt;&gt;: Recipient address rejected" in page
