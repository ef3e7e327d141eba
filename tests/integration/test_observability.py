"""What an operator's Prometheus and log search see: `/metrics` read from a seeded database and
a real broker with tasks waiting, a scrape that still answers when a server is down, and the
send path's JSON log lines carrying edition and delivery ids but never a reader's address."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service import tasks
from service.config import Settings, get_settings
from service.db import make_engine
from service.digests import planning
from service.digests.sending import send_batch
from service.feeds.poller import PollOutcome
from service.logs import HANDLER_NAME, configure_logging
from service.mail.senders.smtp import SmtpSender
from service.models import (
    Cadence,
    DeliveredPost,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Source,
    Subscriber,
)
from service.web.app import create_app
from tests.digest_data import post, reader, tag
from tests.fakes import app_in_transaction
from tests.smtp_server import Server

Sample = tuple[str, frozenset[tuple[str, str]]]


def scrape(client: TestClient) -> dict[Sample, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(found: dict[Sample, float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "broker" / "queue").mkdir(parents=True)
    return Settings(var_dir=tmp_path, log_format="text")


@pytest.fixture
def celery_on() -> Iterator[Callable[[Settings], None]]:
    """Points the Celery app at a test's broker; back to the configured one afterwards."""
    yield tasks.configure
    tasks.configure(get_settings())


# -- the database's figures --------------------------------------------------------------------


def _readers(db: Session, n: int) -> list[Subscriber]:
    return [reader(db, f"r{i}@harbour.example", {}) for i in range(n)]


def _delivery(
    db: Session,
    edition: Edition,
    who: Subscriber,
    status: DeliveryStatus,
    *,
    backend: str | None = None,
    claimed: datetime | None = None,
    ended: datetime | None = None,
) -> None:
    db.add(
        Delivery(
            edition_id=edition.id,
            subscriber_id=who.id,
            status=status,
            backend=backend,
            claimed_at=claimed,
            sent_at=ended,
        )
    )


def _edition(db: Session, key: str, status: EditionStatus, **values: object) -> Edition:
    edition = Edition(key=key, kind=EditionKind.DIGEST, status=status, **values)
    db.add(edition)
    db.flush()
    return edition


