"""normalize: canonical URLs, sanitized summaries, plain titles, GUID and date fallbacks."""

# ruff: noqa: RUF001  # typographic dashes are part of the text under test

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import html as lxml_html

from service.feeds.normalize import (
    SUMMARY_TEXT_LIMIT,
    canonical_url,
    entry_guid,
    normalize_entries,
    normalize_entry,
    plain_text,
    sanitize_html,
)
from service.feeds.parse import parse_feed
from service.feeds.types import FeedEntry, FeedError, Item

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "feeds"
PORTAL = "https://harbourtown-herald.example"
FEED_URL = f"{PORTAL}/tag/harbour/feed/"
NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


def normalize(entry: FeedEntry, site_url: str | None = f"{PORTAL}/tag/harbour/") -> Item | None:
    return normalize_entry(entry, feed_url=FEED_URL, site_url=site_url, now=NOW)


def fixture_items(name: str) -> list[Item | None]:
    feed = parse_feed((FIXTURES / name).read_bytes())
    return [normalize(e, feed.link) for e in feed.entries]


# -- canonical_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Harbourtown-Herald.EXAMPLE/News/", "https://harbourtown-herald.example/News/"),
        ("https://h.example:443/a", "https://h.example/a"),
        ("http://h.example:80/a", "http://h.example/a"),
        ("http://h.example:8080/a", "http://h.example:8080/a"),
        ("https://h.example/a#comments", "https://h.example/a"),
        (
            "https://h.example/a?utm_source=rss&id=7&UTM_Medium=x&fbclid=abc&gclid=1&b=2",
            "https://h.example/a?id=7&b=2",
        ),
        ("https://h.example/a?b=2&a=1", "https://h.example/a?b=2&a=1"),  # order kept
        ("https://h.example/a?utm_campaign=x", "https://h.example/a"),
        ("https://h.example", "https://h.example/"),
        ("https://h.example/паром/", "https://h.example/%D0%BF%D0%B0%D1%80%D0%BE%D0%BC/"),
        ("https://h.example/%d0%bf/a b", "https://h.example/%D0%BF/a%20b"),
        ("  https://h.example/x  ", "https://h.example/x"),
        ("mailto:desk@h.example", "mailto:desk@h.example"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("/2026/03/x/", f"{PORTAL}/tag/harbour/", f"{PORTAL}/2026/03/x/"),
        ("x/", f"{PORTAL}/tag/harbour/", f"{PORTAL}/tag/harbour/x/"),
        ("//cdn.h.example/i.png", PORTAL, "https://cdn.h.example/i.png"),
        ("https://other.example/a", PORTAL, "https://other.example/a"),
    ],
)
def test_canonical_url_against_a_base(url: str, base: str, expected: str) -> None:
    assert canonical_url(url, base) == expected


# -- sanitize_html ------------------------------------------------------------------------------


def test_sanitize_keeps_the_allowlist_and_absolutizes() -> None:
    cleaned = sanitize_html(
        '<h2>Tides</h2><p>See <a href="/tides/" title="Tables">the tables</a>, '
        '<em>today</em>.</p><p><img src="img/tide.png" alt="Tide" width="10" height="5"></p>',
        f"{PORTAL}/2026/03/tides/",
    )
    assert cleaned == (
        "<h2>Tides</h2><p>See "
        f'<a href="{PORTAL}/tides/" title="Tables" rel="noopener noreferrer">the tables</a>, '
        f'<em>today</em>.</p><p><img src="{PORTAL}/2026/03/tides/img/tide.png" alt="Tide" '
        'width="10" height="5"></p>'
    )


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        '<iframe src="https://evil.example/"></iframe>',
        "<style>body{display:none}</style>",
        '<p onclick="alert(1)">x</p>',
        '<img src="x.png" onerror="alert(1)">',
        '<a href="javascript:alert(1)">x</a>',
        '<a href="JaVaScRiPt:alert(1)">x</a>',
        '<a href="java&#x09;script:alert(1)">x</a>',
        '<a href=" javascript:alert(1)">x</a>',
        '<img src="data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=">',
        '<a href="data:text/html,<script>alert(1)</script>">x</a>',
        "<svg><script>alert(1)</script></svg>",
        '<object data="https://evil.example/x.swf"></object>',
        '<form action="https://evil.example/"><input name="pw"></form>',
        '<p style="background:url(javascript:alert(1))">x</p>',
        "<a href='vbscript:msgbox(1)'>x</a>",
    ],
)
def test_sanitize_removes_what_could_run(hostile: str) -> None:
    cleaned = sanitize_html(hostile, PORTAL).lower()
    for danger in ("script", "iframe", "style", "onclick", "onerror", "data:", "object", "form"):
        assert danger not in cleaned, cleaned


def test_sanitize_without_an_absolute_base_drops_relative_links() -> None:
    assert sanitize_html('<a href="/x">x</a>', "not a url") == '<a rel="noopener noreferrer">x</a>'


