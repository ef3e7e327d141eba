"""Feeds parsed per second: feedparser, fastfeedparser and the service's own parser.

Generates a ~55 KB WordPress-style RSS 2.0 tag feed (10 items with ``content:encoded``,
``dc:creator``, categories, invented text about a fictional portal) and an Atom 1.0 feed of the
same items, then parses each repeatedly with each parser for a fixed wall time and prints
feeds/s. ``service.feeds.parse.parse_feed`` is what the poller runs.

Run from the repository root::

    .venv/bin/python benchmarks/parse.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.feeds.parse import parse_feed

PORTAL = "https://harbourtown-herald.example"
WORDS = (  # noqa: SIM905 - a sentence reads better than a list of 31 strings
    "harbour council ferry timetable market square festival lanterns bakery mayor vote bridge "
    "repairs tide museum library volunteers rowing club lighthouse cider orchard tram depot "
    "rainfall allotments choir theatre rehearsal fishermen quay"
).split()


def _prose(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(words))


def _body(n: int) -> str:
    paragraphs = "".join(f"<p>{_prose(n + p, 70)}.</p>\n" for p in range(8))
    return (
        f'<p><img src="{PORTAL}/wp-content/uploads/2026/03/photo-{n}.jpg" width="800" '
        f'height="450" alt="Photo {n}"></p>\n{paragraphs}'
        f'<p>More in <a href="{PORTAL}/tag/harbour/">harbour news</a>.</p>'
    )


def wordpress_rss(items: int = 10) -> bytes:
    start = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    entries = []
    for n in range(items):
        when = (start - timedelta(hours=5 * n)).strftime("%a, %d %b %Y %H:%M:%S +0000")
        entries.append(f"""
	<item>
		<title>{_prose(n, 8).capitalize()} &#8211; what changes</title>
		<link>{PORTAL}/2026/03/story-{n}/</link>
		<dc:creator><![CDATA[Reporter {n % 4}]]></dc:creator>
		<pubDate>{when}</pubDate>
		<category><![CDATA[Harbour]]></category>
		<category><![CDATA[Council]]></category>
		<guid isPermaLink="false">{PORTAL}/?p={1000 + n}</guid>
		<description><![CDATA[<p>{_prose(n, 40)} [&hellip;]</p>]]></description>
		<content:encoded><![CDATA[{_body(n)}]]></content:encoded>
		<wfw:commentRss>{PORTAL}/2026/03/story-{n}/feed/</wfw:commentRss>
		<slash:comments>{n}</slash:comments>
	</item>""")
    return f"""<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"
	xmlns:content="http://purl.org/rss/1.0/modules/content/"
	xmlns:wfw="http://wellformedweb.org/CommentAPI/"
	xmlns:dc="http://purl.org/dc/elements/1.1/"
	xmlns:atom="http://www.w3.org/2005/Atom"
	xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"
	xmlns:slash="http://purl.org/rss/1.0/modules/slash/">
<channel>
	<title>Harbour &#8211; Harbourtown Herald</title>
	<atom:link href="{PORTAL}/tag/harbour/feed/" rel="self" type="application/rss+xml" />
	<link>{PORTAL}/tag/harbour/</link>
	<description>News from the harbour town</description>
	<lastBuildDate>Sat, 14 Mar 2026 09:30:00 +0000</lastBuildDate>
	<language>en-GB</language>
	<sy:updatePeriod>hourly</sy:updatePeriod>
	<sy:updateFrequency>1</sy:updateFrequency>
	<generator>https://wordpress.org/?v=6.5</generator>{"".join(entries)}
</channel>
</rss>
""".encode()


def atom(items: int = 10) -> bytes:
    start = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    entries = []
    for n in range(items):
        when = (start - timedelta(hours=5 * n)).isoformat()
        body = _body(n).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        entries.append(f"""
  <entry>
    <title type="html">{_prose(n, 8).capitalize()}</title>
    <link rel="alternate" type="text/html" href="{PORTAL}/2026/03/story-{n}/"/>
    <id>tag:harbourtown-herald.example,2026:story-{n}</id>
    <published>{when}</published>
    <updated>{when}</updated>
    <author><name>Reporter {n % 4}</name></author>
    <category term="harbour"/><category term="council"/>
    <summary type="html">&lt;p&gt;{_prose(n, 40)}&lt;/p&gt;</summary>
    <content type="html">{body}</content>
  </entry>""")
    return f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Harbour &#8211; Harbourtown Herald</title>
  <link rel="alternate" type="text/html" href="{PORTAL}/tag/harbour/"/>
  <link rel="self" href="{PORTAL}/tag/harbour/feed/atom/"/>
  <id>{PORTAL}/tag/harbour/</id>
  <updated>{start.isoformat()}</updated>{"".join(entries)}
</feed>
""".encode()


def rate(parse: Callable[[bytes], object], body: bytes, seconds: float) -> float:
    parse(body)  # warm caches and imports
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        parse(body)
        count += 1
    return count / elapsed


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--seconds", type=float, default=3.0, help="wall time per measurement")
    seconds = args.parse_args().seconds

    import fastfeedparser
    import feedparser

    parsers: dict[str, Callable[[bytes], object]] = {
        "feedparser 6.0.14": feedparser.parse,
        "fastfeedparser 0.6.5": fastfeedparser.parse,
        "service parse_feed": parse_feed,
    }
    feeds = {"WordPress RSS 2.0": wordpress_rss(), "Atom 1.0": atom()}
    print(f"{'':24}" + "".join(f"{name:>22}" for name in parsers))
    for label, body in feeds.items():
        counts = {name: len(feedparser.parse(body).entries) for name in ("feedparser",)}
        figures = []
        for parse in parsers.values():
            with warnings.catch_warnings():  # feedparser warns on some inputs; not our concern
                warnings.simplefilter("ignore")
                figures.append(rate(parse, body, seconds))
        title = f"{label} ({len(body) / 1024:.0f} KB, {counts['feedparser']} items)"
        print(f"{title:24}" + "".join(f"{f:>17,.0f} f/s" for f in figures))


if __name__ == "__main__":
    main()
