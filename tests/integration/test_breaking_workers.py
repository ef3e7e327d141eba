"""Breaking news through real Celery workers on Redis, PostgreSQL and a slow real SMTP server:
it overtakes a digest that is sending, and a cancel stops it for good.

Each test has its own database and its own worker processes, stopped by pid at the end.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from service import migrate, tasks
from service.config import Settings, get_settings
from service.db import make_engine, session_factory
from service.digests import breaking, editions, planning, schedules
from service.models import Cadence, Delivery, DeliveryStatus, Edition
from tests.conftest import _postgres_database
from tests.digest_data import followers, post, tag
from tests.processes import PYTHON, service_env, start, start_worker, stop, wait_for
from tests.smtp_server import Server

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis, pytest.mark.smtp]


@pytest.fixture
def pg() -> Iterator[Engine]:
    for url in _postgres_database():
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield engine
        engine.dispose()


class Newsroom:
    """Readers in bulk, workers started like `newsletter up` starts them, a publisher here."""

    def __init__(
        self, engine: Engine, redis_url: str, smtp: Server, var_dir: Path, tmp_path: Path
    ) -> None:
        self.smtp, self.tmp_path = smtp, tmp_path
        self.sessions = session_factory(engine)
        self.env = service_env(
            var_dir,
            database_url=engine.url.render_as_string(hide_password=False),
            broker_url=redis_url,
            mail_backend="smtp",
            smtp_url=smtp.url,
            secret_key="drill-secret-key-0123456789abcdef",
            base_url="https://courier.example",
            mail_from="news@courier.example",
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        tasks.configure(Settings(var_dir=var_dir, broker_url=redis_url))

    def readers(self, slug: str, n: int, cadence: Cadence = Cadence.DAILY) -> int:
        """``n`` active readers ``<slug>NNNNN@example.com`` following the tag; its id."""
        with self.sessions() as s:
            t = tag(s, slug)
            followers(s, t.id, [f"{slug}{i:05d}@example.com" for i in range(n)], cadence)
            s.commit()
            return t.id

    def post(self, title: str, tag_id: int) -> int:
        with self.sessions() as s:
            from service.models import Tag

            t = s.get(Tag, tag_id)
            assert t is not None
            p = post(s, title, [t], published=datetime.now(UTC) - timedelta(minutes=30))
            s.commit()
            return p.id

    def general_worker(self) -> None:
        proc = start_worker(self.env, self.tmp_path / "worker.log")
        self.procs.append(proc)

    def priority_worker(self) -> None:
        log = self.tmp_path / "priority.log"
        proc = start([PYTHON, "-m", "service", "worker", "--priority"], self.env, log)
        self.procs.append(proc)
        wait_for(lambda: " ready." in log.read_text(errors="replace"), 30, "priority worker", log)

    def received_by(self, prefix: str) -> list[float]:
        """Arrival times of the messages whose recipient starts with ``prefix``."""
        handler = self.smtp.handler
        return [
            at
            for envelope, at in zip(list(handler.received), list(handler.arrivals), strict=False)
            if envelope.rcpt_tos[0].startswith(prefix)
        ]

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)
        tasks.configure(get_settings())


@pytest.fixture
def newsroom(
    pg: Engine,
    redis_url: str,
    start_server: Callable[..., Server],
    var_dir: Path,
    tmp_path: Path,
) -> Iterator[Newsroom]:
    room = Newsroom(pg, redis_url, start_server(), var_dir, tmp_path)
    yield room
    room.close()


def test_breaking_news_overtakes_a_5000_reader_digest_that_is_sending(
    newsroom: Newsroom,
) -> None:
    newsroom.smtp.handler.data_delay = 0.008  # ≥ 40 s for the digest, ≥ 4 s a batch
    port = newsroom.readers("daily", 5000)
    alerts = newsroom.readers("alert", 20, Cadence.INSTANT)  # not in the daily digest
    newsroom.post("Market hours change", port)
    urgent = newsroom.post("Ship aground at the pier", alerts)
    with newsroom.sessions() as s:
        schedules.add_schedule(s, "morning", Cadence.DAILY)
        s.commit()
    newsroom.general_worker()  # every queue, one process: busy with digest batches
    newsroom.priority_worker()  # what `newsletter up` starts beside it
    with newsroom.sessions() as s:
        (digest,) = planning.plan_digests(s, tasks.dispatch, datetime.now(UTC), force=True)
    assert digest.deliveries == 5000
    # Just after the first batch starts: a worker busy with it would take the breaking
    # batch only in ≥ 3.9 s, when its 490 other messages are out.
    wait_for(lambda: len(newsroom.received_by("daily")) >= 10, 60, "the digest under way")

    with newsroom.sessions() as s:
        triggered = time.monotonic()
        sent = breaking.trigger_breaking(s, urgent, tasks.dispatch_priority)
    wait_for(lambda: bool(newsroom.received_by("alert")), 30, "the first breaking message")
    first = newsroom.received_by("alert")[0] - triggered
    digest_so_far = len(newsroom.received_by("daily"))
    assert first < 2.0, f"first breaking message {first:.2f}s after the trigger"
    assert digest_so_far < 400, "the breaking message waited for the digest batch"
    with newsroom.sessions() as s:
        assert s.get(Edition, digest.edition_id).status == "sending"  # type: ignore[union-attr]

    def breaking_done() -> bool:  # recorded just after the server's reply to the last one
        with newsroom.sessions() as s:
            return editions.edition_detail(s, sent.edition_id).status == "done"

    wait_for(breaking_done, 30, "the breaking edition done")
    assert len(newsroom.received_by("alert")) == 20
    with newsroom.sessions() as s:
        assert editions.edition_detail(s, sent.edition_id).sent == 20
    print(f"\nfirst breaking message {first * 1000:.0f} ms after the trigger, with "
          f"{digest_so_far} of 5000 digest messages out")  # fmt: skip


def test_cancel_mid_edition_nothing_goes_out_after_it_returns(newsroom: Newsroom) -> None:
    newsroom.smtp.handler.data_delay = 0.01
    alerts = newsroom.readers("alert", 600)
    urgent = newsroom.post("Ship aground at the pier", alerts)
    newsroom.priority_worker()
    with newsroom.sessions() as s:
        sent = breaking.trigger_breaking(s, urgent, tasks.dispatch_priority)
    wait_for(lambda: len(newsroom.received_by("alert")) >= 50, 60, "the edition under way")
    with newsroom.sessions() as s:
        detail = editions.cancel_edition(s, sent.edition_id)
    at_return = len(newsroom.received_by("alert"))
    time.sleep(2)  # a worker that were still sending would show up now
    assert len(newsroom.received_by("alert")) == at_return
    assert at_return < 600
    with newsroom.sessions() as s:
        statuses = dict(
            s.execute(
                select(Delivery.status, func.count())
                .where(Delivery.edition_id == sent.edition_id)
                .group_by(Delivery.status)
            ).all()
        )
        again = editions.edition_detail(s, sent.edition_id)
    assert statuses == {
        DeliveryStatus.SENT: at_return,
        DeliveryStatus.SKIPPED: 600 - at_return,
    }
    assert (detail.status, detail.sent, detail.cancelled, detail.left) == (
        "cancelled",
        at_return,
        600 - at_return,
        0,
    )
    assert again == detail
