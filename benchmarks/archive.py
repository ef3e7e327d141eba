"""What the public archive's queries cost on PostgreSQL with a big post ledger.

Builds a throwaway database beside NEWSLETTER_TEST_POSTGRES_URL: READERS readers following two
of 20 tags each, EDITIONS daily digests each sent to every reader (3 posts of each followed tag:
6 ledger rows a delivery), and a "rare" tag carried only by the oldest edition (the listing's
worst case: every newer edition is probed and found without it). Then times the pages' queries
(`service.digests.archive`), best of 5, without and with the listing's memo.

    .venv/bin/python -m benchmarks.archive [--readers 20000] [--editions 30]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from service import migrate
from service.db import make_engine
from service.digests import archive

ADMIN = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TAGS = 20
PER_TAG = 3  # posts of each tag in each edition


@contextmanager
def database() -> Iterator[str]:
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    name = f"newsletter_bench_archive_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(session: Session, readers: int, editions: int) -> None:
    values = {
        "tags": TAGS,
        "rare": TAGS + 1,
        "per_tag": PER_TAG,
        "per_edition": TAGS * PER_TAG,
        "readers": readers,
        "editions": editions,
        "posts": editions * TAGS * PER_TAG,
    }
    statements = [
        """INSERT INTO tags (id, slug, name, created_at)
            SELECT t + 1, 'tag-' || t, 'Tag ' || t, now() FROM generate_series(0, :tags - 1) t""",
        "INSERT INTO tags (id, slug, name, created_at) VALUES (:rare, 'rare', 'Rare', now())",
        """INSERT INTO schedules (id, name, cadence, send_time, template, enabled, created_at)
           VALUES (1, 'morning', 'daily', '07:00', 'digest', true, now())""",
        """INSERT INTO subscribers (id, email, status, timezone, breaking_alerts, paused,
                                     created_at, updated_at)
            SELECT r, 'r' || r || '@example.com', 'active', 'UTC', true, false, now(), now()
            FROM generate_series(1, :readers) r""",
        """INSERT INTO posts (id, url, guid, title, summary_html, published_at, first_seen_at,
                               updated_at, content_hash)
            SELECT p, 'https://courier.example/' || p, 'g' || p, 'Story ' || p,
                   '<p>Story ' || p || ', told briefly.</p>',
                   now() - make_interval(days => :editions - p / :per_edition),
                   now() - make_interval(days => :editions - p / :per_edition), now(), 'h' || p
            FROM generate_series(0, :posts - 1) p""",
        """INSERT INTO post_tags (post_id, tag_id)
            SELECT p, (p % :per_edition) / :per_tag + 1
            FROM generate_series(0, :posts - 1) p""",
        # The oldest edition's tag-0 posts are also "rare".
        """INSERT INTO post_tags (post_id, tag_id)
            SELECT p, :rare FROM generate_series(0, :per_tag - 1) p""",
        """INSERT INTO editions (id, key, kind, schedule_id, period_start, period_end, status,
                                  planned, sent, failed, skipped, suppressed, unknown,
                                  created_at, backend_failures)
            SELECT d + 1, 'digest:1:' || d, 'digest', 1,
                   now() - make_interval(days => :editions - d),
                   now() - make_interval(days => :editions - d - 1), 'done',
                   :readers, :readers, 0, 0, 0, 0, now(), 0
            FROM generate_series(0, :editions - 1) d""",
        """INSERT INTO deliveries (id, edition_id, subscriber_id, status, attempts, created_at,
                                    sent_at)
            SELECT d * :readers + r, d + 1, r, 'sent', 1, now(), now()
            FROM generate_series(0, :editions - 1) d, generate_series(1, :readers) r""",
        # Reader r follows tags r % 20 and (r + 7) % 20: 3 posts of each in every edition.
        """INSERT INTO delivered_posts (subscriber_id, post_id, delivery_id, delivered_at)
            SELECT r, d * :per_edition + t * :per_tag + k, d * :readers + r, now()
            FROM generate_series(0, :editions - 1) d, generate_series(1, :readers) r,
                 LATERAL (VALUES (r % :tags), ((r + 7) % :tags)) AS f(t),
                 generate_series(0, :per_tag - 1) k""",
        "ANALYZE",
    ]
    for statement in statements:
        stmt = text(statement)
        session.execute(stmt, {k: v for k, v in values.items() if f":{k}" in statement})
    session.commit()


def best(fn: Callable[[], object], runs: int = 5, *, memo: bool = False) -> float:
    """Best of ``runs`` (database caches warm); ``memo``: with the listing's per-process memo of
    finished editions kept, else cleared before each run (a fresh API process)."""
    fn()
    times = []
    for _ in range(runs):
        if not memo:
            archive._memo.clear()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--readers", type=int, default=20_000)
    parser.add_argument("--editions", type=int, default=30)
    args = parser.parse_args()
    with database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        with Session(engine) as session:
            start = time.perf_counter()
            fill(session, args.readers, args.editions)
            ledger = session.scalar(text("SELECT count(*) FROM delivered_posts"))
            print(
                f"{args.readers:,} readers, {args.editions} editions, {ledger:,} ledger rows "
                f"(built in {time.perf_counter() - start:.0f} s)"
            )
            newest = args.editions
            cases: list[tuple[str, Callable[[], object]]] = [
                ("edition page, every tag", lambda: archive.edition_page(session, newest)),
                (
                    "edition page, one tag",
                    lambda: archive.edition_page(session, newest, ["tag-3"]),
                ),
                (
                    "tag archive, first page (tag in every edition)",
                    lambda: archive.tag_archive(session, "tag-3"),
                ),
                (
                    "tag archive, first page (tag in the oldest edition only)",
                    lambda: archive.tag_archive(session, "rare"),
                ),
            ]
            for label, fn in cases:
                cold, warm = best(fn), best(fn, memo=True)
                print(f"{label:58} {cold:8.1f} ms {warm:8.1f} ms (memo)")
                session.rollback()
        engine.dispose()


if __name__ == "__main__":
    main()
