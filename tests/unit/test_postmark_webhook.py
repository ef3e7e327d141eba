"""Postmark's webhook: basic credentials from the URL, and each record type read as documented."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from service.bounces.events import EventKind
from service.bounces.providers.postmark import BOUNCE_TYPES, check_credentials, parse
from service.bounces.webhooks import BadPayload, Unauthorized
from tests.webhooks import POSTMARK_PASSWORD, POSTMARK_USER, basic, body_of, fixture

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _check(
    authorization: str, user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD
) -> None:
    check_credentials(authorization, user=user, password=password)


def test_the_configured_credentials_pass() -> None:
    _check(basic()["Authorization"])
    _check(basic()["Authorization"].replace("Basic", "basic"))  # the scheme is case-blind


@pytest.mark.parametrize(
    "authorization",
    [
        basic(POSTMARK_USER, "wrong-password")["Authorization"],
        basic("someone-else", POSTMARK_PASSWORD)["Authorization"],
        basic("someone-else", "wrong-password")["Authorization"],
        basic(POSTMARK_USER, POSTMARK_PASSWORD + "x")["Authorization"],  # a longer password
        basic(POSTMARK_USER, POSTMARK_PASSWORD[:-1])["Authorization"],  # a prefix of it
        "",
        "Bearer " + POSTMARK_PASSWORD,
        "Basic not-base64!",
        "Basic " + base64.b64encode(POSTMARK_USER.encode()).decode(),  # no colon, no password
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
    ],
    ids=[
        "wrong-password",
        "wrong-user",
        "both-wrong",
        "longer-password",
        "password-prefix",
        "none",
        "bearer",
        "bad-base64",
        "user-only",
        "not-utf8",
    ],
)
def test_wrong_credentials_are_refused_alike(authorization: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        _check(authorization)
    # One answer whatever was wrong: it never tells which half a guess got right.
    assert str(refused.value) == "Wrong or missing webhook credentials."
    assert refused.value.headers == {"WWW-Authenticate": 'Basic realm="postmark webhooks"'}


@pytest.mark.parametrize(("user", "password"), [("", ""), (POSTMARK_USER, ""), ("", "pw")])
def test_unconfigured_credentials_refuse_everything(user: str, password: str) -> None:
    with pytest.raises(Unauthorized, match="not configured"):
        _check(basic(user, password)["Authorization"], user=user, password=password)


def test_a_hard_bounce_record() -> None:
    [event] = parse(body_of(fixture("postmark", "bounce_hard")), received_at=NOW)
    assert event.provider == "postmark"
    assert event.kind == EventKind.HARD_BOUNCE
    assert event.event_id == "Bounce:4323372036"  # the record's own id and type
    assert event.email == "ann@harbour.example"
    assert event.provider_message_id == "5d1e0c8a-3b7f-4e55-9a1c-2f6d8b0e4a11"
    assert event.occurred_at == datetime(2026, 11, 27, 7, 3, 12, 412059, tzinfo=UTC)
    assert event.detail.startswith("HardBounce — smtp;550 5.1.1 The email account")
    assert event.payload["SomethingPostmarkAddsLater"] == {"nested": [1, 2, 3]}  # kept


def test_a_soft_bounce_record() -> None:
    [event] = parse(body_of(fixture("postmark", "bounce_soft")), received_at=NOW)
    assert (event.kind, event.email) == (EventKind.SOFT_BOUNCE, "ben@quay.example")


def test_a_spam_complaint_record() -> None:
    [event] = parse(body_of(fixture("postmark", "spam_complaint")), received_at=NOW)
    assert event.kind == EventKind.COMPLAINT
    assert event.event_id == "SpamComplaint:4323372099"
    assert event.occurred_at == datetime(2026, 11, 27, 8, 15, 0, 123456, tzinfo=UTC)


def test_a_delivery_record_has_an_id_made_of_message_and_recipient() -> None:
    [event] = parse(body_of(fixture("postmark", "delivery")), received_at=NOW)
    assert event.kind == EventKind.DELIVERED
    assert event.event_id == "Delivery:0e8d2b6c-77a4-4f1e-9c35-d41a6b2e7f90:dora@pier.example"
    assert event.email == "dora@pier.example"


def test_a_recipients_own_suppression_is_their_unsubscribe() -> None:
    [event] = parse(body_of(fixture("postmark", "subscription_change")), received_at=NOW)
    assert event.kind == EventKind.UNSUBSCRIBE
    assert event.email == "eli@dock.example"
    assert event.event_id.startswith("SubscriptionChange:eli@dock.example:2026-11-27T10:21:44")


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"Origin": "Customer"}, EventKind.OTHER),  # someone in Postmark, not the reader
        ({"Origin": "Admin"}, EventKind.OTHER),
        ({"SuppressionReason": "HardBounce"}, EventKind.HARD_BOUNCE),
        ({"SuppressionReason": "SpamComplaint"}, EventKind.COMPLAINT),
        ({"SuppressSending": False, "SuppressionReason": None}, EventKind.OTHER),  # reactivated
    ],
)
def test_other_subscription_changes(changes: dict[str, object], kind: EventKind) -> None:
    record = fixture("postmark", "subscription_change") | changes
    [event] = parse(body_of(record), received_at=NOW)
    assert event.kind == kind


def test_a_reactivation_is_a_different_event_from_the_suppression() -> None:
    record = fixture("postmark", "subscription_change")
    [suppressed] = parse(body_of(record), received_at=NOW)
    [reactivated] = parse(body_of(record | {"SuppressSending": False}), received_at=NOW)
    assert suppressed.event_id != reactivated.event_id


def test_a_record_type_we_do_not_act_on_is_kept_as_other() -> None:
    body = body_of(fixture("postmark", "open"))
    [event] = parse(body, received_at=NOW)
    assert (event.kind, event.email, event.occurred_at) == (
        EventKind.OTHER,
        "dora@pier.example",
        NOW,
    )
    [again] = parse(body, received_at=NOW)
    assert again.event_id == event.event_id  # a replay still has the same id


@pytest.mark.parametrize(
    ("bounce_type", "kind"),
    [
        ("HardBounce", EventKind.HARD_BOUNCE),
        ("BadEmailAddress", EventKind.HARD_BOUNCE),
        ("SoftBounce", EventKind.SOFT_BOUNCE),
        ("Transient", EventKind.SOFT_BOUNCE),
        ("DnsError", EventKind.SOFT_BOUNCE),
        ("SpamNotification", EventKind.SOFT_BOUNCE),
        ("Blocked", EventKind.SOFT_BOUNCE),
        ("Unknown", EventKind.SOFT_BOUNCE),
        ("Unsubscribe", EventKind.UNSUBSCRIBE),
        ("AutoResponder", EventKind.OTHER),
        ("ChallengeVerification", EventKind.OTHER),
        ("ManuallyDeactivated", EventKind.OTHER),
        ("DMARCPolicy", EventKind.OTHER),
        ("SMTPApiError", EventKind.OTHER),
        ("SomeTypeFromTheFuture", EventKind.OTHER),
    ],
)
def test_bounce_types(bounce_type: str, kind: EventKind) -> None:
    record = fixture("postmark", "bounce_hard") | {"Type": bounce_type}
    [event] = parse(body_of(record), received_at=NOW)
    assert event.kind == kind
    assert BOUNCE_TYPES.get(bounce_type, EventKind.OTHER) == kind


def test_the_classic_bounce_hook_without_a_record_type_is_a_bounce() -> None:
    record = fixture("postmark", "bounce_hard")
    del record["RecordType"]
    [event] = parse(body_of(record), received_at=NOW)
    assert (event.kind, event.event_id) == (EventKind.HARD_BOUNCE, "Bounce:4323372036")


def test_a_bounce_naming_no_address_silences_nobody() -> None:
    record = fixture("postmark", "bounce_hard") | {"Email": "not an address"}
    [event] = parse(body_of(record), received_at=NOW)
    assert (event.kind, event.email) == (EventKind.OTHER, "")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"Bounce"',
        b"\xff\xfe",
        b'{"RecordType": "Bounce", "ID": NaN}',
        b'{"RecordType": "Bounce", "Email": "ann\\u0000@harbour.example"}',
    ],
)
def test_what_postmark_does_not_send_is_a_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        parse(body, received_at=NOW)