def test_metrics_match_the_database(db: Session, settings: Settings) -> None:
    now = datetime.now(UTC)
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    r = _readers(db, 12)
    recent = _edition(
        db, "digest:1:a", EditionStatus.DONE, sent=5, failed=1, skipped=2, suppressed=1,
        heartbeat_at=ago(20),
    )  # fmt: skip
    _edition(db, "digest:1:old", EditionStatus.DONE, sent=100, unknown=3, heartbeat_at=ago(86400))
    sending = _edition(db, "digest:1:b", EditionStatus.SENDING)
    paused = _edition(db, "digest:2:b", EditionStatus.SENDING, paused_reason="smtp refused us")
    _edition(db, "digest:3:b", EditionStatus.PLANNED)
    sent, failed, skipped = DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED
    _delivery(db, recent, r[0], sent, backend="smtp", claimed=ago(70), ended=ago(69.8))
    _delivery(db, recent, r[1], sent, backend="smtp", claimed=ago(60), ended=ago(57))
    _delivery(db, recent, r[2], failed, backend="smtp", claimed=ago(51), ended=ago(50))
    _delivery(db, recent, r[3], skipped, ended=ago(40))
    _delivery(db, recent, r[4], sent, backend="postmark", claimed=ago(30), ended=ago(29.6))
    _delivery(db, recent, r[5], sent, backend="smtp", claimed=ago(601), ended=ago(600))  # before
    _delivery(db, sending, r[0], DeliveryStatus.QUEUED)
    _delivery(db, sending, r[1], DeliveryStatus.QUEUED)
    _delivery(db, sending, r[2], DeliveryStatus.SENDING, backend="smtp", claimed=ago(1))
    _delivery(db, paused, r[0], DeliveryStatus.QUEUED)
    results = {
        "new": PollOutcome(1, "", "new", new=2).describe(),
        "updated": PollOutcome(2, "", "updated", updated=3).describe(),
        "not_modified": PollOutcome(3, "", "not modified").describe(),
        "unchanged": PollOutcome(4, "", "unchanged").describe(),
        "error": PollOutcome(5, "", "error", error="HTTP 503").describe(),
        "disabled": PollOutcome(6, "", "disabled", error="HTTP 410").describe(),
    }
    for name, result in results.items():
        db.add(
            Source(
                url=f"https://harbour.example/{name}.xml",
                last_result=result,
                last_polled_at=ago(300),
                next_poll_at=ago(3600) if name == "error" else ago(-600),  # one is overdue
                enabled=name != "disabled",
            )
        )
    db.add(Source(url="https://harbour.example/new-feed.xml"))  # never polled yet
    news = tag(db, "harbour")
    late = post(db, "Ferry timetable", [news], published=ago(7200), seen=ago(6600))
    quick = post(db, "Storm warning", [news], published=ago(600))
    post(db, "Quiet day", [news], published=ago(300))  # nobody has had it yet
    old = post(db, "Last week", [news], published=ago(8 * 86400))
    db.add_all(
        [
            DeliveredPost(subscriber_id=r[0].id, post_id=late.id, delivered_at=ago(1800)),
            DeliveredPost(subscriber_id=r[1].id, post_id=late.id, delivered_at=ago(3600)),
            DeliveredPost(subscriber_id=r[0].id, post_id=quick.id, delivered_at=ago(540)),
            DeliveredPost(subscriber_id=r[0].id, post_id=old.id, delivered_at=ago(86400)),
        ]
    )
    db.commit()

    found = scrape(TestClient(app_in_transaction(settings, db)))

    assert value(found, "newsletter_database_up") == 1
    totals = {s: value(found, "newsletter_deliveries_total", status=s) for s in
              ("sent", "failed", "skipped", "suppressed", "unknown")}  # fmt: skip
    assert totals == {"sent": 105, "failed": 1, "skipped": 2, "suppressed": 1, "unknown": 3}
    assert value(found, "newsletter_deliveries_pending", status="queued") == 3
    assert value(found, "newsletter_deliveries_pending", status="sending") == 1
    assert value(found, "newsletter_editions_open", state="planned") == 1
    assert value(found, "newsletter_editions_open", state="sending") == 1
    assert value(found, "newsletter_editions_open", state="paused") == 1
    recent_rows = {
        (dict(labels)["status"], dict(labels)["backend"]): v
        for (name, labels), v in found.items()
        if name == "newsletter_deliveries_recent"
    }
    assert recent_rows == {
        ("sent", "smtp"): 2,
        ("failed", "smtp"): 1,
        ("skipped", "none"): 1,
        ("sent", "postmark"): 1,
    }
    smtp = {
        le: value(found, "newsletter_send_latency_seconds_bucket", backend="smtp", le=le)
        for le in ("0.1", "0.25", "2.5", "5", "+Inf")
    }
    assert smtp == {"0.1": 0, "0.25": 1, "2.5": 1, "5": 2, "+Inf": 2}
    assert value(found, "newsletter_send_latency_seconds_gsum", backend="smtp") == pytest.approx(
        3.2, abs=0.01
    )
    assert value(found, "newsletter_send_latency_seconds_bucket", backend="postmark", le="0.5") == 1
    assert (
        value(found, "newsletter_send_latency_seconds_bucket", backend="postmark", le="0.25") == 0
    )

    for name in results:
        assert value(found, "newsletter_feed_sources", last_poll=name) == 1, name
    assert value(found, "newsletter_feed_sources", last_poll="never") == 1
    assert value(found, "newsletter_feed_sources_overdue") == 1

    lag = {le: value(found, "newsletter_feed_lag_seconds_bucket", le=le) for le in
           ("60", "300", "3600", "604800", "+Inf")}  # fmt: skip
    assert lag == {"60": 1, "300": 1, "3600": 2, "604800": 2, "+Inf": 2}  # 60 s and 1 h
    assert value(found, "newsletter_feed_lag_seconds_gsum") == pytest.approx(3660, abs=0.1)