# -- plain_text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Fish &amp; chips", "Fish & chips"),
        ("<b>Bold</b>   move\n\t here", "Bold move here"),
        ("&lt;b&gt;shown literally&lt;/b&gt;", "<b>shown literally</b>"),
        ("Tides &#8211; today&nbsp;only", "Tides – today only"),  # no-break space collapses too
        ("5 < 6 and 7 > 3", "5 < 6 and 7 > 3"),
        ('Night <script>alert("x")</script>falls', "Night falls"),
        ("<!-- note --> visible", "visible"),
        ("", ""),
    ],
)
def test_plain_text(raw: str, expected: str) -> None:
    assert plain_text(raw) == expected


def test_plain_text_caps_at_a_word() -> None:
    text = plain_text("harbour " * 100, limit=50)
    assert len(text) <= 50
    assert text.endswith("harbour…")


# -- normalize_entry ----------------------------------------------------------------------------


def test_wordpress_items_normalized() -> None:
    first, second, third = fixture_items("rss20_wordpress.xml")
    assert first is not None
    assert second is not None
    assert third is not None
    assert first.url == f"{PORTAL}/2026/03/ferry-timetable/"  # utm_* dropped
    assert first.guid == f"{PORTAL}/?p=1201"
    assert first.title == "Ferry timetable changes & what they mean"
    assert first.summary_html.startswith("<p>The summer timetable starts in April")
    assert "crossings&nbsp;a day. […]" in first.summary_html
    assert first.author == "Mira Quayle"
    assert first.categories == ("Harbour", "Transport")
    assert first.published_at == datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    assert second.published_at == datetime(2026, 3, 13, 17, 5, tzinfo=UTC)
    assert third.url == f"{PORTAL}/2026/03/bridge-repairs/"  # relative, against the site
    assert third.summary_html == "The vote is set for Tuesday <b>evening</b>."


def test_content_hash_is_of_title_and_summary() -> None:
    item = fixture_items("rss20_wordpress.xml")[0]
    assert item is not None
    expected = hashlib.sha256(f"{item.title}\n{item.summary_html}".encode()).hexdigest()
    assert item.content_hash == expected
    entry = parse_feed((FIXTURES / "rss20_wordpress.xml").read_bytes()).entries[0]
    edited = normalize(replace(entry, title="Ferry timetable changes (corrected)"))
    assert edited is not None
    assert edited.content_hash != item.content_hash


def test_summary_from_content_when_missing_with_links_against_the_item() -> None:
    entry = parse_feed((FIXTURES / "rss20_wordpress.xml").read_bytes()).entries[0]
    item = normalize(replace(entry, summary=None))
    assert item is not None
    assert f'src="{PORTAL}/wp-content/uploads/2026/03/ferry.jpg"' in item.summary_html
    assert f'href="{PORTAL}/timetables/summer-2026/"' in item.summary_html


def test_long_content_is_capped_on_a_tag_boundary() -> None:
    paragraphs = "".join(f"<p>Paragraph {n} about the <b>harbour</b> wall.</p>" for n in range(400))
    entry = FeedEntry(link=f"{PORTAL}/long/", title="Long", content=paragraphs)
    item = normalize(entry)
    assert item is not None
    root = lxml_html.fragment_fromstring(item.summary_html, create_parent="div")
    assert SUMMARY_TEXT_LIMIT - 100 < len(root.text_content()) <= SUMMARY_TEXT_LIMIT + 1  # "…"
    assert "…" in item.summary_html[-12:]  # the cut shows
    assert item.summary_html.count("<p>") == item.summary_html.count("</p>")  # all closed
    assert item.summary_html.count("<b>") == item.summary_html.count("</b>")


def test_guid_fallbacks() -> None:
    with_guid = FeedEntry(guid=" g-1 ", link=f"{PORTAL}/a")
    assert entry_guid(with_guid, f"{PORTAL}/a") == "g-1"
    no_guid = FeedEntry(link=f"{PORTAL}/a?utm_source=x")
    item = normalize(no_guid)
    assert item is not None
    assert item.guid == f"{PORTAL}/a"
    dated = datetime(2026, 3, 14, tzinfo=UTC)
    bare = FeedEntry(title="Tides", published=dated)
    seed = f"Tides\n{dated.isoformat()}".encode()
    assert entry_guid(bare) == "sha256:" + hashlib.sha256(seed).hexdigest()
    assert entry_guid(bare) == entry_guid(FeedEntry(title="Tides", published=dated))


def test_items_without_a_usable_link() -> None:
    no_link, guid_url, no_date, future, broken_date = fixture_items("edge_items.xml")
    assert no_link is None  # nothing a mail could link to
    assert guid_url is not None
    assert guid_url.url == f"{PORTAL}/notices/78/"
    assert no_date is not None
    assert no_date.published_at is None
    assert future is not None
    assert future.published_at == NOW
    assert broken_date is not None
    assert broken_date.published_at is None
    assert normalize(FeedEntry(link="javascript:alert(1)", guid="x")) is None
    assert normalize(FeedEntry(link="mailto:desk@h.example")) is None
    assert normalize(FeedEntry(link="https://[broken/")) is None


