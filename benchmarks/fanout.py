"""Deliveries per second of one daily digest fanned out to 100,000 readers, and over SMTP.

The script seeds a fresh PostgreSQL database with Core bulk inserts (COPY): ``--readers``
readers, 20 tags and 10 posts per tag published in the last 24 hours (a quarter of them carry
a second tag), one daily schedule. Each reader follows 1-4 tags daily (35/30/20/15%), drawn
with Zipf weights (the first tag is followed 1/k as often as the k-th), so there are a few
thousand distinct tag sets, most readers sharing the popular ones. Readers live in 20 time
zones, also Zipf-weighted (a regional paper: London first), each with its own send hour set so
that every zone is due at the run's ``now`` (12:00 UTC, when all 20 share the local date: one
edition).

(a) The pipeline with a sender that discards. The main process plans the edition with
``plan_digests`` (timed on its own) and a dispatch that keeps the batches; then ``--workers``
spawned processes, each with its own engine, take batches from a queue and run ``send_batch``
over them (claim, render once per distinct body, personalize, "send", record) with a sender
whose ``batch_size`` is 500 and whose ``send_many`` returns the ids. Reported: the plan's time,
the send phase's deliveries/s (from the moment every worker is ready to the last batch done),
end to end (plan + send), the renders, each worker's peak RSS (VmHWM). ``--scale-check`` runs it
at 10,000 readers and then at ``--readers`` in one invocation, each on its own database and
fresh workers, to compare peak memory.

(b) Over SMTP to a local sink in its own process: by default a minimal asyncio SMTP responder
(uvloop; EHLO, MAIL, RCPT, DATA, QUIT, 250 to everything), because aiosmtpd spends enough
Python per message to be the bottleneck (``--sink aiosmtpd`` to compare). First ours: the same
pipeline on ``--smtp-readers`` readers with the real ``SmtpSender`` (one message per claim, as
the ledger wants over SMTP) in ``--workers`` processes. Then the baseline: one spawned process
sends the same number of pre-built messages, each the mean size of ours, with plain
``smtplib.SMTP.sendmail`` over one reused connection to the same sink. Reported: both rates and
ours / baseline.

``--profile`` runs worker 0 under cProfile in each phase and prints where its time went;
``--no-sync-commit`` (a diagnostic) turns off PostgreSQL's WAL flush at commit. Every process
the script starts is stopped and every database it created is dropped.

Run from the repository root (6-10 minutes with --scale-check)::

    .venv/bin/python benchmarks/fanout.py [--readers 100000] [--scale-check]
        [--smtp-readers 20000] [--part a|b|both] [--workers 2] [--sink minimal|aiosmtpd]
        [--profile] [--no-sync-commit]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import html
import multiprocessing as mp
import os
import platform
import random
import secrets
import shutil
import signal
import smtplib
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, func, insert, select, text

from benchmarks.poll import (
    Database,
    _article,
    _profile_text,
    collect,
    cpu_model,
    database_options,
    exit_on_sigterm,
    peak_rss_kb,
    serve_until_sigterm,
    stop,
)
from service.config import Settings
from service.db import make_engine, session_factory
from service.digests.planning import plan_digests
from service.digests.schedules import add_schedule
from service.digests.sending import send_batch
from service.mail import OutgoingMessage, Sender, SendResult
from service.mail.senders.smtp import SmtpSender
from service.migrate import upgrade
from service.models import (
    Cadence,
    DeliveredPost,
    Delivery,
    Edition,
    Post,
    Tag,
    post_tags,
)
from service.tasks import tune_gc

READERS = 100_000
SMALL = 10_000  # --scale-check compares peak memory here and at --readers
SMTP_READERS = 20_000
TAGS = 20
POSTS_PER_TAG = 10
SITE = "https://harbourtown-herald.example"
MAIL_FROM = "Harbourtown Herald <news@harbourtown-herald.example>"
PHASE_LIMIT = 900.0  # seconds; a send phase still running then is stopped
# Twenty zones whose local date is the same at 12:00 UTC (UTC-10 to UTC+9), home zone first.
ZONES = (
    "Europe/London", "Europe/Dublin", "Europe/Paris", "Europe/Berlin", "Europe/Lisbon",
    "America/New_York", "Europe/Madrid", "Europe/Kyiv", "America/Chicago", "Asia/Kolkata",
    "America/Los_Angeles", "Asia/Dubai", "Asia/Singapore", "Africa/Nairobi", "Asia/Tokyo",
    "America/Denver", "America/Sao_Paulo", "Atlantic/Azores", "America/Anchorage",
    "Pacific/Honolulu",
)  # fmt: skip
TAG_COUNT_WEIGHTS = {1: 35, 2: 30, 3: 20, 4: 15}


def run_now() -> datetime:
    """The latest 12:00 UTC: every zone in ZONES is on the same local date then."""
    now = datetime.now(UTC)
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    return noon if noon <= now else noon - timedelta(days=1)


def bench_settings(smtp_url: str = "smtp://127.0.0.1:25") -> Settings:
    return Settings(
        _env_file=None,
        secret_key=secrets.token_hex(24),  # each worker its own: links are only signed
        base_url=SITE,
        site_name="Harbourtown Herald",
        mail_from=MAIL_FROM,
        smtp_url=smtp_url,
        smtp_pool_size=1,
    )


# -- seeding --------------------------------------------------------------------------------------


@dataclass
class Seeded:
    readers: int
    subscriptions: int
    posts: int
    tag_sets: int  # distinct sets of followed tags
    bodies: int  # distinct (zone, tag set): an upper bound on the distinct digest bodies
    seconds: float


def _zipf(n: int) -> list[float]:
    return [1 / (k + 1) for k in range(n)]


def seed(db: Database, readers: int, now: datetime, rng_seed: int = 7) -> Seeded:
    """Readers, subscriptions, tags, posts and the daily schedule, with COPY for the bulk."""
    started = time.perf_counter()
    rng = random.Random(rng_seed)
    hours = {z: now.astimezone(ZoneInfo(z)).hour for z in ZONES}
    dates = {now.astimezone(ZoneInfo(z)).date() for z in ZONES}
    assert len(dates) == 1, f"zones span local dates {dates}: one edition expected"
    with session_factory(db.engine)() as session, session.begin():
        add_schedule(session, "morning", Cadence.DAILY, at=clock(7, 0))
        tag_ids = list(
            session.scalars(
                insert(Tag)
                .values(
                    [
                        {"slug": f"topic-{t:02d}", "name": f"Topic {t:02d}", "created_at": now}
                        for t in range(TAGS)
                    ]
                )
                .returning(Tag.id)
            )
        )
        post_rows, links = [], []
        for n in range(TAGS * POSTS_PER_TAG):
            article = _article(n, now, full_text=False)
            published = now - timedelta(minutes=rng.randint(5, 23 * 60 + 30))
            post_rows.append(
                {
                    "url": f"{SITE}/2026/{article.slug}/",
                    "guid": f"{SITE}/?p={100000 + n}",
                    "title": html.unescape(article.title),
                    "summary_html": f"<p>{html.unescape(article.excerpt)}</p>",
                    "author": article.author,
                    "published_at": published,
                    "first_seen_at": published + timedelta(minutes=2),
                    "updated_at": published + timedelta(minutes=2),
                    "content_hash": article.slug[:64],
                }
            )
        post_ids = list(session.scalars(insert(Post).values(post_rows).returning(Post.id)))
        for n, post_id in enumerate(post_ids):
            first = n % TAGS
            links.append({"post_id": post_id, "tag_id": tag_ids[first]})
            if n % 4 == 0:  # a quarter of the posts carry a second tag
                links.append({"post_id": post_id, "tag_id": tag_ids[(first + 7) % TAGS]})
        session.execute(insert(post_tags), links)

    tag_weights, zone_weights = _zipf(TAGS), _zipf(len(ZONES))
    counts, count_weights = list(TAG_COUNT_WEIGHTS), list(TAG_COUNT_WEIGHTS.values())
    sets: Counter[frozenset[int]] = Counter()
    bodies: set[tuple[str, frozenset[int]]] = set()
    subscriptions = 0
    raw = db.engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
        subscriber_copy = (
            "COPY subscribers (id, email, status, timezone, send_hour, breaking_alerts, paused,"
            " created_at, updated_at) FROM STDIN"
        )
        follows: list[tuple[int, frozenset[int]]] = []
        with cursor.copy(subscriber_copy) as copy:
            for rid in range(1, readers + 1):
                tz = rng.choices(ZONES, zone_weights)[0]
                copy.write_row(
                    (rid, f"reader{rid}@mail{rid % 97}.example", "active", tz, hours[tz],
                     False, False, now, now)
                )  # fmt: skip
                k = rng.choices(counts, count_weights)[0]
                chosen: set[int] = set()
                while len(chosen) < k:
                    chosen.add(rng.choices(range(TAGS), tag_weights)[0])
                tags = frozenset(tag_ids[t] for t in chosen)
                follows.append((rid, tags))
                sets[tags] += 1
                bodies.add((tz, tags))
        with cursor.copy(
            "COPY subscriptions (subscriber_id, tag_id, cadence, created_at) FROM STDIN"
        ) as copy:
            for rid, tags in follows:
                for tag_id in tags:
                    copy.write_row((rid, tag_id, "daily", now))
                    subscriptions += 1
        cursor.execute("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), %s)", (readers,))
        raw.commit()
    finally:
        raw.close()
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    return Seeded(
        readers,
        subscriptions,
        len(post_rows),
        len(sets),
        len(bodies),
        time.perf_counter() - started,
    )


# -- senders -------------------------------------------------------------------------------------


class DiscardSender:
    """A batch API that takes 500 messages a call and throws them away."""

    name = "discard"
    batch_size = 500

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def send(self, message: OutgoingMessage) -> str:
        self.messages += 1
        self.bytes += len(message.data)
        return message.message_id

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return [self.send(m) for m in messages]

    def close(self) -> None:
        pass


# -- the send workers (their own processes) ------------------------------------------------------


@dataclass
class WorkerReport:
    worker: int
    batches: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    renders: int = 0
    messages: int = 0  # what the discarding sender saw (SMTP: the sink counts)
    bytes: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    statements: int = 0
    commits: int = 0
    ready_rss_kb: int = 0  # peak RSS once imported and connected, before any batch
    max_rss_kb: int = 0
    errors: list[str] = field(default_factory=list)
    profile: str = ""


def send_worker(
    worker: int,
    db_url: str,
    smtp_url: str | None,
    now: datetime,
    tasks: mp.Queue[tuple[int, list[int]] | None],
    barrier: Barrier,
    results: mp.Queue[WorkerReport],
    progress: Synchronized[int],
    profile: bool,
) -> None:
    tune_gc()  # as a Celery worker process does at start
    engine = make_engine(db_url, pool_size=2, max_overflow=2)
    sessions = session_factory(engine)
    settings = bench_settings(smtp_url or "smtp://127.0.0.1:25")
    discard = DiscardSender()
    sender: Sender = SmtpSender.from_settings(settings) if smtp_url else discard
    report = WorkerReport(worker)

    def count_statement(*_args: Any) -> None:
        report.statements += 1

    def count_commit(*_args: Any) -> None:
        report.commits += 1

    with engine.connect() as conn:  # connect before the clock starts
        conn.exec_driver_sql("select 1")
    event.listen(engine, "before_cursor_execute", count_statement)
    event.listen(engine, "commit", count_commit)
    report.ready_rss_kb = peak_rss_kb()
    profiler = cProfile.Profile() if profile else None
    try:
        barrier.wait()
        started, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        while (task := tasks.get()) is not None:
            edition_id, ids = task
            try:
                # Each batch at its own time, as a task calling send_batch(now=None) would be.
                at = now + timedelta(seconds=time.perf_counter() - started)
                batch = send_batch(sessions, sender, settings, edition_id, ids, now=at)
                report.counts.update(batch.counts)
                report.renders += batch.renders
                if batch.retry_ids or batch.paused:
                    report.errors.append(f"batch left {batch.describe()}")
            except Exception as exc:
                report.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            report.batches += 1
            with progress.get_lock():
                progress.value += len(ids)
        if profiler:
            profiler.disable()
        report.seconds = time.perf_counter() - started
        report.cpu_seconds = time.process_time() - cpu
        report.messages, report.bytes = discard.messages, discard.bytes
        report.max_rss_kb = peak_rss_kb()
        if profiler:
            report.profile = _profile_text(profiler)
        results.put(report)
    finally:
        sender.close()
        engine.dispose()


@dataclass
class Phase:
    readers: int
    seeded: Seeded
    plan_seconds: float
    planned: int
    batches: int
    send_seconds: float
    workers: list[WorkerReport]
    statuses: dict[str, int]
    ledger_rows: int
    edition_status: str

    @property
    def sent(self) -> int:
        return sum(w.counts["sent"] for w in self.workers)

    @property
    def send_rate(self) -> float:
        return self.sent / self.send_seconds

    @property
    def end_to_end(self) -> float:
        return self.sent / (self.plan_seconds + self.send_seconds)

    @property
    def renders(self) -> int:
        return sum(w.renders for w in self.workers)

    @property
    def peak_rss_kb(self) -> int:
        return max(w.max_rss_kb for w in self.workers)


def fan_out(
    ctx: SpawnContext,
    args: argparse.Namespace,
    readers: int,
    smtp_url: str | None,
    processes: list[SpawnProcess],
    tmp: Path,
) -> Phase:
    """Seed a fresh database, plan, send with the workers; the database is dropped after."""
    now = run_now()
    db = Database(False, args.pg_url, tmp, sync_commit=not args.no_sync_commit, prefix="fanout")
    try:
        upgrade(db.engine)
        label = "smtp" if smtp_url else "discard"
        print(f"[{label} {readers:,}] seeding ...", file=sys.stderr, flush=True)
        seeded = seed(db, readers, now)
        print(
            f"[{label} {readers:,}] seeded in {seeded.seconds:.1f} s; planning ...",
            file=sys.stderr,
            flush=True,
        )
        batches: list[tuple[int, list[int]]] = []
        with session_factory(db.engine)() as session:
            started = time.perf_counter()
            planned = plan_digests(session, lambda e, ids: batches.append((e, list(ids))), now)
            plan_seconds = time.perf_counter() - started
        assert len(planned) == 1, f"expected one edition, planned {len(planned)}"
        tasks: mp.Queue[tuple[int, list[int]] | None] = ctx.Queue()
        for batch in batches:
            tasks.put(batch)
        for _ in range(args.workers):
            tasks.put(None)
        barrier = ctx.Barrier(args.workers + 1)
        results: mp.Queue[WorkerReport] = ctx.Queue()
        progress = ctx.Value("i", 0)
        workers = []
        for w in range(args.workers):
            proc = ctx.Process(
                target=send_worker,
                args=(w, db.url, smtp_url, now, tasks, barrier, results, progress),
                kwargs={"profile": args.profile and w == 0},
                name=f"send-worker-{w}",
            )
            proc.start()
            processes.append(proc)
            workers.append(proc)
        barrier.wait(timeout=120)
        started = time.perf_counter()
        reports = collect(
            results,
            args.workers,
            workers,
            started,
            progress,
            f"[{label} {readers:,}] ",
            planned[0].deliveries,
            PHASE_LIMIT,
        )
        send_seconds = time.perf_counter() - started
        for proc in workers:
            proc.join(timeout=30)
        with db.engine.connect() as conn:
            statuses = {
                str(s): int(n)
                for s, n in conn.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                )
            }
            ledger = conn.scalar(select(func.count()).select_from(DeliveredPost)) or 0
            edition_status = str(conn.scalar(select(Edition.status)))
        return Phase(
            readers=readers,
            seeded=seeded,
            plan_seconds=plan_seconds,
            planned=planned[0].deliveries,
            batches=len(batches),
            send_seconds=send_seconds,
            workers=sorted(reports, key=lambda r: r.worker),
            statuses=statuses,
            ledger_rows=ledger,
            edition_status=edition_status,
        )
    finally:
        db.close()


# -- the SMTP sink (its own process) --------------------------------------------------------------

_EHLO = b"250-sink.invalid\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"


class _Sink(asyncio.Protocol):
    """Just enough SMTP for smtplib: 250 to every command, 354 to DATA, 250 after the dot."""

    def __init__(self, counters: tuple[Any, Any]) -> None:
        self._messages, self._bytes = counters
        self._buffer = bytearray()
        self._in_data = False
        self._scanned = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(b"220 sink.invalid ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        buffer = self._buffer
        buffer += data
        while buffer:
            if self._in_data:
                if buffer.startswith(b".\r\n"):
                    end, size = 0, 0
                else:
                    end = buffer.find(b"\r\n.\r\n", max(0, self._scanned - 4))
                    if end < 0:
                        self._scanned = len(buffer)
                        return
                    end, size = end + 2, end + 2
                del buffer[: end + 3]
                self._in_data, self._scanned = False, 0
                self._messages.value += 1
                self._bytes.value += size
                transport.write(b"250 2.0.0 Ok: queued as %d\r\n" % self._messages.value)
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                return
            verb = bytes(buffer[:4]).upper()
            del buffer[: end + 2]
            if verb == b"EHLO":
                transport.write(_EHLO)
            elif verb == b"DATA":
                self._in_data = True
                transport.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"QUIT":
                transport.write(b"221 2.0.0 Bye\r\n")
                transport.close()
                return
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                transport.write(b"250 2.0.0 Ok\r\n")


class _AiosmtpdHandler:
    def __init__(self, counters: tuple[Any, Any]) -> None:
        self._messages, self._bytes = counters

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self._messages.value += 1
        self._bytes.value += len(envelope.original_content or b"")
        return "250 2.0.0 Ok: queued"


def sink(kind: str, counters: tuple[Any, Any], conn: Connection) -> None:
    """The sink process: bind 127.0.0.1 on a free port, send the port, serve until SIGTERM."""
    if kind == "aiosmtpd":
        from aiosmtpd.controller import Controller

        with socket.socket() as probe:  # the Controller checks its port by connecting: not 0
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        controller = Controller(
            _AiosmtpdHandler(counters), hostname="127.0.0.1", port=port, data_size_limit=0
        )
        controller.start()
        conn.send(port)
        signal.sigwait({signal.SIGTERM})
        controller.stop()
        return
    serve_until_sigterm(lambda: _Sink(counters), conn)


def prebuilt(count: int, size: int) -> list[bytes]:
    """``count`` distinct messages of ``size`` bytes: headers, then quoted-printable-like text."""
    line = b"Harbour council approves the new ferry timetable after months of debate =\r\n"
    messages = []
    for n in range(count):
        head = (
            f"From: {MAIL_FROM}\r\nTo: reader{n}@mail{n % 97}.example\r\n"
            f"Subject: Harbourtown Herald daily digest\r\n"
            f"Message-ID: <baseline.{n}@harbourtown-herald.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()
        body = line * max(0, (size - len(head)) // len(line) + 1)
        messages.append((head + body)[: max(size, len(head))].rstrip(b"=") + b"\r\n")
    return messages


def baseline_worker(
    port: int, count: int, size: int, barrier: Barrier, results: mp.Queue[tuple[float, int]]
) -> None:
    """Plain smtplib, one connection: ``count`` messages of ``size`` bytes."""
    messages = prebuilt(count, size)
    envelope_from = "news@harbourtown-herald.example"
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.ehlo()
    barrier.wait()
    started = time.perf_counter()
    for n, data in enumerate(messages):
        smtp.sendmail(envelope_from, [f"reader{n}@mail{n % 97}.example"], data)
    seconds = time.perf_counter() - started
    smtp.quit()
    results.put((seconds, peak_rss_kb()))


@dataclass
class SmtpRun:
    sink: str
    ours: Phase
    ours_received: int
    mean_size: int
    baseline_seconds: float
    baseline_received: int

    @property
    def ours_rate(self) -> float:
        return self.ours.sent / self.ours.send_seconds

    @property
    def baseline_rate(self) -> float:
        return self.ours.sent / self.baseline_seconds


def over_smtp(
    ctx: SpawnContext, args: argparse.Namespace, processes: list[SpawnProcess], tmp: Path
) -> SmtpRun:
    counters = (ctx.RawValue("q", 0), ctx.RawValue("q", 0))
    parent, child = ctx.Pipe()
    server = ctx.Process(target=sink, args=(args.sink, counters, child), name="smtp-sink")
    server.start()
    processes.append(server)
    if not parent.poll(60):
        raise RuntimeError("the SMTP sink did not start")
    port = parent.recv()
    url = f"smtp://127.0.0.1:{port}?starttls=off"
    ours = fan_out(ctx, args, args.smtp_readers, url, processes, tmp)
    received, received_bytes = counters[0].value, counters[1].value
    mean = received_bytes // max(1, received)
    print(
        f"[smtp] baseline: {ours.sent:,} pre-built messages of {mean:,} bytes, one smtplib "
        "connection ...",
        file=sys.stderr,
        flush=True,
    )
    barrier = ctx.Barrier(2)
    results: mp.Queue[tuple[float, int]] = ctx.Queue()
    proc = ctx.Process(
        target=baseline_worker, args=(port, ours.sent, mean, barrier, results), name="baseline"
    )
    proc.start()
    processes.append(proc)
    barrier.wait(timeout=300)
    seconds, _rss = results.get(timeout=PHASE_LIMIT)
    proc.join(timeout=30)
    return SmtpRun(
        sink=args.sink,
        ours=ours,
        ours_received=received,
        mean_size=mean,
        baseline_seconds=seconds,
        baseline_received=counters[0].value - received,
    )


# -- report ---------------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f}"


def phase_rows(phase: Phase) -> list[tuple[str, str]]:
    s = phase.seeded
    w = phase.workers
    messages = sum(r.messages for r in w)
    size = sum(r.bytes for r in w) // messages if messages else 0
    statements = sum(r.statements for r in w)
    commits = sum(r.commits for r in w)
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(phase.statuses.items()))
    errors = sum(len(r.errors) for r in w)
    return [
        ("readers, subscriptions, posts",
         f"{phase.readers:,}, {s.subscriptions:,}, {s.posts} (seeded in {s.seconds:.1f} s)"),
        ("distinct tag sets; (zone, tag set) pairs", f"{s.tag_sets:,}; {s.bodies:,}"),
        ("plan (main process)",
         f"{phase.plan_seconds:.1f} s for {phase.planned:,} deliveries in {phase.batches} batches "
         f"({phase.planned / phase.plan_seconds:,.0f}/s)"),
        ("send phase", f"{phase.send_rate:,.0f} deliveries/s ({phase.send_seconds:.1f} s)"),
        ("end to end (plan + send)", f"{phase.end_to_end:,.0f} deliveries/s"),
        ("renders (bodies rendered)",
         f"{phase.renders:,} ({phase.renders / max(1, phase.sent):.1%} of sent)"),
        ("mean message size", f"{size:,} bytes" if size else "(counted by the sink)"),
        ("SQL statements, commits per delivery",
         f"{statements / max(1, phase.sent):.3f}, {commits / max(1, phase.sent):.3f}"),
        ("worker wall s / CPU s", ", ".join(f"{r.seconds:.1f} / {r.cpu_seconds:.1f}" for r in w)),
        ("worker peak RSS MB (ready)",
         ", ".join(f"{_mb(r.max_rss_kb)} ({_mb(r.ready_rss_kb)})" for r in w)),
        ("deliveries by status; ledger rows", f"{statuses}; {phase.ledger_rows:,}"),
        ("edition status; errors", f"{phase.edition_status}; {errors}"),
    ]  # fmt: skip


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:{width}} | {value}")


def report(
    args: argparse.Namespace, discard: list[Phase], smtp: SmtpRun | None, database: str
) -> None:
    for phase in discard:
        rows = phase_rows(phase)
        rows.append(
            ("target >= 5,000/s", f"send {_met(phase.send_rate >= 5000)}, "
             f"end to end {_met(phase.end_to_end >= 5000)}")
        )  # fmt: skip
        print_table(
            f"(a) pipeline, discarding sender: {phase.readers:,} readers, "
            f"{args.workers} worker process(es)" + ("; profiled (slower)" if args.profile else ""),
            rows,
        )
    if len(discard) == 2:
        small, large = discard
        ratio = large.peak_rss_kb / small.peak_rss_kb
        print(
            f"\npeak RSS: {_mb(large.peak_rss_kb)} MB at {large.readers:,} readers vs "
            f"{_mb(small.peak_rss_kb)} MB at {small.readers:,}: {ratio:.2f}x "
            f"(target within 10%: {_met(ratio <= 1.10)})"
        )
    if smtp is not None:
        ratio = smtp.ours_rate / smtp.baseline_rate
        rows = phase_rows(smtp.ours)
        rows += [
            ("sink", f"{smtp.sink}; received {smtp.ours_received:,} messages, mean "
             f"{smtp.mean_size:,} bytes"),
            ("ours (SmtpSender, pipeline)", f"{smtp.ours_rate:,.0f} messages/s"),
            ("baseline (smtplib, 1 connection)",
             f"{smtp.baseline_rate:,.0f} messages/s ({smtp.baseline_seconds:.1f} s, "
             f"{smtp.baseline_received:,} received)"),
            ("ours / baseline", f"{ratio:.2f}  target >= 0.8: {_met(ratio >= 0.8)}"),
        ]  # fmt: skip
        print_table(
            f"(b) over SMTP: {smtp.ours.readers:,} readers, {args.workers} worker process(es)"
            + ("; profiled (slower)" if args.profile else ""),
            rows,
        )
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}; {database}")
    for phase in [*discard, *([smtp.ours] if smtp else [])]:
        for r in phase.workers:
            for error in r.errors[:5]:
                print(f"worker {r.worker} ({phase.readers:,}) error: {error}")
    if args.profile:
        for phase in [*discard, *([smtp.ours] if smtp else [])]:
            print(f"\n=== {phase.readers:,} readers ===\n" + phase.workers[0].profile)


def describe_server(pg_url: str) -> str:
    engine = make_engine(pg_url, pool_size=1)
    try:
        with engine.connect() as conn:
            version = str(conn.exec_driver_sql("show server_version").scalar()).split()[0]
            sync = conn.execute(text("show synchronous_commit")).scalar()
        return f"PostgreSQL {version} (127.0.0.1, synchronous_commit {sync} on the server)"
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=READERS, help="readers for (a)")
    parser.add_argument(
        "--scale-check", action="store_true", help=f"(a) at {SMALL:,} readers too, to compare RSS"
    )
    parser.add_argument("--smtp-readers", type=int, default=SMTP_READERS, help="readers for (b)")
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--workers", type=int, default=2, help="send processes (default 2)")
    parser.add_argument("--sink", choices=("minimal", "aiosmtpd"), default="minimal")
    database_options(parser)
    args = parser.parse_args()
    exit_on_sigterm()
    ctx = mp.get_context("spawn")
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    processes: list[SpawnProcess] = []
    try:
        discard: list[Phase] = []
        if args.part in ("a", "both"):
            sizes = [SMALL, args.readers] if args.scale_check else [args.readers]
            for readers in sizes:
                discard.append(fan_out(ctx, args, readers, None, processes, tmp))
        smtp = over_smtp(ctx, args, processes, tmp) if args.part in ("b", "both") else None
        report(args, discard, smtp, describe_server(args.pg_url))
    finally:
        for proc in reversed(processes):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
