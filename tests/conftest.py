"""Shared fixtures: real databases, real brokers, isolated state per test.

Server-backed fixtures skip when their server is unreachable, or fail when
``NEWSLETTER_REQUIRE_SERVICES=1`` (CI sets it, so a missing server can never pass silently).
Point them elsewhere with ``NEWSLETTER_TEST_POSTGRES_URL`` (an admin URL: a throwaway database
is created beside it) and ``NEWSLETTER_TEST_REDIS_URL``.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Before any `service` import: this run's files go to a throwaway folder, never ./var.
os.environ["NEWSLETTER_VAR_DIR"] = tempfile.mkdtemp(prefix="newsletter-tests-")
for _name in ("NEWSLETTER_DATABASE_URL", "NEWSLETTER_BROKER_URL", "NEWSLETTER_MAIL_BACKEND"):
    os.environ.pop(_name, None)

from sqlalchemy import Engine, create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from service import migrate  # noqa: E402
from service.db import make_engine  # noqa: E402

pytest_plugins = ["tests.smtp_server", "tests.imap_server"]  # `start_server`, `imap_server`

REQUIRE_SERVICES = os.environ.get("NEWSLETTER_REQUIRE_SERVICES") == "1"
POSTGRES_ADMIN_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("NEWSLETTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
RABBITMQ_URL = os.environ.get("NEWSLETTER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

# Which real service a test exercised, for the closing report ("postgresql: 20 passed").
SERVICE_MARKERS = ("sqlite", "postgres", "redis", "rabbitmq", "embedded_broker", "smtp", "process")
BACKEND_FIXTURES = {"engine", "broker", "broker_env"}  # parametrized over real services
_services: dict[str, set[str]] = {}
_passed: Counter[str] = Counter()


def service_unavailable(name: str, reason: str) -> None:
    message = f"{name} unavailable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (NEWSLETTER_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    for name in SERVICE_MARKERS:
        config.addinivalue_line("markers", f"{name}: exercises the real {name}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test parametrized over backends carries the marker of the one it runs on.
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec else {}
        for fixture in BACKEND_FIXTURES & set(params):
            item.add_marker(params[fixture])
        fixtures = getattr(item, "fixturenames", ())
        for service in ("redis", "rabbitmq"):
            if f"{service}_url" in fixtures:
                item.add_marker(service)
        _services[item.nodeid] = {m.name for m in item.iter_markers()} & set(SERVICE_MARKERS)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        _passed.update(_services.get(report.nodeid, ()))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    line = ", ".join(f"{name} {_passed[name]}" for name in SERVICE_MARKERS)
    terminalreporter.write_line(f"tests passed per real service: {line}")


# -- databases ----------------------------------------------------------------------------


def _postgres_database() -> Iterator[str]:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"newsletter_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any connect error: the server isn't there
        admin.dispose()
        service_unavailable("PostgreSQL", str(exc).splitlines()[0])
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session."""
    yield from _postgres_database()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated database, once per backend per session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test.

    The code under test may commit: its commits only release savepoints.
    """
    with engine.connect() as connection:
        outer = connection.begin()
        session = Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


# -- redis -----------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database that is empty when the test starts and emptied after it."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        service_unavailable("Redis", str(exc))
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """The RabbitMQ server, with the service's queues empty before and after the test."""
    from kombu.connection import Connection

    from service.tasks import app

    def purge() -> None:
        with Connection(RABBITMQ_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            for queue in app.conf.task_queues:  # declared as the worker declares them
                bound = queue(conn.default_channel)
                bound.declare()
                bound.purge()

    try:
        purge()
    except Exception as exc:  # kombu raises transport-specific errors
        service_unavailable("RabbitMQ", str(exc))
    yield RABBITMQ_URL
    purge()


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private VAR_DIR for a test that starts processes."""
    path = tmp_path / "var"
    path.mkdir()
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(path))
    return path


@pytest.fixture
def sessions(engine: Engine) -> Iterator[Callable[[], Session]]:
    """Sessions that commit for real (for code that runs its own transactions); every table is
    emptied after the test."""
    from sqlalchemy import delete

    from service.db import session_factory
    from service.models import Base

    factory = session_factory(engine)
    yield factory
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
