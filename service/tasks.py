"""The Celery app and its thin tasks: each takes ids or plain values and calls a module.

Beat runs exactly one task, ``tick``, every minute; what is due lives in the database, so
operators change schedules at runtime and two beats cannot double-send (the ledgers decide).
Tasks are acknowledged late and rejected back to the queue when their worker dies, so they
must be safe to run twice; they are enqueued only after the transaction that made their rows
commits (``enqueue``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from celery import Celery, Task
from celery.signals import (
    before_task_publish,
    setup_logging,
    worker_process_init,
    worker_process_shutdown,
)
from kombu.entity import Exchange, Queue
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.db import on_commit, session_factory, session_scope
from service.digests import planning, preview, sending, sweep
from service.feeds import poller
from service.feeds.fetch import make_client
from service.logs import configure_logging
from service.mail import TemporaryError
from service.mail.senders import Sender
from service.mail.test_message import send_test_message
from service.mail.throttle import throttle_from_settings
from service.models import EditionKind
from service.queues import PUBLISHED_AT
from service.readers import accounts
from service.readers import mail as reader_mail
from service.readers.mail import ReaderMail
from service.readers.schemas import SubscribeIn

log = logging.getLogger(__name__)

PRIORITY_QUEUE = "priority"  # breaking news and readers' own mail, ahead of digests
QUEUES = (PRIORITY_QUEUE, "mail", "poll", "default")
TICK_SECONDS = 60.0  # the default of `Settings.tick_seconds`

app = Celery("newsletter")

# Every task that sends mail: a temporary failure (SMTP 4xx, timeout, HTTP 429/5xx) retries
# with exponential backoff and jitter, capped far below the broker's visibility timeout.
MAIL_RETRY: dict[str, Any] = {
    "autoretry_for": (TemporaryError,),
    "retry_backoff": 5,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 8,
}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for ``settings``; the broker is the only thing that varies."""
    transport_options: dict[str, Any] = {
        # Redis/SQS hand an unacked task to another worker after this; it must outlast
        # every countdown and retry delay, or a task runs twice while its first run waits.
        "visibility_timeout": settings.broker_visibility_timeout,
    }
    if settings.is_embedded_broker:
        folders = embedded_broker_folders(settings)
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        transport_options |= {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "control_folder": str(folders["control"]),
            # A consumer takes a message by renaming it into this folder. Kept beside the
            # queue (same filesystem: the rename is atomic, so two workers never both take
            # it) instead of kombu's default, the world-readable temp dir. `tick` prunes it.
            "store_processed": True,
            "processed_folder": str(folders["processed"]),
            # Checked every 0.1 s, not kombu's 1 s: median pickup latency 40-65 ms instead
            # of ~540 ms, for a few cheap directory listings (benchmarks/README.md).
            "polling_interval": 0.1,
        }
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "default",
        # Each queue its own direct exchange and key: on RabbitMQ, queues sharing Celery's
        # default binding would each get a copy of every task.
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        "task_routes": {
            "service.tasks.tick": {"queue": "default"},
            "service.tasks.send_test_mail": {"queue": "mail"},
            "service.tasks.send_template_test": {"queue": "mail"},
            # A reader is waiting for their confirmation: ahead of bulk mail.
            "service.tasks.send_reader_mail": {"queue": "priority"},
            "service.tasks.process_subscription": {"queue": "priority"},
            "service.tasks.poll_source": {"queue": "poll"},
            "service.tasks.send_deliveries": {"queue": "mail"},
            # Instant mail is news: planned ahead of polls and bulk.
            "service.tasks.announce_posts": {"queue": "priority"},
        },
        "beat_schedule": {
            "tick": {
                "task": "service.tasks.tick",
                "schedule": settings.tick_seconds,
                # A tick nobody ran in time is stale: with no worker up, they must not pile up
                # and then run as a burst.
                "options": {"expires": settings.tick_seconds * 11 / 12},
            }
        },
        "beat_schedule_filename": str((settings.var_dir / "celerybeat-schedule").resolve()),
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def embedded_broker_folders(settings: Settings) -> dict[str, Path]:
    root = (settings.var_dir / "broker").resolve()
    return {name: root / name for name in ("queue", "control", "processed")}


