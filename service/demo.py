"""`newsletter demo`: a fictional portal's tag feeds, served by this service and polled by it.

Everything here is invented: "The Harbour Courier" of the fictional city of Lindqvist. The
feeds are written under `VAR_DIR/demo/feeds`, served at `/demo/feeds/{tag}.xml` and registered
as sources, so a fresh `newsletter up` shows real polling. Running it twice adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.etree import ElementTree as ET

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Settings
from service.feeds.store import tags_for
from service.models import Cadence, Schedule, Source, Tag

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


def feed_dir(settings: Settings) -> Path:
    return settings.var_dir / "demo" / "feeds"


def write_feeds(settings: Settings, now: datetime | None = None) -> list[Path]:
    """One RSS 2.0 feed per tag, as a WordPress-style portal serves them; posts overlap."""
    now = now or datetime.now(UTC)
    folder = feed_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for slug, name in TAGS.items():
        rss = ET.Element("rss", version="2.0")
        channel = ET.SubElement(rss, "channel")
        for key, text in (
            ("title", f"The Harbour Courier: {name}"),
            ("link", f"{SITE}/tag/{slug}/"),
            ("description", f"Posts tagged {name}"),
            ("ttl", "5"),
        ):
            ET.SubElement(channel, key).text = text
        for post in (p for p in POSTS if slug in p.tags):
            item = ET.SubElement(channel, "item")
            url = f"{SITE}/{post.slug}/"
            ET.SubElement(item, "title").text = post.title
            ET.SubElement(item, "link").text = url
            ET.SubElement(item, "guid", isPermaLink="true").text = url
            ET.SubElement(item, "description").text = f"<p>{post.summary}</p>"
            ET.SubElement(item, "pubDate").text = format_datetime(
                now - timedelta(hours=post.hours_ago), usegmt=True
            )
            for tag in post.tags:
                ET.SubElement(item, "category").text = TAGS[tag]
        path = folder / f"{slug}.xml"
        path.write_bytes(ET.tostring(rss, encoding="utf-8", xml_declaration=True))
        written.append(path)
    return written


def register_sources(session: Session, settings: Settings) -> int:
    """A source per demo feed, served by this service at /demo/feeds/; returns how many were new."""
    added = 0
    for slug in TAGS:
        url = f"{settings.base_url}/demo/feeds/{slug}.xml"
        if session.scalar(select(Source.id).where(Source.url == url)) is None:
            session.add(Source(url=url, tags=tags_for(session, [slug]), interval_seconds=300))
            added += 1
    for tag in session.scalars(select(Tag).where(Tag.slug.in_(TAGS))):
        tag.name = TAGS[tag.slug]
    register_schedules(session)
    session.flush()
    return added


def register_schedules(session: Session) -> None:
    """A daily digest at 07:00 and a weekly one on Monday, each reader's own zone and hour."""
    from service.digests.schedules import add_schedule

    existing = set(session.scalars(select(Schedule.name)))
    if "daily" not in existing:
        add_schedule(session, "daily", Cadence.DAILY, at=time(7, 0))
    if "weekly" not in existing:
        add_schedule(session, "weekly", Cadence.WEEKLY, at=time(7, 0), weekday=0)


def point_sources_at(session: Session, base_url: str) -> int:
    """Re-point the demo's sources at ``base_url``: `up` may serve on another port than the
    one `demo` was run for. Returns how many moved."""
    moved = 0
    for source in session.scalars(select(Source).where(Source.url.like("%/demo/feeds/%.xml"))):
        url = f"{base_url}/demo/feeds/{source.url.rsplit('/', 1)[1]}"
        if source.url != url:
            source.url, source.next_poll_at, source.consecutive_errors = url, None, 0
            moved += 1
    session.flush()
    return moved
