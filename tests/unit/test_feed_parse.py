"""parse_feed on every format and version, and on what hostile or broken sites serve.

Fixtures under tests/fixtures/feeds are a fictional portal's feeds, written for these tests.
"""

# ruff: noqa: RUF001  # Cyrillic and typographic text is what the encoding tests are about

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from service.feeds.parse import discover_feeds, looks_like_html, parse_date, parse_feed
from service.feeds.types import FeedError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "feeds"
PORTAL = "https://harbourtown-herald.example"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def all_text(feed: object) -> str:
    """Every string the parse produced, to look for what must never appear."""
    return repr(feed)


# -- formats ----------------------------------------------------------------------------------


def test_rss20_wordpress_feed() -> None:
    feed = parse_feed(fixture("rss20_wordpress.xml"))
    assert (feed.kind, feed.title, feed.link, feed.ttl_minutes) == (
        "rss",
        "Harbour – Harbourtown Herald",
        f"{PORTAL}/tag/harbour/",
        30,
    )
    assert len(feed.entries) == 3
    first, second, third = feed.entries
    assert first.guid == f"{PORTAL}/?p=1201"
    assert first.link == f"{PORTAL}/2026/03/ferry-timetable/?utm_source=rss&utm_medium=rss"
    assert first.title == "Ferry timetable changes & what they mean"
    assert first.author == "Mira Quayle"
    assert first.categories == ("Harbour", "Transport")
    assert first.published == datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    assert first.summary is not None
    assert "two extra crossings" in first.summary
    assert first.content is not None
    assert 'href="/timetables/summer-2026/"' in first.content
    assert second.published == datetime(2026, 3, 13, 17, 5, tzinfo=UTC)  # "+01:00" accepted
    assert third.link == "/2026/03/bridge-repairs/"  # raw: normalize resolves it
    assert third.summary == "The vote is set for Tuesday <b>evening</b>."


def test_rss091_with_a_remote_doctype_loads_nothing() -> None:
    feed = parse_feed(fixture("rss091.xml"))
    assert feed.kind == "rss"
    assert [e.title for e in feed.entries] == [
        "Spring tides this weekend",
        "Rainfall record for March",
    ]


def test_rss092_item_without_title_or_link() -> None:
    feed = parse_feed(fixture("rss092.xml"))
    assert len(feed.entries) == 2
    assert feed.entries[0].categories == ("rowing",)
    assert feed.entries[1].title is None
    assert feed.entries[1].link is None
    assert feed.entries[1].summary is not None


def test_rss10_rdf() -> None:
    feed = parse_feed(fixture("rss10_rdf.xml"))
    assert (feed.kind, feed.title) == ("rdf", "Harbourtown Herald: Museum")
    first, second = feed.entries
    assert first.guid == f"{PORTAL}/2026/03/figurehead/"  # rdf:about
    assert first.published == datetime(2026, 3, 10, 12, 20, tzinfo=UTC)
    assert (first.author, first.categories) == ("Ada Pennick", ("Museum",))
    assert second.published == datetime(2026, 3, 9, tzinfo=UTC)  # date only: midnight UTC


def test_rss090_rdf() -> None:
    feed = parse_feed(fixture("rss090_rdf.xml"))
    assert feed.kind == "rdf"
    assert feed.link == f"{PORTAL}/tag/lighthouse/"
    assert [e.link for e in feed.entries] == [f"{PORTAL}/2026/03/lighthouse-open/"]


def test_atom10_with_xml_base_and_text_constructs() -> None:
    feed = parse_feed(fixture("atom10.xml"))
    assert (feed.kind, feed.title, feed.link) == (
        "atom",
        "Harbourtown Herald: Orchard",
        f"{PORTAL}/tag/orchard/",
    )
    first, second = feed.entries
    assert first.link == f"{PORTAL}/2026/03/cider-pressing/"  # the alternate, not the enclosure
    assert first.guid == "tag:harbourtown-herald.example,2026:cider-pressing"
    assert first.title == "Cider <em>pressing</em> day"
    assert first.summary == "Bring apples &amp; a bucket; 5 &lt; 6."  # text escaped into HTML
    assert first.content is not None
    assert "<p>The press runs from <strong>nine</strong>.</p>" in first.content
    assert first.published == datetime(2026, 3, 14, 7, 0, tzinfo=UTC)
    assert first.updated == datetime(2026, 3, 14, 8, 15, tzinfo=UTC)
    assert (first.author, first.categories) == ("Mira Quayle", ("Orchard", "food"))
    assert second.link == f"{PORTAL}/2026/03/orchard-volunteers/"  # entry-level xml:base
    assert second.content == "<p>Pruning on Saturday.</p>"