def test_feed_lag_keeps_a_posts_first_mail(db: Session, settings: Settings) -> None:
    """A post's first mail is found once; mails after it change nothing, a new post counts."""
    now = datetime.now(UTC)
    who = _readers(db, 2)
    news = tag(db, "harbour")
    first = post(db, "Harbour reopens", [news], published=now - timedelta(seconds=100))
    db.add(DeliveredPost(subscriber_id=who[0].id, post_id=first.id, delivered_at=now))
    db.commit()
    client = TestClient(app_in_transaction(settings, db))
    assert value(scrape(client), "newsletter_feed_lag_seconds_gcount") == 1

    second = post(db, "Harbour closes", [news], published=now - timedelta(seconds=20))
    db.add(DeliveredPost(subscriber_id=who[1].id, post_id=first.id, delivered_at=now))
    db.add(DeliveredPost(subscriber_id=who[0].id, post_id=second.id, delivered_at=now))
    db.commit()
    found = scrape(client)
    assert value(found, "newsletter_feed_lag_seconds_gcount") == 2
    assert value(found, "newsletter_feed_lag_seconds_bucket", le="60") == 1
    assert value(found, "newsletter_feed_lag_seconds_gsum") == pytest.approx(120, abs=1)


# -- the broker's queues ----------------------------------------------------------------------


@pytest.mark.redis
def test_queue_depth_and_age_on_redis(
    settings: Settings, engine: Engine, redis_url: str, celery_on: Callable[[Settings], None]
) -> None:
    on_redis = settings.model_copy(update={"broker_url": redis_url})
    celery_on(on_redis)
    waited = time.time() - 120
    tasks.send_deliveries.apply_async((1, [1]), headers={"published_at": waited})
    tasks.send_deliveries.apply_async((1, [2]))
    tasks.send_deliveries.apply_async((1, [3]), priority=9)  # a list of its own in Redis
    tasks.poll_source.delay(5)
    tasks.tick.apply_async(countdown=600)  # not ready for ten minutes: not late
    found = scrape(TestClient(create_app(on_redis, engine)))

    assert value(found, "newsletter_broker_up") == 1
    depth = {q: value(found, "newsletter_queue_messages", queue=q) for q in tasks.QUEUES}
    assert depth == {"priority": 0, "mail": 3, "poll": 1, "default": 1}
    assert 119 <= value(found, "newsletter_queue_oldest_age_seconds", queue="mail") < 150
    assert value(found, "newsletter_queue_oldest_age_seconds", queue="poll") < 30
    assert value(found, "newsletter_queue_oldest_age_seconds", queue="default") == 0
    assert value(found, "newsletter_queue_oldest_age_seconds", queue="priority") == 0


@pytest.mark.embedded_broker
def test_queue_depth_on_the_embedded_broker(
    settings: Settings, engine: Engine, celery_on: Callable[[Settings], None]
) -> None:
    celery_on(settings)
    tasks.send_deliveries.apply_async((1, [1]), headers={"published_at": time.time() - 60})
    tasks.send_deliveries.apply_async((1, [2]))
    tasks.dispatch_priority(1, [3])
    found = scrape(TestClient(create_app(settings, engine)))
    assert value(found, "newsletter_queue_messages", queue="mail") == 2
    assert value(found, "newsletter_queue_messages", queue="priority") == 1
    assert value(found, "newsletter_queue_messages", queue="poll") == 0
    assert 59 <= value(found, "newsletter_queue_oldest_age_seconds", queue="mail") < 90


def test_a_down_broker_is_a_zero_not_an_error(settings: Settings, engine: Engine) -> None:
    down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{_closed_port()}/0"})
    found = scrape(TestClient(create_app(down, engine), raise_server_exceptions=False))
    assert value(found, "newsletter_broker_up") == 0
    assert value(found, "newsletter_database_up") == 1
    assert not [name for name, _ in found if name.startswith("newsletter_queue_")]


def test_a_down_database_is_a_zero_not_an_error(settings: Settings) -> None:
    dead = make_engine(
        f"postgresql+psycopg://nobody@127.0.0.1:{_closed_port()}/none",
        connect_args={"connect_timeout": 2},
    )
    found = scrape(TestClient(create_app(settings, dead), raise_server_exceptions=False))
    assert value(found, "newsletter_database_up") == 0
    assert value(found, "newsletter_feedback_figures_up") == 0
    assert value(found, "newsletter_broker_up") == 1
    assert not [name for name, _ in found if name.startswith("newsletter_deliveries")]


