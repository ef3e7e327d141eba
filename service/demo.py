"""`newsletter demo`: a fictional portal's tags and posts, so a fresh install has something to show.

Everything here is invented: "The Harbour Courier" of the fictional city of Lindqvist. Seeding
is idempotent (by tag slug and post URL), so running it twice adds nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Post, Tag

SITE = "https://harbour-courier.example"

TAGS = {
    "city-hall": "City Hall",
    "transport": "Transport",
    "economy": "Economy",
    "climate": "Climate",
    "culture": "Culture",
    "elections": "Elections",
}


@dataclass(frozen=True)
class DemoPost:
    slug: str
    title: str
    summary: str
    tags: tuple[str, ...]
    hours_ago: int


POSTS = (
    DemoPost(
        "tram-line-approved",
        "Council approves the river district tram line",
        "After two years of hearings, councillors voted 31 to 12 to build the line.",
        ("city-hall", "transport"),
        2,
    ),
    DemoPost(
        "harbour-wages",
        "Harbour workers and operators agree on a three-year wage deal",
        "The agreement ends a month of overtime bans at the container terminal.",
        ("economy",),
        5,
    ),
    DemoPost(
        "flood-barrier-test",
        "Flood barrier closes for its first full test",
        "Engineers say the gates sealed in eleven minutes, ahead of the design target.",
        ("climate", "city-hall"),
        9,
    ),
    DemoPost(
        "budget-gap",
        "Budget office warns of a gap in next year's accounts",
        "Lower port fees and higher energy costs leave the city short, the office says.",
        ("economy", "city-hall"),
        20,
    ),
    DemoPost(
        "night-buses",
        "Night buses return to the northern suburbs",
        "Three routes resume on Friday after drivers' schedules were reworked.",
        ("transport",),
        26,
    ),
    DemoPost(
        "mayor-debate",
        "Mayoral candidates clash over housing in first debate",
        "The four candidates agreed on little beyond the need for more homes.",
        ("elections", "city-hall"),
        30,
    ),
    DemoPost(
        "festival-lineup",
        "Lantern festival announces its largest programme yet",
        "Sixty events across twelve venues, including a floating stage on the canal.",
        ("culture",),
        40,
    ),
    DemoPost(
        "cycle-counts",
        "Cycle counters record a third more trips than last year",
        "The new bridge path accounts for most of the growth, planners say.",
        ("transport", "climate"),
        52,
    ),
    DemoPost(
        "polling-stations",
        "Seven new polling stations for the spring vote",
        "The election office moves stations out of schools to avoid closing classes.",
        ("elections",),
        75,
    ),
    DemoPost(
        "startup-hub",
        "Old fish market reopens as a workspace for start-ups",
        "The renovated hall offers two hundred desks at below-market rents.",
        ("economy", "culture"),
        100,
    ),
    DemoPost(
        "tree-planting",
        "Volunteers plant four thousand trees along the ring road",
        "The project aims to cut summer street temperatures by two degrees.",
        ("climate",),
        130,
    ),
    DemoPost(
        "library-hours",
        "Central library to open on Sundays from March",
        "A pilot funded by the culture budget will run for a year.",
        ("culture", "city-hall"),
        160,
    ),
)


def seed(session: Session, now: datetime | None = None) -> tuple[int, int]:
    """Add the demo tags and posts that are missing; returns (tags added, posts added)."""
    now = now or datetime.now(UTC)
    tags = {t.slug: t for t in session.scalars(select(Tag).where(Tag.slug.in_(TAGS)))}
    added_tags = 0
    for slug, name in TAGS.items():
        if slug not in tags:
            tags[slug] = Tag(slug=slug, name=name)
            session.add(tags[slug])
            added_tags += 1
    urls = {f"{SITE}/{p.slug}/" for p in POSTS}
    existing = set(session.scalars(select(Post.url).where(Post.url.in_(urls))))
    added_posts = 0
    for item in POSTS:
        url = f"{SITE}/{item.slug}/"
        if url in existing:
            continue
        summary = f"<p>{item.summary}</p>"
        session.add(
            Post(
                url=url,
                guid=url,
                title=item.title,
                summary_html=summary,
                author="Courier staff",
                published_at=now - timedelta(hours=item.hours_ago),
                first_seen_at=now,
                content_hash=hashlib.sha256(f"{item.title}\n{summary}".encode()).hexdigest(),
                tags=[tags[t] for t in item.tags],
            )
        )
        added_posts += 1
    session.flush()
    return added_tags, added_posts
