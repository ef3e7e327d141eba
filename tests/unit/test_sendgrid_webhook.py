"""SendGrid's signed Event Webhook: ECDSA over timestamp + raw body, and each event read."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from service.bounces.events import EventKind
from service.bounces.providers.sendgrid import parse, public_key, verify
from service.bounces.webhooks import BadPayload, Forbidden, Unauthorized
from service.config import Settings
from tests.webhooks import SendgridSigner, body_of, fixture, request, tampered

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def signer() -> SendgridSigner:
    return SendgridSigner()


def _verify(signer: SendgridSigner, body: bytes, headers: dict[str, str], now: datetime) -> None:
    verify(request(body, headers), public_key(signer.public_key), now=now)


def test_the_key_as_sendgrid_shows_it_and_as_pem(signer: SendgridSigner) -> None:
    pem = (
        signer.key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert public_key(signer.public_key).public_numbers() == public_key(pem).public_numbers()
    assert Settings(sendgrid_webhook_public_key=f"  {signer.public_key}\n")  # pasted with spaces


def test_a_key_that_cannot_verify_sendgrid_is_refused_at_start_up() -> None:
    rsa_der = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for wrong in (
        "not base64 at all!",
        base64.b64encode(b"random bytes, not a key").decode(),
        base64.b64encode(rsa_der).decode(),
        SendgridSigner(ec.SECP384R1()).public_key,  # another curve
    ):
        with pytest.raises(ValueError, match="public key"):
            public_key(wrong)
        with pytest.raises(ValidationError, match="sendgrid_webhook_public_key"):
            Settings(sendgrid_webhook_public_key=wrong)


def test_a_signed_batch_verifies(signer: SendgridSigner) -> None:
    body = body_of(fixture("sendgrid", "batch"))
    _verify(signer, body, signer.headers(body, timestamp=int(NOW.timestamp())), NOW)


def test_a_tampered_body_does_not(signer: SendgridSigner) -> None:
    body = body_of(fixture("sendgrid", "bounce"))
    headers = signer.headers(body, timestamp=int(NOW.timestamp()))
    with pytest.raises(Unauthorized):
        _verify(signer, tampered(body), headers, NOW)
    with pytest.raises(Unauthorized):  # one byte of whitespace is enough: bytes are signed
        _verify(signer, body + b" ", headers, NOW)


def test_a_moved_timestamp_does_not(signer: SendgridSigner) -> None:
    body = body_of(fixture("sendgrid", "bounce"))
    headers = signer.headers(body, timestamp=int(NOW.timestamp()))
    stamp = "X-Twilio-Email-Event-Webhook-Timestamp"
    with pytest.raises(Unauthorized):
        _verify(signer, body, headers | {stamp: str(int(NOW.timestamp()) + 1)}, NOW)


def test_another_keys_signature_does_not(signer: SendgridSigner) -> None:
    body = body_of(fixture("sendgrid", "bounce"))
    headers = SendgridSigner().headers(body, timestamp=int(NOW.timestamp()))
    with pytest.raises(Unauthorized):
        _verify(signer, body, headers, NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"X-Twilio-Email-Event-Webhook-Signature": ""},
        {"X-Twilio-Email-Event-Webhook-Timestamp": ""},
        {"X-Twilio-Email-Event-Webhook-Signature": "!!not base64!!"},
        {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(b"not DER").decode()},
    ],
    ids=["no-signature", "no-timestamp", "bad-base64", "not-der"],
)
def test_missing_or_malformed_signatures(signer: SendgridSigner, change: dict[str, str]) -> None:
    body = body_of(fixture("sendgrid", "bounce"))
    headers = signer.headers(body, timestamp=int(NOW.timestamp())) | change
    with pytest.raises(Unauthorized):
        _verify(signer, body, headers, NOW)


@pytest.mark.parametrize("offset", [-3601, 3601, -86400 * 30])
def test_a_genuine_signature_more_than_an_hour_away_is_refused(
    signer: SendgridSigner, offset: int
) -> None:
    body = body_of(fixture("sendgrid", "bounce"))
    headers = signer.headers(body, timestamp=int(NOW.timestamp()) + offset)
    with pytest.raises(Forbidden, match="more than an hour"):
        _verify(signer, body, headers, NOW)


def test_within_the_hour_is_fine(signer: SendgridSigner) -> None:
    body = body_of(fixture("sendgrid", "bounce"))
    _verify(signer, body, signer.headers(body, timestamp=int(NOW.timestamp()) - 3500), NOW)
    _verify(signer, body, signer.headers(body), datetime.now(UTC))  # signed just now


def test_a_batch_naming_several_recipients_is_read_event_by_event() -> None:
    events = parse(body_of(fixture("sendgrid", "batch")), received_at=NOW)
    assert [(e.email, e.kind) for e in events] == [
        ("fay@harbour.example", EventKind.OTHER),  # processed
        ("gus@quay.example", EventKind.HARD_BOUNCE),  # bounce, type bounce
        ("hal@dock.example", EventKind.SOFT_BOUNCE),  # bounce, type blocked
        ("ivy@pier.example", EventKind.HARD_BOUNCE),  # dropped: Bounced Address
        ("jon@lighthouse.example", EventKind.COMPLAINT),  # spamreport
        ("kim@harbour.example", EventKind.UNSUBSCRIBE),
        ("lou@quay.example", EventKind.OTHER),  # deferred: SendGrid retries
        ("fay@harbour.example", EventKind.OTHER),  # open, with fields from the future
        ("", EventKind.OTHER),  # dropped "Invalid" naming no address: silences nobody
    ]
    assert len({e.event_id for e in events}) == len(events)
    assert events[1].event_id == "Ym91bmNlLTExLUxxOXZSM3NXUWs2YlgwdDJQek5jNEEtMQ"  # sg_event_id
    assert events[8].event_id.startswith("sha256:")  # none given: derived from the event
    assert events[7].payload["a_field_from_the_future"] == {"nested": True}


def test_an_event_names_our_message_id_and_sendgrids() -> None:
    [bounce] = parse(body_of(fixture("sendgrid", "bounce")), received_at=NOW)
    assert bounce.message_id == "<delivery.7.1@courier.example>"  # our custom arg
    assert bounce.provider_message_id == (
        "Kx2dQ7nFTm2yq1c8JrTz9w.recvd-7c9f6b5d8-abcde-1-6746A5E0-2.0"
    )
    assert bounce.occurred_at == datetime(2026, 11, 27, 7, 3, 12, tzinfo=UTC)
    assert "550 5.1.1" in bounce.detail
    [spam] = parse(body_of(fixture("sendgrid", "complaint")), received_at=NOW)
    assert spam.kind == EventKind.COMPLAINT
    [delivered] = parse(body_of(fixture("sendgrid", "delivery")), received_at=NOW)
    assert delivered.kind == EventKind.DELIVERED


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("Bounced Address", EventKind.HARD_BOUNCE),
        ("Invalid", EventKind.HARD_BOUNCE),
        ("Spam Reporting Address", EventKind.COMPLAINT),
        ("Unsubscribed Address", EventKind.UNSUBSCRIBE),
        ("Spam Content (if spam checker app enabled)", EventKind.OTHER),  # about the content
        ("Invalid SMTPAPI header", EventKind.OTHER),  # about our request
    ],
)
def test_drop_reasons(reason: str, kind: EventKind) -> None:
    event = {"email": "ivy@pier.example", "event": "dropped", "reason": reason, "sg_event_id": "x"}
    [dropped] = parse(body_of([event]), received_at=NOW)
    assert dropped.kind == kind


def test_a_group_unsubscribe_unsubscribes() -> None:
    event = {"email": "kim@harbour.example", "event": "group_unsubscribe", "asm_group_id": 7}
    [unsubscribed] = parse(body_of([event]), received_at=NOW)
    assert unsubscribed.kind == EventKind.UNSUBSCRIBE


def test_an_event_without_sendgrids_id_gets_the_same_derived_id_each_time() -> None:
    body = body_of([{"email": "ivy@pier.example", "event": "dropped", "reason": "Invalid"}])
    assert parse(body, received_at=NOW)[0].event_id == parse(body, received_at=NOW)[0].event_id


def test_a_message_id_that_is_not_one_is_ignored() -> None:
    event = {"email": "a@b.example", "event": "delivered", "message_id": "nope"}
    assert parse(body_of([event]), received_at=NOW)[0].message_id is None


@pytest.mark.parametrize("body", [b"{}", b'[{"event": "bounce"}, 3]', b"not json", b""])
def test_what_sendgrid_does_not_send_is_a_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        parse(body, received_at=NOW)
