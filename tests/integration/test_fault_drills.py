"""Fault drills of issue 8: a server the service depends on goes away mid-edition and comes back.

* Redis restarted mid-edition, keeping nothing on disk: the queued send tasks are lost; the
  tick's sweep finds the edition's queued rows with no batch heartbeat and enqueues them again.
* The SMTP server down for 30 s mid-edition: sends fail temporarily, the batches back off, the
  edition pauses after ten failures in a row, and `newsletter digest resume` finishes it.

Each drill has its own Redis (`redis-server` on a spare port), its own SMTP server (aiosmtpd on
a spare port), its own PostgreSQL database and its own worker, stopped by pid at the end; the
machine's shared servers are never restarted. Each prints its figures (`pytest -s` shows them).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, func, select

from service import tasks
from service.digests import editions, sweep
from service.models import Delivery, Edition
from tests.integration.test_delivery_drills import Drill, drill_db
from tests.processes import free_port, run_cli, service_env, start, stop, wait_for
from tests.smtp_server import Server

__all__ = ["drill_db"]  # the fixture, imported for this module's tests

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis, pytest.mark.smtp]

SMTP_OUTAGE = 30.0  # seconds the SMTP server is down (issue 8 asks for 30 s)
REDIS_OUTAGE = 3.0  # seconds Redis is down before it starts again, empty


class PrivateRedis:
    """A `redis-server` of this test's own on a spare port, keeping nothing on disk."""

    def __init__(self, tmp_path: Path) -> None:
        self.port, self.dir = free_port(), tmp_path / "redis"
        self.dir.mkdir()
        self.log = tmp_path / "redis.log"
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        self.proc = start(argv, {"PATH": "/usr/bin:/bin:/usr/local/bin"}, self.log)
        wait_for(self.answers, 15, "the private redis-server", self.log)

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: with no persistence, everything is gone."""
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def queued_tasks(self) -> int:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=2)
        try:
            return int(client.llen("mail"))
        finally:
            client.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fault_drill(
    drill_db: Engine,
    private_redis: PrivateRedis,
    start_server: Callable[..., Server],
    var_dir: Path,
    tmp_path: Path,
) -> Iterator[Drill]:
    d = Drill(drill_db, private_redis.url, start_server(), var_dir, tmp_path)
    yield d
    d.close()


def edition_of(drill: Drill) -> Edition:
    with drill.sessions() as s:
        edition = s.scalars(select(Edition)).one()
        s.expunge(edition)
        return edition


def retried(drill: Drill) -> tuple[int, int]:
    """Deliveries that took more than one attempt, and the attempts that failed."""
    with drill.sessions() as s:
        rows, attempts = s.execute(
            select(func.count(), func.coalesce(func.sum(Delivery.attempts - 1), 0)).where(
                Delivery.attempts > 1
            )
        ).one()
        return int(rows), int(attempts)


def settled(received: Sequence[object], quiet: float = 2.0) -> bool:
    """True once nothing arrives at the SMTP server for ``quiet`` seconds."""
    before = len(received)
    time.sleep(quiet)
    return len(received) == before


def test_redis_restarted_mid_edition_the_sweep_finishes_it_once(
    fault_drill: Drill, private_redis: PrivateRedis
) -> None:
    drill, n = fault_drill, 1500
    drill.smtp.handler.data_delay = 0.004  # a slow server: the restart lands mid-edition
    drill.seed(n)
    started = time.monotonic()
    drill.plan()
    assert private_redis.queued_tasks() == 3  # three batches of 500 wait in Redis
    drill.worker("worker")
    received = drill.smtp.handler.received
    wait_for(lambda: len(received) >= 200, 60, "200 messages before the restart")
    private_redis.stop()  # the task being run and the two queued are lost with it
    at_cut = len(received)
    time.sleep(REDIS_OUTAGE)
    private_redis.start()
    assert private_redis.queued_tasks() == 0, "the restarted Redis kept tasks"

    # The batch the worker was running when Redis went is still finished (it needs only
    # PostgreSQL and SMTP); the worker reconnects, but nothing is queued for it any more.
    wait_for(lambda: settled(received), 30, "the running batch to end")
    stranded = drill.statuses()
    assert stranded.get("queued", 0) > 0, "nothing was left for the lost tasks"
    assert private_redis.queued_tasks() == 0
    assert len(received) <= stranded["sent"] + stranded.get("sending", 0)

    # The tick's sweep: an edition with queued rows and no batch heartbeat for a while (a
    # second here, minutes in production) is enqueued again; rows are claimed, never twice.
    with drill.sessions() as s:
        report = sweep.sweep(s, tasks.dispatch, datetime.now(UTC), stall=timedelta(seconds=1))
    assert (report.resumed_editions, report.requeued) == (1, stranded["queued"])
    counts = drill.sweep_until_final(n, timeout=60)
    duration = time.monotonic() - started

    per_reader = drill.smtp.handler.count_by_recipient()
    duplicates = sum(c - 1 for c in per_reader.values())
    edition = edition_of(drill)
    print(
        f"\nredis drill: planned {edition.planned} sent {edition.sent} unknown {edition.unknown}"
        f" stranded {stranded.get('queued', 0)} requeued by the sweep {report.requeued}"
        f" retried {retried(drill)[0]} duplicates {duplicates} received at the cut {at_cut}"
        f" duration {duration:.1f}s"
    )
    assert duplicates == 0, "a reader got the edition twice"
    assert at_cut < n, "the restart did not land mid-edition"
    # One worker, one SMTP connection: at most the one message in flight at the cut is in doubt.
    assert counts.get("unknown", 0) <= 1
    assert counts["sent"] + counts.get("unknown", 0) == n
    assert counts["sent"] <= len(per_reader) <= n  # an `unknown` one may have arrived
    assert (edition.status, edition.planned) == ("done", n)
    assert (edition.sent, edition.unknown) == (counts["sent"], counts.get("unknown", 0))
    assert duration < 90


def test_smtp_server_down_30s_mid_edition_pauses_and_resume_finishes_it(
    fault_drill: Drill, tmp_path: Path
) -> None:
    drill, n = fault_drill, 1500
    smtp = drill.smtp
    smtp.handler.data_delay = 0.004
    drill.seed(n)
    started = time.monotonic()
    drill.plan()
    worker_log = tmp_path / "worker.log"
    drill.worker("worker")
    wait_for(lambda: len(smtp.handler.received) >= 200, 60, "200 messages before the outage")
    smtp.stop()
    down_at, at_cut = time.monotonic(), len(smtp.handler.received)

    # Connections refused: every batch stops after three temporary failures and backs off;
    # ten in a row on the edition pause it, long before the server is back.
    wait_for(lambda: edition_of(drill).paused_reason is not None, 25, "the pause", worker_log)
    paused_after = time.monotonic() - down_at
    with drill.sessions() as s:
        during = editions.edition_detail(s, edition_of(drill).id)
    assert during.sent == at_cut
    assert during.left == n - at_cut
    assert "failed attempts in a row" in (during.paused_reason or "")
    assert any(b.retrying for b in during.backends), "no delivery waits for a retry"
    assert any("Connection" in e.error or "disconnected" in e.error for e in during.errors)

    # Paused stays paused: the workers send nothing and the sweep leaves a paused edition be.
    with drill.sessions() as s:
        report = sweep.sweep(s, tasks.dispatch, datetime.now(UTC), stall=timedelta(seconds=0))
    assert report.requeued == 0
    time.sleep(max(0.0, SMTP_OUTAGE - (time.monotonic() - down_at)))
    smtp.start_again()
    assert len(smtp.handler.received) == at_cut

    env = service_env(tmp_path / "var", **drill.settings)
    resumed = run_cli(env, "digest", "resume", str(during.id))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{n - at_cut} queued deliveries handed to the workers" in resumed.stdout
    wait_for(lambda: edition_of(drill).status == "done", 60, "the resumed edition", worker_log)
    duration = time.monotonic() - started

    per_reader = smtp.handler.count_by_recipient()
    duplicates = sum(c - 1 for c in per_reader.values())
    edition = edition_of(drill)
    retried_rows, failed_attempts = retried(drill)
    print(
        f"\nsmtp drill: planned {edition.planned} sent {edition.sent} unknown {edition.unknown}"
        f" failed {edition.failed} retried {retried_rows} (failed attempts {failed_attempts})"
        f" duplicates {duplicates}"
        f" received at the cut {at_cut} paused {paused_after:.1f}s into the outage"
        f" duration {duration:.1f}s"
    )
    assert duplicates == 0, "a reader got the edition twice"
    assert len(per_reader) == n
    assert drill.statuses() == {"sent": n}
    assert (edition.planned, edition.sent, edition.unknown, edition.failed) == (n, n, 0, 0)
    assert edition.paused_reason is None
    # The ten failed attempts in a row that paused it, each row sent on a later attempt.
    assert failed_attempts >= 10
    assert 3 <= retried_rows <= failed_attempts
    assert duration < 90
