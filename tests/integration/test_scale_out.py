"""Scale-out: two worker processes and two beats on one Redis and one PostgreSQL send a daily
edition to every reader exactly once, the work shared about evenly between the workers.

Each worker sends to an SMTP server of its own, so what arrived at each server is what that
worker sent (a deployment would share one relay; the service sees no difference). The beats
tick every 2 s (`NEWSLETTER_TICK_SECONDS`), each with its own schedule file: they plan the same
edition at the same time, again and again while it sends, and the ledger must keep every
reader to one message. Every process is started here and stopped by pid.

`SCALE_OUT_READERS` sets the size (default 20,000; see README "Scaling out" for the timing).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from service import migrate
from service.db import make_engine, session_factory
from service.digests import schedules
from service.models import (
    Cadence,
    Delivery,
    Edition,
)
from tests.conftest import _postgres_database
from tests.digest_data import followers, post, tag
from tests.processes import PYTHON, service_env, start, stop, wait_for
from tests.smtp_server import Server

pytestmark = [
    pytest.mark.process,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.smtp,
    pytest.mark.slow,
]

READERS = int(os.environ.get("SCALE_OUT_READERS", "20000"))


@pytest.fixture
def pg() -> Iterator[Engine]:
    for url in _postgres_database():
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield engine
        engine.dispose()


def seed(engine: Engine, n: int, now: datetime) -> None:
    """``n`` active readers in UTC following one tag daily, three posts of the last hours, and a
    daily schedule whose time this hour is due now."""
    with session_factory(engine)() as s:
        t = tag(s, "city")
        for i in range(3):
            post(s, f"Council story {i}", [t], published=now - timedelta(hours=i + 1))
        followers(s, t.id, [f"reader{i:05d}@mail{i % 31}.example" for i in range(n)])
        schedules.add_schedule(s, "morning", Cadence.DAILY, at=clock(now.hour, 0))
        s.commit()


class Cluster:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], ready: str) -> Path:
        log = self.tmp_path / f"{name}.log"
        self.procs.append(start([PYTHON, "-m", "service", *argv], env, log))
        wait_for(lambda: ready in log.read_text(errors="replace"), 60, name, log)
        return log

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.close()


def test_two_workers_and_two_beats_send_each_reader_one_message(
    pg: Engine,
    redis_url: str,
    start_server: Callable[..., Server],
    cluster: Cluster,
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    seed(pg, READERS, now)  # this hour's occurrence stays the one due for 6 hours (catch-up)
    servers = [start_server(), start_server()]

    def env(var: str, smtp: Server) -> dict[str, str]:
        (tmp_path / var).mkdir(exist_ok=True)
        return service_env(
            tmp_path / var,
            database_url=pg.url.render_as_string(hide_password=False),
            broker_url=redis_url,
            mail_backend="smtp",
            smtp_url=smtp.url,
            secret_key="scale-secret-key-0123456789abcdef",
            base_url="https://courier.example",
            mail_from="news@courier.example",
            tick_seconds="2",
        )

    for n, smtp in enumerate(servers):
        argv = ["worker", "--concurrency", "1", "--hostname", f"w{n}@%h"]
        cluster.start(f"worker{n}", argv, env(f"worker{n}", smtp), " ready.")
    started = time.monotonic()
    beats = [
        cluster.start(f"beat{n}", ["beat"], env(f"beat{n}", servers[n]), "beat: Starting")
        for n in range(2)
    ]
    sessions = session_factory(pg)

    def received() -> int:
        return sum(len(s.handler.received) for s in servers)

    def edition_done() -> bool:
        with sessions() as s:
            return s.scalar(select(Edition.status)) == "done"

    wait_for(lambda: received() >= READERS and edition_done(), 240, "the edition sent")
    took = time.monotonic() - started
    ticks = [log.read_text().count("Sending due task tick") for log in beats]
    time.sleep(4)  # both beats tick again after the edition: they must plan nothing more

    per_reader = servers[0].handler.count_by_recipient() + servers[1].handler.count_by_recipient()
    assert len(per_reader) == READERS
    assert max(per_reader.values()) == 1, per_reader.most_common(3)
    with sessions() as s:
        by_status = select(Delivery.status, func.count()).group_by(Delivery.status)
        statuses = {status: n for status, n in s.execute(by_status)}
        assert s.scalar(select(func.count()).select_from(Edition)) == 1
    assert statuses == {"sent": READERS}, statuses
    shares = [len(s.handler.received) / READERS for s in servers]
    assert all(0.3 <= share <= 0.7 for share in shares), shares
    assert all(t >= 1 for t in ticks), ticks
    print(
        f"\n{READERS} readers in {took:.1f}s ({READERS / took:.0f}/s) from beat start; "
        f"shares {shares[0]:.1%} / {shares[1]:.1%}; ticks per beat while sending {ticks}"
    )
