"""The SES webhook's checks, from the bytes SNS posts to the events it yields.

Every message is signed with a local RSA key whose self-signed certificate `FakeSns` serves at
https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem through an
`httpx.MockTransport`, with SignatureVersion 1 (SHA1withRSA) and 2 (SHA256withRSA).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from service.bounces.events import EventKind, MailEvent
from service.bounces.providers.ses import (
    CERTIFICATES,
    CertificateCache,
    Unavailable,
    events,
    parse_sns,
    string_to_sign,
    verify,
)
from service.bounces.webhooks import (
    HANDLERS,
    BadPayload,
    Context,
    Forbidden,
    Unauthorized,
    WebhookRequest,
)
from service.config import Settings
from tests.ses_notifications import (
    CERT_URL,
    COMPLAINT,
    DELIVERY,
    FIXTURES,
    OTHER_TOPIC,
    OUR_ID,
    PERMANENT_BOUNCE,
    SES_ID,
    SUBSCRIBE_URL,
    SUBSCRIPTION_SUCCEEDED,
    TOPIC,
    TRANSIENT_BOUNCE,
    FakeSns,
    body,
    confirmation,
    ec_certificate_pem,
    fake_sns,
    make_signer,
    notification,
    other_signer,
    signer,
    with_ses_message,
)

VERSIONS = ["1", "2"]


@pytest.fixture(autouse=True)
def _fresh_certificate_cache() -> Iterator[None]:
    CERTIFICATES.clear()
    yield
    CERTIFICATES.clear()


@pytest.fixture
def sns() -> FakeSns:
    return fake_sns()


def post(sns: FakeSns, message: dict[str, Any], topic: str = TOPIC) -> list[MailEvent]:
    """What ``POST /webhooks/ses`` with this JSON body makes of it."""
    request = WebhookRequest(
        body=body(message),
        headers={"content-type": "text/plain; charset=UTF-8"},
        query={},
        url="https://courier.example/webhooks/ses",
    )
    ctx = Context(Settings(var_dir=Path("var"), ses_topic_arn=topic), Session(), sns.client())
    return events(request, ctx)


def test_the_handler_is_registered_as_ses() -> None:
    assert HANDLERS["ses"] is events


# --- the canonical string, as the documentation spells it --------------------------------


def test_the_string_to_sign_is_the_documented_one() -> None:
    """The documentation's own examples, byte for byte (Subject included when present)."""
    notification_fields = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P",
        "Timestamp": "2019-01-31T04:37:04.321Z",
        "Subject": "My subject",
        "MessageId": "4d4dc071-ddbf-465d-bba8-08f81c89da64",
        "Message": "My Test Message",
    }
    assert string_to_sign(notification_fields) == (
        b"Message\nMy Test Message\nMessageId\n4d4dc071-ddbf-465d-bba8-08f81c89da64\n"
        b"Subject\nMy subject\nTimestamp\n2019-01-31T04:37:04.321Z\n"
        b"TopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
        b"Type\nNotification\n"
    )
    envelope = confirmation()
    message = parse_sns(body(signer().sign(envelope)))
    order = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    expected = "".join(f"{name}\n{envelope[name]}\n" for name in order)
    assert string_to_sign(message.fields) == expected.encode()


# --- every fixture, signed both ways, and its events --------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_each_signed_fixture_is_accepted(sns: FakeSns, name: str, version: str) -> None:
    found = post(sns, signer().sign(notification(FIXTURES[name]), version))
    assert found, name
    assert all(e.provider == "ses" for e in found)
    assert sns.urls() == [CERT_URL]  # the certificate, fetched once, from SNS


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_each_tampered_copy_is_refused(sns: FakeSns, name: str, version: str) -> None:
    signed = signer().sign(notification(FIXTURES[name]), version)
    tampered = copy.deepcopy(FIXTURES[name])
    tampered["mail"]["destination"].append("mallory@example.net")
    with pytest.raises(Unauthorized, match="does not match"):
        post(sns, with_ses_message(signed, tampered))


