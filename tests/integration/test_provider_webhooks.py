"""`POST /webhooks/{postmark|sendgrid|mailgun}` through the real app, on SQLite and PostgreSQL.

Each provider's fixture payloads, signed as the provider signs them: what a reader would
notice (suppressed, unsubscribed, nothing at all) for a genuine request, and that a tampered,
stale or replayed one changes nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Settings
from service.models import (
    Cadence,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    ProviderEvent,
    Subscriber,
    SubscriberStatus,
    Tag,
)
from service.suppressions import is_suppressed
from tests.digest_data import reader, tag
from tests.fakes import app_in_transaction
from tests.webhooks import (
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    SendgridSigner,
    basic,
    body_of,
    fixture,
    mailgun_body,
    mailgun_signature,
    tampered,
)

SIGNER = SendgridSigner()  # SendGrid's key pair, made for this test module


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    configured: dict[str, Any] = {
        "var_dir": tmp_path,
        "postmark_webhook_user": POSTMARK_USER,
        "postmark_webhook_password": SecretStr(POSTMARK_PASSWORD),
        "sendgrid_webhook_public_key": SIGNER.public_key,
        "mailgun_webhook_signing_key": SecretStr(MAILGUN_KEY),
    }
    return Settings(**(configured | changes))


@pytest.fixture
def client(db: Session, tmp_path: Path) -> TestClient:
    return TestClient(app_in_transaction(_settings(tmp_path), db), raise_server_exceptions=False)


def _events(db: Session, provider: str) -> list[str]:
    rows = db.scalars(select(ProviderEvent.event_id).where(ProviderEvent.provider == provider))
    return sorted(rows)


def _follower(db: Session, email: str) -> Subscriber:
    """An active reader following two tags."""
    return reader(db, email, {_tag(db, "harbour"): Cadence.DAILY, _tag(db, "port"): Cadence.WEEKLY})


def _tag(db: Session, slug: str) -> Tag:
    return db.scalar(select(Tag).where(Tag.slug == slug)) or tag(db, slug)


def _sent(db: Session, sub: Subscriber, *, message_id: str, provider_id: str) -> Delivery:
    """A delivery of a digest to ``sub`` that went out with these ids."""
    edition = Edition(key=f"digest:test:{message_id}", kind=EditionKind.DIGEST)
    db.add(edition)
    db.flush()
    delivery = Delivery(
        edition_id=edition.id,
        subscriber_id=sub.id,
        status=DeliveryStatus.SENT,
        message_id=message_id,
        provider_id=provider_id,
    )
    db.add(delivery)
    db.flush()
    return delivery


def _state(db: Session, sub: Subscriber) -> tuple[SubscriberStatus, list[str], bool]:
    """What the reader would notice: their status, their lists, whether we still mail them."""
    db.expire_all()
    fresh = db.get(Subscriber, sub.id)
    assert fresh is not None
    slugs = sorted(s.tag.slug for s in fresh.subscriptions)
    return fresh.status, slugs, is_suppressed(db, sub.email)


ACTIVE = (SubscriberStatus.ACTIVE, ["harbour", "port"], False)


# -- Postmark --------------------------------------------------------------------------------


def _postmark(client: TestClient, name: str, headers: dict[str, str] | None = None) -> Any:
    body = body_of(fixture("postmark", name))
    return client.post(
        "/webhooks/postmark", content=body, headers=basic() if headers is None else headers
    )


def test_postmark_hard_bounce_suppresses_the_address(client: TestClient, db: Session) -> None:
    ann = _follower(db, "ann@harbour.example")
    answer = _postmark(client, "bounce_hard")
    assert (answer.status_code, answer.json()) == (200, {"stored": 1, "replayed": 0})
    assert _state(db, ann) == (SubscriberStatus.BOUNCED, ["harbour", "port"], True)
    assert _events(db, "postmark") == ["Bounce:4323372036"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(POSTMARK_USER, "guessed"),
        basic("guessed", POSTMARK_PASSWORD),
        {"Authorization": f"Bearer {POSTMARK_PASSWORD}"},
    ],
    ids=["none", "wrong-password", "wrong-user", "not-basic"],
)
def test_postmark_wrong_credentials_change_nothing(
    client: TestClient, db: Session, headers: dict[str, str]
) -> None:
    ann = _follower(db, "ann@harbour.example")
    answer = _postmark(client, "bounce_hard", headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Basic realm="postmark webhooks"'
    assert _state(db, ann) == ACTIVE
    assert _events(db, "postmark") == []


def test_postmark_credentials_in_the_url_as_postmark_sends_them(
    client: TestClient, db: Session
) -> None:
    ann = _follower(db, "ann@harbour.example")
    url = httpx.URL(f"http://{POSTMARK_USER}:{POSTMARK_PASSWORD}@testserver/webhooks/postmark")
    answer = client.post(str(url), content=body_of(fixture("postmark", "bounce_hard")))
    assert answer.status_code == 200
    assert _state(db, ann)[2] is True


def test_postmark_refuses_everything_until_configured(db: Session, tmp_path: Path) -> None:
    settings = _settings(tmp_path, postmark_webhook_password=SecretStr(""))
    unconfigured = TestClient(app_in_transaction(settings, db), raise_server_exceptions=False)
    empty = basic(POSTMARK_USER, "")
    assert _postmark(unconfigured, "bounce_hard", empty).status_code == 401
    assert _postmark(unconfigured, "bounce_hard").status_code == 401
    assert _events(db, "postmark") == []


def test_postmark_replayed_bounce_is_200_and_changes_nothing(
    client: TestClient, db: Session
) -> None:
    ann = _follower(db, "ann@harbour.example")
    _postmark(client, "bounce_hard")
    before = _state(db, ann)
    again = _postmark(client, "bounce_hard")
    assert (again.status_code, again.json()) == (200, {"stored": 0, "replayed": 1})
    assert _state(db, ann) == before
    assert _events(db, "postmark") == ["Bounce:4323372036"]


def test_postmark_complaint_unsubscribes_the_reader(client: TestClient, db: Session) -> None:
    cora = _follower(db, "cora@lighthouse.example")
    assert _postmark(client, "spam_complaint").status_code == 200
    assert _state(db, cora) == (SubscriberStatus.COMPLAINED, [], True)


def test_postmark_soft_bounce_delivery_and_open_are_kept_without_effect(
    client: TestClient, db: Session
) -> None:
    ben = _follower(db, "ben@quay.example")
    dora = _follower(db, "dora@pier.example")
    for name in ("bounce_soft", "delivery", "open"):
        assert _postmark(client, name).json() == {"stored": 1, "replayed": 0}
    assert _state(db, ben) == ACTIVE
    assert _state(db, dora) == ACTIVE
    assert len(_events(db, "postmark")) == 3


def test_postmark_subscription_change_by_the_recipient_unsubscribes(
    client: TestClient, db: Session
) -> None:
    eli = _follower(db, "eli@dock.example")
    assert _postmark(client, "subscription_change").status_code == 200
    assert _state(db, eli) == (SubscriberStatus.UNSUBSCRIBED, [], False)


def test_postmark_bounce_finds_the_delivery_by_message_id(client: TestClient, db: Session) -> None:
    # The reader changed address since: the delivery Postmark names still finds them.
    ann = _follower(db, "ann.new@harbour.example")
    _sent(
        db,
        ann,
        message_id="<delivery.1.1@courier.example>",
        provider_id="5d1e0c8a-3b7f-4e55-9a1c-2f6d8b0e4a11",
    )
    assert _postmark(client, "bounce_hard").status_code == 200
    assert _state(db, ann)[0] == SubscriberStatus.BOUNCED
    assert is_suppressed(db, "ann@harbour.example")  # the address that bounced


def test_postmark_body_that_is_not_a_record_is_400(client: TestClient, db: Session) -> None:
    answer = client.post("/webhooks/postmark", content=b"[1, 2]", headers=basic())
    assert answer.status_code == 400
    assert _events(db, "postmark") == []


# -- SendGrid --------------------------------------------------------------------------------


def _sendgrid(client: TestClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post("/webhooks/sendgrid", content=body, headers=headers)


def test_sendgrid_batch_handles_each_recipient(client: TestClient, db: Session) -> None:
    names = ["fay", "gus", "hal", "ivy", "jon", "kim", "lou"]
    domains = ["harbour", "quay", "dock", "pier", "lighthouse", "harbour", "quay"]
    readers = {n: _follower(db, f"{n}@{d}.example") for n, d in zip(names, domains, strict=True)}
    body = body_of(fixture("sendgrid", "batch"))
    answer = _sendgrid(client, body, SIGNER.headers(body))
    assert (answer.status_code, answer.json()) == (200, {"stored": 9, "replayed": 0})
    seen = {n: _state(db, r) for n, r in readers.items()}
    assert seen == {
        "fay": ACTIVE,  # processed, then opened
        "gus": (SubscriberStatus.BOUNCED, ["harbour", "port"], True),  # bounce
        "hal": ACTIVE,  # blocked: a soft bounce alone silences nobody
        "ivy": (SubscriberStatus.BOUNCED, ["harbour", "port"], True),  # dropped: bounced before
        "jon": (SubscriberStatus.COMPLAINED, [], True),  # spamreport
        "kim": (SubscriberStatus.UNSUBSCRIBED, [], False),  # unsubscribe
        "lou": ACTIVE,  # deferred: SendGrid is still trying
    }

    again = _sendgrid(client, body, SIGNER.headers(body))  # SendGrid retries the batch
    assert (again.status_code, again.json()) == (200, {"stored": 0, "replayed": 9})
    assert {n: _state(db, r) for n, r in readers.items()} == seen
    assert len(_events(db, "sendgrid")) == 9


def test_sendgrid_tampered_batch_is_401_and_changes_nothing(
    client: TestClient, db: Session
) -> None:
    ann = _follower(db, "ann@harbour.example")
    body = body_of(fixture("sendgrid", "bounce"))
    headers = SIGNER.headers(body)
    # The same event moved onto another reader's address.
    forged = body.replace(b"ann@harbour.example", b"bea@harbour.example")
    bea = _follower(db, "bea@harbour.example")
    for wrong in (forged, tampered(body)):
        assert _sendgrid(client, wrong, headers).status_code == 401
    other_key = SendgridSigner().headers(body)
    assert _sendgrid(client, body, other_key).status_code == 401
    assert _state(db, ann) == ACTIVE
    assert _state(db, bea) == ACTIVE
    assert _events(db, "sendgrid") == []


def test_sendgrid_stale_signature_is_403_and_changes_nothing(
    client: TestClient, db: Session
) -> None:
    ann = _follower(db, "ann@harbour.example")
    body = body_of(fixture("sendgrid", "bounce"))
    answer = _sendgrid(client, body, SIGNER.headers(body, timestamp=int(time.time()) - 2 * 3600))
    assert answer.status_code == 403
    assert _state(db, ann) == ACTIVE
    assert _events(db, "sendgrid") == []


def test_sendgrid_refuses_everything_until_configured(db: Session, tmp_path: Path) -> None:
    settings = _settings(tmp_path, sendgrid_webhook_public_key="")
    unconfigured = TestClient(app_in_transaction(settings, db), raise_server_exceptions=False)
    body = body_of(fixture("sendgrid", "bounce"))
    assert _sendgrid(unconfigured, body, SIGNER.headers(body)).status_code == 401


def test_sendgrid_complaint_and_delivery(client: TestClient, db: Session) -> None:
    cora = _follower(db, "cora@lighthouse.example")
    dora = _follower(db, "dora@pier.example")
    for name in ("complaint", "delivery"):
        body = body_of(fixture("sendgrid", name))
        assert _sendgrid(client, body, SIGNER.headers(body)).status_code == 200
    assert _state(db, cora) == (SubscriberStatus.COMPLAINED, [], True)
    assert _state(db, dora) == ACTIVE


def test_sendgrid_bounce_finds_the_delivery_by_our_message_id(
    client: TestClient, db: Session
) -> None:
    ann = _follower(db, "ann.new@harbour.example")
    # SendGrid's X-Message-Id is one per send call: shared, it names no single delivery.
    _sent(
        db, ann, message_id="<delivery.7.1@courier.example>", provider_id="Kx2dQ7nFTm2yq1c8JrTz9w"
    )
    body = body_of(fixture("sendgrid", "bounce"))
    assert _sendgrid(client, body, SIGNER.headers(body)).status_code == 200
    assert _state(db, ann)[0] == SubscriberStatus.BOUNCED


# -- Mailgun ---------------------------------------------------------------------------------


def _mailgun(client: TestClient, body: bytes) -> Any:
    return client.post(
        "/webhooks/mailgun", content=body, headers={"Content-Type": "application/json"}
    )


def test_mailgun_permanent_failure_suppresses_the_address(client: TestClient, db: Session) -> None:
    ann = _follower(db, "ann@harbour.example")
    answer = _mailgun(client, mailgun_body(fixture("mailgun", "failed_permanent")))
    assert (answer.status_code, answer.json()) == (200, {"stored": 1, "replayed": 0})
    assert _state(db, ann) == (SubscriberStatus.BOUNCED, ["harbour", "port"], True)
    assert _events(db, "mailgun") == ["G9Bn5sl1TC6nu79C8C0bwg:1795762992"]
    assert len(_events(db, "mailgun-token")) == 1  # the token, kept against replay


@pytest.mark.parametrize(
    "change",
    [{"signature": "0" * 64}, {"timestamp": "1"}, {"token": "x" * 50}],
    ids=["signature", "timestamp", "token"],
)
def test_mailgun_tampered_signature_is_401_and_changes_nothing(
    client: TestClient, db: Session, change: dict[str, str]
) -> None:
    ann = _follower(db, "ann@harbour.example")
    signature = mailgun_signature() | change
    answer = _mailgun(client, mailgun_body(fixture("mailgun", "failed_permanent"), signature))
    assert answer.status_code == 401
    assert _state(db, ann) == ACTIVE
    assert _events(db, "mailgun") == _events(db, "mailgun-token") == []


def test_mailgun_stale_signature_is_403_and_changes_nothing(
    client: TestClient, db: Session
) -> None:
    ann = _follower(db, "ann@harbour.example")
    old = mailgun_signature(timestamp=int(time.time()) - 2 * 3600)
    answer = _mailgun(client, mailgun_body(fixture("mailgun", "failed_permanent"), old))
    assert answer.status_code == 403
    assert _state(db, ann) == ACTIVE
    assert _events(db, "mailgun") == _events(db, "mailgun-token") == []


def test_mailgun_reused_token_is_403_even_with_other_event_data(
    client: TestClient, db: Session
) -> None:
    ann = _follower(db, "ann@harbour.example")
    bea = _follower(db, "bea@harbour.example")
    signature = mailgun_signature()
    body = mailgun_body(
        fixture("mailgun", "delivered") | {"recipient": "ann@harbour.example"}, signature
    )
    assert _mailgun(client, body).status_code == 200
    assert _mailgun(client, body).status_code == 403  # the same request, replayed
    # Mailgun signs timestamp and token only: a captured signature on a forged event is
    # caught because its token was used.
    forged = mailgun_body(
        fixture("mailgun", "failed_permanent") | {"recipient": "bea@harbour.example"}, signature
    )
    assert _mailgun(client, forged).status_code == 403
    assert _state(db, ann) == ACTIVE
    assert _state(db, bea) == ACTIVE
    assert len(_events(db, "mailgun")) == 1


def test_mailgun_retried_event_with_a_fresh_token_is_200_and_changes_nothing(
    client: TestClient, db: Session
) -> None:
    ben = _follower(db, "ben@quay.example")
    event = fixture("mailgun", "failed_temporary")
    assert _mailgun(client, mailgun_body(event)).json() == {"stored": 1, "replayed": 0}
    again = _mailgun(client, mailgun_body(event))  # Mailgun's retry: a new signature
    assert (again.status_code, again.json()) == (200, {"stored": 0, "replayed": 1})
    assert _state(db, ben) == ACTIVE  # one soft bounce silences nobody
    assert len(_events(db, "mailgun")) == 1
    assert len(_events(db, "mailgun-token")) == 2


def test_mailgun_complaint_unsubscribe_delivery_and_open(client: TestClient, db: Session) -> None:
    cora = _follower(db, "cora@lighthouse.example")
    dora = _follower(db, "dora@pier.example")
    eli = _follower(db, "eli@dock.example")
    for name in ("complained", "delivered", "unsubscribed", "opened"):
        assert _mailgun(client, mailgun_body(fixture("mailgun", name))).status_code == 200
    assert _state(db, cora) == (SubscriberStatus.COMPLAINED, [], True)
    assert _state(db, dora) == ACTIVE
    assert _state(db, eli) == (SubscriberStatus.UNSUBSCRIBED, [], False)


def test_mailgun_failure_finds_the_delivery_by_message_id(client: TestClient, db: Session) -> None:
    ann = _follower(db, "ann.new@harbour.example")
    # What our sender keeps: our Message-ID, and Mailgun's answer (the same id).
    mid = "<delivery.9.1@courier.example>"
    _sent(db, ann, message_id=mid, provider_id=mid)
    assert _mailgun(client, mailgun_body(fixture("mailgun", "failed_permanent"))).status_code == 200
    assert _state(db, ann)[0] == SubscriberStatus.BOUNCED


def test_mailgun_refuses_everything_until_configured(db: Session, tmp_path: Path) -> None:
    settings = _settings(tmp_path, mailgun_webhook_signing_key=SecretStr(""))
    unconfigured = TestClient(app_in_transaction(settings, db), raise_server_exceptions=False)
    assert _mailgun(unconfigured, mailgun_body(fixture("mailgun", "delivered"))).status_code == 401
    assert _mailgun(unconfigured, json.dumps({"no": "signature"}).encode()).status_code == 401
