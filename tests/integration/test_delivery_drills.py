"""Fault drills of the delivery ledger: real Celery workers on Redis, real PostgreSQL, a real
SMTP server. A worker is SIGKILLed mid-edition, a server greylists, two workers share a rate.

Each drill has its own database and its own worker processes, stopped by pid at the end.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from service import migrate, tasks
from service.config import Settings, get_settings
from service.db import make_engine, session_factory
from service.digests import planning, schedules, sweep
from service.models import Cadence, Delivery, Edition
from tests.conftest import _postgres_database
from tests.digest_data import post, reader, tag
from tests.processes import service_env, start_worker, stop, wait_for
from tests.smtp_server import Server

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis, pytest.mark.smtp]

NOW = datetime.now(UTC)


@pytest.fixture
def drill_db() -> Iterator[Engine]:
    for url in _postgres_database():
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def smtp(start_server: Callable[..., Server]) -> Server:
    return start_server()


class Drill:
    """One edition of ``n`` daily readers, planned into Redis for real workers to send."""

    def __init__(
        self, engine: Engine, redis_url: str, smtp: Server, var_dir: Path, tmp_path: Path
    ) -> None:
        self.engine, self.smtp, self.tmp_path = engine, smtp, tmp_path
        self.sessions = session_factory(engine)
        self.settings = {
            "database_url": engine.url.render_as_string(hide_password=False),
            "broker_url": redis_url,
            "mail_backend": "smtp",
            "smtp_url": smtp.url,
            "secret_key": "drill-secret-key-0123456789abcdef",
            "base_url": "https://courier.example",
            "mail_from": "news@courier.example",
        }
        self.workers: list[tuple[int, object]] = []
        tasks.configure(Settings(var_dir=var_dir, broker_url=redis_url))

    def seed(self, n: int) -> None:
        with self.sessions() as s:
            schedules.add_schedule(s, "morning", Cadence.DAILY)
            port = tag(s, "port")
            for i in range(n):
                reader(s, f"r{i:05d}@example.com", {port: Cadence.DAILY})
            post(s, "Harbour reopens", [port], published=NOW - timedelta(hours=1))
            s.commit()

    def plan(self, chunk: int = planning.PLAN_CHUNK) -> None:
        with self.sessions() as s:
            planning.plan_digests(s, tasks.dispatch, datetime.now(UTC), force=True, chunk=chunk)

    def worker(self, name: str, **extra: str) -> object:
        env = service_env(self.tmp_path / "var", **self.settings, **extra)
        proc = start_worker(env, self.tmp_path / f"{name}.log", queues="mail")
        self.workers.append((proc.pid, proc))
        return proc

    def statuses(self) -> dict[str, int]:
        with self.sessions() as s:
            rows = s.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
            return {str(status): count for status, count in rows}

    def sweep_until_final(self, total: int, timeout: float) -> dict[str, int]:
        """Run the tick's sweep (with short leases) until every delivery is final."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.sessions() as s:
                sweep.sweep(
                    s,
                    tasks.dispatch,
                    datetime.now(UTC),
                    lease=timedelta(seconds=5),
                    stall=timedelta(seconds=3),
                )
            counts = self.statuses()
            if counts.get("sent", 0) + counts.get("unknown", 0) == total:
                return counts
            time.sleep(1)
        raise AssertionError(f"deliveries not final after {timeout}s: {self.statuses()}")

    def close(self) -> None:
        for _, proc in self.workers:
            stop(proc)  # type: ignore[arg-type]
        tasks.configure(get_settings())


@pytest.fixture
def drill(
    drill_db: Engine, redis_url: str, smtp: Server, var_dir: Path, tmp_path: Path
) -> Iterator[Drill]:
    d = Drill(drill_db, redis_url, smtp, var_dir, tmp_path)
    yield d
    d.close()


def test_kill_drill_no_reader_gets_the_edition_twice(drill: Drill) -> None:
    n = 2000
    drill.smtp.handler.data_delay = 0.004  # a slow server: the kill lands mid-edition
    drill.seed(n)
    drill.plan()
    first = drill.worker("worker-1")
    received = drill.smtp.handler.received
    wait_for(lambda: len(received) >= 400, 120, "400 messages before the kill")
    os.killpg(first.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    at_kill = len(received)
    drill.worker("worker-2")
    counts = drill.sweep_until_final(n, timeout=240)

    per_reader = drill.smtp.handler.count_by_recipient()
    assert max(per_reader.values()) == 1, "a reader got the edition twice"
    # One worker, one SMTP connection: at most the one message in flight can be in doubt.
    assert counts.get("unknown", 0) <= 1
    assert counts["sent"] + counts.get("unknown", 0) == n
    assert len(per_reader) >= counts["sent"]
    assert at_kill < n  # the kill did land mid-edition
    with drill.sessions() as s:
        edition = s.scalars(select(Edition)).one()
        assert (edition.sent, edition.unknown) == (counts["sent"], counts.get("unknown", 0))


def test_retry_drill_greylisting_delivers_everyone_once(drill: Drill) -> None:
    n = 200
    drill.smtp.handler.greylist_every = 5  # 451 to every 5th reader's first attempt
    drill.seed(n)
    drill.plan()
    drill.worker("worker")
    wait_for(lambda: drill.statuses().get("sent") == n, 120, "every reader, after retries")
    per_reader = drill.smtp.handler.count_by_recipient()
    assert len(per_reader) == n
    assert max(per_reader.values()) == 1
    with drill.sessions() as s:
        retried = s.scalar(select(func.count()).where(Delivery.attempts > 1))
        assert retried == n // 5


def test_two_workers_share_one_rate_limit(drill: Drill) -> None:
    n, rate = 600, 50.0
    drill.seed(n)
    drill.plan(chunk=50)  # twelve batches, so both workers are busy the whole time
    drill.worker("worker-1", rate_limit=str(rate))
    drill.worker("worker-2", rate_limit=str(rate))
    wait_for(lambda: len(drill.smtp.handler.received) >= n, 120, "every message")
    arrivals = sorted(drill.smtp.handler.arrivals)
    steady = arrivals[60:-60]  # leave out the start-up and the tail
    measured = (len(steady) - 1) / (steady[-1] - steady[0])
    assert abs(measured - rate) / rate <= 0.10, f"{measured:.1f}/s against a limit of {rate}/s"
    assert drill.statuses() == {"sent": n}