def test_a_permanent_bounce_names_each_recipient_once(sns: FakeSns) -> None:
    envelope = notification(PERMANENT_BOUNCE, message_id="9a8b7c6d-0000-4000-8000-00000000bbbb")
    found = post(sns, signer().sign(envelope, "2"))
    assert [(e.kind, e.email) for e in found] == [
        (EventKind.HARD_BOUNCE, "ann@example.com"),
        (EventKind.HARD_BOUNCE, "bob@example.com"),
    ]
    assert [e.event_id for e in found] == [
        "9a8b7c6d-0000-4000-8000-00000000bbbb:ann@example.com",
        "9a8b7c6d-0000-4000-8000-00000000bbbb:bob@example.com",
    ]
    first = found[0]
    assert first.provider_message_id == SES_ID  # what SendEmail answered: our provider_id
    assert first.message_id == OUR_ID  # our own Message-ID, from the original headers
    assert first.occurred_at == datetime(2026, 11, 27, 7, 0, 3, 512000, tzinfo=UTC)
    assert "Permanent/General" in first.detail
    assert "5.1.1" in first.detail
    assert first.payload["recipient"]["diagnosticCode"].startswith("smtp; 550")
    # The same SNS message again (SNS retries with the same MessageId): the same ids.
    again = post(sns, signer().sign(envelope, "1"))
    assert [e.event_id for e in again] == [e.event_id for e in found]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("transient_bounce", EventKind.SOFT_BOUNCE),
        ("undetermined_bounce", EventKind.SOFT_BOUNCE),
        ("complaint", EventKind.COMPLAINT),
        ("delivery", EventKind.DELIVERED),
        ("unknown_fields", EventKind.HARD_BOUNCE),
    ],
)
def test_each_kind_maps_as_documented(sns: FakeSns, name: str, kind: EventKind) -> None:
    (found,) = post(sns, signer().sign(notification(FIXTURES[name])))
    assert found.kind == kind
    assert found.provider_message_id == SES_ID


def test_a_complaint_keeps_its_feedback_type(sns: FakeSns) -> None:
    (found,) = post(sns, signer().sign(notification(COMPLAINT)))
    assert found.email == "eve@example.com"
    assert "abuse" in found.detail
    assert found.message_id is None  # no original headers in this one: SES's id names the mail


def test_a_delivery_keeps_the_smtp_answer(sns: FakeSns) -> None:
    (found,) = post(sns, signer().sign(notification(DELIVERY)))
    assert found.email == "fay@example.com"
    assert found.detail.startswith("250 2.0.0 OK")


def test_unknown_fields_are_ignored_and_unsigned_envelope_fields_too(sns: FakeSns) -> None:
    signed = signer().sign(notification(FIXTURES["unknown_fields"]), "2")
    signed["MessageAttributes"] = {"x-future": {"Type": "String", "Value": "1"}}  # not signed
    (found,) = post(sns, signed)
    assert (found.kind, found.email) == (EventKind.HARD_BOUNCE, "gus@example.com")
    assert "NoEmail" in found.detail


def test_a_subject_is_signed_when_present(sns: FakeSns) -> None:
    signed = signer().sign(notification(TRANSIENT_BOUNCE, subject="Amazon SES Email Event"))
    assert post(sns, signed)
    for changed in ({**signed, "Subject": "Something else"}, _without(signed, "Subject")):
        with pytest.raises(Unauthorized):
            post(sns, changed)


def test_ses_saying_the_topic_is_wired_yields_nothing(sns: FakeSns) -> None:
    assert post(sns, signer().sign(notification(SUBSCRIPTION_SUCCEEDED))) == []