# -- the send path's logs ---------------------------------------------------------------------


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, object]]]]:
    """Our JSON log handler, as configured for production, writing where the test reads it;
    the root logger's handlers as before afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(Settings(log_format="json"))
    (ours,) = [h for h in root.handlers if h.get_name() == HANDLER_NAME]
    assert isinstance(ours, logging.StreamHandler)
    written = io.StringIO()
    ours.setStream(written)

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in written.getvalue().splitlines()]

    yield lines
    root.handlers[:], root.level = handlers, level


@pytest.mark.smtp
def test_send_batch_logs_carry_ids_and_no_address(
    sessions: Callable[[], Session],
    start_server: Callable[..., Server],
    json_logs: Callable[[], list[dict[str, object]]],
) -> None:
    server = start_server()
    gone = "gone.reader@harbour.example"
    server.handler.rcpt_replies[gone] = f"550 5.1.1 <{gone}>: Recipient address rejected"
    with sessions() as session:
        news = tag(session, "harbour")
        addresses = ("ann.reader@harbour.example", gone)
        for address in addresses:
            reader(session, address, {news: Cadence.INSTANT})
        storm = post(session, "Storm warning", [news], published=datetime.now(UTC))
        session.commit()
        batches: list[tuple[int, list[int]]] = []
        planning.plan_instant(session, [storm.id], lambda e, ids: batches.append((e, list(ids))))
    ((edition_id, delivery_ids),) = batches
    settings = Settings(
        secret_key="test-secret-key-0123456789abcdef",
        base_url="https://courier.example",
        mail_from="The Harbour Courier <news@courier.example>",
    )
    sender = SmtpSender(server.url)
    try:
        report = send_batch(sessions, sender, settings, edition_id, delivery_ids)
    finally:
        sender.close()
    assert dict(report.counts) == {"sent": 1, "failed": 1}

    lines = json_logs()
    (batch,) = [line for line in lines if line["message"] == "send batch"]
    assert batch["edition_id"] == edition_id
    assert batch["delivery_ids"] == delivery_ids
    assert batch["backend"] == "smtp"
    (failed,) = [line for line in lines if line["message"] == "delivery failed"]
    with sessions() as session:
        gone_id = session.query(Subscriber.id).filter(Subscriber.email == gone).scalar()
        (gone_delivery,) = [
            d.id
            for d in session.query(Delivery).filter(Delivery.edition_id == edition_id)
            if d.subscriber_id == gone_id
        ]
    assert failed["edition_id"] == edition_id
    assert failed["delivery_id"] == gone_delivery
    assert failed["level"] == "WARNING"
    assert str(failed["error"]).startswith("550")  # the server's reply, its address masked
    assert "[address]" in str(failed["error"])
    everything = json.dumps(lines)
    assert not [a for a in addresses if a in everything]


def test_the_dashboard_reads_only_metrics_the_service_exposes(
    settings: Settings, engine: Engine
) -> None:
    client = TestClient(create_app(settings, engine))
    client.get("/healthz")  # so the request series exist
    # Every family the scrape declares, with its samples' names (a labelled series may have
    # no sample yet: nothing was sent in the last five minutes).
    exposed = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", client.get("/metrics").text, re.M):
        suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}
        exposed |= {family, *(family + s for s in suffixes.get(kind, ()))}
    root = Path(__file__).resolve().parents[2]
    dashboard = (root / "deploy" / "grafana-dashboard.json").read_text()
    used = set(re.findall(r"\bnewsletter_[a-z_]+", dashboard))
    assert len(used) > 15
    assert used - exposed == set()


def test_an_unreachable_amqp_broker_is_not_ready_and_a_zero(
    settings: Settings, engine: Engine
) -> None:
    down = settings.model_copy(
        update={"broker_url": f"amqp://guest:guest@127.0.0.1:{_closed_port()}//"}
    )
    client = TestClient(create_app(down, engine), raise_server_exceptions=False)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"]["ok"] is False
    found = scrape(client)
    assert value(found, "newsletter_broker_up") == 0
    assert value(found, "newsletter_database_up") == 1
