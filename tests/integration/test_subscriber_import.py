"""CSV import and export of readers, on SQLite and PostgreSQL: what an operator sees in the
report, what the database holds after, and the confirmation mail the pending readers get."""

from __future__ import annotations

import csv
import email
import email.policy
import io
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, selectinload

from service import tasks
from service.config import Settings, get_settings
from service.models import (
    Cadence,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Tag,
)
from service.readers import accounts, bulk
from service.readers.bulk import ImportFileError, ImportReport, Reason
from service.suppressions import suppress
from tests.processes import run_cli, service_env, start_worker, stop, wait_for
from tests.smtp_server import Server

HEADER = "email,tags,cadence,timezone,send_hour,consented_at\n"
TAGS = {"transport": "Transport", "climate": "Climate", "economy": "Economy"}
ZONES = ("Europe/Kyiv", "UTC", "America/New_York", "Asia/Tokyo")
CADENCES = ("instant", "daily", "weekly")

# line -> (the row, the reason the report must give): one of each kind in every chunk or so
BAD_ROWS: dict[int, tuple[str, Reason]] = {
    17: ("not-an-address,transport,daily,UTC,7,", Reason.BAD_ADDRESS),
    904: ("x@spam.example,transport,daily,UTC,7,", Reason.BAD_ADDRESS),  # blocked domain
    1001: ("t1@example.org,sport,daily,UTC,7,", Reason.UNKNOWN_TAG),
    2500: ("t2@example.org,transport,hourly,UTC,7,", Reason.BAD_CADENCE),
    3999: ("t3@example.org,transport,daily,Mars/Olympus,7,", Reason.BAD_ZONE),
    5000: ("t4@example.org,transport,daily,UTC,24,", Reason.BAD_HOUR),
    6001: ("t5@example.org,transport,daily,UTC,7,last tuesday", Reason.BAD_DATE),
    7777: ("t6@example.org,,daily,UTC,7,", Reason.UNKNOWN_TAG),  # no tags at all
    8500: ("t7@example.org,transport,daily,UTC,7,2024-01-01,extra", Reason.BAD_ROW),
    9999: ("t8@example.org,transport;climate,daily;weekly;instant,UTC,7,", Reason.BAD_CADENCE),
    10001: ("reader00003@example.org,economy,daily,UTC,,", Reason.DUPLICATE),  # skipped
}


def _good_row(i: int) -> dict[str, Any]:
    tags = ["transport", "climate", "economy"][: 1 + i % 3]
    pending = i % 20 == 0
    return {
        "email": f"reader{i:05d}@example.org",
        "tags": {t: Cadence(CADENCES[(i + k) % 3]) for k, t in enumerate(tags)},
        "timezone": ZONES[i % 4],
        "send_hour": None if i % 5 == 0 else i % 24,
        "status": SubscriberStatus.PENDING if pending else SubscriberStatus.ACTIVE,
        "consented_at": None if pending else datetime(2024, 1 + i % 12, 1 + i % 28, 8, tzinfo=UTC),
    }


def _csv_line(row: dict[str, Any]) -> str:
    cadences = list(row["tags"].values())
    return ",".join(
        [
            row["email"],
            ";".join(row["tags"]),
            cadences[0] if len(set(cadences)) == 1 else ";".join(cadences),
            row["timezone"],
            "" if row["send_hour"] is None else str(row["send_hour"]),
            row["consented_at"].isoformat() if row["consented_at"] else "",
        ]
    )


def write_file(path: Path, rows: int) -> dict[str, dict[str, Any]]:
    """``rows`` data rows (the bad ones at their lines in `BAD_ROWS`); the good ones by address."""
    good: dict[str, dict[str, Any]] = {}
    with path.open("w") as out:
        out.write(HEADER)
        i = 0
        for line in range(2, rows + 2):
            if line in BAD_ROWS:
                out.write(BAD_ROWS[line][0] + "\n")
                continue
            row = _good_row(i)
            i += 1
            good[row["email"]] = row
            out.write(_csv_line(row) + "\n")
    return good


class RecordingNotifier:
    """The `Notifier` seam without a queue: which readers would get a confirmation."""

    def __init__(self) -> None:
        self.confirmations: list[int] = []

    def confirmation(self, session: Session, subscriber_id: int) -> None:
        self.confirmations.append(subscriber_id)

    def manage_link(self, session: Session, subscriber_id: int) -> None:
        raise AssertionError("an import never sends the preferences link")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(var_dir=tmp_path, secret_key="k" * 48, blocked_email_domains="spam.example")


