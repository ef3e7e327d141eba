"""The role matrix: every admin API route, whoever added it, with no token, a wrong token, an
editor's and an operator's.

Routes are read from the app itself and each route's required role from its dependencies
(`OperatorDep` or `EditorDep`), so a route added later is checked without editing this file,
and an `/api/admin/` route with neither dependency fails here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from sqlalchemy.orm import Session

from service.models import Role
from service.web.app import app as service_app
from service.web.deps import EditorDep, OperatorDep
from tests.admin import AdminSite, admin_site

PREFIX = "/api/admin"


def _check(annotated: Any) -> Callable[..., Any]:
    depends = get_args(annotated)[1]
    call: Callable[..., Any] = depends.dependency
    return call


ROLE_OF_CHECK = {_check(OperatorDep): Role.OPERATOR, _check(EditorDep): Role.EDITOR}


@dataclass(frozen=True)
class AdminRoute:
    method: str
    path: str
    role: Role | None  # None: no role check at all (a bug)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def url(self) -> str:
        return re.sub(r"\{[^}]+\}", "1", self.path)  # ids that exist in no empty database


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def admin_routes(app: FastAPI) -> list[AdminRoute]:
    """Every method and path under /api/admin, with the role its dependencies demand.

    `iter_route_contexts` sees into included routers, with their prefixes and router-level
    dependencies (`app.routes` alone shows an included router as one opaque entry).
    """
    found = []
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            continue
        dependant = getattr(route, "dependant", None)
        roles = (
            {ROLE_OF_CHECK[c] for c in _calls(dependant) if c in ROLE_OF_CHECK}
            if dependant
            else set()
        )
        role = Role.OPERATOR if Role.OPERATOR in roles else Role.EDITOR if roles else None
        for method in sorted(route.methods or {"GET"}):
            found.append(AdminRoute(method, path, role))
    return found


ROUTES = admin_routes(service_app)
# The operators' CRUD routes that exist today: if the enumeration stops seeing them (FastAPI
# changed how routers are included), the matrix below would go quiet, so this fails instead.
KNOWN = {
    "POST /api/admin/ingest",
    "GET /api/admin/sources",
    "POST /api/admin/sources",
    "GET /api/admin/sources/{source_id}",
    "PATCH /api/admin/sources/{source_id}",
    "DELETE /api/admin/sources/{source_id}",
    "POST /api/admin/sources/{source_id}/poll",
    "GET /api/admin/schedules",
    "POST /api/admin/schedules",
    "GET /api/admin/schedules/{schedule_id}",
    "PATCH /api/admin/schedules/{schedule_id}",
    "DELETE /api/admin/schedules/{schedule_id}",
    "GET /api/admin/suppressions",
    "POST /api/admin/suppressions",
    "DELETE /api/admin/suppressions/{suppression_id}",
    "GET /api/admin/subscribers",
}


def test_the_matrix_sees_every_admin_route() -> None:
    seen = {str(r) for r in ROUTES}
    assert seen >= KNOWN, KNOWN - seen
    documented = {
        f"{method.upper()} {path}"
        for path, operations in service_app.openapi()["paths"].items()
        if path.startswith(PREFIX)
        for method in operations
    }
    assert seen >= documented, documented - seen


def test_every_admin_route_demands_a_role() -> None:
    unguarded = [str(r) for r in ROUTES if r.role is None]
    assert unguarded == [], "admin routes without OperatorDep or EditorDep"


# Editors preview and send breaking news and read figures (issue 6, "Access"); everything else
# is the operators'. An EditorDep put on any other route by mistake fails here.
EDITOR_AREAS = ("/api/admin/breaking", "/api/admin/editions", "/api/admin/templates")


def test_editors_reach_only_breaking_news_editions_and_templates() -> None:
    stray = [
        str(r)
        for r in ROUTES
        if r.role is Role.EDITOR
        and not any(r.path == a or r.path.startswith(a + "/") for a in EDITOR_AREAS)
    ]
    assert stray == [], "editor routes outside breaking news, editions and templates"


@pytest.fixture
def site(db: Session, tmp_path: Path) -> Iterator[AdminSite]:
    with admin_site(db, tmp_path) as site:
        yield site


def _ask(site: AdminSite, route: AdminRoute, authorization: str | None) -> int:
    headers = {"Authorization": authorization} if authorization else {}
    body: dict[str, Any] | None = {} if route.method in ("POST", "PUT", "PATCH", "DELETE") else None
    answer = site.client.request(route.method, route.url(), headers=headers, json=body)
    if answer.status_code == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json() == {"detail": "A valid admin token is required."}
    return answer.status_code


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_role_matrix(site: AdminSite, route: AdminRoute) -> None:
    operator, editor = site.tokens[Role.OPERATOR], site.tokens[Role.EDITOR]
    assert _ask(site, route, None) == 401
    assert _ask(site, route, f"Bearer nl_{secrets.token_urlsafe(32)}") == 401
    assert _ask(site, route, f"Bearer {operator}x") == 401
    assert _ask(site, route, f"Basic {operator}") == 401
    as_editor = _ask(site, route, f"Bearer {editor}")
    if route.role is Role.OPERATOR:
        assert as_editor == 403
    else:
        assert as_editor not in (401, 403)
        assert as_editor < 500
    as_operator = _ask(site, route, f"Bearer {operator}")
    assert as_operator not in (401, 403)
    assert as_operator < 500  # ids that exist nowhere and an empty body: 404 or 422, never 500
