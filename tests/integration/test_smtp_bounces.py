"""SMTP bounces on SQLite and PostgreSQL: the VERP envelope sender on a real SMTP send, and
`newsletter bounces process` reading the DSN fixtures (tests/fixtures/dsn) from a Maildir.

Each case sends a real digest first (planning and `send_batch`), so the bounce names a
delivery the way a real one would: by the envelope sender the message left with and the
Message-ID it carried.
"""

from __future__ import annotations

import mailbox
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from service.bounces.mailboxes import ImapBox, MailboxError, MaildirBox
from service.bounces.smtp import Summary, process_mailbox
from service.config import Settings
from service.digests import planning, schedules
from service.digests.sending import BatchReport, send_batch
from service.mail import OutgoingMessage, Sender
from service.mail.senders.smtp import SmtpSender
from service.mail.verp import DeliveryIds
from service.models import (
    Cadence,
    Delivery,
    DeliveryStatus,
    ProviderEvent,
    Subscriber,
    SubscriberStatus,
    Tag,
)
from service.suppressions import is_suppressed
from tests.digest_data import RecordingSender, merge, post, reader, tag
from tests.dsn_fixtures import bounce, maildir
from tests.imap_server import ImapServer
from tests.processes import run_cli, service_env
from tests.smtp_server import Server

Sessions = Callable[[], Session]
NOW = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)  # 07:30 on Sunday in Tokyo
SECRET = "bounce-test-secret-0123456789abcdef"
ANA, BEN = "ana@reader-mail.example", "ben@reader-mail.example"


@pytest.fixture
def settings() -> Settings:
    return Settings(
        secret_key=SECRET,
        base_url="https://courier.example",
        mail_from="The Harbour Courier <news@courier.example>",
        bounce_address="bounces@courier.example",
    )


Batches = list[tuple[int, list[int]]]


def plan(sessions: Sessions, now: datetime = NOW) -> Batches:
    """Plan the digests due at ``now``: the batches the planner hands off."""
    batches: Batches = []

    def dispatch(edition_id: int, ids: Sequence[int]) -> None:
        batches.append((edition_id, list(ids)))

    with sessions() as s:
        planning.plan_digests(s, dispatch, now)
    return batches


def send(
    sessions: Sessions, settings: Settings, sender: Sender, batches: Batches, now: datetime = NOW
) -> BatchReport:
    return merge([send_batch(sessions, sender, settings, e, ids, now=now) for e, ids in batches])


def send_digest(sessions: Sessions, settings: Settings, sender: Sender) -> BatchReport:
    return send(sessions, settings, sender, plan(sessions))


def readers_with_a_digest(sessions: Sessions, *emails: str) -> None:
    """A daily schedule at 07:00, readers in Tokyo following "harbour", a post of the hour."""
    with sessions() as s:
        schedules.add_schedule(s, "morning", Cadence.DAILY)
        harbour = tag(s, "harbour")
        for email in emails:
            reader(s, email, {harbour: Cadence.DAILY}, timezone="Asia/Tokyo")
        post(s, "Ferries run again", [harbour], published=NOW - timedelta(hours=1))
        s.commit()


def bounce_of(message: OutgoingMessage, name: str, *, verp: str | None = None) -> bytes:
    """Fixture ``name`` as a bounce of ``message``, delivered to its envelope sender."""
    return bounce(
        name,
        verp=verp or message.mail_from_envelope,
        reader=message.recipient,
        message_id=message.message_id,
    )


def state(sessions: Sessions, email: str) -> tuple[bool, SubscriberStatus, int]:
    """Suppressed?, the reader's status, events stored."""
    with sessions() as s:
        status = s.scalar(select(Subscriber.status).where(Subscriber.email == email))
        assert status is not None
        events = s.scalar(select(func.count()).select_from(ProviderEvent)) or 0
        return is_suppressed(s, email), status, events


# -- each fixture, through the Maildir -------------------------------------------------------

