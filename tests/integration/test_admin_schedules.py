"""Operators manage digest schedules through the JSON API, validated as the CLI validates."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from service.digests.planning import plan_digests
from service.models import Cadence, Delivery, DeliveryStatus, Edition
from tests.admin import AdminSite, admin_site
from tests.digest_data import reader, tag


@pytest.fixture
def site(db: Session, tmp_path: Path) -> Iterator[AdminSite]:
    with admin_site(db, tmp_path) as site:
        yield site


def _add(site: AdminSite, **body: Any) -> dict[str, Any]:
    added = site.call("POST", "/api/admin/schedules", json=body)
    assert added.status_code == 201, added.text
    schedule: dict[str, Any] = added.json()
    return schedule


def test_add_list_change_and_delete_a_schedule(site: AdminSite) -> None:
    before = datetime.now(UTC)
    morning = _add(site, name="morning", send_time="07:30")
    assert {k: morning[k] for k in ("cadence", "weekday", "send_time", "template", "enabled")} == {
        "cadence": "daily",
        "weekday": None,
        "send_time": "07:30",
        "template": "digest",
        "enabled": True,
    }
    next_send = datetime.fromisoformat(morning["next_send_at"])
    assert (next_send.hour, next_send.minute) == (7, 30)
    assert before < next_send <= before + timedelta(days=1)

    weekly = _add(site, name="sunday", cadence="weekly", weekday="Sunday", send_time="09:00")
    assert weekly["weekday"] == "sun"
    sunday = datetime.fromisoformat(weekly["next_send_at"])
    assert (sunday.weekday(), sunday.hour) == (6, 9)
    assert before < sunday <= before + timedelta(days=7)

    listed = site.call("GET", "/api/admin/schedules").json()
    assert [s["name"] for s in listed] == ["morning", "sunday"]
    path = f"/api/admin/schedules/{weekly['id']}"
    assert site.call("GET", path).json() == weekly

    # Made daily, the schedule drops its weekday; disabled, it has no next send.
    changed = site.call(
        "PATCH", path, json={"name": "evening", "cadence": "daily", "send_time": "18:05"}
    )
    assert changed.status_code == 200, changed.text
    shown = site.call("GET", path).json()
    assert shown == changed.json()
    assert (shown["name"], shown["cadence"], shown["weekday"]) == ("evening", "daily", None)
    assert shown["send_time"] == "18:05"
    off = site.call("PATCH", path, json={"enabled": False}).json()
    assert (off["enabled"], off["next_send_at"], off["send_time"]) == (False, None, "18:05")

    assert site.call("DELETE", path).status_code == 204
    assert site.call("GET", path).status_code == 404
    assert [s["name"] for s in site.call("GET", "/api/admin/schedules").json()] == ["morning"]


def test_a_schedule_disabled_through_the_api_is_not_planned(site: AdminSite, db: Session) -> None:
    reader(db, "ann@example.org", {tag(db, "transport"): Cadence.DAILY})
    schedule = _add(site, name="morning")
    site.call("PATCH", f"/api/admin/schedules/{schedule['id']}", json={"enabled": False})
    dispatched: list[Sequence[int]] = []
    planned = plan_digests(db, lambda _, ids: dispatched.append(ids), datetime.now(UTC), force=True)
    assert (planned, dispatched) == ([], [])

    site.call("PATCH", f"/api/admin/schedules/{schedule['id']}", json={"enabled": True})
    planned = plan_digests(db, lambda _, ids: dispatched.append(ids), datetime.now(UTC), force=True)
    assert [p.deliveries for p in planned] == [1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "m", "send_time": "25:00"}, "HH:MM"),
        ({"name": "m", "send_time": "7am"}, "HH:MM"),
        ({"name": "m", "template": "no-such-template"}, "no email template"),
        ({"name": "m", "cadence": "hourly"}, "daily or weekly"),
        ({"name": "m", "cadence": "instant"}, "daily or weekly"),
        ({"name": "m", "cadence": "weekly"}, "needs a weekday"),
        ({"name": "m", "weekday": "mon"}, "takes no weekday"),
        ({"name": "m", "cadence": "weekly", "weekday": "funday"}, "weekday must be one of"),
        ({"name": "Morning Digest"}, "lowercase"),
        ({"name": "m", "colour": "red"}, "colour"),
    ],
)
def test_bad_schedules_are_422_with_a_reason(
    site: AdminSite, body: dict[str, Any], message: str
) -> None:
    refused = site.call("POST", "/api/admin/schedules", json=body)
    assert refused.status_code == 422
    assert message in refused.text
    assert site.call("GET", "/api/admin/schedules").json() == []


def test_bad_changes_are_refused_and_change_nothing(site: AdminSite) -> None:
    morning = _add(site, name="morning")
    weekly = _add(site, name="weekly", cadence="weekly", weekday="mon")
    path = f"/api/admin/schedules/{morning['id']}"
    for body, status in [
        ({"send_time": "24:00"}, 422),
        ({"template": "nope"}, 422),
        ({"cadence": "weekly"}, 422),  # no weekday given
        ({"weekday": "tue"}, 422),  # a daily takes none
        ({"name": "weekly"}, 409),
    ]:
        refused = site.call("PATCH", path, json=body)
        assert refused.status_code == status, (body, refused.text)
    assert site.call("GET", path).json()["name"] == "morning"
    assert site.call("GET", f"/api/admin/schedules/{weekly['id']}").json() == weekly


def test_a_taken_name_is_409(site: AdminSite) -> None:
    _add(site, name="morning")
    again = site.call("POST", "/api/admin/schedules", json={"name": "morning"})
    assert again.status_code == 409
    assert "exists" in again.json()["detail"]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_an_unknown_schedule_is_404(site: AdminSite, method: str) -> None:
    missing = site.call(method, "/api/admin/schedules/4040", json={})
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no schedule with id 4040"


def test_a_schedule_with_mail_still_to_send_is_not_deleted(site: AdminSite, db: Session) -> None:
    schedule = _add(site, name="morning")
    ann = reader(db, "ann@example.org", {tag(db, "transport"): Cadence.DAILY})
    edition = Edition(key="digest:test", kind="digest", schedule_id=schedule["id"])
    db.add(edition)
    db.flush()
    db.add(Delivery(edition_id=edition.id, subscriber_id=ann.id))
    db.commit()
    path = f"/api/admin/schedules/{schedule['id']}"
    refused = site.call("DELETE", path)
    assert refused.status_code == 409
    assert "disable" in refused.json()["detail"]

    db.execute(update(Delivery).values(status=DeliveryStatus.SENT))
    assert site.call("DELETE", path).status_code == 204
    db.refresh(edition)
    assert edition.schedule_id is None  # the sent edition stays, for its figures
