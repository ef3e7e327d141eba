"""Readers in bulk: CSV import and export (`newsletter subscribers import|export`, the admin API).

The file has a header line and the columns ``email,tags,cadence,timezone,send_hour,consented_at``
(only ``email`` and ``tags`` are required; tags are ``;``-separated; ``cadence`` is one value for
every tag or one per tag, ``;``-separated in the order of the tags). Each row is checked by the
subscribe API's own schema (`SubscribeIn`), then:

- a new address with ``consented_at`` becomes an active reader (that consent time, source
  ``import:FILE``); one without becomes pending and gets one confirmation mail, enqueued
  through the `Notifier` after its chunk commits;
- an address we know is never downgraded and never re-subscribed: an active or pending reader
  is left as it is ("unchanged"; a pending one whose row carries consent becomes active), and an
  unsubscribed, bounced, complained, erased or suppressed one is skipped with the reason.

So a second import of the same file changes nothing and mails nobody. The file is read as a
stream and written in chunks, one transaction each: memory stays flat whatever the file's
size, and a bad row costs only itself. Export streams the same columns back, batch by batch.
"""

from __future__ import annotations

import csv
import enum
import io
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.config import Settings
from service.models import (
    Cadence,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Tag,
)
from service.readers.accounts import BLOCKED_DOMAIN, Notifier, domain_blocked
from service.readers.schemas import SubscribeIn
from service.suppressions import email_hash

__all__ = [
    "COLUMNS",
    "ImportFileError",
    "ImportReport",
    "Reason",
    "RowProblem",
    "export_csv",
    "export_rows",
    "import_csv",
]

COLUMNS = ("email", "tags", "cadence", "timezone", "send_hour", "consented_at")
REQUIRED = ("email", "tags")
CHUNK_ROWS = 1000
MAX_LISTED = 10_000  # problems listed in a report; the counts always cover every row
_VALUE_CHARS = 80  # a bad value is quoted in the report up to this length
_SOURCE_CHARS = 200  # Subscriber.consent_source
_RETRIES = 3  # a chunk that lost a race with a concurrent subscribe is redone


class Reason(enum.StrEnum):
    """Why a row was rejected (the file needs fixing) or skipped (the reader stays as is)."""

    BAD_ROW = "bad row"
    BAD_ADDRESS = "bad address"
    UNKNOWN_TAG = "unknown tag"
    BAD_CADENCE = "bad cadence"
    BAD_ZONE = "bad zone"
    BAD_HOUR = "bad hour"
    BAD_DATE = "bad date"
    # skipped: never re-subscribe someone who left
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    ERASED = "erased"
    SUPPRESSED = "suppressed"
    DUPLICATE = "duplicate"


