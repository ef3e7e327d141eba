"""Compare kombu's two server-less Celery brokers across processes on one machine.

Candidates: the filesystem transport (``filesystem://``, one folder for queue files and one
for exchange tables) and the SQLAlchemy transport on SQLite (``sqla+sqlite:////abs/broker.db``).

For each transport, in a fresh temp folder, the script writes a tiny Celery app (settings as
in ``service.tasks``: late acks, reject on worker lost, prefetch 1, JSON, no results, queues
``priority, mail, poll, default``) whose one task appends a line per call to a file (O_APPEND),
starts a real ``celery worker`` subprocess (concurrency 2) and measures:

* throughput: one separate publisher process sends N=2000 tasks to ``mail``; publish rate and
  end-to-end tasks/s (first publish to last task finished), each wait capped;
* latency on an idle worker: 30 tasks one at a time, each carrying its ``time.time()``;
  median and p95 of start-minus-sent;
* concurrency: 3 publisher processes send 500 tasks each at the same moment while the worker
  consumes; publish errors (raw broker errors, retried by kombu, and those that reached the
  caller), worker log errors, lost and duplicated tasks (each id must finish exactly once);
* worker SIGKILL: 50 tasks that sleep 0.2 s, the worker's process group SIGKILLed half way,
  a new worker started; how many tasks finished once, twice or never (waits up to 60 s, or
  until the queue is empty and nothing has finished for a few seconds).

Throughput and latency run with the default ``polling_interval`` (1.0 s) and with 0.1 s;
concurrency and SIGKILL with 0.1 s. Every process the script starts is killed by process
group at the end and the temp folders are removed. The whole run takes about 4-6 minutes.

Run from the repository root::

    .venv/bin/python benchmarks/embedded_broker.py [--transport filesystem|sqla|both]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUEUES = ("priority", "mail", "poll", "default")
THROUGHPUT_N = 2000
LATENCY_N = 30
CONCURRENT_PUBLISHERS = 3
CONCURRENT_EACH = 500
KILL_N = 50
KILL_SLEEP = 0.2
FAST_POLL = 0.1

# Written into the temp folder as ``benchapp.py``; the worker imports it with ``-A benchapp``.
APP_MODULE = '''\
"""Benchmark Celery app; configured from BENCH_* environment variables."""

import os
import time

from celery import Celery
from kombu import Queue

URL = os.environ["BENCH_BROKER_URL"]
BROKER_DIR = os.environ["BENCH_BROKER_DIR"]
OUT_DIR = os.environ["BENCH_OUT_DIR"]
POLL = os.environ.get("BENCH_POLL", "")

options = {}
if URL.startswith("filesystem://"):
    options = {
        "data_folder_in": os.path.join(BROKER_DIR, "queue"),
        "data_folder_out": os.path.join(BROKER_DIR, "queue"),
        "control_folder": os.path.join(BROKER_DIR, "control"),
    }
    if POLL:
        options["polling_interval"] = float(POLL)
elif POLL:
    # kombu's SQLAlchemy transport passes every transport option to create_engine(), which
    # rejects polling_interval; the virtual transport reads the class attribute instead.
    from kombu.transport import sqlalchemy as sqla_transport

    sqla_transport.Transport.polling_interval = float(POLL)

app = Celery("benchapp")
app.conf.update(
    broker_url=URL,
    broker_transport_options=options,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="default",
    task_queues=[Queue(name) for name in ("priority", "mail", "poll", "default")],
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
)


def _append(name, line):
    fd = os.open(os.path.join(OUT_DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.task(name="bench.record")
def record(tag, out, sent_at=0.0, sleep=0.0):
    started = time.time()
    _append(out + ".start", f"{tag}\\n")
    if sleep:
        time.sleep(sleep)
    latency_ms = (started - sent_at) * 1000.0 if sent_at else -1.0
    _append(out, f"{tag} {latency_ms:.3f} {time.time():.6f}\\n")
'''

# Written as ``benchclient.py``: publishers run as their own processes, like a CLI would.
CLIENT_MODULE = '''\
"""Benchmark publisher: prints one JSON object with what happened."""

import argparse
import json
import os
import random
import sys
import time
from collections import Counter

import benchapp

raw_errors = Counter()


def count_raw_put_errors():
    """Count errors raised by the transport's _put, before kombu's publish retry hides them."""
    if benchapp.URL.startswith("filesystem://"):
        from kombu.transport.filesystem import Channel
    else:
        from kombu.transport.sqlalchemy import Channel
    original = Channel._put

    def _put(self, queue, payload, **kwargs):
        try:
            return original(self, queue, payload, **kwargs)
        except Exception as exc:
            raw_errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"] += 1
            raise

    Channel._put = _put


def publish(args):
    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    failed, errors, slowest = [], Counter(), 0.0
    first = time.time()
    for i in range(args.count):
        tag = f"{args.prefix}{i}"
        t0 = time.time()
        try:
            benchapp.record.apply_async(
                args=[tag, args.out, 0.0, args.sleep], queue=args.queue
            )
        except Exception as exc:
            failed.append(tag)
            errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"] += 1
        slowest = max(slowest, time.time() - t0)
    last = time.time()
    return {"first": first, "last": last, "failed": failed, "errors": dict(errors),
            "slowest_publish_s": slowest}


def latency(args):
    path = os.path.join(benchapp.OUT_DIR, args.out)
    timeouts = 0
    deadline = time.time() + args.budget
    for i in range(args.count):
        if time.time() > deadline:
            break
        tag = f"{args.prefix}{i}"
        benchapp.record.apply_async(args=[tag, args.out, time.time()], queue=args.queue)
        wait_until = min(time.time() + 10.0, deadline)
        while time.time() < wait_until:
            if os.path.exists(path):
                with open(path) as f:
                    if any(line.split(" ", 1)[0] == tag for line in f):
                        break
            time.sleep(0.002)
        else:
            timeouts += 1
        # An idle gap spread over a whole polling period, so that publishes are not phase-locked
        # to the worker's wake-ups (it sleeps polling_interval right after each task).
        time.sleep(random.uniform(0.05, 0.05 + float(benchapp.POLL or 1.0)))
    return {"timeouts": timeouts}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["publish", "latency"])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--queue", default="mail")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--budget", type=float, default=60.0)
    args = parser.parse_args()
    count_raw_put_errors()
    result = publish(args) if args.mode == "publish" else latency(args)
    result["raw_put_errors"] = dict(raw_errors)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
'''

ERROR_LINE = re.compile(
    r"Traceback|ERROR/|CRITICAL/|database is locked|OperationalError|JSONDecodeError"
)

_children: list[subprocess.Popen[bytes]] = []


def spawn(
    cmd: list[str], env: dict[str, str], cwd: Path, log: Path | None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (so its whole process group can be signalled)."""
    if log is None:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    else:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
    _children.append(proc)
    return proc


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (read from /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the process group this script created for ``proc`` while any of it lives.

    A group id stays reserved while a member lives, so it cannot name someone else's group.
    """
    if proc.poll() is None or group_members(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group (Celery's warm shutdown), SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        kill_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    kill_group(proc)  # children the leader left behind, if any
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def finished(path: Path) -> list[list[str]]:
    """Lines of a task output file as ``[tag, latency_ms, finished_at]``."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Session:
    """One broker (fresh folder or database) and the worker(s) started against it."""

    transport: str
    root: Path
    poll: float | None
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    worker: subprocess.Popen[bytes] | None = None
    log: Path = Path()
    log_offset: int = 0

    def __post_init__(self) -> None:
        self.broker_dir = self.root / "broker"
        self.out_dir = self.root / "out"
        for folder in (
            self.broker_dir / "queue",
            self.broker_dir / "control",
            self.out_dir,
            self.root / "tmp",
        ):
            folder.mkdir(parents=True)
        self.db = self.broker_dir / "broker.db"
        self.url = (
            "filesystem://" if self.transport == "filesystem" else f"sqla+sqlite:///{self.db}"
        )
        self.log = self.root / "worker.log"
        self.env = os.environ | {
            "PYTHONPATH": os.pathsep.join(
                [str(self.root.parent / "modules"), os.environ.get("PYTHONPATH", "")]
            ).rstrip(os.pathsep),
            "BENCH_BROKER_URL": self.url,
            "BENCH_BROKER_DIR": str(self.broker_dir),
            "BENCH_OUT_DIR": str(self.out_dir),
            "BENCH_POLL": "" if self.poll is None else str(self.poll),
            "TMPDIR": str(self.root / "tmp"),  # the filesystem transport moves files through it
            "PYTHONUNBUFFERED": "1",
        }

    def start_worker(self) -> float:
        """Start a worker and return seconds until it ran a warm-up task (nan if never)."""
        t0 = time.monotonic()
        self.worker = spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "benchapp",
                "worker",
                "-Q",
                ",".join(QUEUES),
                "--concurrency",
                "2",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "WARNING",
            ],
            self.env,
            self.root,
            self.log,
        )
        tag = f"warm{len(_children)}-"
        self.client("publish", prefix=tag, out="warmup", count=1, queue="default")
        ok = wait_for(
            lambda: any(line[0] == f"{tag}0" for line in finished(self.out_dir / "warmup")), 30.0
        )
        return time.monotonic() - t0 if ok else float("nan")

    def client_cmd(self, mode: str, **opts: Any) -> list[str]:
        cmd = [sys.executable, "-m", "benchclient", mode]
        for key, value in opts.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        return cmd

    def client(self, mode: str, timeout: float = 120.0, **opts: Any) -> dict[str, Any]:
        proc = spawn(self.client_cmd(mode, **opts), self.env, self.root, None)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.communicate()
            return {"error": "client timed out"}
        try:
            result: dict[str, Any] = json.loads(out)
        except json.JSONDecodeError:
            return {"error": err.decode(errors="replace")[-500:] or "no output"}
        return result

    def worker_errors(self) -> list[str]:
        """Error-looking worker log lines since the last call."""
        if not self.log.exists():
            return []
        with self.log.open("rb") as f:
            f.seek(self.log_offset)
            text = f.read().decode(errors="replace")
            self.log_offset = f.tell()
        return [line.strip() for line in text.splitlines() if ERROR_LINE.search(line)]

    def pending(self, queue: str) -> int:
        """Messages still waiting in ``queue`` (not yet handed to a worker)."""
        if self.transport == "filesystem":
            return sum(
                1
                for name in os.listdir(self.broker_dir / "queue")
                if name.endswith(f".{queue}.msg")
            )
        return self.sql(
            "SELECT count(*) FROM kombu_message m JOIN kombu_queue q ON m.queue_id = q.id "
            "WHERE q.name = ? AND m.visible = 1",
            (queue,),
        )

    def residue(self) -> str:
        """What the broker still stores after the run."""
        if self.transport == "filesystem":
            return f"{len(os.listdir(self.broker_dir / 'queue'))} queue files"
        total = self.sql("SELECT count(*) FROM kombu_message", ())
        hidden = self.sql("SELECT count(*) FROM kombu_message WHERE visible = 0", ())
        return f"{total} rows ({hidden} delivered, never deleted)"

    def sql(self, query: str, params: tuple[str, ...]) -> int:
        try:
            with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
                return int(conn.execute(query, params).fetchone()[0])
        except sqlite3.Error:
            return -1


