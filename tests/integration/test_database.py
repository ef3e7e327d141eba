"""The schema on SQLite and PostgreSQL: migrations match the models, constraints hold."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import migrate
from service.db import make_engine, on_commit, session_scope
from service.health import check_database
from service.models import (
    Base,
    Cadence,
    DeliveredPost,
    Delivery,
    Edition,
    EditionKind,
    Post,
    ProviderEvent,
    Source,
    SourceItem,
    Subscriber,
    Subscription,
    Tag,
)


# SQLite cannot reflect expression indexes; Alembic says so and compares the rest.
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression")
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_migrations_create_exactly_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_again(engine: Engine) -> None:
    migrate.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())


def _post(db: Session, n: int = 1) -> Post:
    post = Post(
        url=f"https://news.example.org/p/{n}",
        guid=f"g{n}",
        title=f"Post {n}",
        content_hash="0" * 64,
    )
    db.add(post)
    db.flush()
    return post


def _subscriber(db: Session, email: str = "ann@example.org") -> Subscriber:
    subscriber = Subscriber(email=email)
    db.add(subscriber)
    db.flush()
    return subscriber


def _violates_unique(db: Session, *rows: object) -> bool:
    try:
        with db.begin_nested():
            db.add_all(rows)
            db.flush()
    except IntegrityError:
        return True
    return False


def test_email_is_unique_whatever_its_case(db: Session) -> None:
    _subscriber(db, "Ann@Example.org")
    assert _violates_unique(db, Subscriber(email="ann@example.ORG"))
    assert not _violates_unique(db, Subscriber(email="bob@example.org"))


def test_a_reader_gets_one_delivery_per_edition(db: Session) -> None:
    reader = _subscriber(db)
    edition = Edition(key="digest:1:2026-11-27", kind=EditionKind.DIGEST)
    db.add(edition)
    db.flush()
    db.add(Delivery(edition_id=edition.id, subscriber_id=reader.id))
    db.flush()
    assert _violates_unique(db, Delivery(edition_id=edition.id, subscriber_id=reader.id))


def test_an_edition_key_names_one_edition(db: Session) -> None:
    db.add(Edition(key="breaking:7", kind=EditionKind.BREAKING))
    db.flush()
    assert _violates_unique(db, Edition(key="breaking:7", kind=EditionKind.BREAKING))


def test_a_post_reaches_a_reader_once(db: Session) -> None:
    reader, post = _subscriber(db), _post(db)
    db.add(DeliveredPost(subscriber_id=reader.id, post_id=post.id))
    db.flush()
    assert _violates_unique(db, DeliveredPost(subscriber_id=reader.id, post_id=post.id))


def test_one_subscription_per_reader_and_tag(db: Session) -> None:
    reader = _subscriber(db)
    tag = Tag(slug="putin", name="Putin")
    db.add(tag)
    db.flush()
    db.add(Subscription(subscriber_id=reader.id, tag_id=tag.id, cadence=Cadence.DAILY))
    db.flush()
    assert _violates_unique(
        db, Subscription(subscriber_id=reader.id, tag_id=tag.id, cadence=Cadence.WEEKLY)
    )


def test_source_items_and_provider_events_are_stored_once(db: Session) -> None:
    source = Source(url="https://news.example.org/tag/putin/feed/")
    db.add(source)
    post = _post(db)
    db.flush()
    db.add(SourceItem(source_id=source.id, guid="g1", post_id=post.id))
    db.add(ProviderEvent(provider="postmark", event_id="e1", payload={"a": 1}))
    db.flush()
    assert _violates_unique(db, SourceItem(source_id=source.id, guid="g1", post_id=post.id))
    assert _violates_unique(db, ProviderEvent(provider="postmark", event_id="e1", payload={}))


def test_times_come_back_aware_and_in_utc(db: Session) -> None:
    kyiv_noon = datetime(2026, 3, 29, 12, 0, tzinfo=timezone(timedelta(hours=3)))
    post = _post(db)
    post.published_at = kyiv_noon
    db.flush()
    db.expire_all()
    stored = db.scalars(select(Post.published_at).where(Post.id == post.id)).one()
    assert stored == kyiv_noon
    assert stored is not None
    assert stored.tzinfo == UTC


def test_a_naive_time_is_refused(db: Session) -> None:
    post = _post(db)
    post.published_at = datetime(2026, 1, 1, 12, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(Exception, match="naive datetime"):
        db.flush()


def test_callbacks_run_after_commit_and_never_after_rollback(db: Session) -> None:
    ran: list[str] = []
    on_commit(db, lambda: ran.append("kept"))
    db.add(Tag(slug="kept", name="Kept"))
    assert ran == []  # not before the commit
    db.commit()
    assert ran == ["kept"]

    on_commit(db, lambda: ran.append("dropped"))
    db.add(Tag(slug="dropped", name="Dropped"))
    db.rollback()
    db.commit()
    assert ran == ["kept"]


def test_a_callback_in_a_released_savepoint_waits_for_the_outer_commit(db: Session) -> None:
    ran: list[str] = []
    with db.begin_nested():
        on_commit(db, lambda: ran.append("inner"))
    assert ran == []  # releasing a savepoint commits nothing
    db.rollback()
    db.commit()
    assert ran == []  # the outer transaction rolled back: nothing was committed


def test_a_callback_in_a_rolled_back_savepoint_is_dropped(db: Session) -> None:
    ran: list[str] = []
    on_commit(db, lambda: ran.append("outer"))
    try:
        with db.begin_nested():
            on_commit(db, lambda: ran.append("lost race"))
            db.add(Tag(slug="dup", name="A"))
            db.add(Tag(slug="dup", name="B"))
            db.flush()
    except IntegrityError:
        pass
    with db.begin_nested():
        on_commit(db, lambda: ran.append("released"))
    db.commit()
    assert ran == ["outer", "released"]


def test_a_failing_callback_does_not_stop_the_others(
    db: Session, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def broker_down() -> None:
        raise ConnectionError("broker down")

    on_commit(db, broker_down)
    on_commit(db, lambda: ran.append("next"))
    db.add(Tag(slug="saved", name="Saved"))
    db.commit()  # the rows are committed; the failure is logged, not raised
    assert ran == ["next"]
    assert "after-commit callback failed" in caplog.text
    assert db.scalars(select(Tag.slug).where(Tag.slug == "saved")).one() == "saved"


def test_closing_without_commit_drops_callbacks(engine: Engine) -> None:
    ran: list[str] = []
    with Session(engine) as session:
        on_commit(session, lambda: ran.append("never"))
    with Session(engine) as session:
        session.commit()
    assert ran == []


@pytest.mark.sqlite
def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    migrate.upgrade(engine)
    with session_scope(engine) as writer:  # holds SQLite's write lock until it commits
        writer.add(Tag(slug="w", name="W"))
        writer.flush()
        started = time.monotonic()
        check = check_database(engine)
        assert check.ok, check.detail
        assert time.monotonic() - started < 2  # not the 30 s busy timeout
    engine.dispose()


@pytest.mark.sqlite
def test_sqlite_migrations_run_with_foreign_keys_off_and_restore_them(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fk.db'}", pool_size=1, max_overflow=0)
    seen: list[int] = []

    def step(cfg: Config) -> None:
        connection = cfg.attributes["connection"]
        seen.append(connection.exec_driver_sql("PRAGMA foreign_keys").scalar())
        command.upgrade(cfg, "head")

    migrate._run(engine, step)
    assert seen == [0]  # a batch rebuild of a parent table cannot cascade into its children
    with engine.connect() as conn:  # the pooled connection has them back on
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


@pytest.mark.postgres
def test_postgres_plans_each_statement_for_its_values(postgres_url: str) -> None:
    # A generic plan kept from when a table was empty turns lookups into sequential scans.
    engine = make_engine(postgres_url, connect_args={"options": "-c work_mem=8MB"})
    with engine.connect() as conn:
        settings = conn.exec_driver_sql(
            "select current_setting('plan_cache_mode'), current_setting('work_mem')"
        ).one()
    engine.dispose()
    assert tuple(settings) == ("force_custom_plan", "8MB")  # options given are kept
