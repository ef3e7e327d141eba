"""SMTP bounces: read the bounce mailbox, find each bounce's delivery, record the events.

A bounce is about one of our messages, and each message has one recipient, so a bounce names
one delivery: by the signed VERP address it was sent back to (`BOUNCE_ADDRESS`), else by our
signed Message-ID quoted inside it (a server that bounces to the From address). Both are
signed (`service.mail.verp`), so a made-up bounce cannot name somebody else's delivery; one
that names none is counted as unmatched and changes nothing, whatever addresses it lists.

Every recipient the bounce reports as failed becomes a `MailEvent` for the delivery's reader:
the reported address may be an alias or a forward of the one we mailed, and the mail to the
reader is what failed. `policy.record` stores each once (id: the bounce's Message-ID and the
recipient) and applies the suppression policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.bounces import dsn
from service.bounces.events import EventKind, MailEvent
from service.bounces.mailboxes import Mailbox
from service.bounces.policy import record
from service.config import Settings
from service.mail.verp import DeliveryIds
from service.models import Delivery, Subscriber

__all__ = ["PROVIDER", "Summary", "events_for", "find_delivery", "process_mailbox"]

log = logging.getLogger(__name__)

PROVIDER = "smtp"


@dataclass
class Summary:
    """What one pass over the bounce mailbox found."""

    read: int = 0  # messages read
    hard: int = 0  # hard-bounce events stored
    soft: int = 0  # soft-bounce events stored
    delayed: int = 0  # recipients only delayed: not counted
    ignored: int = 0  # messages that are no bounce (auto-replies and the like)
    unmatched: int = 0  # failed recipients of bounces naming no delivery of ours
    replayed: int = 0  # events stored by an earlier run
    suppressed: int = 0  # addresses put on the suppression list
    unreadable: int = 0  # messages that could not be parsed; left in the mailbox

    def describe(self) -> str:
        return (
            f"read {self.read}: bounces hard {self.hard} soft {self.soft}, "
            f"delayed {self.delayed} (not counted), ignored {self.ignored}, "
            f"unmatched {self.unmatched}, seen before {self.replayed}, "
            f"suppressed {self.suppressed}"
            + (f", unreadable {self.unreadable}" if self.unreadable else "")
        )


def find_delivery(session: Session, settings: Settings, report: dsn.Report) -> Delivery | None:
    """The delivery the bounce is about: by VERP address, else by our Message-ID in it."""
    ids = DeliveryIds(settings)
    for address in report.sent_to:
        delivery_id = ids.from_address(address)
        if delivery_id is not None:
            delivery = session.get(Delivery, delivery_id)
            if delivery is not None:
                return delivery
    for message_id in report.original_ids:
        found = ids.from_message_id(message_id)
        if found is not None:
            delivery = session.get(Delivery, found[1])
            if delivery is not None and delivery.edition_id == found[0]:
                return delivery
    return None


def events_for(
    session: Session, settings: Settings, report: dsn.Report
) -> tuple[list[MailEvent], Delivery | None]:
    """The events a bounce makes (none when it names no delivery of ours), and its delivery."""
    if not report.failures:
        return [], None
    delivery = find_delivery(session, settings, report)
    if delivery is None:
        return [], None
    reader = session.get(Subscriber, delivery.subscriber_id)
    return [
        MailEvent(
            provider=PROVIDER,
            event_id=report.event_id(failure),
            kind=failure.kind,
            email=reader.email if reader is not None else failure.address,
            occurred_at=report.date,
            delivery_id=delivery.id,
            message_id=delivery.message_id,
            detail=failure.detail,
            payload={
                "bounce_message_id": report.message_id,
                "reported_recipient": failure.address,
                "status": failure.status,
                "diagnostic": failure.diagnostic,
                "sent_to": report.sent_to[:5],
            },
        )
        for failure in report.failures
    ], delivery


def process_mailbox(sessions: Callable[[], Session], settings: Settings, box: Mailbox) -> Summary:
    """Read every waiting message, record what it says, and move it to `processed`.

    Each message is recorded in its own transaction, committed before the message is moved,
    so an interrupted run loses nothing and a rerun counts nothing twice.
    """
    summary = Summary()
    for key, data in box.messages():
        summary.read += 1
        try:
            report = dsn.read(data)
        # flufl.bounce's heuristic detectors are run on anything that arrives; a message that
        # breaks one is left where it is for a person to look at, and the rest still get read.
        except Exception:
            log.exception("unreadable message in the bounce mailbox", extra={"key": key})
            summary.unreadable += 1
            continue
        summary.delayed += len(report.delayed)
        if not report.failures:
            summary.ignored += 0 if report.delayed else 1
        else:
            with sessions() as session:
                events, delivery = events_for(session, settings, report)
                if delivery is None:
                    summary.unmatched += len(report.failures)
                for event in events:
                    done = record(session, [event])
                    summary.replayed += done.replayed
                    summary.suppressed += done.suppressed
                    if done.stored:
                        summary.hard += event.kind == EventKind.HARD_BOUNCE
                        summary.soft += event.kind == EventKind.SOFT_BOUNCE
                session.commit()
        box.done(key)
    return summary