def prune_processed_messages(settings: Settings, older_than: float = 3600.0) -> int:
    """Delete the embedded broker's consumed message files older than ``older_than`` seconds."""
    if not settings.is_embedded_broker:
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for path in embedded_broker_folders(settings)["processed"].glob("*.msg"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


def configure(settings: Settings) -> None:
    """(Re)configure the app; connections made for an earlier broker are dropped."""
    app.conf.update(celery_config(settings))
    app._after_fork()  # Celery's own way to forget its producer and connection pools


configure(get_settings())


@setup_logging.connect
def _logging(**_: Any) -> None:  # replaces Celery's own logging setup
    configure_logging(get_settings())


@before_task_publish.connect
def _stamp_published_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Every task message says when it was sent, so `/metrics` can tell how long the oldest
    message of a queue has waited (Celery's own headers carry no time)."""
    if headers is not None:
        headers.setdefault(PUBLISHED_AT, time.time())


def enqueue(session: Session, task: Task, *args: Any, **options: Any) -> None:
    """Send ``task`` once ``session``'s transaction commits (nothing if it rolls back)."""
    on_commit(session, lambda: task.apply_async(args=args, **options))


_sender: Sender | None = None


def sender() -> Sender:
    """This process's sender, kept open so SMTP connections are reused across tasks."""
    global _sender
    if _sender is None:
        from service.mail.senders import sender_from_settings

        _sender = sender_from_settings(get_settings())
    return _sender


@worker_process_init.connect
def tune_gc(**_: Any) -> None:
    """A send batch makes many short-lived objects; the default thresholds spent about a
    quarter of a worker's time in the collector (benchmarks/fanout.py). Objects that exist at
    start (modules, templates) are frozen out of every collection."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


@worker_process_shutdown.connect
def _close_sender(**_: Any) -> None:
    if _sender is not None:
        _sender.close()


@app.task(name="service.tasks.tick", ignore_result=True)
def tick() -> int:
    """Beat's one task: finds what is due and does or enqueues it.

    Feeds due for a poll, digests due for readers whose hour has come, the sweep of what a
    killed worker left (expired leases, lost send tasks), and the embedded broker's
    housekeeping; each reads what is due from the database.
    """
    pruned = prune_processed_messages(get_settings())
    now = datetime.now(UTC)
    with session_scope() as session:
        due = poller.due_sources(session, now)
        # Spread over up to 20 s, so a thousand feeds due together do not all start at once.
        spread = min(20.0, 0.02 * len(due))
        for source_id in due:
            enqueue(session, poll_source, source_id, countdown=random.uniform(0, spread))
    with session_factory()() as session:
        planned = planning.plan_digests(session, dispatch, now)
        swept = sweep.sweep(session, dispatch, now)
    log.info(
        "tick",
        extra={
            "at": now.isoformat(timespec="seconds"),
            "pruned_messages": pruned,
            "polls_enqueued": len(due),
            "deliveries_planned": sum(p.deliveries for p in planned),
            "deliveries_unknown": swept.unknown,
            "deliveries_requeued": swept.requeued,
        },
    )
    return pruned


def dispatch(edition_id: int, delivery_ids: Sequence[int]) -> None:
    """The planners' hand-off: one send task per batch (called after the rows committed)."""
    send_deliveries.delay(edition_id, list(delivery_ids))


def dispatch_priority(edition_id: int, delivery_ids: Sequence[int]) -> None:
    """Breaking news' hand-off: its batches go to the `priority` queue, which a worker of its
    own consumes (`newsletter worker --priority`), so they never wait behind digest batches."""
    send_deliveries.apply_async((edition_id, list(delivery_ids)), queue=PRIORITY_QUEUE)


def queue_for(kind: str | None) -> str:
    """The queue an edition's send batches (and their retries) go to."""
    return PRIORITY_QUEUE if kind == EditionKind.BREAKING else "mail"


@app.task(name="service.tasks.send_deliveries")
def send_deliveries(edition_id: int, delivery_ids: list[int]) -> str:
    """Send one batch of an edition's deliveries; what failed temporarily comes back later.

    Retries are new tasks for just the rows that need them, not a rerun of the batch, after
    the backoff `send_batch` computed (exponential, jittered, honouring Retry-After).
    """
    mail = sender()
    report = sending.send_batch(
        session_factory(),
        mail,
        get_settings(),
        edition_id,
        delivery_ids,
        throttle=throttle_from_settings(get_settings(), mail.name),
    )
    if report.retry_ids and not report.paused:
        send_deliveries.apply_async(
            (edition_id, report.retry_ids),
            countdown=report.retry_in,
            queue=queue_for(report.kind),
        )
    return report.describe()  # `send_batch` logged the batch with its edition and delivery ids


@app.task(name="service.tasks.send_test_mail", **MAIL_RETRY)
def send_test_mail(to: str) -> str:
    """Send the `test` message to ``to`` through the configured backend."""
    backend_id = send_test_message(sender(), get_settings(), to)
    log.info("test mail sent", extra={"backend_id": backend_id})
    return backend_id


@app.task(name="service.tasks.send_template_test", **MAIL_RETRY)
def send_template_test(name: str, to: str) -> str:
    """Send template ``name`` with its sample data to ``to``, marked as a test."""
    backend_id = preview.send_test(sender(), get_settings(), name, to)
    log.info("template test sent", extra={"template": name, "backend_id": backend_id})
    return backend_id


@app.task(name="service.tasks.send_reader_mail", **MAIL_RETRY)
def send_reader_mail(kind: str, subscriber_id: int, request_id: str) -> str | None:
    """The confirmation or preferences-link mail a reader's request asked for."""
    with session_scope() as session:
        return reader_mail.send_reader_mail(
            session, sender(), get_settings(), ReaderMail(kind), subscriber_id, request_id
        )


@app.task(name="service.tasks.process_subscription")
def process_subscription(body: dict[str, Any], source: str) -> None:
    """A subscribe request, handled away from the HTTP request so its answer tells nothing."""
    request = SubscribeIn.model_validate(body)
    with session_scope() as session:
        try:
            accounts.subscribe(
                session, request, settings=get_settings(), notify=TaskNotifier(), source=source
            )
        except accounts.ReaderError as exc:  # a tag deleted since the request was checked
            log.warning("subscribe request dropped", extra={"reason": exc.message})


_http: httpx.Client | None = None


def http_client() -> httpx.Client:
    """This process's HTTP client, kept so connections to the same sites are reused."""
    global _http
    if _http is None:
        _http = make_client(get_settings().user_agent)
    return _http


POLL_RETRIES = 8  # a poll the database interrupted: retried over about four minutes


@app.task(name="service.tasks.poll_source", bind=True, max_retries=POLL_RETRIES)
def poll_source(
    self: Task, source_id: int, held: str | None = None, error: str | None = None
) -> str:
    """Poll one feed now (its lease keeps a second run from doing the same work).

    If the database goes away mid-poll (a restart), the poll is retried with backoff; the
    retry takes back the lease the first try held (``held``) and records ``error`` on the
    source, so the figures say what happened.
    """
    resume = None
    if error is not None:
        resume = poller.Resume(datetime.fromisoformat(held) if held else None, error)
    try:
        outcome = poller.poll_source(session_factory(), http_client(), source_id, resume=resume)
    except poller.PollInterrupted as exc:
        lease = exc.resume.held.isoformat() if exc.resume.held else None
        countdown = min(60.0, 2.0 * 2**self.request.retries) * random.uniform(0.5, 1.0)
        raise self.retry(
            args=(source_id, lease, exc.resume.error), countdown=countdown, exc=exc
        ) from exc
    if outcome.new_post_ids:
        announce_posts(outcome.new_post_ids)
    return outcome.describe()


@app.task(name="service.tasks.announce_posts")
def announce_posts(post_ids: list[int]) -> int:
    """Instant mail for new posts: one edition, each instant reader of their tags one mail."""
    with session_factory()() as session:
        planned = planning.plan_instant(session, post_ids, dispatch)
    return planned.deliveries if planned else 0


class TaskAnnouncer:
    """The web app's `Announcer`: new posts (a CMS push) become a task after the commit."""

    def new_posts(self, session: Session, post_ids: Sequence[int]) -> None:
        enqueue(session, announce_posts, list(post_ids))


class TaskPolls:
    """The sources' `PollQueue`: an operator's poll-now becomes a task after the commit."""

    def poll(self, session: Session, source_id: int) -> None:
        enqueue(session, poll_source, source_id)


class TaskIntake:
    """The readers' `Intake`: each checked subscribe request becomes a task."""

    def subscribe(self, request: SubscribeIn, source: str) -> None:
        # Nothing was written by the request, so there is no commit to wait for.
        process_subscription.delay(request.model_dump(mode="json"), source)


class TaskNotifier:
    """The readers' `Notifier`: each mail becomes a task, sent when the request commits."""

    def confirmation(self, session: Session, subscriber_id: int) -> None:
        enqueue(session, send_reader_mail, ReaderMail.CONFIRM.value, subscriber_id, _request_id())

    def manage_link(self, session: Session, subscriber_id: int) -> None:
        enqueue(session, send_reader_mail, ReaderMail.MANAGE.value, subscriber_id, _request_id())


def _request_id() -> str:
    return secrets.token_hex(8)