@pytest.fixture
def tagged(sessions: Callable[[], Session]) -> Callable[[], Session]:
    with sessions() as session:
        session.add_all(Tag(slug=s, name=n) for s, n in TAGS.items())
        session.commit()
    return sessions


def _import(
    sessions: Callable[[], Session],
    path: Path,
    settings: Settings,
    notify: Any,
    **options: Any,
) -> ImportReport:
    with path.open("rb") as raw:
        return bulk.import_csv(
            sessions, raw, source=f"import:{path.name}", settings=settings, notify=notify, **options
        )


def _readers(sessions: Callable[[], Session]) -> dict[str, dict[str, Any]]:
    """Every reader as the good rows describe them."""
    with sessions() as session:
        found: dict[str, dict[str, Any]] = {}
        for reader in session.scalars(
            select(Subscriber).options(selectinload(Subscriber.subscriptions))
        ):
            found[reader.email] = {
                "email": reader.email,
                "tags": {s.tag.slug: s.cadence for s in reader.subscriptions},
                "timezone": reader.timezone,
                "send_hour": reader.send_hour,
                "status": reader.status,
                "consented_at": reader.consented_at,
            }
        return found


def _counts(sessions: Callable[[], Session]) -> tuple[int, int]:
    with sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Subscriber)) or 0,
            session.scalar(select(func.count()).select_from(Subscription)) or 0,
        )


@pytest.fixture
def redis_tasks(redis_url: str, var_dir: Path) -> Iterator[str]:
    """This process enqueues its tasks to Redis (the worker's broker), restored afterwards."""
    tasks.configure(Settings(var_dir=var_dir, broker_url=redis_url))
    yield redis_url
    tasks.configure(get_settings())