# --- signatures and certificates ----------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_signature_by_another_key_is_refused(sns: FakeSns, version: str) -> None:
    with pytest.raises(Unauthorized, match="does not match"):
        post(sns, other_signer().sign(notification(PERMANENT_BOUNCE), version))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"Signature": None}, "Missing Signature"),
        ({"SigningCertURL": None}, "Missing SigningCertURL"),
        ({"SignatureVersion": "3"}, "Unknown SignatureVersion"),
        ({"Signature": "not base64!"}, "not base64"),
    ],
)
def test_missing_or_malformed_signatures_are_401(
    sns: FakeSns, change: dict[str, Any], reason: str
) -> None:
    signed = signer().sign(notification(PERMANENT_BOUNCE))
    message = {k: v for k, v in {**signed, **change}.items() if v is not None}
    with pytest.raises(Unauthorized, match=reason):
        post(sns, message)


def test_a_v1_signature_presented_as_v2_is_refused(sns: FakeSns) -> None:
    signed = signer().sign(notification(PERMANENT_BOUNCE), "1")
    with pytest.raises(Unauthorized, match="does not match"):
        post(sns, {**signed, "SignatureVersion": "2"})


HOSTILE_CERT_URLS = [
    "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem",
    "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-xxxx.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-xxxx.pem",
    "https://sns.eu-west-1.amazonaws.com:443/SimpleNotificationService-xxxx.pem",
    "https://user@sns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem",
    "https://sns.eu-west-1.amazonaws.com@evil.example/SimpleNotificationService-xxxx.pem",
    "https://sns.eu-west-1.amazonaws.com\\@evil.example/SimpleNotificationService-xxxx.pem",
    "https://evil.example/sns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem",
    "https://evilsns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem",
    "https://sns.amazonaws.com/SimpleNotificationService-xxxx.pem",
    "https://sns.evil.amazonaws.com/SimpleNotificationService-xxxx.pem",
    "https://s3.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem?x=https://evil/",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem#frag",
    "https://sns.eu-west-1.amazonaws.com/../evil.example/cert.pem",
    "https://sns.eu-west-1.amazonaws.com/redirect/to/evil.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.crt",
    " https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem\n",
    "file:///etc/ssl/certs/sns.pem",
]


@pytest.mark.parametrize("url", HOSTILE_CERT_URLS)
def test_a_certificate_url_off_sns_is_refused_before_any_fetch(sns: FakeSns, url: str) -> None:
    sns.certificates[url] = signer().certificate_pem  # were it fetched, it would verify
    with pytest.raises(Unauthorized, match="SigningCertURL"):
        post(sns, signer().sign(notification(PERMANENT_BOUNCE), cert_url=url))
    assert sns.requests == []


def test_the_certificate_is_fetched_once_and_kept(sns: FakeSns) -> None:
    for fixture in (PERMANENT_BOUNCE, COMPLAINT, DELIVERY):
        post(sns, signer().sign(notification(fixture)))
    assert sns.urls() == [CERT_URL]
    assert CERTIFICATES.urls() == [CERT_URL]


def test_the_cache_is_bounded_and_keyed_by_url(sns: FakeSns) -> None:
    cache = CertificateCache(size=2)
    urls = [f"https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-{n}.pem" for n in "abc"]
    for url in urls:
        sns.certificates[url] = signer().certificate_pem
    client = sns.client()

    def check(url: str) -> None:
        verify(
            parse_sns(body(signer().sign(notification(DELIVERY), cert_url=url))),
            client,
            cache=cache,
        )

    for url in [*urls, urls[2], urls[0]]:
        check(url)
    assert cache.urls() == [urls[2], urls[0]]  # at most two, the most recently used
    assert sns.urls() == [*urls, urls[0]]  # c was kept; a was evicted by c, so fetched again