def test_json_feed_10() -> None:
    feed = parse_feed(fixture("jsonfeed10.json"))
    assert (feed.kind, feed.title, feed.link) == (
        "json",
        "Harbourtown Herald: Theatre",
        f"{PORTAL}/tag/theatre/",
    )
    first, second = feed.entries
    assert (first.guid, first.author, first.categories) == (
        "3101",
        "Tom Netley",
        ("Theatre", "Choir"),
    )
    assert first.summary == "Choir &amp; cast, together"
    assert first.content == "<p>The choir joins the cast.</p>"
    assert first.published == datetime(2026, 3, 11, 19, tzinfo=UTC)
    assert second.link == "https://tickets.harbourtown.example/quay-theatre"  # external_url
    assert second.content == "From Monday, at the box office.\nCash only."
    assert (second.published, second.updated) == (None, datetime(2026, 3, 10, 9, tzinfo=UTC))


def test_json_feed_11() -> None:
    feed = parse_feed(fixture("jsonfeed11.json"))
    (entry,) = feed.entries
    assert feed.kind == "json"
    assert entry.author == "Ada Pennick"  # the first of "authors"
    assert entry.updated == datetime(2026, 3, 13, 14, 30, tzinfo=UTC)


def test_json_that_is_not_a_json_feed() -> None:
    with pytest.raises(FeedError, match="not a feed: JSON without a JSON Feed version"):
        parse_feed(b'{"posts": []}')
    with pytest.raises(FeedError, match="malformed JSON"):
        parse_feed(b'{"version": "https://jsonfeed.org/version/1.1", ')


# -- the format comes from the content --------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/html", "text/plain", "application/json"])
def test_content_type_is_ignored_for_the_format(content_type: str | None) -> None:
    assert parse_feed(fixture("atom10.xml"), content_type=content_type).kind == "atom"
    assert parse_feed(fixture("jsonfeed11.json"), content_type=content_type).kind == "json"
    assert parse_feed(fixture("rss20_wordpress.xml"), content_type=content_type).kind == "rss"


def test_html_error_page_is_named() -> None:
    body = fixture("html_error_page.html")
    assert looks_like_html(body)
    with pytest.raises(FeedError, match=r"^not a feed: looks like an HTML page \(https://x/\)$"):
        parse_feed(body, content_type="application/rss+xml", url="https://x/")


@pytest.mark.parametrize("body", [b"", b"   \n\t", b"\xef\xbb\xbf\n"])
def test_empty_body(body: bytes) -> None:
    with pytest.raises(FeedError, match=r"^empty body$"):
        parse_feed(body)


def test_garbage_is_malformed_xml() -> None:
    with pytest.raises(FeedError, match=r"^malformed XML: "):
        parse_feed(b"\x89PNG\r\n\x1a\n not a feed at all")


def test_xml_that_is_not_a_feed() -> None:
    with pytest.raises(FeedError, match=r"root element is <sitemapindex>"):
        parse_feed(b'<?xml version="1.0"?><sitemapindex><sitemap/></sitemapindex>')


def test_a_feed_whose_doctype_says_html_is_still_a_feed() -> None:
    body = (
        b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN" "x">'
        b"<rss><channel><title>t</title></channel></rss>"
    )
    assert not looks_like_html(body)
    assert parse_feed(body).title == "t"


# -- encodings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "title", "entry_title"),
    [
        ("windows-1251.xml", "Вестник Гавани: Новости", "Паром меняет расписание"),
        ("iso-8859-1.xml", "Héraut du Port: Café", "Crème brûlée à la fête du marché"),
        ("utf-16le.xml", "Вестник Гавани — Héraut", "Ярмарка и crêpes"),
        ("utf-16be.xml", "Вестник Гавани — Héraut", "Ярмарка и crêpes"),
    ],
)
def test_declared_encodings(name: str, title: str, entry_title: str) -> None:
    feed = parse_feed(fixture(name))
    assert feed.title == title
    assert feed.entries[0].title == entry_title


def test_windows_1251_summary_keeps_typography() -> None:
    (entry,) = parse_feed(fixture("windows-1251.xml")).entries
    assert entry.summary == "Летнее расписание начнётся в апреле — «два рейса» в день."


def _undeclared(text: str, encoding: str) -> bytes:
    return f"<rss><channel><title>{text}</title></channel></rss>".encode(encoding)