def measure_latency(s: Session, label: str) -> dict[str, Any]:
    result = s.client(
        "latency",
        timeout=70,
        prefix=f"lat{label}-",
        out=f"latency{label}",
        count=LATENCY_N,
        budget=60,
    )
    values = [float(line[1]) for line in finished(s.out_dir / f"latency{label}")]
    return {
        "median_ms": statistics.median(values) if values else float("nan"),
        "p95_ms": pct(values, 95),
        "samples": len(values),
        "timeouts": result.get("timeouts", result.get("error")),
    }


def measure_throughput(s: Session, label: str, cap: float) -> dict[str, Any]:
    out = s.out_dir / f"throughput{label}"
    proc = spawn(
        s.client_cmd("publish", prefix=f"tp{label}-", out=out.name, count=THROUGHPUT_N),
        s.env,
        s.root,
        None,
    )
    t0 = time.time()
    wait_for(lambda: len(finished(out)) >= THROUGHPUT_N, cap, step=0.1)
    try:
        stdout, _ = proc.communicate(timeout=max(1.0, cap - (time.time() - t0)))
        pub = json.loads(stdout)
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        kill_group(proc)
        proc.communicate()
        return {"error": "publisher failed or timed out"}
    lines = finished(out)
    done = len({line[0] for line in lines})
    first = pub["first"]
    end = max(float(line[2]) for line in lines) if done >= THROUGHPUT_N else time.time()
    return {
        "publish_per_s": THROUGHPUT_N / max(pub["last"] - first, 1e-9),
        "done": done,
        "elapsed_s": end - first,
        "tasks_per_s": done / max(end - first, 1e-9),
        "publish_failures": len(pub["failed"]),
    }


