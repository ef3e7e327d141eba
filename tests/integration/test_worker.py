"""A real Celery worker process, fed through the embedded broker and through Redis."""

from __future__ import annotations

import email
import email.policy
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection
from sqlalchemy.orm import Session

from service import tasks
from service.config import Settings, get_settings
from service.models import Tag
from tests.processes import PYTHON, service_env, start_worker, stop, wait_for

BROKERS = ["embedded_broker", "redis", "rabbitmq"]


def _broker_settings(request: pytest.FixtureRequest, var_dir: Path) -> dict[str, str]:
    if request.param == "embedded_broker":
        return {}
    return {"broker_url": request.getfixturevalue(f"{request.param}_url")}


@pytest.fixture(params=BROKERS)
def broker_env(request: pytest.FixtureRequest, var_dir: Path) -> dict[str, str]:
    return service_env(var_dir, **_broker_settings(request, var_dir))


@pytest.mark.process
def test_worker_sends_mail_queued_by_another_process(
    broker_env: dict[str, str], var_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker(broker_env, log)
    try:
        # The CLI is a second process: it only enqueues; the worker does the sending.
        cli = subprocess.run(
            [PYTHON, "-m", "service", "mail", "test", "reader@example.org"],
            env=broker_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert "queued" in cli.stdout
        outbox = var_dir / "outbox"
        wait_for(lambda: any(outbox.glob("*.eml")), 30, "the test mail in the outbox", log)
    finally:
        assert stop(worker) == 0
    if "NEWSLETTER_BROKER_URL" not in broker_env:  # embedded: taken messages stay private
        assert list((var_dir / "broker" / "processed").glob("*.msg"))
    [eml] = list(outbox.glob("*.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == "reader@example.org"
    assert message.get_content_type() == "multipart/alternative"


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, var_dir: Path) -> Iterator[Settings]:
    """This test process's Celery app pointed at a real broker, restored afterwards."""
    settings = Settings(var_dir=var_dir, **_broker_settings(request, var_dir))  # type: ignore[arg-type]
    tasks.configure(settings)
    _purge("mail")
    yield settings
    _purge("mail")
    tasks.configure(get_settings())


def _mail_queue(conn: Connection) -> Any:
    """The `mail` queue as the worker declares it (RabbitMQ refuses a differing declaration)."""
    [queue] = [q for q in tasks.app.conf.task_queues if q.name == "mail"]
    bound = queue(conn.default_channel)
    bound.declare()
    return bound


def _queued(queue: str = "mail") -> int:
    with tasks.app.connection_for_write() as conn:
        return int(_mail_queue(conn).queue_declare().message_count)


def _purge(queue: str = "mail") -> None:
    with tasks.app.connection_for_write() as conn:
        _mail_queue(conn).purge()


def test_a_task_is_sent_only_when_its_transaction_commits(broker: Settings, db: Session) -> None:
    db.add(Tag(slug="kept", name="Kept"))
    tasks.enqueue(db, tasks.send_test_mail, "kept@example.org")
    assert _queued() == 0  # a worker must not see the task before the rows it needs
    db.commit()
    wait_for(lambda: _queued() == 1, 5, "the task in the queue")  # AMQP counts lag a little

    db.add(Tag(slug="dropped", name="Dropped"))
    tasks.enqueue(db, tasks.send_test_mail, "dropped@example.org")
    db.rollback()
    db.commit()
    time.sleep(0.5)
    assert _queued() == 1


def test_beat_schedules_only_the_tick() -> None:
    schedule = tasks.app.conf.beat_schedule
    assert list(schedule) == ["tick"]
    assert schedule["tick"]["task"] == tasks.tick.name
    assert schedule["tick"]["schedule"] == 60.0


def test_tasks_are_acked_late_and_outlive_their_retries() -> None:
    conf = tasks.app.conf
    assert conf.task_acks_late
    assert conf.task_reject_on_worker_lost
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert tasks.send_test_mail.retry_backoff_max < visibility