def test_a_cached_certificate_past_its_validity_is_dropped(sns: FakeSns) -> None:
    message = parse_sns(body(signer().sign(notification(DELIVERY))))
    client = sns.client()
    verify(message, client)
    verify(message, client, now=datetime.now(UTC) + timedelta(days=29))
    with pytest.raises(Unauthorized, match="expired"):
        verify(message, client, now=datetime.now(UTC) + timedelta(days=31))
    assert sns.urls() == [CERT_URL, CERT_URL]  # kept while valid; asked again once it was not
    assert CERTIFICATES.urls() == []


def test_a_cached_certificate_is_not_trusted_for_another_url(sns: FakeSns) -> None:
    """Keyed by URL: a key cached for one URL never verifies a message naming another."""
    other = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-other.pem"
    sns.certificates[other] = other_signer().certificate_pem
    post(sns, signer().sign(notification(DELIVERY)))
    with pytest.raises(Unauthorized, match="does not match"):
        post(sns, signer().sign(notification(DELIVERY), cert_url=other))


@pytest.mark.parametrize(
    ("pem", "reason"),
    [
        (b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "PEM"),
        (b"<html>hello</html>", "PEM"),
        (b"A" * 70_000, "large"),
    ],
)
def test_a_certificate_that_is_not_one_is_refused(sns: FakeSns, pem: bytes, reason: str) -> None:
    sns.certificates[CERT_URL] = pem
    with pytest.raises(Unauthorized, match=reason):
        post(sns, signer().sign(notification(DELIVERY)))
    assert CERTIFICATES.urls() == []


def test_an_expired_or_not_rsa_certificate_is_refused(sns: FakeSns) -> None:
    now = datetime.now(UTC)
    expired = make_signer(not_before=now - timedelta(days=60), not_after=now - timedelta(days=1))
    sns.certificates[CERT_URL] = expired.certificate_pem
    with pytest.raises(Unauthorized, match="expired"):
        post(sns, expired.sign(notification(DELIVERY)))
    sns.certificates[CERT_URL] = ec_certificate_pem()
    with pytest.raises(Unauthorized, match="RSA"):
        post(sns, signer().sign(notification(DELIVERY)))


def test_a_certificate_that_cannot_be_fetched_now_is_a_503(sns: FakeSns) -> None:
    """SNS retries a delivery answered 5xx; nothing was decided."""
    del sns.certificates[CERT_URL]
    with pytest.raises(Unavailable, match="answered 404") as raised:
        post(sns, signer().sign(notification(DELIVERY)))
    assert raised.value.status == 503


# --- topic, age, shape ---------------------------------------------------------------------


def test_without_a_topic_setting_everything_is_refused_unfetched(sns: FakeSns) -> None:
    with pytest.raises(Forbidden, match="NEWSLETTER_SES_TOPIC_ARN"):
        post(sns, signer().sign(notification(PERMANENT_BOUNCE)), topic="")
    assert sns.requests == []


@pytest.mark.parametrize("version", VERSIONS)
def test_a_genuine_message_of_another_topic_is_403(sns: FakeSns, version: str) -> None:
    with pytest.raises(Forbidden, match="another SNS topic"):
        post(sns, signer().sign(notification(PERMANENT_BOUNCE, topic=OTHER_TOPIC), version))


def test_changing_the_topic_of_a_signed_message_breaks_its_signature(sns: FakeSns) -> None:
    signed = signer().sign(notification(PERMANENT_BOUNCE, topic=OTHER_TOPIC))
    with pytest.raises(Unauthorized):
        post(sns, {**signed, "TopicArn": TOPIC})


@pytest.mark.parametrize("version", VERSIONS)
def test_a_message_over_an_hour_old_is_403(sns: FakeSns, version: str) -> None:
    now = datetime.now(UTC)
    fresh = notification(DELIVERY, at=now - timedelta(minutes=59))
    assert post(sns, signer().sign(fresh, version))
    stale = notification(DELIVERY, at=now - timedelta(minutes=61))
    with pytest.raises(Forbidden, match="more than an hour old"):
        post(sns, signer().sign(stale, version))
    ahead = notification(DELIVERY, at=now + timedelta(minutes=61))
    with pytest.raises(Forbidden, match="ahead"):
        post(sns, signer().sign(ahead, version))