# The subscribe schema's fields, and what a bad value in each is called in a report.
_FIELD_REASONS = {
    "email": Reason.BAD_ADDRESS,
    "tags": Reason.UNKNOWN_TAG,
    "cadence": Reason.BAD_CADENCE,
    "timezone": Reason.BAD_ZONE,
    "send_hour": Reason.BAD_HOUR,
}
_LEFT = {
    SubscriberStatus.UNSUBSCRIBED: Reason.UNSUBSCRIBED,
    SubscriberStatus.BOUNCED: Reason.BOUNCED,
    SubscriberStatus.COMPLAINED: Reason.COMPLAINED,
    SubscriberStatus.ERASED: Reason.ERASED,
}


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (no header, unknown columns): nothing was written."""


class RowProblem(BaseModel):
    line: int
    email: str
    reason: Reason
    detail: str


class ImportReport(BaseModel):
    """What an import did, row by row: every data row is counted in exactly one of
    ``imported_active``, ``imported_pending``, ``unchanged``, ``skipped`` and ``rejected``."""

    source: str
    rows: int = 0
    imported_active: int = 0
    imported_pending: int = 0
    unchanged: int = 0
    skipped: int = 0
    rejected: int = 0
    skipped_rows: list[RowProblem] = []
    rejected_rows: list[RowProblem] = []
    truncated: bool = False  # more problems than MAX_LISTED: the lists stop there

    def _note(self, problem: RowProblem, *, rejected: bool) -> None:
        if rejected:
            self.rejected += 1
        else:
            self.skipped += 1
        listed = self.rejected_rows if rejected else self.skipped_rows
        if len(self.rejected_rows) + len(self.skipped_rows) < MAX_LISTED:
            listed.append(problem)
        else:
            self.truncated = True


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    cadences: dict[str, Cadence]
    timezone: str
    send_hour: int | None
    consented_at: datetime | None


@dataclass
class _ChunkOutcome:
    active: int = 0
    pending: int = 0
    unchanged: int = 0
    skipped: list[RowProblem] = field(default_factory=list)


def import_csv(
    sessions: Callable[[], Session],
    stream: IO[bytes],
    *,
    source: str,
    settings: Settings,
    notify: Notifier,
    chunk_rows: int = CHUNK_ROWS,
    on_chunk: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Import the CSV in ``stream`` (bytes, UTF-8 with or without a BOM); see the module doc.

    ``sessions`` makes a session per chunk; ``source`` is recorded as each new reader's consent
    source (``import:members.csv``); ``on_chunk`` is called with the report so far after each
    chunk commits (a progress bar). Raises `ImportFileError` before writing anything when the
    header is wrong.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    try:
        reader = csv.DictReader(text, restkey="\0extra")
        _check_header(reader.fieldnames)
        report = ImportReport(source=source[:_SOURCE_CHARS])
        with sessions() as session:
            known_tags = dict(session.execute(select(Tag.slug, Tag.id)).all())
        seen: dict[int, int] = {}  # hash of the address -> its first line
        now = datetime.now(UTC)
        chunk: list[_Row] = []
        for line, parsed in _rows(reader, known_tags, settings, now):
            report.rows += 1
            if isinstance(parsed, RowProblem):
                report._note(parsed, rejected=True)
                continue
            key = hash(parsed.email.lower())
            if key in seen:
                problem = RowProblem(
                    line=line,
                    email=parsed.email,
                    reason=Reason.DUPLICATE,
                    detail=f"the address is on line {seen[key]} already",
                )
                report._note(problem, rejected=False)
                continue
            seen[key] = line
            chunk.append(parsed)
            if len(chunk) >= chunk_rows:
                _write_chunk(sessions, chunk, report, report.source, notify)
                chunk = []
                if on_chunk is not None:
                    on_chunk(report)
        if chunk:
            _write_chunk(sessions, chunk, report, report.source, notify)
        if on_chunk is not None:
            on_chunk(report)
        return report
    finally:
        text.detach()  # the caller's stream stays open


def _check_header(fieldnames: Sequence[str] | None) -> None:
    expected = ",".join(COLUMNS)
    if not fieldnames:
        raise ImportFileError(f"the file is empty; its first line must name the columns {expected}")
    names = [(n or "").strip().lower() for n in fieldnames]
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise ImportFileError(
            f"unknown column(s) {', '.join(repr(n) for n in unknown)} in the first line; "
            f"the columns are {expected}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ImportFileError(f"column(s) named twice: {', '.join(repeated)}")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise ImportFileError(f"missing column(s): {', '.join(missing)} (columns: {expected})")


def _rows(
    reader: csv.DictReader[str], tags: dict[str, int], settings: Settings, now: datetime
) -> Iterator[tuple[int, _Row | RowProblem]]:
    columns = [(n or "").strip().lower() for n in reader.fieldnames or ()]
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field longer than csv's limit: only this row is lost
            yield reader.line_num, _problem(reader.line_num, "", Reason.BAD_ROW, str(exc))
            continue
        values = {
            name: (raw.get(original) or "").strip()
            for name, original in zip(columns, reader.fieldnames or (), strict=True)
        }
        line = reader.line_num
        if raw.get("\0extra"):
            detail = f"more fields than the {len(columns)} columns (a comma inside a value?)"
            yield line, _problem(line, values.get("email", ""), Reason.BAD_ROW, detail)
            continue
        yield line, _parse(line, values, tags, settings, now)


def _problem(line: int, email: str, reason: Reason, detail: str) -> RowProblem:
    return RowProblem(line=line, email=email[:320], reason=reason, detail=detail)


def _parse(
    line: int, values: dict[str, str], tags: dict[str, int], settings: Settings, now: datetime
) -> _Row | RowProblem:
    """One row checked as the subscribe API checks a request, plus the tags and the date."""
    email = values.get("email", "")
    slugs = [t.strip() for t in values.get("tags", "").split(";") if t.strip()]
    cadences = [c.strip() for c in values.get("cadence", "").split(";") if c.strip()]
    problems: list[tuple[Reason, str]] = []
    body: dict[str, Any] = {"email": email, "tags": slugs}
    if len(cadences) == 1:
        body["cadence"] = cadences[0]
    elif len(cadences) > 1:
        if len(cadences) != len(slugs):
            problems.append(
                (
                    Reason.BAD_CADENCE,
                    f"{len(cadences)} cadences for {len(slugs)} tags: give one for every tag, "
                    "or one per tag in the order of the tags",
                )
            )
        body["cadence"] = dict(zip(slugs, cadences, strict=False))
    if values.get("timezone"):
        body["timezone"] = values["timezone"]
    if values.get("send_hour"):
        body["send_hour"] = values["send_hour"]
    request: SubscribeIn | None = None
    if not problems:
        try:
            request = SubscribeIn.model_validate(body)
        except ValidationError as exc:
            problems += _schema_problems(exc, body)
    consented_at: datetime | None = None
    if values.get("consented_at"):
        try:
            consented_at = _consent_time(values["consented_at"], now)
        except ValueError as exc:
            problems.append((Reason.BAD_DATE, f"{_quote(values['consented_at'])}: {exc}"))
    if request is not None:
        unknown = [t for t in request.tags if t not in tags]
        if unknown:
            problems.append((Reason.UNKNOWN_TAG, f"no such tag: {', '.join(unknown)}"))
        if domain_blocked(request.email, settings):
            problems.insert(0, (Reason.BAD_ADDRESS, f"{_quote(email)}: {BLOCKED_DOMAIN}"))
    if problems:
        return _problem(line, email, problems[0][0], "; ".join(d for _, d in problems))
    assert request is not None
    return _Row(
        line=line,
        email=request.email,
        cadences=request.cadences(),
        timezone=request.timezone,
        send_hour=request.send_hour,
        consented_at=consented_at,
    )


def _schema_problems(exc: ValidationError, body: dict[str, Any]) -> list[tuple[Reason, str]]:
    found: dict[Reason, str] = {}
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = error["loc"]
        name = str(loc[0]) if loc else message.partition(":")[0]
        if not loc:
            message = message.partition(": ")[2] or message
        reason = _FIELD_REASONS.get(name, Reason.BAD_ROW)
        if reason in found:
            continue  # the first error per field says enough (a cadence fails both union arms)
        if error["type"] == "string_pattern_mismatch" and reason == Reason.UNKNOWN_TAG:
            message = "not a tag slug (lowercase letters, digits and dashes)"
        value = body.get(name)
        if name == "tags" and len(loc) > 1 and isinstance(loc[1], int):
            value = body["tags"][loc[1]]
        shown = _quote(value) if isinstance(value, str) and value else ""
        found[reason] = f"{shown}: {message}" if shown else message
    return list(found.items())


def _quote(value: str) -> str:
    return repr(value if len(value) <= _VALUE_CHARS else value[:_VALUE_CHARS] + "…")


def _consent_time(value: str, now: datetime) -> datetime:
    """ISO 8601: a date (midnight UTC) or a date and time; without an offset it is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO 8601 date or time, e.g. 2024-05-01T09:30:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed > now + timedelta(days=1):
        raise ValueError("in the future")
    return parsed.astimezone(UTC)


