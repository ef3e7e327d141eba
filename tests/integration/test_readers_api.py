"""The readers' JSON API on SQLite and PostgreSQL, as a reader's client or a script uses it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import session_factory
from service.models import Base, Subscriber, SubscriberStatus, Suppression, Tag
from service.readers import accounts
from service.readers.accounts import AlreadyConfirmed, confirm
from service.readers.schemas import SubscribeIn
from service.readers.tokens import InvalidToken, Purpose, TokenData, Tokens
from service.suppressions import email_hash
from tests.fakes import app_with_sync_intake


class RecordingNotifier:
    """Stands in for the task queue: records which mail each request would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def confirmation(self, session: Session, subscriber_id: int) -> None:
        self.sent.append(("confirm", subscriber_id))

    def manage_link(self, session: Session, subscriber_id: int) -> None:
        self.sent.append(("manage", subscriber_id))


class Api:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings
        self.app = app_with_sync_intake(settings, engine)
        self.notifier = RecordingNotifier()
        self.app.state.notifier = self.notifier
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.tokens = Tokens(settings)

    def session(self) -> Session:
        return session_factory(self.engine)()  # as the worker's sessions: writers queue

    def subscribe(self, **body: Any) -> Any:
        body.setdefault("tags", ["ukraine"])
        return self.client.post("/api/subscriptions", json=body)

    def reader(self, email: str) -> Subscriber:
        with self.session() as session:
            return session.scalars(
                select(Subscriber).where(func.lower(Subscriber.email) == email.lower())
            ).one()

    def activate(self, email: str) -> str:
        """Subscribe and confirm ``email``; returns its preferences token."""
        assert self.subscribe(email=email).status_code == 202
        reader = self.reader(email)
        with self.session() as session:
            confirm(session, TokenData(reader.id, nonce=reader.confirm_nonce), source="test")
            session.commit()
        return self.tokens.make(Purpose.MANAGE, TokenData(reader.id))

    def me(self, token: str) -> Any:
        return self.client.get("/api/me", headers={"X-Subscriber-Token": token})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        var_dir=tmp_path,
        log_format="text",
        secret_key="test-key-" + "x" * 40,
        blocked_email_domains="spam.example",
        rate_limit_subscribe_per_ip="1000/minute",
        rate_limit_subscribe_per_address="100/hour",
    )


@pytest.fixture
def api(engine: Engine, settings: Settings) -> Iterator[Api]:
    with Session(engine) as session:
        session.add_all(
            [
                Tag(slug="ukraine", name="Ukraine"),
                Tag(slug="economy", name="Economy"),
                Tag(slug="putin", name="Putin"),
            ]
        )
        session.commit()
    yield Api(engine, settings)
    with engine.begin() as conn:  # these tests commit for real: leave the database empty
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


def test_subscribe_creates_a_pending_reader_and_sends_a_confirmation(api: Api) -> None:
    response = api.subscribe(
        email="Ann@Example.org",
        tags=["ukraine", "economy"],
        cadence="weekly",
        timezone="Asia/Tokyo",
        send_hour=7,
    )
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    reader = api.reader("Ann@example.org")  # the domain is normalized, the local part kept
    assert reader.status == SubscriberStatus.PENDING
    assert (reader.timezone, reader.send_hour) == ("Asia/Tokyo", 7)
    assert api.notifier.sent == [("confirm", reader.id)]
    assert {s.tag.slug: s.cadence.value for s in _subscriptions(api, reader)} == {
        "ukraine": "weekly",
        "economy": "weekly",
    }


def test_a_cadence_per_tag(api: Api) -> None:
    response = api.subscribe(
        email="b@example.org", tags=[], cadence={"putin": "instant", "economy": "weekly"}
    )
    assert response.status_code == 202, response.text
    reader = api.reader("b@example.org")
    assert {s.tag.slug: s.cadence.value for s in _subscriptions(api, reader)} == {
        "putin": "instant",
        "economy": "weekly",
    }


