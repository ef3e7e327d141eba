"""What one `/metrics` scrape costs the database when the ledger is busy.

A throwaway PostgreSQL database gets 20 editions x 20,000 deliveries (the newest editions'
rows ended two minutes ago, so about 100,000 fall in the five-minute window: a sustained
333 deliveries/s) and 50 recent posts each in every reader's post ledger (1 million rows). The
script times three scrapes of the database collector (the first one also finds each post's
first mail for the feed-lag cache) and one of the bounce figures.

    .venv/bin/python -m benchmarks.metrics_scrape [--postgres-url URL] [--readers 20000]
"""

from __future__ import annotations

import argparse
import time
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service import migrate
from service.bounces.metrics import FeedbackCollector
from service.db import make_engine, session_factory
from service.monitoring import DatabaseCollector

SEED = (
    "INSERT INTO subscribers (email, status, timezone, breaking_alerts, paused, created_at,"
    " updated_at) SELECT 'r' || g || '@bench.example', 'active', 'UTC', true, false, now(), now()"
    " FROM generate_series(1, :readers) g",
    "INSERT INTO editions (key, kind, status, planned, sent, failed, skipped, suppressed,"
    " unknown, created_at, heartbeat_at, backend_failures) SELECT 'digest:' || g, 'digest',"
    " 'done', :readers, :readers, 0, 0, 0, 0, now(), now() - g * interval '1 minute', 0"
    " FROM generate_series(1, 20) g",
    "INSERT INTO deliveries (edition_id, subscriber_id, status, attempts, backend, claimed_at,"
    " sent_at, created_at) SELECT e.id, s.id, 'sent', 1, 'smtp', now() - interval '2 minutes',"
    " now() - interval '2 minutes' + random() * interval '1 second', now()"
    " FROM editions e CROSS JOIN subscribers s",
    "INSERT INTO posts (url, guid, title, summary_html, published_at, first_seen_at, updated_at,"
    " content_hash) SELECT 'https://bench.example/' || g, 'g' || g, 'Post', '',"
    " now() - interval '1 hour', now() - interval '1 hour', now(), 'h'"
    " FROM generate_series(1, 50) g",
    "INSERT INTO delivered_posts (subscriber_id, post_id, delivered_at)"
    " SELECT s.id, p.id, now() FROM subscribers s CROSS JOIN posts p",
    "ANALYZE",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--readers", type=int, default=20_000)
    args = parser.parse_args()
    admin = create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
    name = f"newsletter_bench_metrics_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        engine = make_engine(make_url(args.postgres_url).set(database=name).render_as_string(False))
        migrate.upgrade(engine)
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in SEED:
                conn.execute(text(statement), {"readers": args.readers})
        print(f"seeded {20 * args.readers:,} deliveries in {time.perf_counter() - started:.0f} s")
        sessions = session_factory(engine)
        database, feedback = DatabaseCollector(sessions), FeedbackCollector(sessions)
        for label, collector in (
            ("database figures, first scrape", database),
            ("database figures, second scrape", database),
            ("database figures, third scrape", database),
            ("bounce figures", feedback),
        ):
            started = time.perf_counter()
            list(collector.collect())
            print(f"{label}: {(time.perf_counter() - started) * 1000:.0f} ms")
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