CASES = {
    # fixture: (summary figures, ana suppressed afterwards, events stored)
    "hard_5.1.1.eml": ({"hard": 1, "suppressed": 1}, True, 1),
    "soft_4.2.2.eml": ({"soft": 1}, False, 1),
    "multi_recipient.eml": ({"hard": 1, "soft": 1, "delayed": 1, "suppressed": 1}, True, 2),
    "delayed_only.eml": ({"delayed": 1}, False, 0),
    "out_of_office.eml": ({"ignored": 1}, False, 0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_bounce_fixture_does_what_it_says(
    sessions: Sessions, settings: Settings, tmp_path: Path, name: str
) -> None:
    readers_with_a_digest(sessions, ANA)
    sender = RecordingSender()
    send_digest(sessions, settings, sender)
    (sent,) = sender.sent
    assert sent.return_path == DeliveryIds(settings).bounce_address(delivery_id(sessions, ANA))
    box = maildir(tmp_path / "bounces", bounce_of(sent, name))

    figures, suppressed, stored = CASES[name]
    summary = process_mailbox(sessions, settings, MaildirBox(tmp_path / "bounces"))
    assert summary == Summary(read=1, **figures)
    assert state(sessions, ANA) == (
        suppressed,
        SubscriberStatus.BOUNCED if suppressed else SubscriberStatus.ACTIVE,
        stored,
    )
    assert box.keys() == []  # moved to the processed folder, flagged seen
    (done,) = box.get_folder("processed").values()
    assert isinstance(done, mailbox.MaildirMessage)
    assert (done.get_subdir(), done.get_flags()) == ("cur", "S")


def test_the_events_name_the_delivery_the_verp_address_names(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    readers_with_a_digest(sessions, ANA)
    sender = RecordingSender()
    send_digest(sessions, settings, sender)
    maildir(tmp_path / "b", bounce_of(sender.sent[0], "multi_recipient.eml"))
    process_mailbox(sessions, settings, MaildirBox(tmp_path / "b"))
    with sessions() as s:
        stored = {e.event_id: e.payload for e in s.scalars(select(ProviderEvent))}
    ana_delivery = delivery_id(sessions, ANA)
    assert {p["kind"] for p in stored.values()} == {"hard_bounce", "soft_bounce"}
    for event_id, payload in stored.items():
        assert event_id.startswith("<dsn.8812.0329060244@lists.rowing-club.example>/")
        # The alias member that failed is evidence; the address we mailed is who bounced.
        assert (payload["delivery_id"], payload["email"]) == (ana_delivery, ANA)
    assert {p["received"]["reported_recipient"] for p in stored.values()} == {
        ANA,
        "captain@boathouse.example",
    }


def test_a_bounce_to_our_from_address_is_matched_by_our_message_id(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    readers_with_a_digest(sessions, ANA)
    sender = RecordingSender()
    send_digest(sessions, settings, sender)
    data = bounce_of(sender.sent[0], "to_from_address.eml", verp="news@courier.example")
    maildir(tmp_path / "b", data)
    summary = process_mailbox(sessions, settings, MaildirBox(tmp_path / "b"))
    assert summary == Summary(read=1, hard=1, suppressed=1)
    assert state(sessions, ANA) == (True, SubscriberStatus.BOUNCED, 1)


def test_made_up_bounces_suppress_nobody(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    readers_with_a_digest(sessions, ANA, BEN)
    sender = RecordingSender()
    send_digest(sessions, settings, sender)
    (to_ana,) = sender.to(ANA)
    (to_ben,) = sender.to(BEN)
    ana_id = delivery_id(sessions, ANA)
    # Guessed: ana's delivery id with no (or a wrong) signature, her unsigned Message-ID.
    guessed = bounce(
        "hard_5.1.1.eml",
        verp=f"bounces+{ana_id}-000000000000@courier.example",
        reader=ANA,
        message_id=f"<d.1.{ana_id}@courier.example>",
    )
    unsigned = guessed.replace(b"-000000000000@", b"@")
    # Ben forges a bounce "for ana" from his own digest: it can only be about Ben.
    ben_forges = bounce(
        "hard_5.1.1.eml", verp=to_ben.mail_from_envelope, reader=ANA, message_id=to_ana.message_id
    )
    maildir(tmp_path / "b", guessed, unsigned, ben_forges)
    summary = process_mailbox(sessions, settings, MaildirBox(tmp_path / "b"))
    assert summary == Summary(read=3, hard=1, unmatched=2, suppressed=1)
    assert state(sessions, ANA)[:2] == (False, SubscriberStatus.ACTIVE)
    assert state(sessions, BEN)[:2] == (True, SubscriberStatus.BOUNCED)


def delivery_id(sessions: Sessions, email: str) -> int:
    with sessions() as s:
        found = s.scalar(select(Delivery.id).join(Subscriber).where(Subscriber.email == email))
        assert found is not None
        return found


# -- IMAP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("move", [True, False], ids=["MOVE", "COPY+EXPUNGE"])
def test_bounces_are_read_from_an_imap_mailbox_once(
    sessions: Sessions, settings: Settings, imap_server: ImapServer, move: bool
) -> None:
    readers_with_a_digest(sessions, ANA, BEN)
    sender = RecordingSender()
    send_digest(sessions, settings, sender)
    imap_server.state.move = move
    imap_server.state.deliver(bounce_of(sender.to(ANA)[0], "hard_5.1.1.eml"))
    imap_server.state.deliver(bounce_of(sender.to(BEN)[0], "out_of_office.eml"))

    box = ImapBox(imap_server.url())
    try:
        summary = process_mailbox(sessions, settings, box)
    finally:
        box.close()
    assert summary == Summary(read=2, hard=1, ignored=1, suppressed=1)
    assert state(sessions, ANA)[:2] == (True, SubscriberStatus.BOUNCED)
    boxes = imap_server.state.boxes
    assert boxes["INBOX"] == []
    assert [m.flags for m in boxes["processed"]] == [{"\\Seen"}, {"\\Seen"}]

    box = ImapBox(imap_server.url())
    try:
        assert process_mailbox(sessions, settings, box).read == 0
    finally:
        box.close()


def test_a_wrong_imap_password_or_mailbox_is_a_clear_error(imap_server: ImapServer) -> None:
    with pytest.raises(MailboxError, match="AUTHENTICATIONFAILED"):
        ImapBox(imap_server.url().replace("s3cret", "guess"))
    with pytest.raises(MailboxError, match="no mailbox 'Bounces'"):
        ImapBox(imap_server.url("Bounces"))
    with pytest.raises(MailboxError, match="not an imap"):
        ImapBox("https://example.org/INBOX")


# -- the command -----------------------------------------------------------------------------


def cli_env(engine: Engine, var_dir: Path, **more: str) -> dict[str, str]:
    return service_env(
        var_dir,
        database_url=engine.url.render_as_string(hide_password=False),
        secret_key=SECRET,
        base_url="https://courier.example",
        mail_from="The Harbour Courier <news@courier.example>",
        bounce_address="bounces@courier.example",
        **more,
    )


@pytest.mark.process
def test_bounces_process_reads_a_maildir_once(
    engine: Engine, sessions: Sessions, settings: Settings, var_dir: Path
) -> None:
    readers_with_a_digest(sessions, ANA, BEN)
    sender = RecordingSender()
    send_digest(sessions, settings, sender)
    (to_ana,) = sender.to(ANA)
    (to_ben,) = sender.to(BEN)
    hard = bounce_of(to_ana, "hard_5.1.1.eml")
    path = var_dir / "Maildir"
    box = maildir(
        path,
        hard,
        bounce_of(to_ben, "out_of_office.eml"),
        bounce_of(to_ben, "delayed_only.eml"),
        bounce(  # guessed: no signature we made, and a Message-ID that is not ours
            "hard_5.1.1.eml",
            verp="bounces+1-000000000000@courier.example",
            reader=ANA,
            message_id="<d.1.1@courier.example>",
        ),
    )
    env = cli_env(engine, var_dir)

    first = run_cli(env, "bounces", "process", "--maildir", str(path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        "read 4: bounces hard 1 soft 0, delayed 1 (not counted), ignored 1, unmatched 1, "
        "seen before 0, suppressed 1"
    )
    assert state(sessions, ANA)[:2] == (True, SubscriberStatus.BOUNCED)
    assert state(sessions, BEN)[:2] == (False, SubscriberStatus.ACTIVE)
    assert box.keys() == []
    assert len(box.get_folder("processed")) == 4

    again = run_cli(env, "bounces", "process", "--maildir", str(path))
    assert again.stdout.startswith("read 0:"), again.stderr
    box.add(hard)  # the same bounce delivered twice: stored once
    replay = run_cli(env, "bounces", "process", "--maildir", str(path))
    assert "hard 0" in replay.stdout
    assert "seen before 1" in replay.stdout
    assert state(sessions, ANA)[2] == 1

    neither = run_cli(env, "bounces", "process")
    assert neither.returncode == 2
    assert "give one of --maildir PATH or --imap URL" in neither.stderr
    not_maildir = run_cli(env, "bounces", "process", "--maildir", str(var_dir / "nothing"))
    assert not_maildir.returncode == 2
    assert "is not a Maildir" in not_maildir.stderr


# -- over SMTP, end to end -------------------------------------------------------------------


@pytest.mark.smtp
def test_the_envelope_sender_is_the_deliverys_verp_address_over_smtp(
    sessions: Sessions, settings: Settings, start_server: Callable[..., Server]
) -> None:
    readers_with_a_digest(sessions, ANA)
    server = start_server()
    sender = SmtpSender(server.url, timeout=5.0)
    try:
        assert send_digest(sessions, settings, sender).counts["sent"] == 1
    finally:
        sender.close()
    (envelope,) = server.handler.received
    ana_delivery = delivery_id(sessions, ANA)
    assert envelope.mail_from == DeliveryIds(settings).bounce_address(ana_delivery)
    assert str(envelope.mail_from).startswith(f"bounces+{ana_delivery}-")
    assert envelope.rcpt_tos == [ANA]
    assert isinstance(envelope.content, bytes)
    received = message_from_bytes(envelope.content)
    assert received["From"] == "The Harbour Courier <news@courier.example>"  # unchanged
    assert received["Return-Path"] is None
    with sessions() as s:
        assert s.get(Delivery, ana_delivery).message_id == received["Message-ID"]  # type: ignore[union-attr]


@pytest.mark.smtp
def test_without_a_bounce_address_the_envelope_sender_is_mail_from(
    sessions: Sessions, settings: Settings, start_server: Callable[..., Server]
) -> None:
    readers_with_a_digest(sessions, ANA)
    server = start_server()
    sender = SmtpSender(server.url, timeout=5.0)
    plain = settings.model_copy(update={"bounce_address": ""})
    try:
        send_digest(sessions, plain, sender)
    finally:
        sender.close()
    assert [e.mail_from for e in server.handler.received] == ["news@courier.example"]


@pytest.mark.smtp
@pytest.mark.process
def test_a_bounced_digest_suppresses_the_reader_and_the_next_one_skips_them(
    engine: Engine,
    sessions: Sessions,
    settings: Settings,
    start_server: Callable[..., Server],
    var_dir: Path,
) -> None:
    readers_with_a_digest(sessions, ANA, BEN)
    server = start_server()
    sender = SmtpSender(server.url, timeout=5.0)
    tomorrow = NOW + timedelta(days=1)
    try:
        assert send_digest(sessions, settings, sender).counts["sent"] == 2
        with sessions() as s:
            harbour = s.scalar(select(Tag).where(Tag.slug == "harbour"))
            post(s, "Regatta postponed", [harbour], published=tomorrow - timedelta(hours=2))  # type: ignore[list-item]
            s.commit()
        # Tomorrow's digest is planned (both readers queued) before the bounce is read:
        # suppression must hold at send time, not only at plan time.
        tomorrows = plan(sessions, tomorrow)

        # What came back: ana's mailbox does not exist. The bounce goes to the envelope
        # sender her message left with and quotes the Message-ID it carried.
        (to_ana,) = [e for e in server.handler.received if e.rcpt_tos == [ANA]]
        assert isinstance(to_ana.content, bytes)
        dsn = bounce(
            "hard_5.1.1.eml",
            verp=str(to_ana.mail_from),
            reader=ANA,
            message_id=str(message_from_bytes(to_ana.content)["Message-ID"]),
        )
        maildir(var_dir / "Maildir", dsn)
        env = cli_env(engine, var_dir)
        done = run_cli(env, "bounces", "process", "--maildir", str(var_dir / "Maildir"))
        assert done.returncode == 0, done.stderr
        assert "hard 1" in done.stdout
        assert state(sessions, ANA)[:2] == (True, SubscriberStatus.BOUNCED)

        report = send(sessions, settings, sender, tomorrows, tomorrow)
    finally:
        sender.close()
    assert (report.counts["sent"], report.counts["suppressed"]) == (1, 1)
    assert [e.rcpt_tos for e in server.handler.received[2:]] == [[BEN]]
    with sessions() as s:
        ana_deliveries = s.scalars(
            select(Delivery.status)
            .join(Subscriber)
            .where(Subscriber.email == ANA)
            .order_by(Delivery.id)
        ).all()
    assert ana_deliveries == [DeliveryStatus.SENT, DeliveryStatus.SUPPRESSED]
