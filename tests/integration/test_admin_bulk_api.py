"""The operators' bulk routes: subscriber import and export, template previews and test sends."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from service import tasks
from service.auth import create_token
from service.config import Settings, get_settings
from service.digests import preview
from service.mail import sender_from_settings, template_names
from service.models import Role, Subscriber, SubscriberStatus, Tag
from service.readers.tokens import InvalidToken, Purpose, Tokens
from service.web import admin_bulk
from tests.fakes import app_with_sync_intake
from tests.processes import service_env, start_worker, stop, wait_for
from tests.smtp_server import Server

HEADER = "email,tags,cadence,timezone,send_hour,consented_at\n"
FILE = (
    HEADER
    + "ann@example.org,climate;transport,daily,Europe/Kyiv,7,2024-05-01T09:30:00Z\n"
    + "bob@example.org,transport,weekly,,,\n"
    + "cy@nowhere,transport,weekly,,,\n"
)


class RecordingNotifier:
    def __init__(self) -> None:
        self.confirmations: list[int] = []

    def confirmation(self, session: Session, subscriber_id: int) -> None:
        self.confirmations.append(subscriber_id)

    def manage_link(self, session: Session, subscriber_id: int) -> None:
        raise AssertionError("not from an import")


class Site:
    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client, self.tokens = client, tokens

    def headers(self, role: str | None) -> dict[str, str]:
        token = {None: None, "wrong": "nl_not-a-token"}.get(role, self.tokens.get(role or ""))
        return {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, url: str, role: str | None = "operator", **kw: Any) -> Any:
        headers = {**kw.pop("headers", {}), **self.headers(role)}
        return self.client.request(method, url, headers=headers, **kw)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(var_dir=tmp_path, secret_key="k" * 48, base_url="https://news.example.org")


@pytest.fixture
def site(engine: Engine, sessions: Callable[[], Session], settings: Settings) -> Iterator[Site]:
    with sessions() as session:
        session.add_all(
            [Tag(slug="climate", name="Climate"), Tag(slug="transport", name="Transport")]
        )
        tokens = {role.value: create_token(session, f"{role.value}-1", role) for role in Role}
        session.commit()
    app = app_with_sync_intake(settings, engine)
    app.state.notifier = RecordingNotifier()
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Site(client, tokens)


ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "POST",
        "/api/admin/subscribers/import",
        {"content": FILE, "headers": {"content-type": "text/csv"}},
    ),
    ("GET", "/api/admin/subscribers/export", {}),
    ("POST", "/api/admin/templates/digest/test-send", {"json": {"to": "ops@example.org"}}),
]
EDITOR_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/api/admin/templates", {}),
    ("GET", "/api/admin/templates/digest/preview", {}),
]


@pytest.mark.parametrize(("method", "url", "kw"), ROUTES + EDITOR_ROUTES)
def test_roles(site: Site, method: str, url: str, kw: dict[str, Any]) -> None:
    assert site.call(method, url, None, **kw).status_code == 401
    assert site.call(method, url, "wrong", **kw).status_code == 401
    editor = site.call(method, url, "editor", **kw).status_code
    assert editor == (200 if (method, url, kw) in EDITOR_ROUTES else 403)


def test_import_a_csv_body_and_get_the_report(site: Site, sessions: Callable[[], Session]) -> None:
    answer = site.call(
        "POST", "/api/admin/subscribers/import", content=FILE, headers={"content-type": "text/csv"}
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert {k: report[k] for k in ("rows", "imported_active", "imported_pending", "rejected")} == {
        "rows": 3,
        "imported_active": 1,
        "imported_pending": 1,
        "rejected": 1,
    }
    assert report["rejected_rows"] == [
        {
            "line": 4,
            "email": "cy@nowhere",
            "reason": "bad address",
            "detail": "'cy@nowhere': The part after the @-sign is not valid. "
            "It should have a period.",
        }
    ]
    notifier = site.client.app.state.notifier  # type: ignore[attr-defined]
    with sessions() as session:
        bob = session.scalars(select(Subscriber).where(Subscriber.email == "bob@example.org")).one()
        assert bob.status == SubscriberStatus.PENDING
        assert notifier.confirmations == [bob.id]
    again = site.call(
        "POST", "/api/admin/subscribers/import", content=FILE, headers={"content-type": "text/csv"}
    ).json()
    assert (again["unchanged"], again["imported_pending"]) == (2, 0)
    assert len(notifier.confirmations) == 1


def test_import_a_multipart_upload_records_the_file_name(
    site: Site, sessions: Callable[[], Session]
) -> None:
    answer = site.call(
        "POST",
        "/api/admin/subscribers/import",
        files={"file": ("members.csv", FILE.encode(), "text/csv")},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["source"] == "import:members.csv"
    with sessions() as session:
        assert set(session.scalars(select(Subscriber.consent_source))) == {"import:members.csv"}


def test_bad_uploads_get_clear_4xx(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_bulk, "MAX_IMPORT_BYTES", 1000)
    big = HEADER + "x@example.org,climate,,,,\n" * 50
    too_big = site.call(
        "POST", "/api/admin/subscribers/import", content=big, headers={"content-type": "text/csv"}
    )
    assert too_big.status_code == 413
    assert "split it" in too_big.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield from (big[i : i + 100].encode() for i in range(0, len(big), 100))

    streamed = site.call(
        "POST",
        "/api/admin/subscribers/import",
        content=chunks(),
        headers={"content-type": "text/csv"},
    )
    assert streamed.status_code == 413
    as_json = site.call("POST", "/api/admin/subscribers/import", json={"email": "a@example.org"})
    assert as_json.status_code == 415
    wrong_header = site.call(
        "POST",
        "/api/admin/subscribers/import",
        content="mail,list\n",
        headers={"content-type": "text/csv"},
    )
    assert wrong_header.status_code == 422
    assert "unknown column(s) 'mail', 'list'" in wrong_header.json()["detail"]
    no_file = site.call("POST", "/api/admin/subscribers/import", files={"other": ("a", b"x")})
    assert no_file.status_code == 422


def test_export_streams_what_the_import_reads(site: Site) -> None:
    site.call("POST", "/api/admin/subscribers/import", files={"file": ("a.csv", FILE.encode())})
    answer = site.call("GET", "/api/admin/subscribers/export")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert rows == [
        {
            "email": "ann@example.org",
            "tags": "climate;transport",
            "cadence": "daily",
            "timezone": "Europe/Kyiv",
            "send_hour": "7",
            "consented_at": "2024-05-01T09:30:00+00:00",
        },
        {
            "email": "bob@example.org",
            "tags": "transport",
            "cadence": "weekly",
            "timezone": "UTC",
            "send_hour": "",
            "consented_at": "",
        },
    ]


READER_LINK = re.compile(r"/(confirm|preferences|unsubscribe)/([^\s\"'<>]+)")


def _assert_no_reader_links(text: str, settings: Settings) -> None:
    found = READER_LINK.findall(text)
    tokens = Tokens(settings)
    for _page, token in found:
        for purpose in Purpose:
            with pytest.raises(InvalidToken):
                tokens.read(purpose, token)


def test_templates_are_listed(site: Site) -> None:
    listed = site.call("GET", "/api/admin/templates", "editor").json()
    assert [t["name"] for t in listed] == template_names()
    assert {t["name"]: t["kind"] for t in listed}.items() >= {
        "digest": "digest",
        "instant": "instant",
        "breaking": "breaking",
        "confirm": "confirm",
        "manage": "manage",
        "test": "test",
    }.items()


@pytest.mark.parametrize("name", template_names())
def test_every_template_previews_with_sample_data(
    site: Site, settings: Settings, name: str
) -> None:
    answer = site.call("GET", f"/api/admin/templates/{name}/preview", "editor")
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert shown["name"] == name
    assert shown["subject"].strip()
    for part in ("text", "html"):
        body = shown[part]
        assert "%%nl:" not in body  # every per-reader slot filled
        assert "{{" not in body
        assert "{%" not in body
        _assert_no_reader_links(body, settings)
    assert shown["html"].lstrip().lower().startswith("<!doctype html>")
    if shown["kind"] in ("digest", "instant", "breaking"):
        # The fictional portal's posts, shown in the sample reader's zone (Kyiv).
        assert "https://harbour-courier.example/news/tram-line-approved/" in shown["text"]
        assert re.search(r"\d\d:\d\d EES?T", shown["text"])
        assert "https://news.example.org/unsubscribe/sample-unsubscribe-link" in shown["text"]
    if shown["kind"] in ("digest", "confirm"):
        assert "Transport" in shown["text"]
        assert "Climate" in shown["text"]


@pytest.mark.parametrize("name", ["nope", "_base", "..", "digest%2F..%2F..%2Fetc"])
def test_an_unknown_template_is_404(site: Site, name: str) -> None:
    assert site.call("GET", f"/api/admin/templates/{name}/preview", "editor").status_code == 404
    sent = site.call("POST", f"/api/admin/templates/{name}/test-send", json={"to": "o@example.org"})
    assert sent.status_code == 404


def test_a_test_send_needs_a_real_address(site: Site) -> None:
    answer = site.call("POST", "/api/admin/templates/digest/test-send", json={"to": "ops@"})
    assert answer.status_code == 422


@pytest.mark.smtp
@pytest.mark.parametrize("name", template_names())
def test_each_sample_reaches_an_smtp_server_marked_as_a_test(
    name: str, settings: Settings, start_server: Callable[..., Server]
) -> None:
    server = start_server()
    smtp = settings.model_copy(update={"mail_backend": "smtp", "smtp_url": server.url})
    sender = sender_from_settings(smtp)
    try:
        preview.send_test(sender, smtp, name, "ops@example.org")
    finally:
        sender.close()
    [envelope] = server.handler.received
    message = email.message_from_bytes(_content(envelope), policy=email.policy.default)
    assert message["To"] == "ops@example.org"
    assert str(message["Subject"]).startswith("[TEST] ")
    assert message["X-Newsletter-Test"] == name
    assert "List-Unsubscribe" not in message
    for subtype in ("plain", "html"):
        part = message.get_body((subtype,))
        assert part is not None
        _assert_no_reader_links(str(part.get_content()), settings)


@pytest.mark.process
@pytest.mark.smtp
def test_the_api_test_send_goes_through_a_real_worker(
    site: Site,
    redis_url: str,
    var_dir: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    env = service_env(var_dir, broker_url=redis_url, mail_backend="smtp", smtp_url=server.url)
    tasks.configure(Settings(var_dir=var_dir, broker_url=redis_url))
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, queues="mail")
    try:
        answer = site.call(
            "POST", "/api/admin/templates/breaking/test-send", json={"to": "Ops@Example.ORG"}
        )
        assert answer.status_code == 202, answer.text
        assert answer.json() == {
            "status": "queued",
            "template": "breaking",
            "to": "Ops@example.org",
        }
        wait_for(lambda: len(server.handler.received) == 1, 30, "the test mail", log)
    finally:
        tasks.configure(get_settings())
        assert stop(worker) == 0
    message = email.message_from_bytes(
        _content(server.handler.received[0]), policy=email.policy.default
    )
    assert message["Subject"] == ("[TEST] Breaking: Council approves the river district tram line")
    assert server.handler.count_by_recipient() == {"Ops@example.org": 1}


def _content(envelope: Envelope) -> bytes:
    assert isinstance(envelope.content, bytes)
    return envelope.content