def test_dates_to_utc_and_future_clamp() -> None:
    cet = timezone(timedelta(hours=1))
    local = normalize(
        FeedEntry(link=f"{PORTAL}/a", published=datetime(2026, 3, 14, 10, tzinfo=cet))
    )
    assert local is not None
    assert local.published_at == datetime(2026, 3, 14, 9, tzinfo=UTC)
    unzoned = datetime(2026, 3, 14, 10)  # noqa: DTZ001 - a feed date without a zone
    naive = normalize(FeedEntry(link=f"{PORTAL}/a", published=unzoned))
    assert naive is not None
    assert naive.published_at == datetime(2026, 3, 14, 10, tzinfo=UTC)
    soon = NOW + timedelta(minutes=5)  # clock skew: kept
    assert (x := normalize(FeedEntry(link=f"{PORTAL}/a", published=soon)))
    assert x.published_at == soon
    later = NOW + timedelta(hours=2)
    assert (y := normalize(FeedEntry(link=f"{PORTAL}/a", published=later)))
    assert y.published_at == NOW
    updated = normalize(FeedEntry(link=f"{PORTAL}/a", updated=datetime(2026, 3, 1, tzinfo=UTC)))
    assert updated is not None
    assert updated.published_at == datetime(2026, 3, 1, tzinfo=UTC)


def test_title_fallback_is_the_start_of_the_summary() -> None:
    feed = parse_feed((FIXTURES / "rss092.xml").read_bytes())
    entry = replace(feed.entries[1], link=f"{PORTAL}/notice/")
    item = normalize(entry)
    assert item is not None
    assert item.title == "A notice with no title and no link: the sailing club meets…"
    long = normalize(FeedEntry(link=f"{PORTAL}/x", summary="<p>" + "word " * 40 + "</p>"))
    assert long is not None
    assert long.title == " ".join(["word"] * 12) + "…"


def test_relative_link_against_the_feed_url_without_a_site() -> None:
    item = normalize(FeedEntry(link="../story/"), site_url=None)
    assert item is not None
    assert item.url == f"{PORTAL}/tag/harbour/story/"


def test_hostile_feed_end_to_end() -> None:
    (item,) = fixture_items("hostile_content.xml")
    assert item is not None
    assert item.title == "Opening night review"
    lowered = item.summary_html.lower()
    for danger in (
        "<script",
        "iframe",
        "<style",
        "onclick",
        "onmouseover",
        "onerror",
        "javascript",
    ):
        assert danger not in lowered
    assert "data:" not in lowered
    assert "<form" not in lowered
    assert "<object" not in lowered
    assert "your browser does not support frames" not in item.summary_html
    assert (
        f'<a href="{PORTAL}/tickets/" rel="noopener noreferrer">Box office</a>' in item.summary_html
    )
    assert f'src="{PORTAL}/2026/03/opening-night/x"' in item.summary_html  # onerror gone, img kept


def test_encoded_feeds_normalize_to_readable_text() -> None:
    (cyrillic,) = fixture_items("windows-1251.xml")
    (latin,) = fixture_items("iso-8859-1.xml")
    assert cyrillic is not None
    assert cyrillic.title == "Паром меняет расписание"
    assert latin is not None
    assert "Façade rénovée" in latin.summary_html


def test_a_feed_normalized_at_once_matches_entry_by_entry() -> None:
    for path in sorted(FIXTURES.iterdir()):
        try:
            feed = parse_feed(path.read_bytes())
        except FeedError:
            continue
        one_by_one = [normalize(e, feed.link) for e in feed.entries]
        at_once = normalize_entries(feed.entries, feed_url=FEED_URL, site_url=feed.link, now=NOW)
        assert at_once == [item for item in one_by_one if item is not None], path.name


@pytest.mark.parametrize("guid", ["////x]", "////javascript:alert(1)]"])
def test_a_guid_that_only_looks_like_a_broken_host_is_no_url(guid: str) -> None:
    # Canonicalized, it read as an unclosed IPv6 host, and urlsplit's ValueError escaped.
    assert normalize(FeedEntry(guid=guid, title="x")) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h.example/a;", "https://h.example/a"),  # urljoin drops an empty ";params"
        ("https://H.example./a", "https://h.example/a"),
        ("https://.//h.example/a", "https://h.example/a"),  # no host left: the path's is used
        ("https://u:p@H.example:443/a", "https://u:p@h.example/a"),
        ("https://[::1]:8443/a", "https://[::1]:8443/a"),
    ],
)
def test_absolute_links_against_the_site_keep_their_old_spelling(url: str, expected: str) -> None:
    item = normalize(FeedEntry(link=url, title="x"))
    assert item is not None
    assert item.url == expected
