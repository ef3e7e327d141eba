"""Schema migrations with Alembic, configured in code so no alembic.ini is needed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine

from service.db import get_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def upgrade(engine: Engine | None = None, revision: str = "head") -> None:
    _run(engine or get_engine(), lambda cfg: command.upgrade(cfg, revision))


def downgrade(engine: Engine | None = None, revision: str = "base") -> None:
    _run(engine or get_engine(), lambda cfg: command.downgrade(cfg, revision))


def make_revision(message: str, engine: Engine | None = None) -> None:
    """Autogenerate a revision against the database (a developer's command)."""
    _run(
        engine or get_engine(),
        lambda cfg: command.revision(cfg, message=message, autogenerate=True),
    )


def _run(engine: Engine, step: Callable[[Config], object]) -> None:
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A batch migration rebuilds a table by dropping it; with foreign keys on, that
            # drop would cascade into every child table. The pragma is a no-op inside a
            # transaction, so it goes to the driver directly, before BEGIN and after COMMIT.
            _sqlite_outside_transaction(connection, "PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                cfg = alembic_config(engine)
                cfg.attributes["connection"] = connection
                step(cfg)
            if sqlite:
                broken = _sqlite_outside_transaction(connection, "PRAGMA foreign_key_check")
                if broken:
                    raise RuntimeError(f"migration left dangling foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                if connection.in_transaction():
                    connection.rollback()
                _sqlite_outside_transaction(connection, "PRAGMA foreign_keys=ON")


def _sqlite_outside_transaction(connection: Connection, sql: str) -> list[Any]:
    driver = connection.connection.driver_connection
    assert driver is not None
    return list(driver.execute(sql).fetchall())