def _write_chunk(
    sessions: Callable[[], Session],
    rows: list[_Row],
    report: ImportReport,
    source: str,
    notify: Notifier,
) -> None:
    for attempt in range(_RETRIES):
        with sessions() as session:
            try:
                outcome = _apply(session, rows, source, notify)
                session.commit()
            except IntegrityError:
                # A reader subscribed between our look-up and our insert: look again.
                session.rollback()
                if attempt == _RETRIES - 1:
                    raise
                continue
        break
    report.imported_active += outcome.active
    report.imported_pending += outcome.pending
    report.unchanged += outcome.unchanged
    for problem in outcome.skipped:
        report._note(problem, rejected=False)


def _apply(session: Session, rows: list[_Row], source: str, notify: Notifier) -> _ChunkOutcome:
    """Write one chunk in the session's transaction: a fixed number of statements."""
    outcome = _ChunkOutcome()
    lowered = [r.email.lower() for r in rows]
    existing = {
        email: (sid, status)
        for sid, email, status in session.execute(
            select(Subscriber.id, func.lower(Subscriber.email), Subscriber.status)
            .where(func.lower(Subscriber.email).in_(lowered))
            .with_for_update()
        )
    }
    hashes = {r.email: email_hash(r.email) for r in rows}
    suppressed = dict(
        session.execute(
            select(Suppression.email_hash, Suppression.reason).where(
                Suppression.email_hash.in_(list(hashes.values()))
            )
        ).all()
    )
    new: list[_Row] = []
    activate: list[tuple[int, _Row]] = []
    for row, email in zip(rows, lowered, strict=True):
        reason = suppressed.get(hashes[row.email])
        if reason is not None:
            skip = Reason.ERASED if reason == "erased" else Reason.SUPPRESSED
            detail = f"on the suppression list ({reason}); never mailed again"
            outcome.skipped.append(_problem(row.line, row.email, skip, detail))
        elif email not in existing:
            new.append(row)
        else:
            sid, status = existing[email]
            if status in _LEFT:
                detail = f"the reader is {status}; an import never re-subscribes anyone"
                outcome.skipped.append(_problem(row.line, row.email, _LEFT[status], detail))
            elif status == SubscriberStatus.PENDING and row.consented_at is not None:
                activate.append((sid, row))
            else:
                outcome.unchanged += 1
    if new:
        # Core inserts of the tables (one multi-row statement per few hundred rows): the ORM's
        # bulk insert would split a chunk wherever a row's None columns differ from the last.
        ids = session.scalars(
            insert(_SUBSCRIBERS).returning(_SUBSCRIBERS.c.id, sort_by_parameter_order=True),
            [_new_reader(row, source) for row in new],
        ).all()
        session.execute(
            insert(_SUBSCRIPTIONS),
            [
                {"subscriber_id": sid, "tag_id": tag_id, "cadence": cadence}
                for sid, row in zip(ids, new, strict=True)
                for tag_id, cadence in _tag_ids(session, row)
            ],
        )
        for sid, row in zip(ids, new, strict=True):
            if row.consented_at is None:
                outcome.pending += 1
                notify.confirmation(session, sid)
            else:
                outcome.active += 1
    if activate:
        _activate(session, activate, source)
        outcome.active += len(activate)
    return outcome


