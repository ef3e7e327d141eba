"""The `newsletter` command (see the README's CLI table)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url

from service.config import get_settings
from service.health import redacted_broker_url

cli = typer.Typer(
    help="Email digests of a news site's tagged posts.",
    no_args_is_help=True,
    add_completion=False,
)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
sources_cli = typer.Typer(help="The feeds the service polls.", no_args_is_help=True)
tokens_cli = typer.Typer(help="Admin API tokens.", no_args_is_help=True)
mail_cli = typer.Typer(help="Mail checks.", no_args_is_help=True)
schedules_cli = typer.Typer(help="Digest programmes (daily, weekly).", no_args_is_help=True)
digest_cli = typer.Typer(help="Plan and send digests.", no_args_is_help=True)
subscribers_cli = typer.Typer(help="Readers in bulk: CSV import and export.", no_args_is_help=True)
bounces_cli = typer.Typer(help="Bounces sent back to an SMTP bounce mailbox.", no_args_is_help=True)
cli.add_typer(bounces_cli, name="bounces")
cli.add_typer(db_cli, name="db")
cli.add_typer(digest_cli, name="digest")
cli.add_typer(schedules_cli, name="schedules")
cli.add_typer(mail_cli, name="mail")
cli.add_typer(sources_cli, name="sources")
cli.add_typer(subscribers_cli, name="subscribers")
cli.add_typer(tokens_cli, name="tokens")

WORKER_QUEUES = "priority,mail,poll,default"
STOP_GRACE_SECONDS = 15.0

Port = Annotated[int, typer.Option(help="TCP port for the HTTP API and pages.")]
Host = Annotated[str, typer.Option(help="Address to listen on.")]


@cli.command()
def up(port: Port = 8000, host: Host = "127.0.0.1") -> None:
    """Run API, worker and scheduler on this machine, on the embedded defaults."""
    settings = get_settings()
    _ensure_port_free(host, port)
    # From here on Ctrl-C or SIGTERM stop everything in order, even before startup finishes.
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _upgrade_database()
    env = dict(os.environ)
    if "base_url" not in settings.model_fields_set:  # set neither in the environment nor .env
        env["NEWSLETTER_BASE_URL"] = f"http://{'localhost' if host == '127.0.0.1' else host}:{port}"
    _point_demo_sources(env["NEWSLETTER_BASE_URL"])
    env.setdefault("NEWSLETTER_LOG_FORMAT", "text" if sys.stderr.isatty() else "json")
    env["PYTHONUNBUFFERED"] = "1"  # children's logs appear as they happen
    me = [sys.executable, "-m", "service"]
    children = {
        "api": _spawn([*me, "api", "--port", str(port), "--host", host], env),
        "worker": _spawn([*me, "worker"], env),
        # Breaking news never waits behind a digest batch: a worker of its own.
        "priority worker": _spawn([*me, "worker", "--priority"], env),
        "beat": _spawn([*me, "beat"], env),
    }
    base = env["NEWSLETTER_BASE_URL"]
    broker = (
        f"embedded ({settings.var_dir.resolve() / 'broker'})"
        if settings.is_embedded_broker
        else redacted_broker_url(settings.broker_url)
    )
    typer.echo(
        f"newsletter is up\n"
        f"  API and pages  {base}/\n"
        f"  API docs       {base}/docs\n"
        f"  health         {base}/healthz\n"
        f"  database       {_without_password(settings.resolved_database_url)}\n"
        f"  broker         {broker}\n"
        f"  mail           {settings.mail_backend}"
        + (f" ({settings.outbox_dir.resolve()})" if settings.mail_backend == "outbox" else "")
        + "\nCtrl-C stops everything."
    )
    if not stop.is_set():
        _first_tick(f"http://{host}:{port}/healthz", stop)
    raise typer.Exit(_supervise(children, stop))


def _point_demo_sources(base_url: str) -> None:
    from service import demo as demo_content
    from service.db import session_scope

    with session_scope() as session:
        demo_content.point_sources_at(session, base_url)


def _first_tick(health_url: str, stop: threading.Event) -> None:
    """Beat's first tick comes a minute after it starts; a fresh install should poll now,
    once the API answers (the demo's feeds are served by it)."""
    import httpx

    from service.tasks import tick

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not stop.is_set():
        try:
            if httpx.get(health_url, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    tick.delay()


def _ensure_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            typer.echo(f"cannot listen on {host}:{port}: {exc.strerror}; try --port", err=True)
            raise typer.Exit(2) from exc


def _without_password(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Each child gets its own process group, so a terminal's Ctrl-C reaches only `up`,
    # which then stops the children in order; PDEATHSIG stops them if `up` itself is killed.
    return subprocess.Popen(
        argv, env=env, start_new_session=True, preexec_fn=_die_with_parent(os.getpid())
    )


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # resolved in the parent: no loading after fork
    pr_set_pdeathsig = 1

    def arrange() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arrange


def _supervise(children: dict[str, subprocess.Popen[bytes]], stop: threading.Event) -> int:
    exit_code = 0
    while not stop.is_set():
        for name, child in children.items():
            if child.poll() is not None:
                typer.echo(f"{name} exited with status {child.returncode}; stopping", err=True)
                exit_code = 1
                stop.set()
        stop.wait(0.2)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for name, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            typer.echo(f"{name} did not stop in {STOP_GRACE_SECONDS:.0f}s; killing it", err=True)
            child.kill()
            child.wait()
    typer.echo("stopped")
    return exit_code


@cli.command()
def api(
    port: Port = 8000,
    host: Host = "0.0.0.0",  # noqa: S104 - a server for deployments; `up` passes 127.0.0.1
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API and pages."""
    import uvicorn

    uvicorn.run(
        "service.web.app:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,  # our structured logging, configured by the app
        access_log=False,  # the app logs requests by route template: paths carry tokens
        proxy_headers=True,
    )


@cli.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = WORKER_QUEUES,
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    priority: Annotated[
        bool,
        typer.Option(
            "--priority",
            help="Consume only the priority queue (breaking news, readers' confirmations), "
            "one process: run one of these beside the general workers.",
        ),
    ] = False,
    hostname: Annotated[
        str | None, typer.Option(help="Celery node name (default celery@HOST, priority@HOST).")
    ] = None,
) -> None:
    """Run a Celery worker.

    In production run at least two: `newsletter worker` (every queue) and
    `newsletter worker --priority`. A worker busy with a 500-reader digest batch finishes it
    before taking anything else, so breaking news needs a process that consumes only the
    priority queue to go out within seconds while a digest sends.
    """
    from service.tasks import PRIORITY_QUEUE, app

    if priority:
        queues, concurrency = PRIORITY_QUEUE, 1
    node = hostname or ("priority@%h" if priority else "celery@%h")
    app.worker_main(
        [
            "worker",
            "--hostname",
            node,
            "--queues",
            queues,
            "--concurrency",
            str(concurrency),
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            get_settings().log_level,
        ]
    )


@cli.command()
def beat() -> None:
    """Run the Celery beat scheduler (one `tick` a minute; schedules live in the database)."""
    from service.tasks import app

    app.start(["beat", "--loglevel", get_settings().log_level])


@cli.command()
def demo() -> None:
    """Write a fictional portal's tag feeds, serve them from this service, register them."""
    from service import demo as demo_content
    from service.db import session_scope

    settings = get_settings()
    _upgrade_database()
    demo_content.write_feeds(settings)
    with session_scope() as session:
        added = demo_content.register_sources(session, settings)
    typer.echo(
        f"demo: {len(demo_content.TAGS)} tag feeds of The Harbour Courier (a fictional portal) "
        f"at {settings.base_url}/demo/feeds/, {added} new sources.\n"
        "`newsletter up` polls them within a minute (or run `newsletter poll` while it runs).\n"
        f"try:  curl -s -X POST {settings.base_url}/api/subscriptions "
        "-H 'content-type: application/json' "
        """-d '{"email": "you@example.org", "cadence": {"transport": "instant", """
        """"climate": "weekly"}}'\n"""
        f"or open {settings.base_url}/subscribe"
    )


@sources_cli.command("add")
def sources_add(
    url: Annotated[str, typer.Argument(help="A feed, or a tag page that links to its feed.")],
    tag: Annotated[list[str], typer.Option("--tag", help="Tag slug its posts get (repeat).")],
    categories_as_tags: Annotated[
        bool, typer.Option(help="Also tag posts with the feed's own categories.")
    ] = False,
    interval: Annotated[int, typer.Option(help="Seconds between polls, before adapting.")] = 900,
) -> None:
    """Add a feed (RSS, Atom, JSON Feed); an HTML page's <link rel=alternate> is followed."""
    from service.db import session_scope
    from service.feeds import sources
    from service.tasks import http_client

    _upgrade_database()
    try:
        with session_scope() as session:
            source = sources.add_source(
                session,
                http_client(),
                url,
                tag_slugs=tag,
                categories_as_tags=categories_as_tags,
                interval_seconds=interval,
            )
            typer.echo(f"source {source.id}: {source.url} (tags: {', '.join(tag)})")
    except sources.SourceError as exc:
        typer.echo(f"not added: {exc}", err=True)
        raise typer.Exit(1) from exc


@sources_cli.command("list")
def sources_list() -> None:
    """Every source with its state: last result or error, next poll."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from service.db import session_scope
    from service.models import Source

    with session_scope() as session:
        rows = session.scalars(
            select(Source).options(selectinload(Source.tags)).order_by(Source.id)
        )
        for s in rows:
            state = "enabled" if s.enabled else "disabled"
            tags = ",".join(t.slug for t in s.tags) or "-"
            when = s.next_poll_at.isoformat(timespec="seconds") if s.next_poll_at else "now"
            last = s.last_error or s.last_result or "never polled"
            typer.echo(f"{s.id:>4}  {state:8}  {tags:20}  next {when}  {last}  {s.url}")


@cli.command()
def poll(
    source: Annotated[int | None, typer.Option(help="Poll only this source id.")] = None,
) -> None:
    """Poll now (every enabled source, or one) and print what each poll found."""
    from sqlalchemy import select

    from service.db import session_factory, session_scope
    from service.feeds import poller
    from service.models import Source
    from service.tasks import http_client

    _upgrade_database()
    with session_scope() as session:
        query = select(Source.id).where(Source.enabled.is_(True)).order_by(Source.id)
        ids = [source] if source is not None else list(session.scalars(query))
    failed = False
    for source_id in ids:
        outcome = poller.poll_source(session_factory(), http_client(), source_id)
        failed |= outcome.result in ("error", "disabled")
        typer.echo(f"{source_id:>4}  {outcome.describe():40}  {outcome.url}")
    if not ids:
        typer.echo("no sources yet: `newsletter sources add URL --tag SLUG`")
    raise typer.Exit(1 if failed else 0)


@bounces_cli.command("process")
def bounces_process(
    maildir: Annotated[
        Path | None, typer.Option(help="A Maildir the bounces are delivered to.")
    ] = None,
    imap: Annotated[
        str | None,
        typer.Option(help="An IMAP mailbox: imaps://user:pass@host/INBOX."),
    ] = None,
) -> None:
    """Read delivery status notifications, suppress what bounced, move them to `processed`."""
    from service.bounces.mailboxes import MailboxError, open_mailbox
    from service.bounces.smtp import process_mailbox
    from service.db import session_factory

    _upgrade_database()
    try:
        box = open_mailbox(maildir, imap)
    except MailboxError as exc:
        typer.echo(f"cannot read the mailbox: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        summary = process_mailbox(session_factory(), get_settings(), box)
    finally:
        box.close()
    typer.echo(summary.describe())


@schedules_cli.command("add")
def schedules_add(
    name: Annotated[str, typer.Argument(help="A short name, e.g. 'morning'.")],
    cadence: Annotated[str, typer.Option(help="daily or weekly.")] = "daily",
    at: Annotated[str, typer.Option(help="Default local send time, HH:MM.")] = "07:00",
    weekday: Annotated[str | None, typer.Option(help="Weekly only: mon … sun.")] = None,
    template: Annotated[str, typer.Option(help="Email template folder.")] = "digest",
) -> None:
    """Add a digest schedule; each reader gets it at their own hour in their own zone."""
    from service.db import session_scope
    from service.digests import schedules

    _upgrade_database()
    try:
        with session_scope() as session:
            schedule = schedules.add_schedule(
                session,
                name,
                schedules.parse_cadence(cadence),
                at=schedules.parse_time(at),
                weekday=schedules.parse_weekday(weekday),
                template=template,
            )
            typer.echo(f"schedule {schedule.id}: {_describe_schedule(schedule)}")
    except schedules.ScheduleError as exc:
        typer.echo(f"not added: {exc}", err=True)
        raise typer.Exit(1) from exc


@schedules_cli.command("set")
def schedules_set(
    name: Annotated[str, typer.Argument(help="The schedule's name.")],
    at: Annotated[str | None, typer.Option(help="Default local send time, HH:MM.")] = None,
    weekday: Annotated[str | None, typer.Option(help="Weekly only: mon … sun.")] = None,
    template: Annotated[str | None, typer.Option(help="Email template folder.")] = None,
    enabled: Annotated[bool | None, typer.Option("--enable/--disable")] = None,
) -> None:
    """Change a schedule; the next tick uses the new values (no restart)."""
    from sqlalchemy import select

    from service.db import session_scope
    from service.digests import schedules
    from service.models import Schedule

    try:
        with session_scope() as session:
            schedule = session.scalar(select(Schedule).where(Schedule.name == name))
            if schedule is None:
                raise schedules.ScheduleError(f"no schedule named {name!r}")
            schedules.update_schedule(
                session,
                schedule,
                at=schedules.parse_time(at) if at else None,
                weekday=schedules.parse_weekday(weekday),
                template=template,
                enabled=enabled,
            )
            typer.echo(_describe_schedule(schedule))
    except schedules.ScheduleError as exc:
        typer.echo(f"not changed: {exc}", err=True)
        raise typer.Exit(1) from exc


@schedules_cli.command("list")
def schedules_list() -> None:
    """Every schedule."""
    from service.db import session_scope
    from service.digests import schedules

    _upgrade_database()
    with session_scope() as session:
        rows = schedules.list_schedules(session)
        for schedule in rows:
            typer.echo(f"{schedule.id:>4}  {_describe_schedule(schedule)}")
        if not rows:
            typer.echo("no schedules yet: `newsletter schedules add daily --at 07:00`")


def _describe_schedule(schedule: object) -> str:
    from service.digests.schedules import WEEKDAYS
    from service.models import Schedule

    assert isinstance(schedule, Schedule)
    day = f" on {WEEKDAYS[schedule.weekday]}" if schedule.weekday is not None else ""
    state = "" if schedule.enabled else "  (disabled)"
    return (
        f"{schedule.name}: {schedule.cadence}{day} at {schedule.send_time:%H:%M} local, "
        f"template {schedule.template}{state}"
    )


@digest_cli.command("run")
def digest_run(
    schedule: Annotated[str | None, typer.Option(help="Only this schedule.")] = None,
    now: Annotated[bool, typer.Option("--now", help="As if every reader's hour had come.")] = False,
    enqueue: Annotated[
        bool, typer.Option(help="Hand the batches to the workers instead of sending here.")
    ] = False,
) -> None:
    """Plan and send what is due; run twice in one period, the second sends nothing."""
    from service.digests.runner import run_digests

    _upgrade_database()
    lines, ok = run_digests(schedule_name=schedule, force=now, in_process=not enqueue)
    for line in lines:
        typer.echo(line)
    raise typer.Exit(0 if ok else 1)


@digest_cli.command("list")
def digest_list(
    limit: Annotated[int, typer.Option(help="How many editions, newest first.")] = 20,
) -> None:
    """Editions with their figures: planned, sent, failed, skipped, suppressed, unknown."""
    from sqlalchemy import select

    from service.db import session_scope
    from service.models import Edition

    with session_scope() as session:
        for e in session.scalars(select(Edition).order_by(Edition.id.desc()).limit(limit)):
            state = f"paused: {e.paused_reason}" if e.paused_reason else str(e.status)
            typer.echo(
                f"{e.id:>5}  {e.key:32}  planned {e.planned}  sent {e.sent}  failed {e.failed}  "
                f"skipped {e.skipped}  suppressed {e.suppressed}  unknown {e.unknown}  {state}"
            )


@digest_cli.command("cancel")
def digest_cancel(
    edition: Annotated[int, typer.Argument(help="The edition's id (see `digest list`).")],
) -> None:
    """Cancel an edition: what has not been handed to a sender is never sent."""
    from service.db import session_factory
    from service.digests import editions

    with session_factory()() as session:
        try:
            detail = editions.cancel_edition(session, edition)
        except editions.EditionError as exc:
            typer.echo(f"not cancelled: {exc}", err=True)
            raise typer.Exit(1) from exc
    typer.echo(f"edition {detail.id} cancelled: {detail.cancelled} deliveries never sent")
    typer.echo(_figures(detail))


def _figures(detail: object) -> str:
    from service.digests.editions import EditionSummary

    assert isinstance(detail, EditionSummary)
    return (
        f"  {detail.status}, {detail.progress:.0f}%: planned {detail.planned}  sent {detail.sent}  "
        f"failed {detail.failed}  skipped {detail.skipped}  suppressed {detail.suppressed}  "
        f"unknown {detail.unknown}  left {detail.left}"
        + (f"  (paused: {detail.paused_reason})" if detail.paused_reason else "")
    )


@digest_cli.command("resume")
def digest_resume(
    edition: Annotated[int, typer.Argument(help="The paused edition's id.")],
) -> None:
    """Resume a paused edition (its backend works again): its queued deliveries go out."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from service.db import session_factory
    from service.digests.sweep import requeue
    from service.models import Edition
    from service.tasks import dispatch

    with session_factory()() as session:
        session.execute(
            update(Edition)
            .where(Edition.id == edition)
            .values(paused_reason=None, backend_failures=0)
        )
        session.commit()
        queued = requeue(session, edition, dispatch, datetime.now(UTC))
    typer.echo(f"edition {edition}: {queued} queued deliveries handed to the workers")


@cli.command()
def breaking(
    post: Annotated[str, typer.Argument(help="The post's id or URL.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the readers and show the mail; send nothing.")
    ] = False,
    subject: Annotated[
        str | None, typer.Option(help="Subject line instead of 'Breaking: <title>'.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Show progress until it is done.")] = False,
) -> None:
    """Send one post as breaking news to its tags' readers (priority queue); a second trigger
    for the same post sends nothing."""
    from service.db import session_factory
    from service.digests import breaking as breaking_news
    from service.digests import editions
    from service.tasks import dispatch_priority

    _upgrade_database()
    settings = get_settings()
    with session_factory()() as session:
        try:
            if dry_run:
                preview = breaking_news.preview_breaking(session, settings, post, subject)
                typer.echo(f"post {preview.post_id}: {preview.post_title} ({preview.post_url})")
                if preview.edition_id is not None:
                    typer.echo(
                        f"sent before: edition {preview.edition_id}; a trigger sends nothing"
                    )
                typer.echo(f"would reach {preview.readers} readers")
                typer.echo(f"subject: {preview.subject}\n\n{preview.text}")
                return
            sent = breaking_news.trigger_breaking(session, post, dispatch_priority, subject)
        except breaking_news.BreakingError as exc:
            typer.echo(f"not sent: {exc}", err=True)
            raise typer.Exit(1) from exc
        if sent.created:
            typer.echo(f"edition {sent.edition_id}: {sent.planned} readers, on the priority queue")
        else:
            typer.echo(f"edition {sent.edition_id} exists already: nothing new sent")
        while True:
            detail = editions.edition_detail(session, sent.edition_id)
            typer.echo(_figures(detail))
            if not watch or detail.status in ("done", "cancelled") or detail.paused_reason:
                break
            time.sleep(1)
            session.commit()


@subscribers_cli.command("import")
def subscribers_import(
    file: Annotated[
        Path, typer.Argument(help="CSV: email,tags,cadence,timezone,send_hour,consented_at")
    ],
) -> None:
    """Import readers: rows with consented_at active, the others pending with a confirmation
    mail (sent by the worker). Exit 1 when rows were rejected, 2 when the file was refused."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from service.db import session_factory
    from service.readers import bulk
    from service.tasks import TaskNotifier

    if not file.is_file():
        typer.echo(f"no such file: {file}", err=True)
        raise typer.Exit(2)
    _upgrade_database()
    console = Console(stderr=True)
    with (
        file.open("rb") as raw,
        Progress(
            TextColumn("importing {task.fields[rows]:,} rows"),
            BarColumn(),
            TaskProgressColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        bar = progress.add_task("import", total=file.stat().st_size or 1, rows=0)

        def advance(so_far: bulk.ImportReport) -> None:
            progress.update(bar, completed=raw.tell(), rows=so_far.rows)

        try:
            report = bulk.import_csv(
                session_factory(),
                raw,
                source=f"import:{file.name}",
                settings=get_settings(),
                notify=TaskNotifier(),
                on_chunk=advance,
            )
        except bulk.ImportFileError as exc:
            typer.echo(f"not imported: {exc}", err=True)
            raise typer.Exit(2) from exc
    typer.echo(_describe_import(report))
    raise typer.Exit(1 if report.rejected else 0)


def _describe_import(report: object) -> str:
    from service.readers.bulk import ImportReport

    assert isinstance(report, ImportReport)
    lines = [
        f"{report.rows:,} rows: {report.imported_active:,} imported active, "
        f"{report.imported_pending:,} imported pending (a confirmation mail each), "
        f"{report.unchanged:,} unchanged, {report.skipped:,} skipped, "
        f"{report.rejected:,} rejected"
    ]
    for title, problems in (("rejected", report.rejected_rows), ("skipped", report.skipped_rows)):
        if problems:
            lines.append(f"{title}:")
        lines += [f"  line {p.line}: {p.reason}: {p.email} ({p.detail})" for p in problems]
    if report.truncated:
        lines.append(
            f"(only the first {len(report.rejected_rows) + len(report.skipped_rows)} "
            "problems are listed)"
        )
    return "\n".join(lines)


@subscribers_cli.command("export")
def subscribers_export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of to stdout.")
    ] = None,
) -> None:
    """Write active and pending readers as CSV, in the columns `import` reads."""
    import csv

    from service.db import session_factory
    from service.readers import bulk

    _upgrade_database()
    count = 0
    out = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(bulk.COLUMNS)
        for row in bulk.export_rows(session_factory()):
            writer.writerow(row)
            count += 1
    finally:
        if output:
            out.close()
    typer.echo(f"exported {count:,} readers" + (f" to {output}" if output else ""), err=True)


@tokens_cli.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who or what uses it, e.g. 'cms' or 'anna'.")],
    role: Annotated[str, typer.Option(help="operator (everything) or editor.")],
) -> None:
    """Create an admin token and print it once; only its hash is kept."""
    from sqlalchemy.exc import IntegrityError

    from service.auth import create_token
    from service.db import session_scope
    from service.models import Role

    if role not in {r.value for r in Role}:
        typer.echo("role must be operator or editor", err=True)
        raise typer.Exit(2)
    _upgrade_database()
    try:
        with session_scope() as session:
            token = create_token(session, name, Role(role))
    except IntegrityError as exc:
        typer.echo(f"a token named {name!r} exists already", err=True)
        raise typer.Exit(1) from exc
    typer.echo(token)
    typer.echo(f"({role} token {name!r}: shown once, store it now)", err=True)


@db_cli.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations."""
    _upgrade_database(revision)
    typer.echo(f"database at {revision}")


def _upgrade_database(revision: str = "head") -> None:
    from service import migrate

    migrate.upgrade(revision=revision)


@db_cli.command("revision")
def db_revision(
    message: Annotated[str, typer.Option("-m", help="What the revision does.")],
) -> None:
    """Autogenerate a migration from the models (developers)."""
    from service import migrate

    migrate.make_revision(message)


@mail_cli.command("test")
def mail_test(
    to: Annotated[str, typer.Argument(help="Address to send the test message to.")],
    wait: Annotated[
        bool, typer.Option(help="Send from this process instead of queueing for the worker.")
    ] = False,
) -> None:
    """Send the `test` message through the configured mail backend."""
    from service.mail import MailError
    from service.tasks import send_test_mail, sender

    if wait:
        try:
            backend_id = send_test_mail(to)
        except MailError as exc:
            typer.echo(f"not sent: {exc}", err=True)
            raise typer.Exit(1) from exc
        finally:
            sender().close()
        typer.echo(f"sent: {backend_id}")
    else:
        send_test_mail.delay(to)
        typer.echo(f"queued a test message to {to}")


def main() -> None:
    # The database, queue files and outbox hold readers' addresses: private to this user.
    os.umask(0o077)
    cli()