@pytest.mark.process
@pytest.mark.smtp
def test_ten_thousand_rows_import_once_and_mail_each_pending_reader_once(
    engine: Engine,
    tagged: Callable[[], Session],
    settings: Settings,
    redis_tasks: str,
    var_dir: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    env = service_env(
        var_dir,
        database_url=engine.url.render_as_string(hide_password=False),
        broker_url=redis_tasks,
        mail_backend="smtp",
        smtp_url=server.url,
        secret_key="k" * 48,
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, queues="priority")
    try:
        path = tmp_path / "readers.csv"
        good = write_file(path, 10_000)
        report = _import(tagged, path, settings, tasks.TaskNotifier())

        # The report names every bad row, with its line and why; the good ones all went in.
        problems = {p.line: p.reason for p in report.rejected_rows + report.skipped_rows}
        assert problems == {line: reason for line, (_, reason) in BAD_ROWS.items()}
        pending = {e for e, r in good.items() if r["status"] == SubscriberStatus.PENDING}
        assert (report.rows, report.rejected, report.skipped) == (10_000, 10, 1)
        assert report.imported_pending == len(pending)
        assert report.imported_active == len(good) - len(pending)
        assert report.unchanged == 0
        assert _readers(tagged) == good  # tags, cadences, zone, hour, status, consent time

        # One confirmation each, sent by the worker after each chunk committed.
        wait_for(
            lambda: len(server.handler.received) >= len(pending), 120, "the confirmations", log
        )
        mailed = server.handler.count_by_recipient()
        assert set(mailed) == pending
        assert set(mailed.values()) == {1}
        with tagged() as session:
            sources = set(session.scalars(select(Subscriber.consent_source)))
        assert sources == {"import:readers.csv"}

        # The same file again: nothing new, nothing mailed.
        before = _counts(tagged)
        again = _import(tagged, path, settings, tasks.TaskNotifier())
        assert (again.imported_active, again.imported_pending) == (0, 0)
        assert again.unchanged == len(good)
        assert {p.line for p in again.rejected_rows + again.skipped_rows} == set(BAD_ROWS)
        assert _counts(tagged) == before
        # A new pending reader's mail queued after the second import: once it arrives, all
        # the worker had to do before it (the same queue, one process) is done.
        last = tmp_path / "last.csv"
        last.write_text(HEADER + "last@example.org,climate,weekly,,,\n")
        _import(tagged, last, settings, tasks.TaskNotifier())
        wait_for(lambda: "last@example.org" in server.handler.count_by_recipient(), 60, "it", log)
        assert server.handler.count_by_recipient() == mailed + Counter({"last@example.org": 1})
    finally:
        assert stop(worker) == 0
    confirmation = email.message_from_bytes(
        _content(server.handler.received[0]), policy=email.policy.default
    )
    assert "Confirm" in str(confirmation["Subject"])


def test_an_import_never_resubscribes_or_downgrades_a_known_reader(
    tagged: Callable[[], Session], settings: Settings, tmp_path: Path
) -> None:
    with tagged() as session:
        transport = session.scalars(select(Tag).where(Tag.slug == "transport")).one()

        def reader(address: str, status: SubscriberStatus) -> Subscriber:
            row = Subscriber(email=address, status=status, confirm_nonce="n")
            row.subscriptions.append(Subscription(tag=transport, cadence=Cadence.DAILY))
            session.add(row)
            return row

        reader("active@example.org", SubscriberStatus.ACTIVE)
        reader("pending@example.org", SubscriberStatus.PENDING)
        reader("waiting@example.org", SubscriberStatus.PENDING)
        left = reader("left@example.org", SubscriberStatus.UNSUBSCRIBED)
        left.subscriptions.clear()
        reader("bounced@example.org", SubscriberStatus.BOUNCED)
        reader("complained@example.org", SubscriberStatus.COMPLAINED)
        gone = reader("gone@example.org", SubscriberStatus.ACTIVE)
        session.flush()
        accounts.erase(session, gone)
        suppress(session, "blocked@example.org", reason="manual", source="operator")
        session.commit()
    consent = "2024-03-01T10:00:00Z"
    path = tmp_path / "known.csv"
    path.write_text(
        HEADER
        + "".join(
            f"{address},climate,weekly,Asia/Tokyo,6,{consent}\n"
            for address in (
                "Active@example.org",
                "pending@example.org",
                "left@example.org",
                "bounced@example.org",
                "complained@example.org",
                "gone@example.org",
                "blocked@example.org",
            )
        )
        + "waiting@example.org,climate,weekly,,,\n"
    )
    notifier = RecordingNotifier()
    report = _import(tagged, path, settings, notifier)
    assert {p.email: p.reason for p in report.skipped_rows} == {
        "left@example.org": Reason.UNSUBSCRIBED,
        "bounced@example.org": Reason.BOUNCED,
        "complained@example.org": Reason.COMPLAINED,
        "gone@example.org": Reason.ERASED,
        "blocked@example.org": Reason.SUPPRESSED,
    }
    assert (report.unchanged, report.imported_active, report.rejected) == (2, 1, 0)
    assert notifier.confirmations == []  # nobody is mailed: not even the pending reader again
    readers = _readers(tagged)
    # The active reader's own choices stand; the pending one with consent in the file is active.
    assert readers["active@example.org"]["tags"] == {"transport": Cadence.DAILY}
    assert readers["active@example.org"]["timezone"] == "UTC"
    assert readers["pending@example.org"]["status"] == SubscriberStatus.ACTIVE
    assert readers["pending@example.org"]["tags"] == {
        "transport": Cadence.DAILY,
        "climate": Cadence.WEEKLY,
    }
    assert readers["pending@example.org"]["consented_at"] == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert readers["waiting@example.org"]["status"] == SubscriberStatus.PENDING
    assert [readers[f"{a}@example.org"]["status"] for a in ("left", "bounced", "complained")] == [
        SubscriberStatus.UNSUBSCRIBED,
        SubscriberStatus.BOUNCED,
        SubscriberStatus.COMPLAINED,
    ]
    assert "blocked@example.org" not in readers
    assert not any(e.startswith("gone@") for e in readers)


def test_export_round_trips_an_import(
    tagged: Callable[[], Session], settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "in.csv"
    good = write_file(path, 300)
    _import(tagged, path, settings, RecordingNotifier(), chunk_rows=64)
    exported = "".join(bulk.export_csv(tagged, batch=50))
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == len(good)
    assert {r["email"] for r in rows} == set(good)
    for row in rows:
        want = good[row["email"]]
        assert sorted(row["tags"].split(";")) == sorted(want["tags"])
        assert row["timezone"] == want["timezone"]
        assert row["send_hour"] == ("" if want["send_hour"] is None else str(want["send_hour"]))
        consented = want["consented_at"]
        assert row["consented_at"] == (consented.isoformat() if consented else "")
    # Imported into an empty service, the export gives the same readers and the same export.
    with tagged() as session:
        session.execute(delete(Subscriber))
        session.commit()
    (tmp_path / "out.csv").write_text(exported)
    notifier = RecordingNotifier()
    report = _import(tagged, tmp_path / "out.csv", settings, notifier)
    assert (report.rejected, report.skipped) == (0, 0)
    assert len(notifier.confirmations) == report.imported_pending == 15
    assert _readers(tagged) == good
    assert "".join(bulk.export_csv(tagged)) == exported


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("email,tags,colour\nann@example.org,climate,blue\n", "unknown column(s) 'colour'"),
        ("email,cadence\nann@example.org,daily\n", "missing column(s): tags"),
        ("email,tags,tags\nann@example.org,climate,economy\n", "named twice: tags"),
        ('{"email": "ann@example.org"}', "unknown column(s)"),
    ],
)
def test_a_wrong_header_refuses_the_file_before_writing_anything(
    tagged: Callable[[], Session], settings: Settings, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ImportFileError) as refused:
        _import(tagged, path, settings, RecordingNotifier())
    assert message in str(refused.value)
    assert _counts(tagged) == (0, 0)


