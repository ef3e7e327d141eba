"""Mailgun's signed webhooks: HMAC-SHA256 of timestamp + token, and each event read."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from service.bounces.events import EventKind
from service.bounces.providers.mailgun import parse, verify
from service.bounces.webhooks import BadPayload, Forbidden, Unauthorized
from tests.webhooks import MAILGUN_KEY, fixture, mailgun_body, mailgun_signature

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
STAMP = int(NOW.timestamp())


def _signed(name: str = "failed_permanent", **signature: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        mailgun_body(fixture("mailgun", name), mailgun_signature(timestamp=STAMP))
    )
    body["signature"] |= signature
    return body


def test_a_signed_request_verifies_and_gives_its_token() -> None:
    body = _signed()
    assert verify(body, MAILGUN_KEY, now=NOW) == body["signature"]["token"]


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": str(STAMP + 1)},
        {"token": "a" * 50},
        {"signature": "0" * 64},
        {"signature": ""},
        {"timestamp": ""},
        {"token": ""},
    ],
    ids=["timestamp", "token", "signature", "no-signature", "no-timestamp", "no-token"],
)
def test_a_tampered_signature_is_refused(change: dict[str, str]) -> None:
    with pytest.raises(Unauthorized):
        verify(_signed(**change), MAILGUN_KEY, now=NOW)


def test_another_key_is_refused() -> None:
    with pytest.raises(Unauthorized):
        verify(_signed(), "key-someone-elses", now=NOW)


@pytest.mark.parametrize("signature", [None, "a string", ["a", "list"]])
def test_no_signature_object_is_refused(signature: object) -> None:
    body = _signed()
    body["signature"] = signature
    with pytest.raises(Unauthorized):
        verify(body, MAILGUN_KEY, now=NOW)


def test_a_subaccounts_parent_signature_verifies_alone() -> None:
    body = _signed()
    good = body["signature"]["signature"]
    body["signature"] |= {"signature": "f" * 64, "parent-signature": good}
    assert verify(body, MAILGUN_KEY, now=NOW) == body["signature"]["token"]


@pytest.mark.parametrize("offset", [-3601, 3601, -7 * 86400])
def test_a_genuine_signature_more_than_an_hour_away_is_refused(offset: int) -> None:
    signature = mailgun_signature(timestamp=STAMP + offset)
    body = json.loads(mailgun_body(fixture("mailgun", "delivered"), signature))
    with pytest.raises(Forbidden, match="more than an hour"):
        verify(body, MAILGUN_KEY, now=NOW)


def test_a_signed_timestamp_that_is_not_seconds_is_a_bad_payload() -> None:
    token = "t" * 50
    digest = hmac.new(MAILGUN_KEY.encode(), f"soon{token}".encode(), hashlib.sha256).hexdigest()
    body = _signed(timestamp="soon", token=token, signature=digest)
    with pytest.raises(BadPayload):
        verify(body, MAILGUN_KEY, now=NOW)


def test_a_permanent_failure_is_a_hard_bounce() -> None:
    [event] = parse(_signed("failed_permanent"), received_at=NOW)
    assert event.provider == "mailgun"
    assert event.kind == EventKind.HARD_BOUNCE
    assert event.email == "ann@harbour.example"
    assert event.event_id == "G9Bn5sl1TC6nu79C8C0bwg:1795762992"  # id and its second
    assert event.occurred_at == datetime(2026, 11, 27, 7, 3, 12, 375624, tzinfo=UTC)
    # The id Mailgun reports without brackets, as our Message-ID and its API answer have it.
    assert event.message_id == event.provider_message_id == "<delivery.9.1@courier.example>"
    assert event.detail.startswith("failed — permanent — bounce — 550 — 5.1.1")


@pytest.mark.parametrize(
    ("name", "kind", "email"),
    [
        ("failed_temporary", EventKind.SOFT_BOUNCE, "ben@quay.example"),
        ("complained", EventKind.COMPLAINT, "cora@lighthouse.example"),
        ("delivered", EventKind.DELIVERED, "dora@pier.example"),
        ("unsubscribed", EventKind.UNSUBSCRIBE, "eli@dock.example"),
        ("opened", EventKind.OTHER, "dora@pier.example"),  # with a field from the future
    ],
)
def test_each_event(name: str, kind: EventKind, email: str) -> None:
    [event] = parse(_signed(name), received_at=NOW)
    assert (event.kind, event.email) == (kind, email)


def test_a_failure_of_unknown_severity_changes_nothing() -> None:
    body = _signed("failed_permanent")
    body["event-data"]["severity"] = "sometimes"
    assert parse(body, received_at=NOW)[0].kind == EventKind.OTHER


def test_the_same_id_on_another_day_is_another_event() -> None:
    # Mailgun's event ids are unique within a day only.
    first = _signed("delivered")
    later = _signed("delivered")
    later["event-data"]["timestamp"] += 86400 * 3
    assert parse(first, received_at=NOW)[0].event_id != parse(later, received_at=NOW)[0].event_id


def test_a_missing_message_id_leaves_the_address() -> None:
    body = _signed("complained")
    del body["event-data"]["message"]
    [event] = parse(body, received_at=NOW)
    assert (event.message_id, event.kind) == (None, EventKind.COMPLAINT)


@pytest.mark.parametrize("event_data", [None, "failed", []])
def test_no_event_data_is_a_bad_payload(event_data: object) -> None:
    body = _signed()
    body["event-data"] = event_data
    with pytest.raises(BadPayload):
        parse(body, received_at=NOW)
