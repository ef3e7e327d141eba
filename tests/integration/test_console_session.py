"""Signing in to the console: a token becomes an HttpOnly, SameSite=Strict session; forms need
their CSRF token; a deleted token signs its browsers out; the role decides what opens."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.orm import Session

from service.auth import create_token
from service.config import Settings
from service.models import ApiToken, Role
from service.web.app import app as service_app
from service.web.console.auth import EditorPage, OperatorPage, safe_next
from tests.admin import csrf_of, sign_in
from tests.fakes import app_in_transaction


@pytest.fixture
def console(db: Session, tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    tokens = {role.value: create_token(db, f"{role.value}-desk", role) for role in Role}
    db.commit()
    settings = Settings(var_dir=tmp_path, rate_limit_sign_in_per_ip="5/minute")
    app = app_in_transaction(settings, db)
    return TestClient(app, raise_server_exceptions=False, follow_redirects=False), tokens


def test_a_page_without_a_session_sends_the_browser_to_sign_in(
    console: tuple[TestClient, dict[str, str]],
) -> None:
    client, _ = console
    answer = client.get("/admin/breaking")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/login?next=%2Fadmin%2Fbreaking"


def test_signing_in_sets_a_strict_http_only_cookie_scoped_to_the_console(
    console: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = console
    form = client.get("/admin/login")
    answer = client.post(
        "/admin/login",
        data={"token": tokens["editor"], "csrf_token": csrf_of(form.text), "next": "/admin"},
    )
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("newsletter_console=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/admin" in cookie
    assert tokens["editor"] not in cookie  # the token itself never leaves the sign-in form
    planted = csrf_of(form.text)
    assert answer.cookies["newsletter_csrf"] != planted  # a fresh form token with the session


def test_a_wrong_token_is_refused_with_the_form_again(
    console: tuple[TestClient, dict[str, str]],
) -> None:
    client, _ = console
    form = client.get("/admin/login")
    answer = client.post(
        "/admin/login", data={"token": "nl_guess", "csrf_token": csrf_of(form.text)}
    )
    assert answer.status_code == 401
    assert "That token is not valid" in answer.text
    assert "newsletter_console" not in answer.headers.get("set-cookie", "")


def test_sign_in_without_the_csrf_token_is_refused(
    console: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = console
    client.get("/admin/login")
    answer = client.post("/admin/login", data={"token": tokens["operator"]})
    assert answer.status_code == 403
    assert "newsletter_console" not in answer.headers.get("set-cookie", "")


def test_guessing_tokens_is_rate_limited(console: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = console
    form = client.get("/admin/login")
    codes = [
        client.post(
            "/admin/login", data={"token": f"nl_guess{n}", "csrf_token": csrf_of(form.text)}
        ).status_code
        for n in range(6)
    ]
    assert codes == [401] * 5 + [429]
    # The limit holds for right tokens too: a guesser cannot tell it lifted by trying one.
    last = client.post(
        "/admin/login", data={"token": tokens["operator"], "csrf_token": csrf_of(form.text)}
    )
    assert last.status_code == 429


def test_sign_in_returns_to_the_page_asked_for_but_never_elsewhere(
    console: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = console
    assert sign_in(client, tokens["editor"], "/admin/breaking") == "/admin/breaking"
    for hostile in ["https://evil.example/", "//evil.example/admin", "/admin//evil.example"]:
        assert safe_next(hostile) == "/admin"
    assert safe_next("/administrator") == "/admin"
    assert safe_next("/admin/editions?page=2") == "/admin/editions?page=2"


def test_an_editor_is_kept_out_of_operator_pages(
    console: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = console
    sign_in(client, tokens["editor"])
    answer = client.get("/admin/sources")
    assert answer.status_code == 403
    assert "for operators" in answer.text


def test_signing_out_ends_the_session(console: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = console
    sign_in(client, tokens["editor"])
    page = client.get("/admin/editions")
    assert page.status_code == 200
    answer = client.post("/admin/logout", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 303
    assert client.get("/admin/editions").status_code == 303


def test_deleting_a_token_signs_its_sessions_out(
    console: tuple[TestClient, dict[str, str]], db: Session
) -> None:
    client, tokens = console
    sign_in(client, tokens["editor"])
    assert client.get("/admin/editions").status_code == 200
    db.execute(delete(ApiToken).where(ApiToken.name == "editor-desk"))
    db.commit()
    assert client.get("/admin/editions").status_code == 303


def test_a_forged_cookie_is_no_session(console: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = console
    sign_in(client, tokens["operator"])
    genuine = client.cookies["newsletter_console"]
    client.cookies.clear()
    client.cookies.set("newsletter_console", genuine[:-2] + "xx", path="/admin")
    assert client.get("/admin/editions").status_code == 303


# -- every console page, with no session and with an editor's --------------------------------


def _role_checks() -> dict[object, Role]:
    return {
        get_args(OperatorPage)[1].dependency: Role.OPERATOR,
        get_args(EditorPage)[1].dependency: Role.EDITOR,
    }


def console_routes() -> list[tuple[str, str, Role | None]]:
    """(method, path, role) of every /admin route but signing in and out."""
    checks, found = _role_checks(), []
    for route in iter_route_contexts(service_app.routes):
        path = route.path or ""
        if not path.startswith("/admin") or path in ("/admin/login", "/admin/logout"):
            continue
        dependant = getattr(route, "dependant", None)
        calls = {d.call for d in dependant.dependencies} if dependant else set()
        roles = {checks[c] for c in calls if c in checks}
        role = Role.OPERATOR if Role.OPERATOR in roles else Role.EDITOR if roles else None
        found += [(method, path, role) for method in sorted(route.methods or {"GET"})]
    return found


CONSOLE = console_routes()


def test_the_console_routes_are_all_seen_and_all_guarded() -> None:
    seen = {f"{m} {p}" for m, p, _ in CONSOLE}
    assert {"GET /admin", "GET /admin/editions", "POST /admin/breaking/send"} <= seen
    assert {"GET /admin/outbox", "POST /admin/subscribers/import"} <= seen
    unguarded = [f"{m} {p}" for m, p, role in CONSOLE if role is None and p != "/admin"]
    assert unguarded == []


@pytest.mark.parametrize(("method", "path", "role"), CONSOLE, ids=lambda v: str(v))
def test_no_console_page_opens_without_the_right_role(
    console: tuple[TestClient, dict[str, str]], method: str, path: str, role: Role | None
) -> None:
    client, tokens = console
    url = re.sub(r"\{[^}]+\}", "1", path)
    anonymous = client.request(method, url)
    assert anonymous.status_code == 303
    sign_in(client, tokens["editor"])
    as_editor = client.request(method, url, data={"csrf_token": "x"} if method == "POST" else None)
    if role == Role.OPERATOR:
        assert as_editor.status_code == 403
    else:
        assert as_editor.status_code != 500
