"""Polls per second end to end: 2,000 local WordPress-style tag feeds, cold and warm.

The script invents a news portal's tag feeds (RSS 2.0 as WordPress writes it: 10 items each,
headline, link, ``dc:creator``, categories, ``guid``, a 300-600 byte excerpt; ``--full-text``
adds a ``content:encoded`` body of a few KB, WordPress's "full text" setting). Neighbouring
feeds share two items, as an article tagged twice appears in two tag feeds (some shared links
carry ``utm_*`` trackers, so only the canonical URL matches them): 2,000 feeds hold 18,000
distinct articles.

A small asyncio HTTP/1.1 server (uvloop when installed; keep-alive, ETag, 304 when
``If-None-Match`` matches, Last-Modified) serves them from 127.0.0.1 in its own process. A fresh
PostgreSQL database (``--sqlite``: a temp SQLite file) is migrated and the 2,000 feeds are
registered as sources, each granting one of 20 tags. Then ``--workers`` spawned processes, each
with its own ``make_client`` client and engine, poll a shuffled share of the sources with
``service.feeds.poller.poll_source``:

* cold cycle: every source is new (fetch, parse, normalize, store);
* warm cycle: every source sends its ETag back and gets 304.

Wall time runs from the moment all workers are ready to the last poll done. Then, in this
process, the same 2,000 bodies are parsed with feedparser alone (the issue's reference), with
the service's ``parse_feed``, and with ``parse_feed`` + ``normalize_entries``. Peak RSS is each
worker's VmHWM. CPU is accounted per poll: the workers' own (split by poller stage: claim,
fetch, parse, normalize, store, the rest), the feed server's, and that of the PostgreSQL
backends serving this run's database; what the rest of the machine used meanwhile is shown
too (on a shared machine it explains a slow run). ``--profile`` runs worker 0 under cProfile
and prints where its time went;
``--no-sync-commit`` (a diagnostic) turns off PostgreSQL's WAL flush at commit. Every process
the script starts is stopped and the database it created is dropped.

Run from the repository root (about 1-2 minutes)::

    .venv/bin/python benchmarks/poll.py [--workers 2] [--threads 2] [--sqlite] [--full-text]
                                        [--profile] [--no-sync-commit]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import importlib.metadata
import multiprocessing as mp
import os
import platform
import pstats
import queue
import random
import resource
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, TypeVar, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url

from service.db import make_engine, session_factory
from service.feeds import poller
from service.feeds.fetch import make_client
from service.feeds.normalize import normalize_entries
from service.feeds.parse import parse_feed
from service.feeds.store import tags_for
from service.migrate import upgrade
from service.models import Post, Source, post_tags

FEEDS = 2000
ITEMS = 10  # per feed: 2 shared with the neighbours, 8 of its own
OWN = ITEMS - 2
TAGS = 20
PORTAL = "https://harbourtown-herald.example"
USER_AGENT = "newsletter-benchmark/1.0 (+https://harbourtown-herald.example/newsletter)"
CYCLE_LIMIT = 240.0  # seconds; a cycle still running then is stopped
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CONTENT_TYPE = "application/rss+xml; charset=UTF-8"

# -- invented content ----------------------------------------------------------------------------

SUBJECTS = (
    "Harbour council", "The ferry operator", "Residents of Quay Street", "The lifeboat crew",
    "Market traders", "The mayor", "Teachers at St Brigid's", "The rowing club",
    "Lighthouse volunteers", "The tram depot", "Allotment holders", "The museum trustees",
    "Fishermen", "The cider co-operative", "Bus drivers", "The library board",
)  # fmt: skip
VERBS = (
    "approves", "rejects", "delays", "questions", "celebrates", "rethinks", "pays for",
    "votes on", "protests against", "unveils", "postpones", "welcomes",
)  # fmt: skip
OBJECTS = (
    "the new ferry timetable", "a £2m bridge repair", "late-night trams", "the winter market",
    "a lantern festival", "higher mooring fees", "a second lifeboat", "the quay car park",
    "longer library hours", "the orchard extension", "a harbour wall survey",
    "free school buses", "the theatre's reopening", "a flood barrier", "weekend rubbish rounds",
)  # fmt: skip
TAILS = (
    "after months of debate", "despite objections", "&#8211; what it means for you",
    "as costs rise", "in a close vote", "ahead of the summer season", "for the third time",
    "&#8216;at last&#8217;, say locals", "",
)  # fmt: skip
SENTENCES = (
    "The decision came after a two-hour meeting at the town hall on {day}.",
    "{who} said the plan had been &#8220;a long time coming&#8221; and thanked volunteers.",
    "Critics argue the cost, put at £{money}m, falls hardest on small businesses by the quay.",
    "A consultation drew {n} responses, most of them from residents of the old town.",
    "Work is expected to start in {month} and to last about {weeks} weeks.",
    "The harbour master warned that tides and weather could still change the timetable.",
    "Opposition councillors asked for the figures to be published before the next vote.",
    "Local schools will be told about changes to bus routes by the end of the month.",
    "&#8220;We listened, and we changed the plan,&#8221; {who} told the Herald.",
    "Traders on Market Square said footfall had fallen by {pct}% since the spring.",
)  # fmt: skip
PEOPLE = ("Councillor Moira Keane", "Harbour master Tom Reddy", "Mayor Ann Colley",
          "Dr Sam Achebe", "Chair Lucy Varga", "Skipper Jon Prout")  # fmt: skip
MONTHS = ("March", "April", "May", "June", "September", "October")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday")
AUTHORS = ("Nell Harper", "Owen Pryce", "Ruth Osei", "Declan Ward", "Mei Lin")
TOPICS = ("Harbour", "Council", "Transport", "Business", "Schools", "Culture", "Weather")


@dataclass(frozen=True)
class Article:
    number: int
    slug: str
    title: str
    excerpt: str
    body: str
    author: str
    categories: tuple[str, str]
    published: datetime


def _article(number: int, base: datetime, full_text: bool) -> Article:
    rng = random.Random(number * 7919 + 17)
    title = (
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}"
    ).strip()
    fill = {
        "day": rng.choice(DAYS), "who": rng.choice(PEOPLE), "money": rng.randint(1, 40),
        "n": rng.randint(40, 900), "month": rng.choice(MONTHS), "weeks": rng.randint(2, 30),
        "pct": rng.randint(5, 35),
    }  # fmt: skip
    sentences = [s.format(**fill) for s in rng.sample(SENTENCES, len(SENTENCES))]
    target = rng.randint(300, 600) - 20
    excerpt = ""
    for sentence in sentences:
        if len(excerpt) + len(sentence) > target and excerpt:
            break
        excerpt += (" " if excerpt else "") + sentence
    body = ""
    if full_text:
        paragraphs = [" ".join(rng.sample(sentences, 5)) for _ in range(6)]
        body = (
            f'<p><img src="{PORTAL}/wp-content/uploads/2026/11/photo-{number}.jpg" '
            f'width="800" height="450" alt="" /></p>\n'
            + "\n".join(f"<p>{p}</p>" for p in paragraphs)
            + f'\n<p>More in <a href="{PORTAL}/category/local/">local news</a>.</p>'
        )
    slug = "-".join(
        w for w in title.lower().replace("&#8211;", "").split() if w.isalnum() and len(w) > 2
    )[:60]
    return Article(
        number=number,
        slug=f"{slug}-{number}",
        title=title,
        excerpt=excerpt,
        body=body,
        author=rng.choice(AUTHORS),
        categories=(rng.choice(TOPICS), rng.choice(TOPICS[::-1])),
        published=base - timedelta(minutes=7 * number),
    )


def _item(article: Article, tracked: bool) -> str:
    link = f"{PORTAL}/2026/11/{article.slug}/"
    shown = f"{link}?utm_source=rss&amp;utm_medium=tagfeed" if tracked else link
    content = (
        f"\n\t\t<content:encoded><![CDATA[{article.body}]]></content:encoded>"
        if article.body
        else ""
    )
    return f"""
	<item>
		<title>{article.title}</title>
		<link>{shown}</link>
		<comments>{link}#respond</comments>
		<dc:creator><![CDATA[{article.author}]]></dc:creator>
		<pubDate>{format_datetime(article.published)}</pubDate>
		<category><![CDATA[{article.categories[0]}]]></category>
		<category><![CDATA[{article.categories[1]}]]></category>
		<guid isPermaLink="false">{PORTAL}/?p={100000 + article.number}</guid>
		<description><![CDATA[<p>{article.excerpt} [&#8230;]</p>
<p>The post <a href="{link}">{article.title}</a> appeared first on Harbourtown Herald.</p>
]]></description>{content}
		<wfw:commentRss>{link}feed/</wfw:commentRss>
		<slash:comments>{article.number % 13}</slash:comments>
	</item>"""


def feed_path(n: int) -> str:
    return f"/tag/local-{n:04d}/feed/"


def make_feeds(base: datetime, full_text: bool, count: int = FEEDS) -> dict[str, bytes]:
    """Feed path → body. Feed n carries shared articles n and n+1 (ring) and 8 of its own."""
    articles: dict[int, Article] = {}

    def article(number: int) -> Article:
        if number not in articles:
            articles[number] = _article(number, base, full_text)
        return articles[number]

    feeds = {}
    for n in range(count):
        shared = [article(n), article((n + 1) % count)]
        own = [article(count + n * OWN + k) for k in range(OWN)]
        # Newest first, as WordPress lists them; every 7th feed links its shared items with
        # campaign trackers, which only canonical_url removes.
        ordered = sorted([*shared, *own], key=lambda a: a.published, reverse=True)
        items = "".join(_item(a, tracked=n % 7 == 0 and a in shared) for a in ordered)
        built = format_datetime(ordered[0].published)
        feeds[feed_path(n)] = f"""<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"
	xmlns:content="http://purl.org/rss/1.0/modules/content/"
	xmlns:wfw="http://wellformedweb.org/CommentAPI/"
	xmlns:dc="http://purl.org/dc/elements/1.1/"
	xmlns:atom="http://www.w3.org/2005/Atom"
	xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"
	xmlns:slash="http://purl.org/rss/1.0/modules/slash/">
<channel>
	<title>Local {n:04d} &#8211; Harbourtown Herald</title>
	<atom:link href="{PORTAL}/tag/local-{n:04d}/feed/" rel="self" type="application/rss+xml" />
	<link>{PORTAL}/tag/local-{n:04d}/</link>
	<description>News from the harbour town</description>
	<lastBuildDate>{built}</lastBuildDate>
	<language>en-GB</language>
	<sy:updatePeriod>hourly</sy:updatePeriod>
	<sy:updateFrequency>1</sy:updateFrequency>
	<generator>https://wordpress.org/?v=6.7.1</generator>{items}
</channel>
</rss>
""".encode()
    return feeds


def distinct_articles(count: int = FEEDS) -> int:
    return count + count * OWN


# -- the feed server (its own process) -----------------------------------------------------------


class _FeedServer(asyncio.Protocol):
    """HTTP/1.1 GET with keep-alive; 304 when If-None-Match names the feed's ETag."""

    def __init__(self, responses: dict[bytes, tuple[bytes, bytes, bytes]]) -> None:
        self._responses = responses
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        transport = self._transport
        assert transport is not None
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            lines = head.split(b"\r\n")
            request = lines[0].split(b" ")
            path = request[1] if len(request) > 1 else b"/"
            sent_etag, close = None, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"if-none-match":
                    sent_etag = value.strip()
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            found = self._responses.get(path)
            if found is None:
                transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                ok, not_modified, etag = found
                transport.write(not_modified if sent_etag == etag else ok)
            if close:
                transport.close()
                return


def _responses(feeds: dict[str, bytes]) -> dict[bytes, tuple[bytes, bytes, bytes]]:
    modified = format_datetime(datetime(2026, 11, 27, 8, 0, tzinfo=UTC), usegmt=True).encode()
    built = {}
    for path, body in feeds.items():
        etag = b'"' + hashlib.sha1(body, usedforsecurity=False).hexdigest()[:20].encode() + b'"'
        common = b"ETag: " + etag + b"\r\nLast-Modified: " + modified + b"\r\n"
        ok = (
            b"HTTP/1.1 200 OK\r\nContent-Type: " + CONTENT_TYPE.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n" + common + b"\r\n" + body
        )
        not_modified = b"HTTP/1.1 304 Not Modified\r\n" + common + b"\r\n"
        built[path.encode()] = (ok, not_modified, etag)
    return built


def serve(feeds: dict[str, bytes], conn: Connection) -> None:
    """The server process: bind 127.0.0.1 on a free port, send the port, serve until SIGTERM."""
    responses = _responses(feeds)
    del feeds
    serve_until_sigterm(lambda: _FeedServer(responses), conn, backlog=1024)


def serve_until_sigterm(
    protocol: Callable[[], asyncio.BaseProtocol], conn: Connection, backlog: int = 128
) -> None:
    """Serve ``protocol`` on 127.0.0.1 (uvloop when installed) on a free port, send the port
    through ``conn``, and stop at SIGTERM."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        server = await loop.create_server(protocol, "127.0.0.1", 0, backlog=backlog)
        conn.send(server.sockets[0].getsockname()[1])
        async with server:
            await stop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # uvloop.install on 3.12+
        asyncio.run(run())


# -- the polling workers (their own processes) ----------------------------------------------------


@dataclass
class CycleReport:
    worker: int
    polls: int = 0
    results: Counter[str] = field(default_factory=Counter)
    new: int = 0
    updated: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    max_rss_kb: int = 0
    ready_rss_kb: int = 0  # peak RSS once imported, connected and ready, before any poll
    cpu_seconds: float = 0.0  # user + system, this process
    statements: int = 0  # SQL statements sent (savepoints included; BEGIN/COMMIT not)
    commits: int = 0
    stages: dict[str, float] = field(default_factory=dict)  # CPU seconds of each poller stage
    profile: str = ""


STAGES = ("claim", "fetch_feed", "parse_feed", "normalize_entries", "store_items")


def _time_stages(totals: defaultdict[str, float]) -> None:
    """Wrap the poller and its stages so each adds its thread's CPU seconds to ``totals``
    (a few microseconds a poll)."""
    for name in ("poll_source", *STAGES):
        setattr(poller, name, _timed(name, getattr(poller, name), totals))


def _timed(
    name: str, real: Callable[..., Any], totals: defaultdict[str, float]
) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return real(*args, **kwargs)
        finally:
            totals[name] += time.thread_time() - started  # under the GIL: close enough

    return timed


def poll_worker(
    worker: int,
    db_url: str,
    source_ids: list[int],
    cycles: list[tuple[str, datetime]],
    threads: int,
    barrier: Barrier,
    results: mp.Queue[CycleReport],
    progress: Any,
    profile: bool,
) -> None:
    engine = make_engine(db_url, pool_size=threads + 1, max_overflow=2)
    sessions = session_factory(engine)
    client = make_client(USER_AGENT)
    sql = Counter[str]()
    stages: defaultdict[str, float] = defaultdict(float)
    _time_stages(stages)

    def count_statement(*_args: Any) -> None:
        sql["statements"] += 1  # under the GIL; exact enough with threads

    def count_commit(*_args: Any) -> None:
        sql["commits"] += 1

    event.listen(engine, "before_cursor_execute", count_statement)
    event.listen(engine, "commit", count_commit)
    ready_rss = peak_rss_kb()
    try:
        for _name, now in cycles:
            report = CycleReport(worker)
            sql.clear()
            stages.clear()
            lock = threading.Lock()
            chunks = [source_ids[t::threads] for t in range(threads)]

            def run(
                ids: list[int],
                report: CycleReport = report,
                now: datetime = now,
                lock: threading.Lock = lock,
            ) -> None:
                done = 0
                for source_id in ids:
                    try:
                        outcome = poller.poll_source(sessions, client, source_id, now=now)
                        result, error = outcome.result, outcome.error
                        new, updated = outcome.new, outcome.updated
                    except Exception as exc:  # the poller let it through: count it, go on
                        result, error, new, updated = (
                            "crashed",
                            f"{type(exc).__name__}: {exc}",
                            0,
                            0,
                        )
                    with lock:
                        report.polls += 1
                        report.results[result] += 1
                        report.new += new
                        report.updated += updated
                        if error and len(report.errors) < 5:
                            report.errors.append(error[:300])
                    done += 1
                    if done % 25 == 0:
                        with progress.get_lock():
                            progress.value += 25
                with progress.get_lock():
                    progress.value += done % 25

            barrier.wait()
            profiler = cProfile.Profile() if profile else None
            started = time.perf_counter()
            cpu = time.process_time()
            if profiler:
                profiler.enable()
            if threads == 1:
                run(chunks[0])
            else:
                pool = [threading.Thread(target=run, args=(c,)) for c in chunks]
                for t in pool:
                    t.start()
                for t in pool:
                    t.join()
            if profiler:
                profiler.disable()
            report.seconds = time.perf_counter() - started
            report.cpu_seconds = time.process_time() - cpu
            report.statements, report.commits = sql["statements"], sql["commits"]
            report.stages = dict(stages)
            report.max_rss_kb = peak_rss_kb()
            report.ready_rss_kb = ready_rss
            if profiler:
                report.profile = _profile_text(profiler)
            results.put(report)
        barrier.wait()  # the parent reads the database backends' CPU before they close
    finally:
        client.close()
        engine.dispose()


def peak_rss_kb() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: that survives the exec of a spawned
    child, so it would report the parent's peak (which holds every feed body)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _profile_text(profiler: cProfile.Profile) -> str:
    out = []
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative")):
        stream = _Lines()
        stats = pstats.Stats(profiler, stream=stream)  # type: ignore[arg-type]
        stats.strip_dirs().sort_stats(key).print_stats(28)
        out.append(f"--- worker 0 by {title} ---\n" + stream.text())
    return "\n".join(out)


class _Lines:
    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, s: str) -> int:
        self._parts.append(s)
        return len(s)

    def text(self) -> str:
        lines = "".join(self._parts).splitlines()
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        return "\n".join(line.rstrip() for line in lines[start:] if line.strip())


# -- the database ---------------------------------------------------------------------------------


class Database:
    """A fresh database for the run, dropped by close()."""

    def __init__(
        self, sqlite: bool, pg_url: str, tmp: Path, sync_commit: bool = True, prefix: str = "poll"
    ) -> None:
        self._admin_url = ""
        self._name = ""
        if sqlite:
            self.url = f"sqlite:///{tmp / 'poll.db'}"
        else:
            admin = make_url(pg_url)
            self._admin_url = admin.render_as_string(hide_password=False)
            self._name = f"bench_{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
            self._admin(f'CREATE DATABASE "{self._name}"')
            if not sync_commit:  # a diagnostic: how much of a poll is waiting for WAL fsync
                self._admin(f'ALTER DATABASE "{self._name}" SET synchronous_commit = off')
            self.url = admin.set(database=self._name).render_as_string(hide_password=False)
        self.engine = make_engine(self.url)

    def _admin(self, sql: str) -> None:
        engine = make_engine(self._admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(sql)
        finally:
            engine.dispose()

    def backend_pids(self) -> set[int]:
        """The PostgreSQL server processes serving this database (none for SQLite)."""
        if not self._name:
            return set()
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("select pid from pg_stat_activity where datname = :name"),
                {"name": self._name},
            )
            return {int(pid) for (pid,) in rows}

    def describe(self) -> str:
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                return "SQLite " + str(conn.exec_driver_sql("select sqlite_version()").scalar())
            version = str(conn.exec_driver_sql("show server_version").scalar())
            return f"PostgreSQL {version.split()[0]} (127.0.0.1, db {self._name})"

    def close(self) -> None:
        self.engine.dispose()
        if self._name:
            self._admin(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)')


def register_sources(db: Database, base_url: str) -> list[int]:
    with session_factory(db.engine)() as session, session.begin():
        tags = sorted(
            tags_for(session, [f"topic-{t:02d}" for t in range(TAGS)]), key=lambda t: t.slug
        )
        sources = [
            Source(url=base_url + feed_path(n), interval_seconds=900, tags=[tags[n % TAGS]])
            for n in range(FEEDS)
        ]
        session.add_all(sources)
        session.flush()
        return [s.id for s in sources]


def stored_counts(db: Database) -> tuple[int, int, int]:
    """Posts, post-tag links, and posts carrying more than one tag."""
    with db.engine.connect() as conn:
        posts = conn.scalar(select(func.count()).select_from(Post)) or 0
        links = conn.scalar(select(func.count()).select_from(post_tags)) or 0
        multi = conn.scalar(
            text("select count(*) from (select post_id from post_tags group by post_id "
                 "having count(*) > 1) as t")
        ) or 0  # fmt: skip
    return posts, links, multi


# -- parse-only references --------------------------------------------------------------------


def rate(label: str, bodies: list[bytes], parse: Callable[[bytes], int], budget: float) -> float:
    """Feeds/s parsing ``bodies`` once each (stopping early after ``budget`` seconds)."""
    started = time.perf_counter()
    done = 0
    for body in bodies:
        parse(body)
        done += 1
        if time.perf_counter() - started > budget:
            break
    elapsed = time.perf_counter() - started
    print(f"  {label}: {done} feeds in {elapsed:.1f} s", file=sys.stderr, flush=True)
    return done / elapsed


def parse_rates(feeds: dict[str, bytes], base_url: str, now: datetime) -> dict[str, float]:
    import feedparser

    bodies = list(feeds.values())
    urls = [base_url + path for path in feeds]

    def with_feedparser(body: bytes) -> int:
        return len(feedparser.parse(body).entries)

    def with_parse_feed(body: bytes) -> int:
        return len(parse_feed(body, content_type=CONTENT_TYPE, url=urls[0]).entries)

    def with_normalize(body: bytes) -> int:
        feed = parse_feed(body, content_type=CONTENT_TYPE, url=urls[0])
        return len(normalize_entries(feed.entries, feed_url=urls[0], site_url=feed.link, now=now))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "feedparser": rate("feedparser.parse", bodies, with_feedparser, 60.0),
            "parse_feed": rate("parse_feed", bodies, with_parse_feed, 30.0),
            "normalize": rate("parse_feed + normalize_entries", bodies, with_normalize, 30.0),
        }


# -- orchestration ---------------------------------------------------------------------------------


@dataclass
class CpuSplit:
    """CPU seconds spent during a cycle, by whom: is the feed server (or anyone else) taking
    a core the pollers could have used?"""

    workers: float = 0.0
    server: float = 0.0
    postgres: float = 0.0  # the backends serving this run's database
    other_postgres: float = 0.0  # other databases' backends, WAL writer, autovacuum, ...
    rest: float = 0.0  # everything else on the machine (other users of a shared machine)
    available: float = 0.0  # wall time x CPUs


_TICK = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """Machine-wide non-idle CPU seconds since boot (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _process_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone
        return 0.0
    return (int(stat[11]) + int(stat[12])) / _TICK


def _postgres_seconds() -> dict[int, float]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    found[int(entry.name)] = _process_seconds(int(entry.name))
    return found


class CpuSampler:
    def __init__(self, server: int, backends: Callable[[], set[int]]) -> None:
        self._server, self._backends = server, backends
        self._ours: set[int] = set()  # every backend seen: the last cycle's close as it ends

    def start(self) -> None:
        self._ours |= self._backends()
        self._started = time.perf_counter()
        self._busy = _busy_seconds()
        self._postgres = _postgres_seconds()
        self._own = {self._server: _process_seconds(self._server)}

    def stop(self, workers: float) -> CpuSplit:
        """``workers``: their CPU seconds as they measured them (the last cycle's have exited
        by now, and /proc forgets them)."""
        wall = time.perf_counter() - self._started
        busy = _busy_seconds() - self._busy
        own = {pid: _process_seconds(pid) - seconds for pid, seconds in self._own.items()}
        postgres = {
            pid: seconds - self._postgres.get(pid, 0.0)
            for pid, seconds in _postgres_seconds().items()
        }
        self._ours |= self._backends()
        ours = self._ours
        split = CpuSplit(
            workers=workers,
            server=own[self._server],
            postgres=sum(v for pid, v in postgres.items() if pid in ours),
            other_postgres=sum(v for pid, v in postgres.items() if pid not in ours),
            available=wall * (os.cpu_count() or 1),
        )
        split.rest = max(
            0.0, busy - split.workers - split.server - split.postgres - split.other_postgres
        )
        return split


def run_cycles(
    ctx: SpawnContext,
    db_url: str,
    ids: list[int],
    workers: int,
    threads: int,
    profile: bool,
    processes: list[SpawnProcess],
    backends: Callable[[], set[int]],
) -> dict[str, tuple[list[CycleReport], float, CpuSplit]]:
    start = datetime.now(UTC).replace(microsecond=0)
    cycles = [("cold", start), ("warm", start + timedelta(minutes=1))]
    shuffled = ids[:]
    random.Random(42).shuffle(shuffled)  # tag feeds sharing articles are rarely polled together
    barrier = ctx.Barrier(workers + 1)
    results: mp.Queue[CycleReport] = ctx.Queue()
    progress = ctx.Value("i", 0)
    for w in range(workers):
        proc = ctx.Process(
            target=poll_worker,
            args=(w, db_url, shuffled[w::workers], cycles, threads, barrier, results, progress),
            kwargs={"profile": profile and w == 0},
            name=f"poll-worker-{w}",
        )
        proc.start()
        processes.append(proc)
    out: dict[str, tuple[list[CycleReport], float, CpuSplit]] = {}
    sampler = CpuSampler(cast(int, processes[0].pid), backends)  # the server, started first
    for name, _now in cycles:
        barrier.wait(timeout=120)
        sampler.start()
        with progress.get_lock():
            progress.value = 0
        started = time.perf_counter()
        reports = collect(results, workers, processes, started, progress, f"{name}: ", len(ids))
        wall = time.perf_counter() - started
        split = sampler.stop(sum(r.cpu_seconds for r in reports))
        out[name] = (sorted(reports, key=lambda r: r.worker), wall, split)
        print(f"  {name} cycle done in {wall:.1f} s", file=sys.stderr, flush=True)
    barrier.wait(timeout=120)  # now the workers may close their connections and exit
    for proc in processes:
        proc.join(timeout=30)
    return out


Report = TypeVar("Report")


def collect(
    results: mp.Queue[Report],
    count: int,
    processes: Sequence[SpawnProcess],
    started: float,
    progress: Any,
    label: str,
    total: int,
    limit: float = CYCLE_LIMIT,
) -> list[Report]:
    """Wait for ``count`` workers' reports, printing progress (``progress``: a shared counter
    of the ``total`` items) every 3 s; a phase past ``limit`` s or a dead worker ends the run."""
    reports: list[Report] = []
    last_print = started
    while len(reports) < count:
        with contextlib.suppress(queue.Empty):
            reports.append(results.get(timeout=0.5))
        now = time.perf_counter()
        if now - last_print >= 3 and len(reports) < count:
            last_print = now
            done = progress.value
            print(
                f"  {label}{done:,}/{total:,} done, {now - started:.0f} s, "
                f"{done / (now - started):,.0f}/s",
                file=sys.stderr,
                flush=True,
            )
        if now - started > limit:
            raise RuntimeError(f"{label}still running after {limit:.0f} s")
        if len(reports) < count and any(p.exitcode not in (None, 0) for p in processes):
            raise RuntimeError(f"{label}a worker died")
    return reports


def versions() -> str:
    names = ("httpx", "SQLAlchemy", "psycopg", "lxml", "nh3", "feedparser", "uvloop")
    found = []
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(found)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def stop(proc: SpawnProcess) -> None:
    if proc.is_alive():
        proc.terminate()
        proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


def database_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark on PostgreSQL takes."""
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="server to create the database on")
    parser.add_argument("--profile", action="store_true", help="cProfile worker 0, print top")
    parser.add_argument(
        "--no-sync-commit",
        action="store_true",
        help="diagnostic: PostgreSQL database with synchronous_commit=off",
    )


def exit_on_sigterm() -> None:
    """SIGTERM ends the script through its `finally` blocks: children stopped, databases gone."""

    def _terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="polling processes (default 2)")
    # Two threads: one polls while the other waits on a commit or the network (the warm cycle
    # goes from about 680 to 900-1,000 polls/s, the cold one gains about 10%).
    parser.add_argument(
        "--threads", type=int, default=2, help="polling threads per process (default 2)"
    )
    parser.add_argument("--sqlite", action="store_true", help="a temp SQLite file, not PostgreSQL")
    parser.add_argument("--full-text", action="store_true", help="add content:encoded bodies")
    database_options(parser)
    args = parser.parse_args()
    exit_on_sigterm()
    ctx = mp.get_context("spawn")
    tmp = Path(tempfile.mkdtemp(prefix="bench-poll-"))
    processes: list[SpawnProcess] = []
    db: Database | None = None
    try:
        print("generating feeds ...", file=sys.stderr, flush=True)
        base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
        feeds = make_feeds(base, args.full_text)
        sizes = sorted(len(b) for b in feeds.values())
        parent, child = ctx.Pipe()
        server = ctx.Process(target=serve, args=(feeds, child), name="feed-server")
        server.start()
        processes.append(server)
        if not parent.poll(60):
            raise RuntimeError("the feed server did not start")
        base_url = f"http://127.0.0.1:{parent.recv()}"
        print(
            f"serving {len(feeds)} feeds at {base_url}; creating the database ...",
            file=sys.stderr,
            flush=True,
        )
        db = Database(args.sqlite, args.pg_url, tmp, sync_commit=not args.no_sync_commit)
        upgrade(db.engine)
        ids = register_sources(db, base_url)
        print(f"{len(ids)} sources registered; polling ...", file=sys.stderr, flush=True)
        cycles = run_cycles(
            ctx, db.url, ids, args.workers, args.threads, args.profile, processes, db.backend_pids
        )
        posts, links, multi = stored_counts(db)
        print("parse-only references (this process, one core) ...", file=sys.stderr, flush=True)
        rates = parse_rates(feeds, base_url, base + timedelta(minutes=10))
        report(args, cycles, rates, (posts, links, multi), sizes, db.describe())
    finally:
        for proc in reversed(processes):
            stop(proc)
        if db is not None:
            db.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(
    args: argparse.Namespace,
    cycles: dict[str, tuple[list[CycleReport], float, CpuSplit]],
    rates: dict[str, float],
    stored: tuple[int, int, int],
    sizes: list[int],
    database: str,
) -> None:
    (cold, cold_wall, cold_cpu), (warm, warm_wall, warm_cpu) = cycles["cold"], cycles["warm"]
    posts, links, multi = stored

    def results(reports: list[CycleReport]) -> str:
        total: Counter[str] = Counter()
        for r in reports:
            total.update(r.results)
        return ", ".join(f"{k} {v}" for k, v in sorted(total.items()))

    def errors(reports: list[CycleReport]) -> int:
        return sum(
            v for r in reports for k, v in r.results.items() if k in ("error", "crashed", "busy")
        )

    def per_poll(reports: list[CycleReport]) -> str:
        polls = sum(r.polls for r in reports) or 1
        statements, commits = (sum(r.statements for r in reports), sum(r.commits for r in reports))
        return f"{statements / polls:.1f}, {commits / polls:.1f}"

    def cpu(split: CpuSplit, polls: int) -> str:
        ms = [1000 * v / (polls or 1) for v in (split.workers, split.server, split.postgres)]
        return (
            f"{ms[0]:.1f} + {ms[1]:.2f} + {ms[2]:.1f} ms; of {split.available:.0f} CPU s: "
            f"pollers {split.workers:.1f}, server {split.server:.1f}, PostgreSQL "
            f"{split.postgres:.1f} (+{split.other_postgres:.1f} other), rest {split.rest:.1f}"
        )

    def by_stage(reports: list[CycleReport]) -> str:
        polls = sum(r.polls for r in reports) or 1
        total = {n: sum(r.stages.get(n, 0.0) for r in reports) for n in ("poll_source", *STAGES)}
        ms = {name: 1000 * total[name] / polls for name in ("poll_source", *STAGES)}
        rest = ms["poll_source"] - sum(ms[name] for name in STAGES)
        shown = ", ".join(f"{name.split('_')[0]} {ms[name]:.2f}" for name in STAGES)
        return f"{shown}, rest {rest:.2f} (of {ms['poll_source']:.2f})"

    def busy(reports: list[CycleReport]) -> str:
        return ", ".join(f"{r.seconds:.1f} / {r.cpu_seconds:.1f}" for r in reports)

    cold_rate = sum(r.polls for r in cold) / cold_wall
    warm_rate = sum(r.polls for r in warm) / warm_wall
    ratio = cold_rate / rates["feedparser"]
    rss = ", ".join(
        f"{c.max_rss_kb / 1024:.0f} / {w.max_rss_kb / 1024:.0f} (ready {c.ready_rss_kb / 1024:.0f})"
        for c, w in zip(cold, warm, strict=True)
    )
    expected = distinct_articles()
    met = {True: "met", False: "MISSED"}
    rows = [
        ("cold cycle (fetch, parse, store)", f"{cold_rate:,.0f} polls/s ({cold_wall:.1f} s)"),
        ("warm cycle (304)",
         f"{warm_rate:,.0f} polls/s ({warm_wall:.1f} s)  target >= 500: {met[warm_rate >= 500]}"),
        ("feedparser parse-only (1 process)", f"{rates['feedparser']:,.0f} feeds/s"),
        ("parse_feed parse-only (1 process)", f"{rates['parse_feed']:,.0f} feeds/s"),
        ("parse_feed + normalize (1 process)", f"{rates['normalize']:,.0f} feeds/s"),
        ("cold / feedparser", f"{ratio:.1f}x  target >= 5x: {met[ratio >= 5]}"),
        ("SQL statements, commits per poll",
         f"cold {per_poll(cold)}; warm {per_poll(warm)}"),
        ("worker wall s / CPU s", f"cold {busy(cold)}; warm {busy(warm)}"),
        ("cold CPU/poll: pollers + server + PG", cpu(cold_cpu, sum(r.polls for r in cold))),
        ("cold poller CPU ms/poll by stage", by_stage(cold)),
        ("warm CPU/poll: pollers + server + PG", cpu(warm_cpu, sum(r.polls for r in warm))),
        ("worker peak RSS MB, cold / warm", rss),
        ("posts stored (expected)",
         f"{posts:,} ({expected:,}); {links:,} post-tags, {multi:,} posts with 2+ tags"),
        ("new posts reported by polls", f"{sum(r.new for r in cold):,}"),
        ("cold results", results(cold)),
        ("warm results", results(warm)),
        ("errors (cold / warm)", f"{errors(cold)} / {errors(warm)}"),
    ]  # fmt: skip
    kb = [size / 1024 for size in (sizes[len(sizes) // 2], sizes[0], sizes[-1])]
    feed_kb = f"{kb[0]:.1f} KB median ({kb[1]:.1f}-{kb[2]:.1f})"
    print()
    print(
        f"poll benchmark: {FEEDS} feeds x {ITEMS} items, {feed_kb}"
        + (", full text" if args.full_text else ", excerpts")
        + f"; {args.workers} worker process(es) x {args.threads} thread(s)"
        + ("; profiled (slower)" if args.profile else "")
        + ("; synchronous_commit=off" if args.no_sync_commit else "")
    )
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:{width}} | {value}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}; {versions()}; {database}")
    for r in [*cold, *warm]:
        for error in r.errors:
            print(f"worker {r.worker} error: {error}")
    if args.profile and cold[0].profile:
        print("\n=== cold cycle ===\n" + cold[0].profile)
        print("\n=== warm cycle ===\n" + warm[0].profile)


if __name__ == "__main__":
    sys.exit(main())
