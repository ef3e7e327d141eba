"""Engine, sessions, and callbacks that run only after a transaction commits.

SQLite (the embedded default) runs in WAL mode with a busy timeout so the API, the worker and
the CLI can share one file. Sessions take SQLite's write lock when they begin (BEGIN IMMEDIATE):
a transaction that reads and then writes would otherwise fail at once with "database is locked"
when another writer got in between, instead of waiting. Plain connections (health checks,
reads) begin DEFERRED and never wait for writers. PostgreSQL is used through psycopg 3 with
pre-ping and bounded connect and pool waits, so a restarted server costs one failed checkout,
and with custom plans only (see make_engine).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from service.config import get_settings

log = logging.getLogger(__name__)

_ON_COMMIT = "newsletter.on_commit"
SQLITE_BEGIN = "newsletter_sqlite_begin"


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("connect_timeout", 10)
        # psycopg prepares a statement on its 5th run and the server may then keep one generic
        # plan for it, made for the table as it was: on a fresh database that is a sequential
        # scan of a table that was empty then and holds thousands of rows minutes later (a
        # batch lookup went from 0.3 to 9 ms). Plan each run for its values; still parse once.
        connect_args["options"] = (
            connect_args.get("options", "") + " -c plan_cache_mode=force_custom_plan"
        ).strip()
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_timeout", 10)
    return create_engine(url, **kwargs)


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def writer(engine: Engine) -> Engine:
    """``engine`` for sessions that write: on SQLite they take the write lock at BEGIN."""
    return engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" listener above issue BEGIN
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url)


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=writer(engine or get_engine()), expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    with session_factory(engine)() as session, session.begin():
        yield session


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the outermost transaction commits; drop it if that never happens.

    This is how tasks are enqueued: a worker must never see an id whose row is not committed,
    and a rolled-back request must enqueue nothing. A callback registered inside a savepoint
    moves to the enclosing transaction when the savepoint is released and is dropped when the
    savepoint rolls back (an insert-or-get that lost its race enqueues nothing).
    """
    transaction = session.get_nested_transaction() or session.get_transaction() or session.begin()
    session.info.setdefault(_ON_COMMIT, {}).setdefault(transaction, []).append(callback)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending: dict[SessionTransaction, list[Callable[[], None]]] = session.info.get(_ON_COMMIT, {})
    # During after_commit the committing transaction is still the current one.
    committed = session.get_nested_transaction() or session.get_transaction()
    callbacks = pending.pop(committed, []) if committed is not None else []
    if committed is not None and committed.parent is not None:
        pending.setdefault(committed.parent, []).extend(callbacks)  # a savepoint was released
        return
    for callback in callbacks:
        try:
            callback()
        except Exception:  # the rows are committed; one failed enqueue must not hide the rest
            log.exception("after-commit callback failed", extra={"callback": repr(callback)})


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # A committed transaction's callbacks were taken in after_commit; what is left never ran.
    session.info.get(_ON_COMMIT, {}).pop(transaction, None)