@pytest.mark.parametrize(
    "stamp",
    [
        "yesterday",
        "2026-11-27",
        "2026-11-27T07:00:00",
        "2026-13-40T99:00:00Z",
        "0001-01-01T00:00:00+01:00",
    ],
)
def test_an_unreadable_timestamp_is_400(sns: FakeSns, stamp: str) -> None:
    with pytest.raises(BadPayload, match="Timestamp"):
        post(sns, signer().sign({**notification(DELIVERY), "Timestamp": stamp}))
    assert sns.requests == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"Type": "Gossip"}',
        b'{"Type": ["Notification"]}',
        b'{"Type": "Notification"}',
        b'{"Type": "Notification", "Message": 1, "MessageId": "m"}',
        b"\xff\xfe",
        pytest.param(b"[" * 200_000, id="nested-200000-deep"),
    ],
)
def test_what_is_not_an_sns_message_is_400(sns: FakeSns, raw: bytes) -> None:
    request = WebhookRequest(body=raw, headers={}, query={}, url="https://courier.example/")
    ctx = Context(Settings(var_dir=Path("var"), ses_topic_arn=TOPIC), Session(), sns.client())
    with pytest.raises(BadPayload):
        events(request, ctx)
    assert sns.requests == []


def test_a_genuine_message_that_is_not_ses_feedback_is_400(sns: FakeSns) -> None:
    envelope = {**notification(DELIVERY), "Message": "Hello from the console"}
    with pytest.raises(BadPayload, match="not an SES notification"):
        post(sns, signer().sign(envelope))
    broken = notification({"notificationType": "Bounce", "mail": {}})
    with pytest.raises(BadPayload, match="bounce object"):
        post(sns, signer().sign(broken))


# --- subscribing ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_subscription_is_confirmed_exactly_once(sns: FakeSns, version: str) -> None:
    assert post(sns, signer().sign(confirmation(), version)) == []
    assert sns.urls() == [CERT_URL, SUBSCRIBE_URL]
    assert [r.method for r in sns.requests] == ["GET", "GET"]


def test_a_subscription_to_another_topic_is_not_confirmed(sns: FakeSns) -> None:
    url = SUBSCRIBE_URL.replace(TOPIC, OTHER_TOPIC)
    with pytest.raises(Forbidden):
        post(sns, signer().sign(confirmation(topic=OTHER_TOPIC, subscribe_url=url)))
    assert sns.urls() == [CERT_URL]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/?Action=ConfirmSubscription&Token=1",
        "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=1",
        "https://sns.eu-west-1.amazonaws.com.evil.example/?Action=ConfirmSubscription",
        "https://sns.eu-west-1.amazonaws.com:8443/?Action=ConfirmSubscription",
        "https://u:p@sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    ],
)
def test_a_subscribe_url_off_sns_is_never_visited(sns: FakeSns, url: str) -> None:
    with pytest.raises(BadPayload, match="SubscribeURL"):
        post(sns, signer().sign(confirmation(subscribe_url=url)))
    assert sns.urls() == [CERT_URL]


def test_a_failed_confirmation_is_a_503_for_sns_to_retry(sns: FakeSns) -> None:
    sns.confirm_status = 500
    with pytest.raises(Unavailable, match="answered 500") as raised:
        post(sns, signer().sign(confirmation()))
    assert raised.value.status == 503


def test_an_unsubscribe_confirmation_is_verified_and_visits_nothing(sns: FakeSns) -> None:
    assert post(sns, signer().sign(confirmation("UnsubscribeConfirmation"), "2")) == []
    assert sns.urls() == [CERT_URL]
    tampered = {**signer().sign(confirmation("UnsubscribeConfirmation")), "Token": "forged"}
    with pytest.raises(Unauthorized):
        post(sns, tampered)


def _without(message: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != name}
