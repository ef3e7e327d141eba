"""``POST /webhooks/ses`` through the real app, on SQLite and PostgreSQL.

SNS's side (the signing certificate, the subscription confirmation) is `FakeSns` behind an
`httpx.MockTransport`, installed as the service's outbound HTTP client; everything else is the
real route, `policy.record` and the database.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import httpx2  # what starlette's TestClient answers with
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from service import tasks
from service.bounces.providers.ses import CERTIFICATES
from service.config import Settings
from service.digests import planning, schedules
from service.digests.sending import send_batch
from service.mail.senders.ses import SesSender
from service.models import (
    Cadence,
    Delivery,
    Edition,
    EditionKind,
    ProviderEvent,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Tag,
)
from service.suppressions import is_suppressed
from tests.digest_data import post, reader, tag
from tests.fakes import app_in_transaction, app_with_sync_intake
from tests.ses_notifications import (
    CERT_URL,
    COMPLAINT,
    DELIVERY,
    FIXTURES,
    OTHER_TOPIC,
    OUR_ID,
    PERMANENT_BOUNCE,
    SUBSCRIBE_URL,
    TOPIC,
    TRANSIENT_BOUNCE,
    FakeSns,
    body,
    confirmation,
    fake_sns,
    notification,
    signer,
    with_ses_message,
)

SNS_HEADERS = {"content-type": "text/plain; charset=UTF-8"}


@pytest.fixture
def sns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSns]:
    """SNS, as the service's outbound client reaches it; no certificate cached yet."""
    fake = fake_sns()
    monkeypatch.setattr(tasks, "_http", fake.client())
    CERTIFICATES.clear()
    yield fake
    CERTIFICATES.clear()


@pytest.fixture
def client(db: Session, tmp_path: Path, sns: FakeSns) -> TestClient:
    app = app_in_transaction(Settings(var_dir=tmp_path, ses_topic_arn=TOPIC), db)
    return TestClient(app, raise_server_exceptions=False)


def deliver(client: TestClient, message: dict[str, Any]) -> httpx2.Response:
    """POST as SNS does: the JSON envelope as text/plain, with its x-amz-sns headers."""
    headers = {
        **SNS_HEADERS,
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message["MessageId"],
        "x-amz-sns-topic-arn": message["TopicArn"],
    }
    return client.post("/webhooks/ses", content=body(message), headers=headers)


def stored(db: Session) -> list[str]:
    return sorted(db.scalars(select(ProviderEvent.event_id).where(ProviderEvent.provider == "ses")))


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_hard_bounce_for_two_readers_suppresses_both(
    client: TestClient, db: Session, sns: FakeSns, version: str
) -> None:
    harbour = tag(db, "harbour")
    ann = reader(db, "ann@example.com", {harbour: Cadence.DAILY})
    bob = reader(db, "Bob@Example.com", {harbour: Cadence.DAILY})
    db.commit()
    envelope = signer().sign(notification(PERMANENT_BOUNCE), version)
    answer = deliver(client, envelope)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"stored": 2, "replayed": 0}
    assert is_suppressed(db, "ann@example.com")
    assert is_suppressed(db, "bob@example.com")
    db.expire_all()
    assert (ann.status, bob.status) == (SubscriberStatus.BOUNCED, SubscriberStatus.BOUNCED)
    mid = envelope["MessageId"]
    assert stored(db) == [f"{mid}:ann@example.com", f"{mid}:bob@example.com"]

    # SNS retries the same message (same MessageId): 200, nothing new, nothing fetched.
    again = deliver(client, envelope)
    assert again.status_code == 200
    assert again.json() == {"stored": 0, "replayed": 2}
    assert len(stored(db)) == 2
    assert sns.urls() == [CERT_URL]


def test_a_complaint_unsubscribes_the_reader_from_everything(
    client: TestClient, db: Session
) -> None:
    eve = reader(
        db,
        "eve@example.com",
        {tag(db, "harbour"): Cadence.DAILY, tag(db, "port"): Cadence.INSTANT},
    )
    db.commit()
    answer = deliver(client, signer().sign(notification(COMPLAINT), "2"))
    assert answer.json() == {"stored": 1, "replayed": 0}
    db.expire_all()
    assert eve.status == SubscriberStatus.COMPLAINED
    assert db.scalars(select(Subscription).where(Subscription.subscriber_id == eve.id)).all() == []
    assert is_suppressed(db, "eve@example.com")
    (event,) = db.scalars(select(ProviderEvent)).all()
    assert event.payload["kind"] == "complaint"
    assert "abuse" in event.payload["detail"]


@pytest.mark.parametrize("name", ["transient_bounce", "undetermined_bounce", "delivery"])
def test_soft_bounces_and_deliveries_are_kept_and_silence_nobody(
    client: TestClient, db: Session, name: str
) -> None:
    harbour = tag(db, "harbour")
    for address in ("cat@example.com", "dan@example.com", "fay@example.com"):
        reader(db, address, {harbour: Cadence.DAILY})
    db.commit()
    answer = deliver(client, signer().sign(notification(FIXTURES[name])))
    assert answer.json() == {"stored": 1, "replayed": 0}
    assert not any(
        is_suppressed(db, a) for a in ("cat@example.com", "dan@example.com", "fay@example.com")
    )
    active = db.scalar(
        select(func.count()).select_from(Subscriber).where(Subscriber.status == "active")
    )
    assert active == 3