def measure_concurrency(s: Session) -> dict[str, Any]:
    out = s.out_dir / "concurrency"
    start_at = time.time() + 3.0  # every publisher has imported Celery by then
    procs = [
        spawn(
            s.client_cmd(
                "publish", prefix=f"c{k}-", out=out.name, count=CONCURRENT_EACH, start_at=start_at
            ),
            s.env,
            s.root,
            None,
        )
        for k in range(CONCURRENT_PUBLISHERS)
    ]
    pubs: list[dict[str, Any]] = []
    for proc in procs:
        try:
            stdout, _ = proc.communicate(timeout=max(1.0, start_at + 120 - time.time()))
            pubs.append(json.loads(stdout))
        except (subprocess.TimeoutExpired, json.JSONDecodeError):
            kill_group(proc)
            proc.communicate()
            pubs.append(
                {
                    "first": start_at,
                    "last": time.time(),
                    "failed": [],
                    "errors": {"publisher crashed or timed out": 1},
                    "raw_put_errors": {},
                    "slowest_publish_s": float("nan"),
                }
            )
    failed = {tag for pub in pubs for tag in pub["failed"]}
    expected = {f"c{k}-{i}" for k in range(CONCURRENT_PUBLISHERS) for i in range(CONCURRENT_EACH)}
    wanted = expected - failed

    # Wait for every task, giving up after 15 s without progress or 90 s in all.
    deadline, last_count, last_change = time.monotonic() + 90, -1, time.monotonic()
    while time.monotonic() < deadline:
        seen = {line[0] for line in finished(out)}
        if wanted <= seen:
            break
        if len(seen) != last_count:
            last_count, last_change = len(seen), time.monotonic()
        elif time.monotonic() - last_change > 15:
            break
        time.sleep(0.1)
    counts = Counter(line[0] for line in finished(out))
    end = max((float(line[2]) for line in finished(out)), default=time.time())
    raw: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for pub in pubs:
        raw.update(pub["raw_put_errors"])
        errors.update(pub["errors"])
    return {
        "published": len(expected) - len(failed),
        "publish_failures": len(failed),
        "publish_errors": dict(errors),
        "raw_put_errors": dict(raw),
        "slowest_publish_s": max(pub["slowest_publish_s"] for pub in pubs),
        "lost": len(wanted - set(counts)),
        "duplicated": sum(1 for n in counts.values() if n > 1),
        "ran_though_publish_failed": len(failed & set(counts)),
        "unexpected": len(set(counts) - expected),
        "elapsed_s": end - min(pub["first"] for pub in pubs),
        "worker_errors": s.worker_errors(),
    }