def test_subscribing_again_merges_tags_without_duplicates(api: Api) -> None:
    api.subscribe(email="c@example.org", tags=["ukraine"], cadence="daily")
    api.subscribe(email="C@example.org", tags=["ukraine", "economy"], cadence="weekly")
    reader = api.reader("c@example.org")
    assert {s.tag.slug: s.cadence.value for s in _subscriptions(api, reader)} == {
        "ukraine": "weekly",
        "economy": "weekly",
    }
    assert api.notifier.sent == [("confirm", reader.id), ("confirm", reader.id)]
    with api.session() as session:
        assert len(session.scalars(select(Subscriber)).all()) == 1


def test_an_active_reader_gets_their_preferences_link_and_nothing_changes(api: Api) -> None:
    api.activate("d@example.org")
    api.notifier.sent.clear()
    reader = api.reader("d@example.org")
    response = api.subscribe(email="d@example.org", tags=["putin"], cadence="instant")
    assert response.status_code == 202
    assert api.notifier.sent == [("manage", reader.id)]
    assert [s.tag.slug for s in _subscriptions(api, reader)] == ["ukraine"]


def test_no_way_to_tell_new_pending_active_or_erased_addresses_apart(api: Api) -> None:
    api.activate("active@example.org")
    api.subscribe(email="pending@example.org")
    erased = api.activate("erased@example.org")
    assert api.client.delete("/api/me", headers={"X-Subscriber-Token": erased}).status_code == 204
    answers = {
        email: api.subscribe(email=email)
        for email in (
            "new@example.org",
            "pending@example.org",
            "active@example.org",
            "erased@example.org",
        )
    }
    assert {r.status_code for r in answers.values()} == {202}
    assert len({r.content for r in answers.values()}) == 1
    assert len({tuple(sorted(r.headers.items())) for r in answers.values()}) == 1