def _new_reader(row: _Row, source: str) -> dict[str, Any]:
    active = row.consented_at is not None
    return {
        "email": row.email,
        "status": SubscriberStatus.ACTIVE if active else SubscriberStatus.PENDING,
        "timezone": row.timezone,
        "send_hour": row.send_hour,
        "consented_at": row.consented_at,
        "consent_source": source,
        "confirm_nonce": None if active else secrets.token_urlsafe(16),
    }


_TAG_IDS = "newsletter.import.tag_ids"
_SUBSCRIBERS = cast(Table, Subscriber.__table__)
_SUBSCRIPTIONS = cast(Table, Subscription.__table__)


def _tag_ids(session: Session, row: _Row) -> list[tuple[int, Cadence]]:
    ids: dict[str, int] | None = session.info.get(_TAG_IDS)
    if ids is None:
        ids = session.info[_TAG_IDS] = dict(session.execute(select(Tag.slug, Tag.id)).all())
    # A tag deleted since the file was checked: its subscription is left out (not an error).
    return [(ids[slug], cadence) for slug, cadence in row.cadences.items() if slug in ids]


def _activate(session: Session, readers: list[tuple[int, _Row]], source: str) -> None:
    """Pending readers whose row carries consent: active, with the row's tags added."""
    ids = [sid for sid, _ in readers]
    have = set(
        session.execute(
            select(Subscription.subscriber_id, Subscription.tag_id).where(
                Subscription.subscriber_id.in_(ids)
            )
        ).all()
    )
    session.execute(
        update(Subscriber),
        [
            {
                "id": sid,
                "status": SubscriberStatus.ACTIVE,
                "consented_at": row.consented_at,
                "consent_source": source,
                "confirm_nonce": None,
            }
            for sid, row in readers
        ],
    )
    added = [
        {"subscriber_id": sid, "tag_id": tag_id, "cadence": cadence}
        for sid, row in readers
        for tag_id, cadence in _tag_ids(session, row)
        if (sid, tag_id) not in have
    ]
    if added:
        session.execute(insert(_SUBSCRIPTIONS), added)