def measure_sigkill(s: Session) -> dict[str, Any]:
    assert s.worker is not None
    out = s.out_dir / "sigkill"
    pub = s.client("publish", prefix="k", out=out.name, count=KILL_N, sleep=KILL_SLEEP)
    wait_for(lambda: len(finished(out)) >= KILL_N // 2, 30.0)
    done_at_kill = len(finished(out))
    kill_group(s.worker)
    s.worker.wait(10)
    started_at_kill = len(finished(out.with_name(out.name + ".start")))
    restart_s = s.start_worker()
    tags = {f"k{i}" for i in range(KILL_N)} - set(pub.get("failed", []))
    deadline, last_count, last_change = time.monotonic() + 60, -1, time.monotonic()
    while time.monotonic() < deadline:
        counts = Counter(line[0] for line in finished(out))
        if tags <= set(counts):
            break
        if sum(counts.values()) != last_count:
            last_count, last_change = sum(counts.values()), time.monotonic()
        elif time.monotonic() - last_change > 5 and s.pending("mail") == 0:
            break  # nothing queued and nothing finishing: the rest is not coming back
        time.sleep(0.1)
    counts = Counter(line[0] for line in finished(out))
    starts = Counter(line[0] for line in finished(out.with_name(out.name + ".start")))
    return {
        "done_at_kill": done_at_kill,
        "in_flight_at_kill": started_at_kill - done_at_kill,
        "once": sum(1 for t in tags if counts[t] == 1),
        "twice": sum(1 for t in tags if counts[t] >= 2),
        "never": sum(1 for t in tags if counts[t] == 0),
        "started_twice": sum(1 for t in tags if starts[t] >= 2),
        "restart_s": restart_s,
        "publish_failures": len(pub.get("failed", [])),
    }


def options_probe(transport: str, folder: Path) -> dict[str, str]:
    """Does the transport accept the transport options the project passes (or may pass)?"""
    from kombu.connection import Connection

    results = {}
    for option, value in (("polling_interval", 0.1), ("visibility_timeout", 7200)):
        opts: dict[str, Any] = {option: value}
        if transport == "filesystem":
            url = "filesystem://"
            opts |= {
                "data_folder_in": str(folder),
                "data_folder_out": str(folder),
                "control_folder": str(folder),
            }
        else:
            url = f"sqla+sqlite:///{folder / f'probe-{option}.db'}"
        try:
            with Connection(url, transport_options=opts) as conn:
                conn.default_channel.queue_declare("probe")
            results[option] = "ok"
        except Exception as exc:
            results[option] = f"FAILS ({type(exc).__name__})"
    return results


def run_transport(transport: str, base: Path, only_fast: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"{transport}-", dir=base))
    (root / "modules").mkdir()
    (root / "modules" / "benchapp.py").write_text(APP_MODULE)
    (root / "modules" / "benchclient.py").write_text(CLIENT_MODULE)
    (root / "probe").mkdir()
    res: dict[str, Any] = {"options": options_probe(transport, root / "probe")}
    t_start = time.monotonic()

    if not only_fast:
        s = Session(transport, root / "poll-default", None)
        try:
            res["ready_default_s"] = s.start_worker()
            res["lat_default"] = measure_latency(s, "default")
            res["tp_default"] = measure_throughput(s, "default", cap=30.0)
            res["errors_default"] = s.worker_errors()
        finally:
            if s.worker:
                stop(s.worker)

    s = Session(transport, root / "poll-fast", FAST_POLL)
    try:
        res["ready_fast_s"] = s.start_worker()
        res["lat_fast"] = measure_latency(s, "fast")
        res["tp_fast"] = measure_throughput(s, "fast", cap=60.0)
        res["errors_fast"] = s.worker_errors()
        res["conc"] = measure_concurrency(s)
        res["kill"] = measure_sigkill(s)
        res["errors_kill"] = s.worker_errors()
        res["residue"] = s.residue()
    finally:
        if s.worker:
            stop(s.worker)
    res["wall_s"] = time.monotonic() - t_start
    return res


