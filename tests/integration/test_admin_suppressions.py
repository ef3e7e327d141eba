"""Operators search, add and lift suppressions through the JSON API; sending honours them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.config import Settings
from service.digests import planning
from service.digests.sending import send_batch
from service.models import Cadence, Tag
from service.suppressions import is_suppressed, suppress
from tests.admin import AdminSite, admin_site, committed_admin_site
from tests.digest_data import RecordingSender, merge, post, reader, tag

PATH = "/api/admin/suppressions"


@pytest.fixture
def site(db: Session, tmp_path: Path) -> Iterator[AdminSite]:
    with admin_site(db, tmp_path) as site:
        yield site


def _add(site: AdminSite, email: str, **body: Any) -> dict[str, Any]:
    added = site.call("POST", PATH, json={"email": email, **body})
    assert added.status_code == 201, added.text
    entry: dict[str, Any] = added.json()
    return entry


def _search(site: AdminSite, **params: Any) -> dict[str, Any]:
    found = site.call("GET", PATH, params=params)
    assert found.status_code == 200, found.text
    page: dict[str, Any] = found.json()
    return page


def test_add_search_and_lift(site: AdminSite, db: Session) -> None:
    entry = _add(site, "Ann.Lee@Example.org", reason="abuse", note="asked by phone")
    assert (entry["email"], entry["reason"], entry["source"]) == (
        "Ann.Lee@example.org",
        "abuse",
        "operator",
    )
    assert entry["note"] == "asked by phone"
    assert is_suppressed(db, "ann.lee@example.org")  # what sending checks, any case

    for query in ("ann.lee", "EXAMPLE.ORG", "lee@ex"):
        page = _search(site, q=query)
        assert [e["id"] for e in page["items"]] == [entry["id"]], query
        assert page["total"] == 1
    assert _search(site, q="bob") == {"items": [], "total": 0, "limit": 50, "offset": 0}

    lifted = site.call("DELETE", f"{PATH}/{entry['id']}", params={"note": "asked again, kindly"})
    assert lifted.status_code == 204
    assert not is_suppressed(db, "ann.lee@example.org")
    assert _search(site)["items"] == []
    [history] = site.call("GET", f"{PATH}/lifts", params={"q": "ann.lee"}).json()
    assert (history["email"], history["reason"], history["note"]) == (
        "Ann.Lee@example.org",
        "abuse",
        "asked by phone",
    )
    assert (history["lifted_by"], history["lift_note"]) == ("operator-token", "asked again, kindly")
    too_long = site.call("DELETE", f"{PATH}/{entry['id']}", params={"note": "x" * 2001})
    assert too_long.status_code == 422


def test_a_whole_address_finds_an_erased_readers_hash(site: AdminSite, db: Session) -> None:
    suppress(db, "gone@example.org", reason="erased", source="reader", keep_address=False)
    db.commit()
    [entry] = _search(site, q="Gone@Example.org")["items"]
    assert (entry["email"], entry["reason"]) == (None, "erased")
    assert _search(site, q="gone")["items"] == []  # a part of it cannot match a hash


def test_pages_newest_first_and_wildcards_are_literal(site: AdminSite) -> None:
    ids = [_add(site, f"reader{i}@example.org")["id"] for i in range(5)]
    underscored = _add(site, "first_last@example.org")["id"]
    page = _search(site, q="reader", limit=2, offset=2)
    assert page["total"] == 5
    assert [e["id"] for e in page["items"]] == [ids[2], ids[1]]
    assert [e["id"] for e in _search(site, q="_")["items"]] == [underscored]
    assert _search(site, q="%")["items"] == []


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"email": "not-an-address"}, 422, "not an email address"),
        ({"email": "x@example.org", "reason": "Because I Said"}, 422, "reason"),
        ({"email": "x@example.org", "colour": "red"}, 422, "colour"),
        ({"email": "Taken@example.org"}, 409, "suppressed already"),
    ],
)
def test_bad_additions_are_refused_with_a_reason(
    site: AdminSite, body: dict[str, Any], status: int, message: str
) -> None:
    _add(site, "taken@example.org")
    refused = site.call("POST", PATH, json=body)
    assert refused.status_code == status
    assert message in refused.text
    assert _search(site)["total"] == 1


def test_bad_searches_and_unknown_ids(site: AdminSite) -> None:
    assert site.call("GET", PATH, params={"limit": 0}).status_code == 422
    assert site.call("GET", PATH, params={"limit": 1000}).status_code == 422
    assert site.call("GET", PATH, params={"offset": -1}).status_code == 422
    missing = site.call("DELETE", f"{PATH}/4040")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no suppression with id 4040"


def test_sending_skips_an_address_suppressed_through_the_api_until_lifted(
    engine: Engine, sessions: Callable[[], Session], tmp_path: Path
) -> None:
    settings = Settings(var_dir=tmp_path, base_url="https://courier.example")
    sender = RecordingSender()
    with sessions() as s:
        port = tag(s, "port")
        reader(s, "ann@example.org", {port: Cadence.INSTANT})
        s.commit()
        port_id = port.id

    def news(title: str) -> dict[str, int]:
        """A new post in "port", planned for instant readers and sent as the worker would."""
        batches: list[tuple[int, list[int]]] = []
        with sessions() as s:
            item = post(s, title, [s.get_one(Tag, port_id)], published=datetime.now(UTC))
            s.commit()
            planning.plan_instant(s, [item.id], lambda e, ids: batches.append((e, list(ids))))
        return dict(merge([send_batch(sessions, sender, settings, *b) for b in batches]).counts)

    with committed_admin_site(engine, tmp_path) as site:
        entry = _add(site, "ANN@example.org")
        assert news("Harbour closed").get("sent", 0) == 0
        assert sender.to("ann@example.org") == []

        assert site.call("DELETE", f"{PATH}/{entry['id']}").status_code == 204
        assert news("Harbour open again") == {"sent": 1}
        assert len(sender.to("ann@example.org")) == 1
