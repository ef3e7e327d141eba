"""Scale-out: a 20,000-reader daily edition's rate with 1 and with 2 worker processes.

The service runs as a deployment runs it: a fresh PostgreSQL database per run, Redis as the
broker, ``N`` worker nodes (`newsletter worker --concurrency 1`, every queue: one process each),
sending over SMTP to the minimal local sink of fanout.py (its own process; 250 to everything).
``--readers`` readers in one zone follow one tag daily; three posts are owed to each; one daily
schedule is due now.

Each run starts its workers and waits until they are ready, then plans the edition from this
process exactly as beat's tick does (`plan_digests` with the tasks' dispatch: 2,000 readers a
transaction, a 500-reader send task enqueued after each commit) and watches the sink's message
counter. Reported per run: the planning call's own time, plan start → first message, plan start
→ last message, and the edition's rate (readers / that last figure).

Run from the repository root (about 3 minutes)::

    .venv/bin/python benchmarks/scale_out.py [--readers 20000] [--workers 1 2]
        [--redis-url redis://127.0.0.1:6379/15] [--pg-url …]

The Redis database given carries the run's queues; its queues are emptied at the start. Every
process the script starts is stopped and every database it created is dropped.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from datetime import time as clock
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.breaking import publish, seed_readers, wait_count
from benchmarks.fanout import MAIL_FROM, SITE, sink
from benchmarks.poll import Database, cpu_model, database_options, exit_on_sigterm, stop
from service import tasks
from service.config import Settings
from service.db import session_factory
from service.digests import planning, schedules
from service.migrate import upgrade
from service.models import Cadence

READERS = 20_000
RUN_LIMIT = 600.0  # seconds a run may take before the script gives up


def start_workers(env: dict[str, str], tmp: Path, n: int) -> list[subprocess.Popen[bytes]]:
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    for i in range(n):
        log = tmp / f"worker{i}.log"
        with log.open("ab") as out:
            argv = ["worker", "--concurrency", "1", "--hostname", f"w{i}@%h"]
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "service", *argv],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        logs.append(log)
    deadline = time.monotonic() + 60
    for proc, log in zip(procs, logs, strict=True):
        while " ready." not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or proc.poll() is not None:
                stop_workers(procs)
                raise SystemExit(f"{log.name} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def one_run(
    args: argparse.Namespace, ctx: SpawnContext, tmp: Path, workers: int
) -> tuple[float, float, float]:
    """(plan call, plan start → first message, plan start → last message) in seconds."""
    messages, size = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False)
    parent, child = ctx.Pipe()
    sink_proc: SpawnProcess = ctx.Process(target=sink, args=("minimal", (messages, size), child))
    db = Database(False, args.pg_url, tmp, prefix="scale")
    var = tmp / f"var{workers}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(db.engine)
        sink_proc.start()
        port = parent.recv()
        settings = {
            "DATABASE_URL": db.url,
            "BROKER_URL": args.redis_url,
            "MAIL_BACKEND": "smtp",
            "SMTP_URL": f"smtp://127.0.0.1:{port}",
            "SECRET_KEY": "bench-scale-out-secret-0123456789abcdef",
            "BASE_URL": SITE,
            "MAIL_FROM": MAIL_FROM,
            "VAR_DIR": str(var),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env |= {f"NEWSLETTER_{k}": v for k, v in settings.items()}
        tasks.configure(Settings(_env_file=None, broker_url=args.redis_url, var_dir=var))
        with tasks.app.connection_for_write() as conn:  # this run's queues start empty
            for name in tasks.QUEUES:
                conn.default_channel.queue_purge(name)
        tag_id = seed_readers(db, "city", args.readers)  # Europe/London, daily
        for n in range(3):
            publish(db, tag_id, n)
        now = datetime.now(UTC)
        sessions = session_factory(db.engine)
        with sessions() as s:
            local = now.astimezone(ZoneInfo("Europe/London"))
            schedules.add_schedule(s, "morning", Cadence.DAILY, at=clock(local.hour, 0))
            s.commit()
        procs = start_workers(env, tmp, workers)
        with sessions() as s:
            started = time.perf_counter()
            (planned,) = planning.plan_digests(s, tasks.dispatch, now)
            returned = time.perf_counter() - started
        assert planned.deliveries == args.readers, planned
        first = wait_count(messages, 1, started, RUN_LIMIT)
        last = wait_count(messages, args.readers, started, RUN_LIMIT)
        return returned, first, last
    finally:
        stop_workers(procs)
        stop(sink_proc)
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=READERS)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    database_options(parser)
    args = parser.parse_args()
    exit_on_sigterm()
    ctx = mp.get_context("spawn")
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    results = []
    try:
        for n in args.workers:
            returned, first, last = one_run(args, ctx, tmp, n)
            results.append((n, returned, first, last))
            print(
                f"{n} worker process(es): plan call {returned:.1f} s, first message "
                f"{first * 1000:.0f} ms, last of {args.readers:,} {last:.1f} s "
                f"({args.readers / last:,.0f} readers/s)",
                flush=True,
            )
    finally:
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"{platform.python_implementation()} {platform.python_version()}, {cpu_model()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; Redis {args.redis_url}"
    )
    print(f"{args.readers:,} readers, one daily edition over SMTP to a local sink")
    for n, returned, _first, last in results:
        print(
            f"  {n} worker process(es): {args.readers / last:8,.0f} readers/s "
            f"({last:.1f} s, planning {returned:.1f} s of it)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
