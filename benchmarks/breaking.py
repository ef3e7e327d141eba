"""Breaking news latency: trigger → first message at the SMTP sink, and → the last of 10,000.

The service runs as `newsletter up` runs it, on real servers: a fresh PostgreSQL database, Redis
as the broker, the general worker (`newsletter worker`: every queue, 2 processes) and the
priority worker (`newsletter worker --priority`: 1 process), sending over SMTP to the minimal
local sink of fanout.py (its own process; 250 to everything). ``--readers`` readers follow one
tag with breaking alerts on.

The workers are warmed first (one breaking send to 10 other readers: imports, templates, the
database pool and the SMTP connection are ready), as they are on a service that has been up.
Then each of ``--runs`` rounds publishes a new post and calls `trigger_breaking` from this
process, as the API's handler does (plan the readers in chunks, hand each 500-reader batch to
the priority queue after its chunk commits), and watches the sink's message counter (polled
every millisecond). Reported per round: the trigger call's own time, trigger → first message
received, trigger → last message received; then the medians.

Run from the repository root (about 1-2 minutes)::

    .venv/bin/python benchmarks/breaking.py [--readers 10000] [--runs 3]
        [--redis-url redis://127.0.0.1:6379/15] [--pg-url …]

The Redis database given is used for the run's queues: its `priority` and `mail` queues are
emptied at the start. Every process the script starts is stopped and its database dropped.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert
from sqlalchemy.orm import Session

from benchmarks.fanout import MAIL_FROM, SITE, sink
from benchmarks.poll import Database, cpu_model, database_options, exit_on_sigterm, stop
from service import tasks
from service.config import Settings
from service.db import session_factory
from service.digests.breaking import trigger_breaking
from service.migrate import upgrade
from service.models import Cadence, Post, Subscriber, Subscription, Tag, post_tags

READERS = 10_000
WARM_READERS = 10
RUN_LIMIT = 300.0  # seconds a round may take before the script gives up


def seed_readers(db: Database, slug: str, n: int) -> int:
    """``n`` active readers following a new tag ``slug`` (breaking alerts on); its id."""
    now = datetime.now(UTC)
    with session_factory(db.engine)() as s, s.begin():
        tag_id = s.scalars(
            insert(Tag).values(slug=slug, name=slug.title(), created_at=now).returning(Tag.id)
        ).one()
        ids = s.scalars(
            insert(Subscriber).returning(Subscriber.id),
            [
                {
                    "email": f"{slug}{i}@mail{i % 97}.example",
                    "status": "active",
                    "timezone": "Europe/London",
                    "breaking_alerts": True,
                    "paused": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n)
            ],
        ).all()
        s.execute(
            insert(Subscription),
            [
                {"subscriber_id": i, "tag_id": tag_id, "cadence": Cadence.DAILY, "created_at": now}
                for i in ids
            ],
        )
    return int(tag_id)


def publish(db: Database, tag_id: int, n: int) -> int:
    now = datetime.now(UTC)
    with session_factory(db.engine)() as s, s.begin():
        post_id = s.scalars(
            insert(Post)
            .values(
                url=f"{SITE}/2026/breaking-{n}/",
                guid=f"{SITE}/?p=9{n:05d}",
                title=f"Harbour bridge closed after ship strike ({n})",
                summary_html="<p>The bridge is closed to all traffic until engineers have "
                "inspected the damage; ferries run every ten minutes.</p>",
                author="Newsdesk",
                published_at=now - timedelta(minutes=1),
                first_seen_at=now,
                updated_at=now,
                content_hash=f"breaking-{n}",
            )
            .returning(Post.id)
        ).one()
        s.execute(insert(post_tags).values(post_id=post_id, tag_id=tag_id))
    return int(post_id)


class Service:
    """The two workers `newsletter up` starts, as child processes with their own logs."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env, self.tmp = env, tmp
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, *args: str) -> None:
        log = self.tmp / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service", "worker", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((proc, log))
        deadline = time.monotonic() + 60
        while " ready." not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{name} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


def wait_count(counter: Any, target: int, started: float, limit: float = RUN_LIMIT) -> float:
    """Seconds from ``started`` until the sink has ``target`` messages (polled every ms)."""
    while counter.value < target:
        if time.perf_counter() - started > limit:
            raise SystemExit(f"only {counter.value} of {target} messages after {limit:.0f}s")
        time.sleep(0.001)
    return time.perf_counter() - started


