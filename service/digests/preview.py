"""Every email template rendered with invented sample data, for the console and a test send.

A sample goes through the code real mail goes through: digests, instant and breaking mail
through the `Composer` (render once, personalize), the confirmation and preferences-link mails
through `build_reader_mail`, the test message through `build_test_message`; the preview is
read back from the finished message, as a mail client would show it. The sample is a reader
in Europe/Kyiv following two tags of The Harbour Courier (the fictional portal of `newsletter
demo`); nobody real is in it, and its links carry placeholder tokens that open nothing.

    sample(settings, "digest") -> Sample(name, kind, subject, text, html, message)
    sample_as_test(settings, "digest", "ops@example.org") -> OutgoingMessage  ("[TEST] " subject)
"""

from __future__ import annotations

import email
import email.policy
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from service.config import Settings
from service.demo import POSTS, SITE, TAGS
from service.digests.compose import Composer
from service.digests.content import PostView, Reader
from service.mail import OutgoingMessage, Rendered, build_message, make_message_id
from service.mail.message import dkim_signer_from_settings
from service.mail.render import template_names
from service.mail.senders import Sender
from service.mail.test_message import build_test_message
from service.models import (
    Cadence,
    Edition,
    EditionKind,
    Schedule,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Tag,
)
from service.readers.mail import ReaderMail, build_reader_mail
from service.readers.tokens import Purpose, TokenData, Tokens

__all__ = [
    "SAMPLE_READER",
    "TEST_PREFIX",
    "Sample",
    "UnknownTemplate",
    "sample",
    "sample_as_test",
    "send_test",
    "template_kind",
    "templates",
]

TEST_PREFIX = "[TEST] "
SAMPLE_READER = "olena.sample@example.org"  # example.org: reserved, never anyone's inbox
SAMPLE_ZONE = "Europe/Kyiv"
SAMPLE_TAGS = ("transport", "climate")
_AUTHORS = ("Mira Halvorsen", "Tomas Eriksen", None)


class UnknownTemplate(LookupError):
    """No message folder of that name under templates/email/."""


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # digest | instant | breaking | confirm | manage | test
    subject: str
    text: str
    html: str
    message: OutgoingMessage  # as it would be sent to the sample reader


class SampleTokens(Tokens):
    """Placeholder tokens: a sample's links name the page but no reader, and open nothing."""

    def make(self, purpose: Purpose, data: TokenData) -> str:
        return f"sample-{purpose}-link"


def template_kind(name: str) -> str:
    """What a template folder is used for: its own kind, else a digest layout (schedules may
    name any folder as their template)."""
    if name in {"instant", "breaking", "confirm", "manage", "test"}:
        return name
    return "digest"


def templates() -> list[tuple[str, str]]:
    """Every message folder that can be previewed, with its kind."""
    return [(name, template_kind(name)) for name in template_names()]


def sample(settings: Settings, name: str, *, now: datetime | None = None) -> Sample:
    """Render template ``name`` with the sample data, through the path real mail takes."""
    if name not in template_names():
        raise UnknownTemplate(name)
    now = now or datetime.now(UTC)
    kind = template_kind(name)
    tokens = SampleTokens(settings)
    message: OutgoingMessage | None
    if kind in ("confirm", "manage"):
        message = build_reader_mail(settings, tokens, ReaderMail(kind), _reader_row(kind), "sample")
    elif kind == "test":
        message = build_test_message(settings, SAMPLE_READER, now)
    else:
        message = _edition_message(settings, name, kind, tokens, now)
    assert message is not None  # the sample reader is in the state each message needs
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return Sample(
        name=name,
        kind=kind,
        subject=str(parsed["Subject"]),
        text=_part(parsed, "plain"),
        html=_part(parsed, "html"),
        message=message,
    )


def sample_as_test(settings: Settings, name: str, to: str) -> OutgoingMessage:
    """The sample of ``name`` addressed to ``to``, marked as a test in its subject and headers.

    Not bulk mail: it carries no List-Unsubscribe (there is no list to leave), and its links
    are the sample's placeholders.
    """
    shown = sample(settings, name)
    return build_message(
        Rendered(subject=TEST_PREFIX + shown.subject, text=shown.text, html=shown.html),
        to=to,
        mail_from=settings.mail_from,
        message_id=make_message_id("test", secrets.token_hex(8), domain=settings.public_host),
        extra_headers={"X-Newsletter-Test": name},
        signer=dkim_signer_from_settings(settings),
    )


def send_test(sender: Sender, settings: Settings, name: str, to: str) -> str:
    """Send the test of ``name`` to ``to``; the backend's id for it."""
    return sender.send(sample_as_test(settings, name, to))


def _part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body((subtype,))
    assert body is not None
    return str(body.get_content())


def _sample_tags() -> list[Tag]:
    return [Tag(id=i, slug=slug, name=TAGS[slug]) for i, slug in enumerate(SAMPLE_TAGS, 1)]


def _reader_row(kind: str) -> Subscriber:
    """An unsaved reader in the state the confirmation or preferences mail is sent in."""
    pending = kind == "confirm"
    reader = Subscriber(
        id=0,
        email=SAMPLE_READER,
        status=SubscriberStatus.PENDING if pending else SubscriberStatus.ACTIVE,
        timezone=SAMPLE_ZONE,
        confirm_nonce="sample" if pending else None,
    )
    for tag, cadence in zip(_sample_tags(), (Cadence.DAILY, Cadence.WEEKLY), strict=True):
        reader.subscriptions.append(Subscription(tag=tag, cadence=cadence))
    return reader


def _posts(now: datetime) -> list[PostView]:
    ids = {slug: i for i, slug in enumerate(SAMPLE_TAGS, 1)}
    posts = []
    for n, post in enumerate(p for p in POSTS if set(p.tags) & set(SAMPLE_TAGS)):
        when = now - timedelta(hours=post.hours_ago)
        posts.append(
            PostView(
                id=n + 1,
                title=post.title,
                url=f"{SITE}/news/{post.slug}/",
                excerpt=post.summary,
                author=_AUTHORS[n % len(_AUTHORS)],
                when=when,
                first_seen_at=when,
                tag_ids=frozenset(ids[t] for t in post.tags if t in ids),
            )
        )
    return posts


def _edition_message(
    settings: Settings, name: str, kind: str, tokens: Tokens, now: datetime
) -> OutgoingMessage:
    edition = Edition(id=0, key=f"sample:{name}", kind=EditionKind(kind))
    schedule = None
    if kind == "digest":
        schedule = Schedule(id=0, name="sample", cadence=Cadence.DAILY, template=name)
    tags = {t.id: (t.name, t.slug) for t in _sample_tags()}
    posts = _posts(now)
    shown = {"digest": posts, "instant": posts[:2], "breaking": posts[:1]}[kind]
    composer = Composer(settings, edition, schedule, tags, tokens=tokens, now=now)
    reader = Reader(
        delivery_id=0,
        subscriber_id=0,
        email=SAMPLE_READER,
        timezone=SAMPLE_ZONE,
        status=SubscriberStatus.ACTIVE.value,
        paused=False,
        tag_ids=frozenset(tags),
    )
    return composer.message(reader, shown)