# -- export -------------------------------------------------------------------------------

EXPORTED = (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING)


def export_rows(sessions: Callable[[], Session], *, batch: int = CHUNK_ROWS) -> Iterator[list[str]]:
    """Active and pending readers as rows of `COLUMNS` (no header), by id, ``batch`` at a time.

    A reader whose tags all share one cadence gets that cadence; otherwise one per tag in the
    order of the tags, as the import reads it. Pending readers have no ``consented_at``, so
    importing the file elsewhere asks them to confirm.
    """
    after = 0
    while True:
        with sessions() as session:
            readers = session.execute(
                select(
                    Subscriber.id,
                    Subscriber.email,
                    Subscriber.timezone,
                    Subscriber.send_hour,
                    Subscriber.consented_at,
                    Subscriber.status,
                )
                .where(Subscriber.status.in_(EXPORTED), Subscriber.id > after)
                .order_by(Subscriber.id)
                .limit(batch)
            ).all()
            if not readers:
                return
            follows: dict[int, list[tuple[str, str]]] = {}
            for sid, slug, cadence in session.execute(
                select(Subscription.subscriber_id, Tag.slug, Subscription.cadence)
                .join(Tag, Tag.id == Subscription.tag_id)
                .where(Subscription.subscriber_id.in_([r.id for r in readers]))
                .order_by(Subscription.subscriber_id, Tag.slug)
            ):
                follows.setdefault(sid, []).append((slug, str(cadence)))
        for r in readers:
            tags = follows.get(r.id)
            if not tags:
                continue  # nothing to import it as
            cadences = [c for _, c in tags]
            consented = r.consented_at if r.status == SubscriberStatus.ACTIVE else None
            yield [
                r.email,
                ";".join(s for s, _ in tags),
                cadences[0] if len(set(cadences)) == 1 else ";".join(cadences),
                r.timezone,
                "" if r.send_hour is None else str(r.send_hour),
                consented.isoformat(timespec="seconds") if consented else "",
            ]
        after = readers[-1].id


def export_csv(sessions: Callable[[], Session], *, batch: int = CHUNK_ROWS) -> Iterator[str]:
    """`export_rows` as CSV text with a header line, one piece per batch (for streaming)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    pending = 0
    for row in export_rows(sessions, batch=batch):
        writer.writerow(row)
        pending += 1
        if pending >= batch:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()