def one_round(
    sessions: Callable[[], Session], messages: Any, post_id: int, readers: int
) -> tuple[float, float, float, float]:
    """(trigger call, first batch enqueued, first message, last message), seconds from the
    trigger."""
    base = messages.value
    handed: list[float] = []
    firsts: list[float] = []
    started = time.perf_counter()

    def dispatch(edition_id: int, ids: Sequence[int]) -> None:
        tasks.dispatch_priority(edition_id, ids)
        handed.append(time.perf_counter() - started)

    # Watched from a thread: the trigger call is still planning when mail goes out.
    watch = threading.Thread(target=lambda: firsts.append(wait_count(messages, base + 1, started)))
    watch.start()
    with sessions() as s:
        trigger_breaking(s, post_id, dispatch)
        returned = time.perf_counter() - started
    watch.join()
    last = wait_count(messages, base + readers, started)
    return returned, handed[0], firsts[0], last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=READERS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    database_options(parser)
    args = parser.parse_args()
    exit_on_sigterm()
    ctx = mp.get_context("spawn")
    tmp = Path(tempfile.mkdtemp(prefix="bench-breaking-"))
    db = Database(False, args.pg_url, tmp, prefix="breaking")
    messages, size = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False)
    parent, child = ctx.Pipe()
    sink_proc: SpawnProcess = ctx.Process(target=sink, args=("minimal", (messages, size), child))
    service: Service | None = None
    rounds: list[tuple[float, float, float, float]] = []
    try:
        upgrade(db.engine)
        sink_proc.start()
        port = parent.recv()
        settings = {
            "DATABASE_URL": db.url,
            "BROKER_URL": args.redis_url,
            "MAIL_BACKEND": "smtp",
            "SMTP_URL": f"smtp://127.0.0.1:{port}",
            "SECRET_KEY": "bench-breaking-secret-0123456789abcdef",
            "BASE_URL": SITE,
            "MAIL_FROM": MAIL_FROM,
            "VAR_DIR": str(tmp / "var"),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env |= {f"NEWSLETTER_{k}": v for k, v in settings.items()}
        tasks.configure(Settings(_env_file=None, broker_url=args.redis_url, var_dir=tmp / "var"))
        with tasks.app.connection_for_write() as conn:  # this run's queues start empty
            for name in ("priority", "mail"):
                conn.default_channel.queue_purge(name)
        warm_tag = seed_readers(db, "warmup", WARM_READERS)
        tag_id = seed_readers(db, "alerts", args.readers)
        service = Service(env, tmp)
        service.start("worker")
        service.start("priority", "--priority")

        sessions = session_factory(db.engine)
        with sessions() as s:  # warm-up: one breaking send end to end
            trigger_breaking(s, publish(db, warm_tag, 0), tasks.dispatch_priority)
        wait_count(messages, WARM_READERS, time.perf_counter())
        for n in range(1, args.runs + 1):
            post_id = publish(db, tag_id, n)
            returned, handed, first, last = one_round(sessions, messages, post_id, args.readers)
            rounds.append((returned, handed, first, last))
            print(
                f"round {n}: first batch enqueued {handed * 1000:.0f} ms, "
                f"trigger returned {returned * 1000:.0f} ms, first message "
                f"{first * 1000:.0f} ms, last of {args.readers:,} {last:.1f} s "
                f"({args.readers / last:,.0f} messages/s)",
                flush=True,
            )
            time.sleep(1)
        print_report(args, db, rounds)
    finally:
        if service is not None:
            service.stop()
        stop(sink_proc)
        db.close()
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def print_report(
    args: argparse.Namespace, db: Database, rounds: Sequence[tuple[float, ...]]
) -> None:
    def median(i: int) -> float:
        return statistics.median(r[i] for r in rounds)

    print()
    print(f"{platform.python_implementation()} {platform.python_version()}, {cpu_model()}, "
          f"{os.cpu_count()} cores; {db.describe()}; Redis {args.redis_url}")  # fmt: skip
    print(f"{args.readers:,} readers, {len(rounds)} rounds, workers: general (2 processes, "
          "every queue) + priority (1 process)")  # fmt: skip
    print(f"  trigger → first batch enqueued, median  {median(1) * 1000:8.0f} ms")
    print(f"  trigger call (plan + enqueue), median   {median(0) * 1000:8.0f} ms")
    print(f"  trigger → first message, median         {median(2) * 1000:8.0f} ms")
    print(f"  trigger → last of {args.readers:,}, median   {median(3):8.1f} s")
    print(f"  messages/s, median                      {args.readers / median(3):8,.0f}")


if __name__ == "__main__":
    sys.exit(main())