class RecordingIntake:
    """What production does in the request: hand the request over, nothing else."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def subscribe(self, request: Any, source: str) -> None:
        self.requests.append(request.email)


def test_timing_does_not_tell_new_pending_active_or_suppressed_apart(api: Api) -> None:
    api.activate("known@example.org")
    api.subscribe(email="waiting@example.org")
    erased = api.activate("gone@example.org")
    api.client.delete("/api/me", headers={"X-Subscriber-Token": erased})
    api.app.state.intake = RecordingIntake()
    states = {
        "new": "new{}@example.org",
        "pending": "waiting@example.org",
        "active": "known@example.org",
        "suppressed": "gone@example.org",
    }
    timings: dict[str, list[float]] = {state: [] for state in states}
    for i in range(30):  # interleaved, so a busy machine slows every kind alike
        for state, address in states.items():
            started = time.perf_counter()
            assert api.subscribe(email=address.format(i)).status_code == 202
            timings[state].append((time.perf_counter() - started) * 1000)
    medians = {state: statistics.median(t) for state, t in timings.items()}
    fastest, slowest = min(medians.values()), max(medians.values())
    # The request does the same work for every address; the worker does the rest.
    assert slowest - fastest < max(3.0, 0.3 * fastest), medians


def test_the_request_only_hands_over_whatever_the_address(api: Api) -> None:
    api.activate("known@example.org")
    api.app.state.intake = intake = RecordingIntake()
    api.notifier.sent.clear()
    for email in ("new@example.org", "known@example.org"):
        assert api.subscribe(email=email).status_code == 202
    assert intake.requests == ["new@example.org", "known@example.org"]
    assert api.notifier.sent == []  # nothing address-dependent happened in the request


def test_internationalized_addresses(api: Api) -> None:
    # A non-ASCII mailbox needs SMTPUTF8, which a To header and most relays cannot carry.
    refused = api.subscribe(email="\u00c4rger@example.org")
    assert refused.status_code == 422
    assert "email" in refused.text
    # A non-ASCII domain is kept as mail servers see it, in punycode.
    assert api.subscribe(email="leser@b\u00fccher.example").status_code == 202
    assert api.reader("leser@xn--bcher-kva.example").email == "leser@xn--bcher-kva.example"


def test_two_subscribes_for_one_new_address_at_once_make_one_reader(api: Api) -> None:
    request = SubscribeIn(email="twice@example.org", tags=["ukraine"])

    def subscribe_once(_: int) -> None:
        with api.session() as session:
            accounts.subscribe(
                session, request, settings=api.settings, notify=api.notifier, source="test"
            )
            session.commit()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(subscribe_once, range(8)))
    with api.session() as session:
        assert len(session.scalars(select(Subscriber)).all()) == 1
    assert len(_subscriptions(api, api.reader("twice@example.org"))) == 1


def test_saving_preferences_twice_at_once_is_not_an_error(api: Api) -> None:
    token = api.activate("clicks@example.org")

    def save(i: int) -> int:
        client = TestClient(api.app, raise_server_exceptions=False)
        cadence = "weekly" if i % 2 else "daily"
        response = client.patch(
            "/api/me",
            headers={"X-Subscriber-Token": token},
            json={"tags": {"economy": cadence, "putin": "instant"}},
        )
        return response.status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(save, range(12)))
    assert set(codes) == {200}
    me = api.me(token).json()
    assert set(me["subscriptions"]) == {"ukraine", "economy", "putin"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@example.org\r\nBcc: x@example.org"}, "email"),
        ({"email": "a@spam.example"}, "email"),
        ({"email": "a@example.org", "tags": ["no-such-tag"]}, "tags"),
        ({"email": "a@example.org", "tags": ["ukraine\r\n"]}, "tags"),
        ({"email": "a@example.org", "tags": []}, "tags"),
        ({"email": "a@example.org", "cadence": "hourly"}, "cadence"),
        ({"email": "a@example.org", "timezone": "Mars/Olympus"}, "timezone"),
        ({"email": "a@example.org", "timezone": "Europe/Kyiv\n"}, "timezone"),
        ({"email": "a@example.org", "send_hour": 24}, "send_hour"),
        ({"email": "a@example.org", "send_hour": -1}, "send_hour"),
        ({"email": "a@example.org", "admin": True}, "admin"),
    ],
)
def test_bad_input_is_a_422_that_names_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    response = api.subscribe(**body)
    assert response.status_code == 422, response.text
    assert field in response.text
    assert api.notifier.sent == []
    with api.session() as session:
        assert session.scalars(select(Subscriber)).all() == []


def test_too_many_requests_from_one_client_get_429_with_retry_after(
    engine: Engine, settings: Settings, api: Api
) -> None:
    strict = Api(engine, settings.model_copy(update={"rate_limit_subscribe_per_ip": "2/minute"}))
    codes = [strict.subscribe(email=f"r{i}@example.org").status_code for i in range(3)]
    assert codes == [202, 202, 429]
    last = strict.subscribe(email="r9@example.org")
    assert 1 <= int(last.headers["Retry-After"]) <= 60


def test_too_many_requests_for_one_address_get_429(
    engine: Engine, settings: Settings, api: Api
) -> None:
    strict = Api(engine, settings.model_copy(update={"rate_limit_subscribe_per_address": "1/hour"}))
    assert strict.subscribe(email="target@example.org").status_code == 202
    assert strict.subscribe(email="TARGET@example.org").status_code == 429
    assert strict.subscribe(email="other@example.org").status_code == 202
    assert strict.notifier.sent == [
        ("confirm", strict.reader("target@example.org").id),
        ("confirm", strict.reader("other@example.org").id),
    ]


def test_me_needs_a_valid_preferences_token(api: Api) -> None:
    token = api.activate("e@example.org")
    reader = api.reader("e@example.org")
    assert api.client.get("/api/me").status_code == 401
    assert api.me("garbage").status_code == 401
    unsubscribe_token = api.tokens.make(Purpose.UNSUBSCRIBE, TokenData(reader.id))
    assert api.me(unsubscribe_token).status_code == 401  # another purpose's token
    me = api.me(token)
    assert me.status_code == 200
    assert me.json()["email"] == "e@example.org"
    assert me.json()["subscriptions"] == {"ukraine": "daily"}
    assert me.json()["consented_at"]


def test_preferences_change_through_patch(api: Api) -> None:
    token = api.activate("f@example.org")
    headers = {"X-Subscriber-Token": token}
    response = api.client.patch(
        "/api/me",
        headers=headers,
        json={
            "tags": {"ukraine": None, "putin": "instant", "economy": "weekly"},
            "timezone": "Europe/Kyiv",
            "send_hour": 6,
            "breaking_alerts": False,
            "paused": True,
        },
    )
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["subscriptions"] == {"putin": "instant", "economy": "weekly"}
    assert (me["timezone"], me["send_hour"], me["breaking_alerts"], me["paused"]) == (
        "Europe/Kyiv",
        6,
        False,
        True,
    )
    assert (
        api.client.patch("/api/me", headers=headers, json={"send_hour": None}).json()["send_hour"]
        is None
    )  # back to the schedule's time
    bad = api.client.patch("/api/me", headers=headers, json={"tags": {"nope": "daily"}})
    assert bad.status_code == 422
    assert "nope" in bad.text
    assert (
        api.client.patch("/api/me", headers=headers, json={"timezone": "UTC\r\nX: y"}).status_code
        == 422
    )


def test_dropping_every_tag_unsubscribes(api: Api) -> None:
    token = api.activate("g@example.org")
    response = api.client.patch(
        "/api/me", headers={"X-Subscriber-Token": token}, json={"tags": {"ukraine": None}}
    )
    assert response.json()["status"] == "unsubscribed"


def test_export_holds_profile_consent_and_deliveries(api: Api) -> None:
    token = api.activate("h@example.org")
    data = api.client.get("/api/me/export", headers={"X-Subscriber-Token": token}).json()
    assert data["profile"]["email"] == "h@example.org"
    assert data["profile"]["consent_source"].startswith("api")
    assert data["deliveries"] == []
    assert "created_at" in data


def test_erase_forgets_the_reader_and_never_mails_them_again(api: Api) -> None:
    token = api.activate("Gone@Example.org")
    reader_id = api.reader("Gone@example.org").id
    assert api.client.delete("/api/me", headers={"X-Subscriber-Token": token}).status_code == 204
    assert api.me(token).status_code == 401  # the token died with the data
    with api.session() as session:
        row = session.get(Subscriber, reader_id)
        assert row is not None
        assert row.status == SubscriberStatus.ERASED
        assert "gone" not in row.email.lower()
        entry = session.scalars(select(Suppression)).one()
        assert entry.email is None
        assert entry.note is None
        assert entry.email_hash == email_hash("gone@example.org")
    api.notifier.sent.clear()
    assert api.subscribe(email="gone@example.org").status_code == 202
    assert api.notifier.sent == []


def test_tags_list_with_post_counts(api: Api) -> None:
    tags = api.client.get("/api/tags").json()
    assert [t["slug"] for t in tags] == ["economy", "putin", "ukraine"]
    assert {t["posts"] for t in tags} == {0}


def test_a_confirmation_link_works_once(api: Api) -> None:
    api.subscribe(email="once@example.org")
    reader = api.reader("once@example.org")
    data = TokenData(reader.id, nonce=reader.confirm_nonce)
    with api.session() as session:
        assert confirm(session, data, source="web").status == SubscriberStatus.ACTIVE
        session.commit()
    with api.session() as session, pytest.raises(AlreadyConfirmed):
        confirm(session, data, source="web")


def test_a_confirmation_link_expires_after_seven_days(settings: Settings) -> None:
    tokens = Tokens(settings)
    now = int(time.time())
    six_days_old = _token_signed_at(settings, {"s": 1, "n": "n"}, now - 6 * 86400)
    eight_days_old = _token_signed_at(settings, {"s": 1, "n": "n"}, now - 8 * 86400)
    assert tokens.read(Purpose.CONFIRM, six_days_old).nonce == "n"
    with pytest.raises(InvalidToken) as expired:
        tokens.read(Purpose.CONFIRM, eight_days_old)
    assert expired.value.expired
    # the preferences link in a months-old newsletter still works
    assert (
        tokens.read(
            Purpose.MANAGE,
            _token_signed_at(settings, {"s": 1}, now - 200 * 86400, salt="newsletter.manage"),
        ).subscriber_id
        == 1
    )


def test_keys_rotate_without_breaking_links_in_inboxes(settings: Settings) -> None:
    old = Tokens(settings.model_copy(update={"secret_key": _secret("old-key-" + "o" * 40)}))
    token = old.make(Purpose.UNSUBSCRIBE, TokenData(7, scope="putin"))
    rotated = Tokens(
        settings.model_copy(
            update={"secret_key": _secret("new-key-" + "n" * 40 + ",old-key-" + "o" * 40)}
        )
    )
    assert rotated.read(Purpose.UNSUBSCRIBE, token) == TokenData(7, scope="putin")
    new_token = rotated.make(Purpose.UNSUBSCRIBE, TokenData(7))
    with pytest.raises(InvalidToken):
        old.read(Purpose.UNSUBSCRIBE, new_token)  # the newest key signs
    with pytest.raises(InvalidToken):
        rotated.read(Purpose.MANAGE, token)  # and each purpose has its own salt


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def _token_signed_at(
    settings: Settings, payload: dict[str, Any], timestamp: int, salt: str = "newsletter.confirm"
) -> str:
    class SignedThen(TimestampSigner):
        def get_timestamp(self) -> int:
            return timestamp

    return URLSafeTimedSerializer(settings.secret_keys(), salt=salt, signer=SignedThen).dumps(
        payload
    )


def _subscriptions(api: Api, reader: Subscriber) -> list[Any]:
    with api.session() as session:
        fresh = session.get(Subscriber, reader.id)
        assert fresh is not None
        return sorted(fresh.subscriptions, key=lambda s: s.tag.slug)


def test_rate_limits_are_shared_through_redis_by_every_api_process(
    engine: Engine, settings: Settings, api: Api, redis_url: str
) -> None:
    shared = settings.model_copy(
        update={"broker_url": redis_url, "rate_limit_subscribe_per_ip": "3/minute"}
    )
    first, second = Api(engine, shared), Api(engine, shared)  # two API processes, one Redis
    assert [first.subscribe(email=f"s{i}@example.org").status_code for i in range(2)] == [202] * 2
    assert second.subscribe(email="s2@example.org").status_code == 202
    assert second.subscribe(email="s3@example.org").status_code == 429
    assert first.subscribe(email="s4@example.org").status_code == 429


def test_an_unsubscribe_link_for_a_tag_that_is_gone_unsubscribes_from_everything(
    api: Api,
) -> None:
    api.activate("renamed@example.org")
    reader = api.reader("renamed@example.org")
    token = api.tokens.make(Purpose.UNSUBSCRIBE, TokenData(reader.id, scope="old-slug"))
    response = api.client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert api.reader("renamed@example.org").status == SubscriberStatus.UNSUBSCRIBED


def test_page_forms_take_no_file_uploads(api: Api) -> None:
    reader_token = api.tokens.make(Purpose.UNSUBSCRIBE, TokenData(1))
    response = api.client.post(
        f"/unsubscribe/{reader_token}",
        files={"upload": ("big.bin", b"x" * 200_000, "application/octet-stream")},
    )
    assert 400 <= response.status_code < 500