def fmt(value: Any, spec: str = ".0f") -> str:
    if isinstance(value, float):
        return "nan" if value != value else format(value, spec)
    return str(value)


def rows_for(r: dict[str, Any]) -> Iterator[tuple[str, str]]:
    def tp(key: str) -> tuple[str, str, str]:
        t = r.get(key)
        if not t:
            return "-", "-", "-"
        if "error" in t:
            return t["error"], "-", "-"
        done = f"{t['done']}/{THROUGHPUT_N} in {fmt(t['elapsed_s'], '.1f')} s"
        return fmt(t["publish_per_s"]), fmt(t["tasks_per_s"], ".1f"), done

    def lat(key: str) -> str:
        t = r.get(key)
        if not t:
            return "-"
        return (
            f"{fmt(t['median_ms'])} / {fmt(t['p95_ms'])} ms (n={t['samples']}, "
            f"timeouts {t['timeouts']})"
        )

    for label, poll in (("default", "1.0"), ("fast", str(FAST_POLL))):
        pub, e2e, done = tp(f"tp_{label}")
        yield f"[poll {poll}] worker ready (s)", fmt(r.get(f"ready_{label}_s", "-"), ".1f")
        yield f"[poll {poll}] latency median / p95", lat(f"lat_{label}")
        yield f"[poll {poll}] publish rate, 1 process (msg/s)", pub
        yield f"[poll {poll}] end-to-end (tasks/s)", e2e
        yield f"[poll {poll}] completed", done
    c = r["conc"]
    yield "[concurrency] published ok / failed", f"{c['published']} / {c['publish_failures']}"
    yield "[concurrency] raw broker errors (retried)", str(sum(c["raw_put_errors"].values()))
    yield "[concurrency] slowest single publish (s)", fmt(c["slowest_publish_s"], ".2f")
    yield "[concurrency] lost / duplicated", f"{c['lost']} / {c['duplicated']}"
    yield "[concurrency] worker log errors", str(len(c["worker_errors"]))
    yield "[concurrency] 1500 tasks end-to-end (s)", fmt(c["elapsed_s"], ".1f")
    k = r["kill"]
    yield "[sigkill] finished / running at kill", f"{k['done_at_kill']} / {k['in_flight_at_kill']}"
    yield "[sigkill] ran once / twice / never", f"{k['once']} / {k['twice']} / {k['never']}"
    yield "[sigkill] new worker ready (s)", fmt(k["restart_s"], ".1f")
    yield "[options] polling_interval accepted", r["options"]["polling_interval"]
    yield "[options] visibility_timeout accepted", r["options"]["visibility_timeout"]
    yield (
        "[other] worker log errors (outside conc.)",
        str(len(r.get("errors_default", [])) + len(r["errors_fast"]) + len(r["errors_kill"])),
    )
    yield "[other] broker residue after run", r["residue"]
    yield "[other] wall time for this transport (s)", fmt(r["wall_s"])


