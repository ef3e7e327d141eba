"""Digest bodies from a cached layout: the same mail a full render in the reader's zone gives."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from itsdangerous import TimestampSigner

from service.config import Settings
from service.digests import compose
from service.digests.compose import Composer
from service.digests.content import PostView, Reader
from service.mail import Rendered, render
from service.models import Cadence, Edition, EditionKind, Schedule

NOW = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)
ZONES = ("Europe/Paris", "Europe/Berlin", "Asia/Kolkata", "America/New_York", "UTC")
TAGS = {1: ("World", "world"), 2: ("Harbour", "harbour")}
SETTINGS = Settings(
    _env_file=None,
    secret_key="test-secret-key-0123456789abcdef",
    base_url="https://courier.example",
    mail_from="The Harbour Courier <news@courier.example>",
)
POSTS = [
    PostView(
        id=n,
        title=f"Story {n} & more",
        url=f"https://courier.example/story-{n}",
        excerpt="The ferry timetable changes again. " * 6,
        author="Nell Harper" if n % 2 else None,
        when=NOW - timedelta(hours=n, minutes=7 * n),
        first_seen_at=NOW - timedelta(hours=n),
        tag_ids=frozenset({1, 2} if n % 3 == 0 else {1 + n % 2}),
    )
    for n in range(1, 9)
]


@pytest.fixture(autouse=True)
def same_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signed links carry the second they were made in: a layout's message and the full render
    it is compared with must not straddle a second (they did, now and then, on a busy machine)."""
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(NOW.timestamp()))


@pytest.fixture(autouse=True)
def fresh_process_state() -> Iterator[None]:
    compose._layouts.clear()
    compose._checked.clear()
    yield
    compose._layouts.clear()
    compose._checked.clear()


def composer() -> Composer:
    edition = Edition(id=7, key="digest:1:2026-03-29", kind=EditionKind.DIGEST, schedule_id=1)
    schedule = Schedule(id=1, name="morning", cadence=Cadence.DAILY, template="digest")
    return Composer(SETTINGS, edition, schedule, TAGS, now=NOW)


def reader(n: int, zone: str, tags: frozenset[int] = frozenset({1, 2})) -> Reader:
    return Reader(n, 100 + n, f"reader{n}@example.com", zone, "active", False, tags)


def parts(data: bytes) -> tuple[str, str, str]:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    text, html = (str(p.get_content()) for p in msg.iter_parts())
    return str(msg["Subject"]), text, html


def rendered_directly(monkeypatch: pytest.MonkeyPatch, n: int, zone: str) -> tuple[str, ...]:
    """The message as a full render in ``zone`` makes it (layouts turned off)."""
    with monkeypatch.context() as m:
        m.setitem(compose._checked, "digest", False)
        return parts(composer().message(reader(n, zone), POSTS).data)


def test_each_zone_gets_what_a_full_render_in_that_zone_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = composer()
    for n, zone in enumerate(ZONES):
        got = parts(batch.message(reader(n, zone), POSTS).data)
        assert got == rendered_directly(monkeypatch, n, zone), zone
    # One layout render and the one check against a full render, for every zone.
    assert batch.renders == 2


def test_a_layout_serves_later_batches_and_other_editions() -> None:
    composer().message(reader(1, "Europe/Paris"), POSTS)
    later = composer()
    later.edition.id = 8
    for n, zone in enumerate(ZONES):
        later.message(reader(n, zone), POSTS)
    assert later.renders == 0
    other_tags = composer()
    other_tags.message(reader(1, "UTC", frozenset({2})), POSTS)
    assert other_tags.renders == 1


def test_a_template_that_changes_times_is_rendered_per_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = render

    def shouting(name: str, context: Mapping[str, Any]) -> Rendered:
        # As a template printing `post.time|upper` would: the marker would come out changed.
        groups = [
            {**g, "posts": [{**p, "time": p["time"].upper()} for p in g["posts"]]}
            for g in context["groups"]
        ]
        return real(name, {**context, "groups": groups})

    monkeypatch.setattr(compose, "render", shouting)
    batch = composer()
    for n, zone in enumerate(ZONES):
        got = parts(batch.message(reader(n, zone), POSTS).data)
        assert got == rendered_directly(monkeypatch, n, zone), zone
        assert re.search(r"(SAT|SUN) \d\d MAR, \d\d:\d\d [A-Z]", got[1]), got[1]
    assert compose._checked == {"digest": False}
    # The layout and its check, then a render per zone; Berlin shows Paris's times (CET).
    assert batch.renders == 2 + len(ZONES) - 2
    assert not compose._layouts
