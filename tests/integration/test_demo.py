"""`newsletter demo`: a fictional portal's tag feeds, registered as sources, once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import demo
from service.config import Settings
from service.feeds.parse import parse_feed
from service.models import Source, Tag


def test_demo_feeds_are_real_feeds_with_overlapping_tags(tmp_path: Path) -> None:
    paths = demo.write_feeds(Settings(var_dir=tmp_path))
    assert len(paths) == len(demo.TAGS)
    links_by_feed = {p.stem: {e.link for e in parse_feed(p.read_bytes()).entries} for p in paths}
    assert all(links_by_feed.values())
    every = [link for links in links_by_feed.values() for link in links]
    assert len(every) > len(set(every))  # some posts sit in two tag feeds


def test_demo_registers_a_source_per_tag_once(db: Session, tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, base_url="http://localhost:8123")
    assert demo.register_sources(db, settings) == len(demo.TAGS)
    assert demo.register_sources(db, settings) == 0
    urls = set(db.scalars(select(Source.url)))
    assert "http://localhost:8123/demo/feeds/transport.xml" in urls
    assert db.scalars(select(Tag.name).where(Tag.slug == "city-hall")).one() == "City Hall"


def test_up_points_the_demo_sources_at_its_own_address(db: Session, tmp_path: Path) -> None:
    demo.register_sources(db, Settings(var_dir=tmp_path, base_url="http://localhost:8000"))
    assert demo.point_sources_at(db, "http://localhost:8123") == len(demo.TAGS)
    assert all(":8123/demo/feeds/" in url for url in db.scalars(select(Source.url)))