def test_undeclared_encoding_from_the_content_type_charset() -> None:
    body = _undeclared("Ярмарка у причала", "cp1251")
    feed = parse_feed(body, content_type="application/rss+xml; charset=windows-1251")
    assert feed.title == "Ярмарка у причала"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Ярмарка у причала, рыбаки и новый паром в гавани", "cp1251"),
        ("Crème brûlée à la fête", "cp1252"),
        ("Ярмарка и crêpes", "utf-8"),
    ],
)
def test_undeclared_encoding_is_sniffed(text: str, encoding: str) -> None:
    assert parse_feed(_undeclared(text, encoding)).title == text


def test_utf16_without_bom_is_sniffed() -> None:
    body = (
        '<?xml version="1.0" encoding="utf-16"?><rss><channel><title>Гавань</title></channel></rss>'
    )
    assert parse_feed(body.encode("utf-16-le")).title == "Гавань"
    assert parse_feed(body.encode("utf-16-be")).title == "Гавань"


def test_declared_utf8_that_is_really_latin1() -> None:
    body = '<?xml version="1.0" encoding="utf-8"?><rss><channel><title>Café</title></channel></rss>'
    assert parse_feed(body.encode("latin-1")).title == "Café"


# -- broken and hostile -----------------------------------------------------------------------


def test_truncated_feed_keeps_the_items_before_the_cut() -> None:
    feed = parse_feed(fixture("truncated.xml"))
    assert [e.title for e in feed.entries] == [
        "Market hall opening hours",
        "Bakery stall moves to the quay",
    ]


def test_every_cut_of_a_feed_keeps_exactly_its_complete_items() -> None:
    body = fixture("rss20_wordpress.xml")
    end_of_channel = body.index(b"</channel>")
    for cut in range(body.index(b"<item>"), end_of_channel, 37):
        complete = body[:cut].count(b"</item>")
        try:
            feed = parse_feed(body[:cut])
        except FeedError:
            pytest.fail(f"cut at {cut} raised")
        assert len(feed.entries) == complete, cut


def test_undeclared_html_entities_and_stray_ampersands_are_recovered() -> None:
    body = (
        b"<rss><channel><item><title>Fish &amp; chips &nbsp;&mdash; R&D &copy; 2026</title>"
        b"<link>https://harbourtown-herald.example/a?x=1&y=2</link></item></channel></rss>"
    )
    (entry,) = parse_feed(body).entries
    assert entry.title is not None
    assert entry.title.startswith("Fish & chips \xa0— R")
    assert entry.title.endswith("© 2026")


def test_billion_laughs_costs_nothing() -> None:
    started = time.perf_counter()
    feed = parse_feed(fixture("billion_laughs.xml"))
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert "lollol" not in all_text(feed)  # never expanded, not even once
    (entry,) = feed.entries
    assert entry.title == "Harbour news"
    assert entry.summary == "Before  after"


def test_billion_laughs_behind_a_long_prolog() -> None:
    padding = b"<!-- " + b"harbour " * 2000 + b"-->\n"
    body = fixture("billion_laughs.xml").replace(b"?>\n", b"?>\n" + padding, 1)
    started = time.perf_counter()
    feed = parse_feed(body)
    assert time.perf_counter() - started < 1.0
    assert "lollol" not in all_text(feed)
    assert [e.title for e in feed.entries] == ["Harbour news"]


def test_a_doctype_that_hides_its_end_is_still_harmless() -> None:
    """An entity value holding "]>" defeats the doctype stripping; the parser itself holds."""
    trick = b'<!ENTITY trick "]>"><!ENTITY lol "lol">'
    body = fixture("billion_laughs.xml").replace(b'<!ENTITY lol "lol">', trick)
    started = time.perf_counter()
    try:
        text = all_text(parse_feed(body))
    except FeedError as exc:
        text = str(exc)
    assert time.perf_counter() - started < 1.0
    assert "lollol" not in text


def test_external_entities_never_read_local_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-HARBOUR-CODE")
    body = f"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY s SYSTEM "file://{secret}"><!ENTITY r SYSTEM "{secret}">]>
<rss><channel><title>x &s; &r;</title><item><title>&s;</title>
<link>https://harbourtown-herald.example/x</link><description>&r;</description></item>
</channel></rss>""".encode()
    feed = parse_feed(body)
    assert "TOP-SECRET" not in all_text(feed)
    assert len(feed.entries) == 1


def test_external_entity_to_etc_passwd() -> None:
    feed = parse_feed(fixture("xxe_passwd.xml"))
    assert "root:" not in all_text(feed)
    assert [e.title for e in feed.entries] == ["Leak"]


def test_no_network_for_external_dtds_or_entities() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/evil"
        subset = f'<!ENTITY e SYSTEM "{url}.txt"><!ENTITY % p SYSTEM "{url}.ent"> %p;'
        body = f"""<?xml version="1.0"?>
