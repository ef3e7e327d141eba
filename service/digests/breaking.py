"""Breaking news: an editor's send of one post to every reader who follows its tags.

One edition per post (key ``breaking:<post id>``): the first trigger creates it, plans its
readers in chunks and hands the batches to ``dispatch`` (the workers' `priority` queue); a
second trigger returns the same edition and sends nothing. The dry run counts the very set
`planning.breaking_audience` defines, the one the trigger plans, and renders the mail for a
placeholder reader, so a preview carries nobody's personal links.

    BreakingError
     ├── PostNotFound    no post with that id or URL
     └── PostUntagged    the post has no tags, so nobody follows it
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.digests.compose import Composer
from service.digests.content import Reader, posts_for, tag_names
from service.digests.planning import (
    PLAN_CHUNK,
    Dispatch,
    breaking_audience,
    breaking_key,
    plan_breaking,
)
from service.digests.sending import finish_if_done
from service.feeds.normalize import canonical_url
from service.models import (
    Delivery,
    Edition,
    EditionKind,
    EditionStatus,
    Post,
    Subscriber,
    post_tags,
)

__all__ = [
    "SUBJECT_MAX",
    "BreakingError",
    "BreakingPreview",
    "BreakingSend",
    "PostNotFound",
    "PostUntagged",
    "find_post",
    "preview_breaking",
    "trigger_breaking",
]

SUBJECT_MAX = 200
SAMPLE_ADDRESS = "reader@example.invalid"  # the placeholder reader a preview is rendered for


class BreakingError(Exception):
    """A breaking send that cannot be made; ``str()`` says why, fit for an editor."""


class PostNotFound(BreakingError):
    pass


class PostUntagged(BreakingError):
    pass


@dataclass(frozen=True)
class BreakingPreview:
    """What a trigger would do now: how many readers it reaches and the mail they get."""

    post_id: int
    post_title: str
    post_url: str
    readers: int  # mail the trigger would send now (0 when the edition exists already)
    subject: str
    html: str
    text: str
    edition_id: int | None  # the post's edition when it was triggered before


@dataclass(frozen=True)
class BreakingSend:
    edition_id: int
    created: bool  # False: the post's edition existed, and this trigger sent nothing new
    planned: int  # deliveries this trigger planned
    status: str  # the edition's status after planning


def find_post(session: Session, post: int | str) -> Post:
    """The post with this id, or at this URL (as given or in its canonical spelling)."""
    found: Post | None = None
    if isinstance(post, int) or re.fullmatch(r"[0-9]{1,18}", post.strip()):
        number = int(post)
        found = session.get(Post, number) if 0 < number < 2**31 else None
    else:
        url = post.strip()
        found = session.scalar(select(Post).where(Post.url == url))
        if found is None and url.lower().startswith(("http://", "https://")):
            found = session.scalar(select(Post).where(Post.url == canonical_url(url)))
    if found is None:
        raise PostNotFound(f"no post {post!r}: give a post id or its URL")
    return found


def clean_subject(subject: str | None) -> str | None:
    """One line, at most `SUBJECT_MAX` characters; blank means the template's own."""
    if subject is None:
        return None
    line = " ".join(subject.split())
    if len(line) > SUBJECT_MAX:
        raise BreakingError(f"the subject is longer than {SUBJECT_MAX} characters")
    return line or None


def preview_breaking(
    session: Session,
    settings: Settings,
    post: int | str,
    subject: str | None = None,
    *,
    now: datetime | None = None,
) -> BreakingPreview:
    """The dry run: the readers a trigger would mail now, and the mail, nothing written."""
    found = find_post(session, post)
    subject = clean_subject(subject)
    who = breaking_audience(session, found.id)
    if who is None:
        raise PostUntagged(f"post {found.id} has no tags: nobody follows it")
    edition = _edition(session, found.id)
    readers = 0
    if edition is None or _plans_again(edition):
        query = select(func.count()).select_from(Subscriber).where(who)
        if edition is not None:
            query = query.where(
                ~exists().where(
                    Delivery.edition_id == edition.id, Delivery.subscriber_id == Subscriber.id
                )
            )
        readers = session.scalar(query) or 0
    if edition is not None and subject is None:
        subject = edition.subject
    rendered = _render(session, settings, found, subject, now or datetime.now(UTC))
    return BreakingPreview(
        post_id=found.id,
        post_title=found.title,
        post_url=found.url,
        readers=readers,
        subject=rendered[0],
        html=rendered[1],
        text=rendered[2],
        edition_id=edition.id if edition is not None else None,
    )


def trigger_breaking(
    session: Session,
    post: int | str,
    dispatch: Dispatch,
    subject: str | None = None,
    *,
    chunk: int = PLAN_CHUNK,
) -> BreakingSend:
    """Create the post's edition and plan it (batches go to ``dispatch`` after each chunk
    commits), or return the edition a previous trigger made, sending nothing new."""
    found = find_post(session, post)
    subject = clean_subject(subject)
    existing = _edition(session, found.id)
    if existing is not None and not _plans_again(existing):
        return BreakingSend(existing.id, False, 0, str(existing.status))
    planned = plan_breaking(session, found.id, dispatch, chunk, subject=subject)
    if planned is None:
        raise PostUntagged(f"post {found.id} has no tags: nobody follows it")
    edition = session.get(Edition, planned.edition_id)
    assert edition is not None
    if planned.deliveries == 0:  # nobody to mail: the edition is done at once
        _finish_empty(session, edition)
    session.refresh(edition)
    return BreakingSend(edition.id, existing is None, planned.deliveries, str(edition.status))


def _edition(session: Session, post_id: int) -> Edition | None:
    return session.scalar(select(Edition).where(Edition.key == breaking_key(post_id)))


def _plans_again(edition: Edition) -> bool:
    """An edition whose first trigger died (or is still running) before planning anybody:
    planning it again is safe (the ledger is unique per reader), sending nothing twice."""
    return edition.status == EditionStatus.PLANNED and edition.planned == 0


def _finish_empty(session: Session, edition: Edition) -> None:
    finish_if_done(session, edition.id, datetime.now(UTC))
    session.commit()


def _render(
    session: Session, settings: Settings, post: Post, subject: str | None, now: datetime
) -> tuple[str, str, str]:
    """(subject, html, text) of the mail, for a reader who follows every tag of the post."""
    tag_ids = frozenset(
        session.scalars(select(post_tags.c.tag_id).where(post_tags.c.post_id == post.id))
    )
    edition = Edition(
        id=0, key=breaking_key(post.id), kind=EditionKind.BREAKING, post_id=post.id, subject=subject
    )
    sample = Reader(0, 0, SAMPLE_ADDRESS, "UTC", "active", False, tag_ids)
    posts = posts_for(session, edition, [sample], now)[0]
    composer = Composer(settings, edition, None, tag_names(session, tag_ids), now=now)
    base = settings.base_url
    rendered = composer.preview(
        sample,
        posts,
        {
            "unsubscribe_url": f"{base}/unsubscribe/preview",
            "preferences_url": f"{base}/preferences/preview",
        },
    )
    return rendered.subject, rendered.html, rendered.text
