"""Rows per second and peak memory of `newsletter subscribers import` on PostgreSQL.

For each size in ``--rows`` (default 10,000 and 100,000) a spawned process creates a fresh
PostgreSQL database, migrates it, adds 20 tags, writes a CSV of that many rows (1-3 tags each,
a cadence per tag or one for all, four zones, 90% with ``consented_at``, 10% pending, 0.5%
bad rows), then times `import_csv` over it with the default chunk of 1,000 rows. Confirmations
go to a notifier that registers an after-commit callback per pending reader, as the real one
does, without a broker (enqueueing is Redis's cost, not the import's). Then it times a second
import of the same file (every row "unchanged") and an export of everything.

Reported per size: rows/s of the first and second import and of the export, and the process's
peak RSS (VmHWM) measured after the setup and after the import: a streaming import keeps the
difference flat whatever the file's size. Every database it creates is dropped.

Run from the repository root::

    .venv/bin/python benchmarks/import_csv.py [--rows 10000 100000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TAGS = [f"tag-{i:02d}" for i in range(20)]
ZONES = ("Europe/Kyiv", "UTC", "America/New_York", "Asia/Tokyo")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with path.open("w") as out:
        out.write("email,tags,cadence,timezone,send_hour,consented_at\n")
        for i in range(rows):
            if rng.random() < 0.005:
                out.write(f"broken{i}@,{TAGS[0]},hourly,Mars/Base,25,soon\n")
                continue
            tags = rng.sample(TAGS, rng.randint(1, 3))
            cadence = (
                rng.choice(("instant", "daily", "weekly"))
                if rng.random() < 0.7
                else ";".join(rng.choice(("daily", "weekly")) for _ in tags)
            )
            consent = "" if rng.random() < 0.1 else (start + timedelta(minutes=i)).isoformat()
            hour = "" if rng.random() < 0.3 else str(rng.randrange(24))
            out.write(
                f"reader{i}@example.org,{';'.join(tags)},{cadence},{rng.choice(ZONES)},"
                f"{hour},{consent}\n"
            )


class CountingNotifier:
    """Registers one after-commit callback per confirmation, as `TaskNotifier` does."""

    def __init__(self) -> None:
        self.sent = 0

    def confirmation(self, session: Any, subscriber_id: int) -> None:
        from service.db import on_commit

        on_commit(session, self._count)

    def manage_link(self, session: Any, subscriber_id: int) -> None:
        raise AssertionError("not from an import")

    def _count(self) -> None:
        self.sent += 1


def run(rows: int, admin_url: str, queue: Any) -> None:
    from service import migrate
    from service.config import Settings
    from service.db import make_engine, session_factory
    from service.models import Tag
    from service.readers import bulk

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"newsletter_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(make_url(admin_url).set(database=name).render_as_string(False))
    try:
        migrate.upgrade(engine)
        sessions = session_factory(engine)
        with sessions() as session:
            session.add_all(Tag(slug=t, name=t.title()) for t in TAGS)
            session.commit()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "readers.csv"
            write_csv(path, rows)
            settings = Settings(var_dir=Path(tmp), secret_key="b" * 48)
            size = path.stat().st_size
            before = peak_rss_mib()
            notifier = CountingNotifier()
            timings = {}
            for label in ("first", "second"):
                started = time.perf_counter()
                with path.open("rb") as raw:
                    report = bulk.import_csv(
                        sessions, raw, source="import:bench", settings=settings, notify=notifier
                    )
                timings[label] = time.perf_counter() - started
                if label == "first":
                    first = report
            after = peak_rss_mib()
            started = time.perf_counter()
            exported = sum(1 for _ in bulk.export_rows(sessions))
            timings["export"] = time.perf_counter() - started
        queue.put(
            {
                "rows": rows,
                "file_mib": size / 2**20,
                "active": first.imported_active,
                "pending": first.imported_pending,
                "rejected": first.rejected,
                "mails": notifier.sent,
                "unchanged": report.unchanged,
                "exported": exported,
                "first_rps": rows / timings["first"],
                "second_rps": rows / timings["second"],
                "export_rps": exported / timings["export"],
                "first_s": timings["first"],
                "rss_before": before,
                "rss_after": after,
            }
        )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--postgres", default=ADMIN_URL, help="an admin URL of the server")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")  # a fresh process per size: its peak RSS is its own
    print(
        f"{'rows':>8} {'file':>8} {'import rows/s':>14} {'again rows/s':>13} "
        f"{'export rows/s':>14} {'peak RSS before -> after import':>32}"
    )
    for rows in args.rows:
        queue = ctx.Queue()
        proc = ctx.Process(target=run, args=(rows, args.postgres, queue))
        proc.start()
        result = queue.get()
        proc.join()
        print(
            f"{result['rows']:>8,} {result['file_mib']:>6.1f}MB {result['first_rps']:>14,.0f} "
            f"{result['second_rps']:>13,.0f} {result['export_rps']:>14,.0f} "
            f"{result['rss_before']:>17.0f} MiB -> {result['rss_after']:.0f} MiB"
        )
        print(
            f"{'':>8} first import {result['first_s']:.1f} s: {result['active']:,} active, "
            f"{result['pending']:,} pending ({result['mails']:,} confirmations), "
            f"{result['rejected']:,} rejected; second: {result['unchanged']:,} unchanged; "
            f"exported {result['exported']:,}"
        )


if __name__ == "__main__":
    main()