def test_unknown_fields_change_nothing_about_the_outcome(client: TestClient, db: Session) -> None:
    answer = deliver(client, signer().sign(notification(FIXTURES["unknown_fields"]), "2"))
    assert answer.json() == {"stored": 1, "replayed": 0}
    assert is_suppressed(db, "gus@example.com")


def refused(db: Session, answer: httpx2.Response, status: int, reason: str) -> None:
    assert answer.status_code == status, answer.text
    assert reason in answer.json()["detail"]
    assert stored(db) == []
    assert not is_suppressed(db, "ann@example.com")


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_tampered_body_is_401_and_changes_nothing(
    client: TestClient, db: Session, version: str
) -> None:
    signed = signer().sign(notification(TRANSIENT_BOUNCE), version)
    forged = json.loads(signed["Message"])
    forged["bounce"]["bounceType"] = "Permanent"
    forged["bounce"]["bouncedRecipients"][0]["emailAddress"] = "ann@example.com"
    refused(db, deliver(client, with_ses_message(signed, forged)), 401, "does not match")


def test_a_certificate_on_another_host_is_401_without_any_fetch(
    client: TestClient, db: Session, sns: FakeSns
) -> None:
    evil = "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-xxxx.pem"
    sns.certificates[evil] = signer().certificate_pem
    answer = deliver(client, signer().sign(notification(PERMANENT_BOUNCE), cert_url=evil))
    refused(db, answer, 401, "SigningCertURL")
    assert sns.requests == []


def test_a_genuine_message_of_another_topic_is_403(client: TestClient, db: Session) -> None:
    answer = deliver(client, signer().sign(notification(PERMANENT_BOUNCE, topic=OTHER_TOPIC)))
    refused(db, answer, 403, "another SNS topic")


def test_an_hour_old_message_is_403(client: TestClient, db: Session) -> None:
    stale = notification(PERMANENT_BOUNCE, at=datetime.now(UTC) - timedelta(minutes=61))
    refused(db, deliver(client, signer().sign(stale, "2")), 403, "more than an hour old")


def test_unreadable_bodies_are_400(client: TestClient, db: Session) -> None:
    answer = client.post("/webhooks/ses", content=b"{not json", headers=SNS_HEADERS)
    refused(db, answer, 400, "Not JSON")
    stamp = {**notification(PERMANENT_BOUNCE), "Timestamp": "last Tuesday"}
    refused(db, deliver(client, signer().sign(stamp)), 400, "Timestamp")


def test_without_the_topic_setting_every_message_is_403(
    db: Session, tmp_path: Path, sns: FakeSns
) -> None:
    app = app_in_transaction(Settings(var_dir=tmp_path), db)
    client = TestClient(app, raise_server_exceptions=False)
    answer = deliver(client, signer().sign(notification(PERMANENT_BOUNCE)))
    refused(db, answer, 403, "NEWSLETTER_SES_TOPIC_ARN")
    assert sns.requests == []


def test_a_subscription_confirmation_is_confirmed_once(
    client: TestClient, db: Session, sns: FakeSns
) -> None:
    answer = deliver(client, signer().sign(confirmation(), "2"))
    assert answer.status_code == 200
    assert answer.json() == {"stored": 0, "replayed": 0}
    confirmations = [r for r in sns.requests if r.url.params.get("Action") == "ConfirmSubscription"]
    assert [str(r.url) for r in confirmations] == [SUBSCRIBE_URL]
    assert stored(db) == []


def test_our_message_id_names_the_reader_when_ses_includes_the_headers(
    client: TestClient, db: Session
) -> None:
    """The complaint names the address the mail went to; the reader has moved since. Our
    Message-ID in the original headers leads to the delivery, and so to the reader."""
    harbour = tag(db, "harbour")
    moved = reader(db, "eva.new@example.com", {harbour: Cadence.DAILY})
    edition = Edition(key="digest:test:2026-11-27", kind=EditionKind.DIGEST)
    db.add(edition)
    db.flush()
    db.add(Delivery(edition_id=edition.id, subscriber_id=moved.id, message_id=OUR_ID))
    db.commit()
    with_headers = json.loads(json.dumps(COMPLAINT))
    with_headers["mail"]["commonHeaders"] = {"messageId": OUR_ID, "to": ["eve@example.com"]}
    answer = deliver(client, signer().sign(notification(with_headers)))
    assert answer.json() == {"stored": 1, "replayed": 0}
    db.expire_all()
    assert moved.status == SubscriberStatus.COMPLAINED
    assert moved.subscriptions == []


# --- end to end: a digest through SES, SES's feedback, the next digest --------------------

NOW = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)  # 07:30 in Tokyo, the readers' zone


