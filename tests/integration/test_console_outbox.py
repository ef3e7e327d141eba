"""The outbox viewer: an operator lists what the `outbox` backend wrote and opens a message,
its headers, text part and HTML part (in a sandboxed frame); nothing outside the folder opens."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.auth import create_token
from service.config import Settings
from service.mail.senders.outbox import OutboxSender
from service.mail.test_message import send_test_message
from service.models import Role
from tests.admin import sign_in
from tests.fakes import app_in_transaction


@pytest.fixture
def outbox(db: Session, tmp_path: Path) -> tuple[TestClient, dict[Role, str], str]:
    tokens = {role: create_token(db, f"{role.value}-desk", role) for role in Role}
    db.commit()
    settings = Settings(var_dir=tmp_path)
    written = send_test_message(OutboxSender(settings.outbox_dir), settings, "ana@example.org")
    client = TestClient(app_in_transaction(settings, db), raise_server_exceptions=False)
    return client, tokens, written


def test_an_operator_lists_and_opens_a_written_message(
    outbox: tuple[TestClient, dict[Role, str], str],
) -> None:
    client, tokens, written = outbox
    sign_in(client, tokens[Role.OPERATOR])
    listing = client.get("/admin/outbox")
    assert listing.status_code == 200
    assert "ana@example.org" in listing.text
    assert f'href="/admin/outbox/{written}"' in listing.text

    message = client.get(f"/admin/outbox/{written}")
    assert message.status_code == 200
    assert "Message-ID: " in message.text  # the headers as sent
    assert "To: ana@example.org" in message.text
    assert 'aria-label="Text part"' in message.text
    assert f'sandbox src="/admin/outbox/{written}/html"' in message.text

    html = client.get(f"/admin/outbox/{written}/html")
    assert html.status_code == 200
    assert html.headers["content-security-policy"].startswith("sandbox;")
    assert "<html" in html.text.lower()


@pytest.mark.parametrize("bad", ["..%2f..%2fsecret_key", "%2e%2e", "nothing-here.eml"])
def test_nothing_outside_the_outbox_opens(
    outbox: tuple[TestClient, dict[Role, str], str], bad: str
) -> None:
    client, tokens, _ = outbox
    sign_in(client, tokens[Role.OPERATOR])
    assert client.get(f"/admin/outbox/{bad}").status_code == 404
    assert client.get(f"/admin/outbox/{bad}/html").status_code == 404


def test_the_outbox_is_for_operators(outbox: tuple[TestClient, dict[Role, str], str]) -> None:
    client, tokens, written = outbox
    assert client.get("/admin/outbox", follow_redirects=False).status_code == 303
    sign_in(client, tokens[Role.EDITOR])
    assert client.get("/admin/outbox").status_code == 403
    assert client.get(f"/admin/outbox/{written}/html").status_code == 403