def test_spreadsheet_exports_are_read(
    tagged: Callable[[], Session], settings: Settings, tmp_path: Path
) -> None:
    """A BOM, CRLF line ends, capitalised headers in another order, quoted fields, blank
    lines, and bytes that are not UTF-8 (a bad address, not a crash)."""
    path = tmp_path / "excel.csv"
    path.write_bytes(
        b"\xef\xbb\xbfTags,Email,Consented_At\r\n"
        b'"climate;economy",ann@example.org,2024-05-01 09:30\r\n'
        b"\r\n"
        b"climate,b\xe9a@example.org,\r\n"
    )
    report = _import(tagged, path, settings, RecordingNotifier())
    assert report.imported_active == 1
    assert [(p.line, p.reason) for p in report.rejected_rows] == [(4, Reason.BAD_ADDRESS)]
    ann = _readers(tagged)["ann@example.org"]
    assert ann["tags"] == {"climate": Cadence.DAILY, "economy": Cadence.DAILY}
    assert ann["consented_at"] == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


@pytest.mark.process
def test_the_cli_imports_with_a_report_and_the_worker_confirms(
    var_dir: Path, tmp_path: Path
) -> None:
    env = service_env(var_dir)
    assert run_cli(env, "demo").returncode == 0  # its tags: transport, climate, economy, …
    path = tmp_path / "members.csv"
    path.write_text(
        HEADER
        + "ann@example.org,transport;climate,daily,Europe/Kyiv,7,2024-05-01T09:30:00Z\n"
        + "bob@example.org,transport,weekly,,,\n"
        + "cy@example.org,economy,instant,UTC,,\n"
        + "bad@,transport,daily,,,\n"
        + "dee@example.org,sport,daily,,,\n"
    )
    first = run_cli(env, "subscribers", "import", str(path))
    assert first.returncode == 1, first.stderr  # rows were rejected
    assert (
        "5 rows: 1 imported active, 2 imported pending (a confirmation mail each), 0 unchanged, "
        "0 skipped, 2 rejected"
    ) in first.stdout
    assert "line 5: bad address: bad@" in first.stdout
    assert "line 6: unknown tag: dee@example.org (no such tag: sport)" in first.stdout
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        outbox = var_dir / "outbox"
        wait_for(lambda: len(list(outbox.glob("*.eml"))) == 2, 30, "two confirmations", log)
        second = run_cli(env, "subscribers", "import", str(path))
        assert "0 imported active, 0 imported pending" in second.stdout
        assert "3 unchanged" in second.stdout
        out = tmp_path / "export.csv"
        exported = run_cli(env, "subscribers", "export", "--output", str(out))
        assert exported.returncode == 0, exported.stderr
        assert "exported 3 readers" in exported.stderr
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
        assert [r["email"] for r in rows] == [
            "ann@example.org",
            "bob@example.org",
            "cy@example.org",
        ]
        assert rows[0]["consented_at"] == "2024-05-01T09:30:00+00:00"
    finally:
        assert stop(worker) == 0
    recipients = sorted(
        str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"])
        for p in outbox.glob("*.eml")
    )
    assert recipients == ["bob@example.org", "cy@example.org"]


def _content(envelope: Envelope) -> bytes:
    assert isinstance(envelope.content, bytes)
    return envelope.content