class FakeSes:
    """SES v2 SendEmail as documented: 200 with a MessageId for each message."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (recipient, MessageId)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        (to,) = payload["Destination"]["ToAddresses"]
        assert base64.b64decode(payload["Content"]["Raw"]["Data"])
        message_id = f"0100019a2c3d4e5f-{len(self.sent):08d}-1e2f-4a3b-9c8d-7e6f5a4b3c2d-000000"
        self.sent.append((to, message_id))
        return httpx.Response(200, json={"MessageId": message_id})


def test_feedback_from_ses_silences_the_next_digest(
    engine: Engine, sessions: Any, tmp_path: Path, sns: FakeSns
) -> None:
    """Three readers get a digest through SES; Ann's address bounces for good and Bob (who
    has since changed his address) marks it as spam, each notification naming SES's id of
    their mail and nothing else of ours; the next day's digest reaches Cat alone."""
    settings = Settings(
        var_dir=tmp_path,
        secret_key="test-secret-key-0123456789abcdef",
        base_url="https://courier.example",
        mail_from="The Harbour Courier <news@courier.example>",
        ses_topic_arn=TOPIC,
    )
    ses = FakeSes()
    sender = SesSender(
        "eu-west-1",
        "AKIDEXAMPLE",
        "secret",
        client=httpx.Client(transport=httpx.MockTransport(ses)),
    )

    def digest(now: datetime, headline: str) -> None:
        with sessions() as s:
            world = s.scalar(select(Tag).where(Tag.slug == "world"))
            assert world is not None
            post(s, headline, [world], published=now - timedelta(hours=1))
            s.commit()
        batches: list[tuple[int, list[int]]] = []
        with sessions() as s:
            planning.plan_digests(s, lambda e, ids: batches.append((e, list(ids))), now)
        for edition_id, ids in batches:
            send_batch(sessions, sender, settings, edition_id, ids, now=now)

    with sessions() as s:
        schedules.add_schedule(s, "morning", Cadence.DAILY)
        world = tag(s, "world")
        for name in ("ann", "bob", "cat"):
            reader(s, f"{name}@example.com", {world: Cadence.DAILY}, timezone="Asia/Tokyo")
        s.commit()
    digest(NOW, "Harbour reopens")
    first = dict(ses.sent)
    assert sorted(first) == ["ann@example.com", "bob@example.com", "cat@example.com"]
    with sessions() as s:  # what the sender recorded is SES's MessageId
        assert set(s.scalars(select(Delivery.provider_id))) == set(first.values())

    with sessions() as s:  # Bob moves to another address; the mail went to the old one
        s.execute(
            update(Subscriber)
            .where(Subscriber.email == "bob@example.com")
            .values(email="robert@example.com")
        )
        s.commit()
    web = TestClient(app_with_sync_intake(settings, engine), raise_server_exceptions=False)
    bounce = _about(PERMANENT_BOUNCE, "ann@example.com", first["ann@example.com"])
    complaint = _about(COMPLAINT, "bob@example.com", first["bob@example.com"])
    delivered = _about(DELIVERY, "cat@example.com", first["cat@example.com"])
    for ses_message in (bounce, complaint, delivered):
        answer = deliver(web, signer().sign(notification(ses_message)))
        assert answer.json() == {"stored": 1, "replayed": 0}
    replay = signer().sign(notification(bounce, message_id="4b1c6a3e-7d2f-4e88-9a55-0c1d2e3f4a5b"))
    assert deliver(web, replay).json() == {"stored": 1, "replayed": 0}
    assert deliver(web, replay).json() == {"stored": 0, "replayed": 1}

    with sessions() as s:
        assert is_suppressed(s, "ann@example.com")
        assert is_suppressed(s, "bob@example.com")
        assert not is_suppressed(s, "cat@example.com")
        # Found through SES's id of the mail, whatever his address is now.
        bob = s.scalar(select(Subscriber).where(Subscriber.email == "robert@example.com"))
        assert bob is not None
        assert bob.status == SubscriberStatus.COMPLAINED
        assert bob.subscriptions == []

    ses.sent.clear()
    digest(NOW + timedelta(days=1), "Ferry timetable")
    assert [to for to, _ in ses.sent] == ["cat@example.com"]


def _about(fixture: dict[str, Any], address: str, ses_id: str) -> dict[str, Any]:
    """``fixture`` rewritten to concern one of our mails: its recipient and SES's id of it,
    without the original headers (the identity's default)."""
    message: dict[str, Any] = json.loads(json.dumps(fixture))
    message["mail"] = {
        k: v
        for k, v in message["mail"].items()
        if k not in ("headers", "commonHeaders", "headersTruncated")
    }
    message["mail"].update(messageId=ses_id, destination=[address])
    if "bounce" in message:
        message["bounce"]["bouncedRecipients"] = [
            {"emailAddress": address, "action": "failed", "status": "5.1.1"}
        ]
    if "complaint" in message:
        message["complaint"]["complainedRecipients"] = [{"emailAddress": address}]
    if "delivery" in message:
        message["delivery"]["recipients"] = [address]
    return message