<!DOCTYPE rss SYSTEM "{url}.dtd" [{subset}]>
<rss><channel><title>&e;</title></channel></rss>""".encode()
        parse_feed(body)
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # a connection attempt would be waiting in the backlog


def test_duplicate_guids_within_one_feed_are_both_returned() -> None:
    """Parsing reports what the feed says; deciding which one wins is the store's job."""
    feed = parse_feed(fixture("duplicate_guids.xml"))
    assert [e.guid for e in feed.entries] == ["herald-1500", "herald-1500"]
    assert feed.entries[0].link != feed.entries[1].link


def test_items_without_link_or_date_and_with_future_or_broken_dates() -> None:
    entries = parse_feed(fixture("edge_items.xml")).entries
    assert [e.link for e in entries[:2]] == [None, None]
    assert entries[1].guid == f"{PORTAL}/notices/78/"
    assert entries[2].published is None
    assert entries[3].published == datetime(2100, 12, 31, 23, 59, tzinfo=UTC)  # normalize clamps
    assert entries[4].published is None


def test_hostile_content_is_passed_on_raw_for_normalize_to_clean() -> None:
    (entry,) = parse_feed(fixture("hostile_content.xml")).entries
    assert entry.summary is not None
    assert "<script>" in entry.summary
    assert entry.title is not None
    assert entry.title.startswith("Opening night")


def test_a_large_feed_is_not_refused() -> None:
    item = "<item><title>t</title><link>https://h.example/{}</link></item>"
    body = "<rss><channel>" + "".join(item.format(n) for n in range(5000)) + "</channel></rss>"
    assert len(parse_feed(body.encode()).entries) == 5000


# -- dates ------------------------------------------------------------------------------------

EXPECTED = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "Sat, 14 Mar 2026 09:30:00 +0000",
        "Sat, 14 Mar 2026 09:30:00 GMT",
        "14 Mar 2026 09:30:00 UT",
        "Sat, 14 Mar 2026 10:30:00 +01:00",
        "Sat, 14 Mar 2026 10:30:00 CET",
        "Saturday, 14 March 2026 04:30:00 EST",
        "Sat, 14 Mar 26 09:30:00 +0000",
        "Sat,14 Mar 2026 09:30 +0000",
        "2026-03-14T09:30:00Z",
        "2026-03-14T09:30:00.000000123Z",
        "2026-03-14T11:30:00+02:00",
        "2026-03-14 09:30:00",
        "2026-03-14 12:30:00 +0300",
        "20260314T093000Z",
        "2026-03-14T09:30Z",
    ],
)
def test_dates(text: str) -> None:
    parsed = parse_date(text)
    assert parsed == EXPECTED
    assert parsed is not None
    assert parsed.tzinfo is not None


def test_dates_keep_the_feeds_zone() -> None:
    parsed = parse_date("2026-03-14T11:30:00+02:00")
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(hours=2)
    assert parsed.tzinfo == timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    "text", [None, "", "soon", "2026-13-45", "Sat, 32 Foo 2026 09:30:00", "99999-01-01"]
)
def test_unreadable_dates_are_none(text: str | None) -> None:
    assert parse_date(text) is None


# -- discovery --------------------------------------------------------------------------------


def test_discover_feeds_in_document_order() -> None:
    found = discover_feeds(fixture("tag_page.html"), f"{PORTAL}/tag/harbour/")
    assert found == [
        f"{PORTAL}/feed/",
        f"{PORTAL}/tag/harbour/feed/",
        f"{PORTAL}/tag/harbour/feed/atom/",
        f"{PORTAL}/tag/harbour/feed.json",
        f"{PORTAL}/wp-json/wp/v2/tags/12",
    ]


def test_discover_feeds_honours_base_and_ignores_junk() -> None:
    page = b"""<html><head><base href="https://cdn.harbourtown.example/site/">
<link rel="alternate" type="application/atom+xml" href="atom.xml">
<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
<link rel="alternate" type="application/rss+xml">
</head></html>"""
    assert discover_feeds(page, PORTAL) == ["https://cdn.harbourtown.example/site/atom.xml"]
    assert discover_feeds(b"", PORTAL) == []
    assert discover_feeds(b"\x00\x01", PORTAL) == []