def print_report(results: dict[str, dict[str, Any]]) -> None:
    import celery
    import kombu
    import sqlalchemy

    print(
        f"Python {platform.python_version()}, celery {celery.__version__}, kombu "
        f"{kombu.__version__}, SQLAlchemy {sqlalchemy.__version__}, SQLite "
        f"{sqlite3.sqlite_version}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs"
    )
    names = list(results)
    table = {name: dict(rows_for(results[name])) for name in names}
    labels = list(table[names[0]])
    width = max(map(len, labels))
    cols = [max(len(name), *(len(table[name][label]) for label in labels)) for name in names]
    print(f"{'':{width}} | " + " | ".join(f"{n:{w}}" for n, w in zip(names, cols, strict=True)))
    print("-" * width + "-+-" + "-+-".join("-" * w for w in cols))
    for label in labels:
        cells = " | ".join(f"{table[n][label]:{w}}" for n, w in zip(names, cols, strict=True))
        print(f"{label:{width}} | {cells}")
    print(
        "poll 1.0 = kombu's default polling_interval; concurrency and sigkill run at poll "
        f"{FAST_POLL}. sqla gets its interval via kombu.transport.sqlalchemy.Transport."
        "polling_interval: its transport options all go to create_engine()."
    )
    for name in names:
        r = results[name]
        notes = Counter(r["conc"]["raw_put_errors"]) + Counter(r["conc"]["publish_errors"])
        logs = (
            r.get("errors_default", [])
            + r["errors_fast"]
            + r["conc"]["worker_errors"]
            + r["errors_kill"]
        )
        for text, n in notes.items():
            print(f"{name}: publish error x{n}: {text}")
        for text in dict.fromkeys(re.sub(r"^\[[^]]*\] ", "", line) for line in logs):
            print(f"{name}: worker log: {text[:160]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["filesystem", "sqla", "both"], default="both")
    parser.add_argument(
        "--only-fast", action="store_true", help="skip the default polling_interval (1.0 s) session"
    )
    args = parser.parse_args()
    transports = ["filesystem", "sqla"] if args.transport == "both" else [args.transport]

    def _terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    base = Path(tempfile.mkdtemp(prefix="embedded-broker-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for transport in transports:
            print(f"running {transport} ...", file=sys.stderr, flush=True)
            results[transport] = run_transport(transport, base, args.only_fast)
        print_report(results)
    finally:
        for proc in _children:
            if proc.poll() is None:
                kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            kill_group(proc)  # stray group members (pool children) of an exited leader
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
