"""fetch_feed against a real local HTTP server: validators, encodings, redirects, errors, and
hostile answers (huge bodies, gzip bombs, dripping servers) in bounded time and memory."""

from __future__ import annotations

import gzip
import socket
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from service.feeds.fetch import ACCEPT, FetchFailed, fetch_feed, make_client
from tests.feed_server import (
    FeedServer,
    Handler,
    Route,
    answer,
    drip,
    endless,
    redirect,
    stall,
)

UA = "newsletter/0.1 (+https://news.example)"  # as Settings.user_agent builds it
RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title></channel></rss>'
ETAG = 'W/"v1-abc"'
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
MB = 1024 * 1024
BIG_RSS = (
    b"<rss><channel>" + b"<item><title>Headline</title></item>" * 100_000 + b"</channel></rss>"
)
RSS_HEADERS = {
    "Content-Type": "application/rss+xml; charset=utf-8",
    "ETag": ETAG,
    "Last-Modified": LAST_MODIFIED,
    "Cache-Control": "public, max-age=300",
}


def conditional_feed(*, validators_on_304: bool = True) -> Route:
    """Answers 304 when either validator matches, as most servers do."""

    def route(h: Handler) -> None:
        if h.headers["If-None-Match"] == ETAG or h.headers["If-Modified-Since"] == LAST_MODIFIED:
            answer(304, headers={"ETag": ETAG} if validators_on_304 else {})(h)
        else:
            answer(200, RSS, RSS_HEADERS)(h)

    return route


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes gzipped: about a thousandth of that on the wire."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(MB)
    return b"".join(packer.compress(zeros) for _ in range(size // MB)) + packer.flush()


@pytest.fixture(scope="module")
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        r = srv.routes
        for path in ("/feed", "/feed-2", "/feed-3", "/pooled"):
            r[path] = conditional_feed()
        r["/bare-304"] = conditional_feed(validators_on_304=False)
        r["/html"] = answer(
            200, b"<html><body>Not a feed</body></html>", {"Content-Type": "text/html"}
        )
        r["/untyped"] = answer(200, RSS)
        r["/gzip"] = answer(200, gzip.compress(RSS), {"Content-Encoding": "gzip"})
        r["/deflate"] = answer(200, zlib.compress(RSS), {"Content-Encoding": "deflate"})
        raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        r["/raw-deflate"] = answer(
            200, raw.compress(RSS) + raw.flush(), {"Content-Encoding": "deflate"}
        )
        r["/gzip-big"] = answer(200, gzip.compress(BIG_RSS), {"Content-Encoding": "gzip"})
        r["/deflate-big"] = answer(200, zlib.compress(BIG_RSS), {"Content-Encoding": "deflate"})
        r["/bad-gzip"] = answer(200, b"\x1f\x8b\x08\x00garbage" * 10, {"Content-Encoding": "gzip"})
        bomb = gzip_bomb(120 * MB)
        r["/bomb"] = answer(200, bomb, {"Content-Encoding": "gzip", "Content-Type": "text/xml"})
        r["/huge-declared"] = endless(50 * MB, content_length=True)
        r["/huge-streamed"] = endless(50 * MB, content_length=False)
        r["/drip-body"] = drip(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<rss>")
        r["/drip-body-2"] = drip(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<rss>")
        r["/drip-headers"] = drip(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nX-Drip: ")
        r["/stall"] = stall(2.0)
        r["/loop-a"], r["/loop-b"] = redirect("/loop-b"), redirect("/loop-a")
        for n in range(1, 7):  # /hops/N: N redirects to the feed
            r[f"/hops/{n}"] = redirect(f"/hops/{n - 1}" if n > 1 else "/feed-3")
        r["/moved"] = redirect("/feed-2", 301)
        r["/moved-twice"] = redirect("/moved-308", 301)
        r["/moved-308"] = redirect("/feed-2", 308)
        r["/found"] = redirect("/feed-2", 302)
        r["/mixed"] = redirect("/found", 301)
        r["/to-file"] = redirect("file:///etc/passwd")
        r["/to-404"] = redirect("/nowhere", 301)
        yield srv


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with make_client(UA) as c:  # one client for the module: pooled, as in a worker
        yield c


def failure(client: httpx.Client, url: str, **kwargs: Any) -> FetchFailed:
    with pytest.raises(FetchFailed) as caught:
        fetch_feed(client, url, **kwargs)
    return caught.value


# -- conditional GET -----------------------------------------------------------------------------


def test_first_fetch_returns_body_and_raw_validators(
    server: FeedServer, client: httpx.Client
) -> None:
    result = fetch_feed(client, server.url("/feed"))

    assert (result.status, result.body) == (200, RSS)
    assert (result.etag, result.last_modified) == (ETAG, LAST_MODIFIED)  # raw, W/ and quotes kept
    assert result.content_type == "application/rss+xml; charset=utf-8"
    assert result.max_age == 300
    assert (result.url, result.moved_to, result.retry_after) == (server.url("/feed"), None, None)
    assert 0 < result.elapsed < 5
    seen = server.seen("/feed").headers
    assert seen["user-agent"] == "newsletter/0.1 (+https://news.example)"
    assert seen["accept"] == ACCEPT
    assert seen["accept-encoding"] == "gzip, deflate"
    assert "if-none-match" not in seen
    assert "if-modified-since" not in seen


def test_second_fetch_sends_both_validators_and_gets_304(
    server: FeedServer, client: httpx.Client
) -> None:
    result = fetch_feed(client, server.url("/feed"), etag=ETAG, last_modified=LAST_MODIFIED)

    seen = server.seen("/feed").headers
    assert (seen["if-none-match"], seen["if-modified-since"]) == (ETAG, LAST_MODIFIED)
    assert (result.status, result.body) == (304, None)
    assert (result.etag, result.last_modified) == (ETAG, LAST_MODIFIED)


def test_304_without_validators_keeps_the_ones_sent(
    server: FeedServer, client: httpx.Client
) -> None:
    result = fetch_feed(client, server.url("/bare-304"), etag=ETAG, last_modified=LAST_MODIFIED)

    assert result.status == 304
    assert (result.etag, result.last_modified) == (ETAG, LAST_MODIFIED)


def test_unconditional_fetch_sends_no_validators(server: FeedServer, client: httpx.Client) -> None:
    result = fetch_feed(
        client, server.url("/feed"), etag=ETAG, last_modified=LAST_MODIFIED, conditional=False
    )

    seen = server.seen("/feed").headers
    assert "if-none-match" not in seen
    assert "if-modified-since" not in seen
    assert (result.status, result.body) == (200, RSS)


def test_connections_are_reused_across_fetches(server: FeedServer, client: httpx.Client) -> None:
    fetch_feed(client, server.url("/pooled"))
    fetch_feed(client, server.url("/pooled"))

    ports = {r.client_port for r in server.requests if r.path == "/pooled"}
    assert len(ports) == 1


# -- bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/gzip", RSS),
        ("/deflate", RSS),
        ("/raw-deflate", RSS),
        ("/gzip-big", BIG_RSS),  # 3.6 MB: inflated in many bounded steps
        ("/deflate-big", BIG_RSS),
    ],
)
def test_compressed_body_is_decoded(
    server: FeedServer, client: httpx.Client, path: str, body: bytes
) -> None:
    assert fetch_feed(client, server.url(path)).body == body


def test_corrupt_gzip_is_reported(server: FeedServer, client: httpx.Client) -> None:
    assert failure(client, server.url("/bad-gzip")).reason == "bad_encoding"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/html", "text/html"), ("/untyped", None)],
)
def test_wrong_or_missing_content_type_still_returns_the_body(
    server: FeedServer, client: httpx.Client, path: str, content_type: str | None
) -> None:
    # The parser, not the fetch, decides whether this is a feed.
    result = fetch_feed(client, server.url(path))

    assert result.status == 200
    assert result.body
    assert result.content_type == content_type


def test_declared_50mb_body_is_refused_before_reading(
    server: FeedServer, client: httpx.Client
) -> None:
    started = time.monotonic()
    exc = failure(client, server.url("/huge-declared"))

    assert exc.reason == "too_large"
    assert "Content-Length" in str(exc)
    assert time.monotonic() - started < 2
    assert server.wait_hang_up("/huge-declared").bytes_sent < 50 * MB


def test_streamed_50mb_body_is_cut_off_in_bounded_memory(
    server: FeedServer, client: httpx.Client
) -> None:
    tracemalloc.start()
    try:
        started = time.monotonic()
        exc = failure(client, server.url("/huge-streamed"), max_bytes=2 * MB)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert exc.reason == "too_large"
    assert elapsed < 3
    assert peak < 5 * MB
    assert server.wait_hang_up("/huge-streamed").bytes_sent < 25 * MB  # it stopped reading
    assert fetch_feed(client, server.url("/feed")).status == 200  # the pool is not poisoned


def test_gzip_bomb_is_cut_off_in_bounded_memory(server: FeedServer, client: httpx.Client) -> None:
    tracemalloc.start()
    try:
        exc = failure(client, server.url("/bomb"))  # 120 MB inflated, 10 MB allowed
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert exc.reason == "too_large"
    assert peak < 16 * MB  # httpx's own decoding peaks past 100 MB here


# -- the total deadline --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers"])
def test_dripping_server_is_cut_off_at_the_deadline(
    server: FeedServer, client: httpx.Client, path: str
) -> None:
    started = time.monotonic()
    exc = failure(client, server.url(path), deadline=2)

    assert exc.reason == "timeout"
    assert "deadline" in str(exc)
    assert 1.9 < time.monotonic() - started < 3


def test_deadline_holds_for_a_plain_httpx_client_too(server: FeedServer) -> None:
    # Without make_client's transport the body loop's own check still ends the fetch.
    with httpx.Client() as plain:
        started = time.monotonic()
        exc = failure(plain, server.url("/drip-body-2"), deadline=1)

    assert exc.reason == "timeout"
    assert time.monotonic() - started < 2.5


def test_read_timeout(server: FeedServer) -> None:
    with make_client(UA, read_timeout=0.3) as impatient:
        exc = failure(impatient, server.url("/stall"))

    assert exc.reason == "timeout"
    assert "ReadTimeout" in str(exc)


# -- redirects -----------------------------------------------------------------------------------


def test_redirect_loop(server: FeedServer, client: httpx.Client) -> None:
    assert failure(client, server.url("/loop-a")).reason == "too_many_redirects"


def test_five_redirects_are_followed_and_six_are_too_many(
    server: FeedServer, client: httpx.Client
) -> None:
    assert fetch_feed(client, server.url("/hops/5")).url == server.url("/feed-3")
    assert failure(client, server.url("/hops/6")).reason == "too_many_redirects"


@pytest.mark.parametrize(
    ("path", "moved"),
    [("/moved", True), ("/moved-twice", True), ("/found", False), ("/mixed", False)],
)
def test_moved_to_only_when_every_redirect_is_permanent(
    server: FeedServer, client: httpx.Client, path: str, moved: bool
) -> None:
    result = fetch_feed(client, server.url(path))

    assert result.url == server.url("/feed-2")
    assert result.moved_to == (server.url("/feed-2") if moved else None)
    assert result.body == RSS


def test_permanent_redirect_to_an_error_reports_the_error(
    server: FeedServer, client: httpx.Client
) -> None:
    exc = failure(client, server.url("/to-404"))

    assert (exc.reason, exc.status) == ("http_404", 404)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/feed.xml", "javascript:alert(1)"]
)
def test_only_http_urls_are_fetched(client: httpx.Client, url: str) -> None:
    assert failure(client, url).reason == "not_http"


def test_redirect_off_http_is_refused(server: FeedServer, client: httpx.Client) -> None:
    assert failure(client, server.url("/to-file")).reason == "not_http"


# -- error statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 500])
def test_error_status_is_kept(server: FeedServer, client: httpx.Client, status: int) -> None:
    server.routes[f"/status/{status}"] = answer(status, b"<html>error page</html>")

    exc = failure(client, server.url(f"/status/{status}"))

    assert (exc.reason, exc.status, exc.permanent, exc.retry_after) == (
        f"http_{status}",
        status,
        False,
        None,
    )
    assert str(status) in str(exc)


def test_410_gone_is_permanent(server: FeedServer, client: httpx.Client) -> None:
    server.routes["/gone"] = answer(410)

    exc = failure(client, server.url("/gone"))

    assert (exc.reason, exc.status, exc.permanent) == ("gone", 410, True)


def retry_date(seconds: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("status", "header", "reason", "expected"),
    [
        (429, "7", "rate_limited", 7),
        (429, "date:120", "rate_limited", 120),
        (503, "30", "http_503", 30),
        (503, "date:3600", "http_503", 3600),
        (503, None, "http_503", None),
    ],
)
def test_retry_after_on_429_and_503(
    server: FeedServer,
    client: httpx.Client,
    status: int,
    header: str | None,
    reason: str,
    expected: float | None,
) -> None:
    if header and header.startswith("date:"):
        header = retry_date(int(header.removeprefix("date:")))
    path = f"/busy/{status}/{expected}"
    server.routes[path] = answer(status, b"busy", {"Retry-After": header} if header else {})

    exc = failure(client, server.url(path))

    assert (exc.reason, exc.status, exc.permanent) == (reason, status, False)
    if expected is None:
        assert exc.retry_after is None
    else:
        assert exc.retry_after == pytest.approx(expected, abs=2)


# -- network errors ------------------------------------------------------------------------------


def test_connection_refused(client: httpx.Client) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    exc = failure(client, f"http://127.0.0.1:{port}/feed")

    assert exc.reason == "connect"
    assert exc.status is None


def test_tls_failure(server: FeedServer, client: httpx.Client) -> None:
    # TLS to a plain-HTTP port: the handshake fails.
    assert failure(client, server.url("/feed", scheme="https")).reason == "tls"


def test_a_304_keeps_the_connection_for_the_next_poll() -> None:
    with FeedServer() as server, make_client("newsletter-tests/1.0") as client:
        server.routes["/feed"] = answer(304, b"", {"ETag": '"1"'})
        for _ in range(3):
            assert fetch_feed(client, server.url("/feed"), etag='"1"').status == 304
        ports = {seen.client_port for seen in server.requests}
        assert len(ports) == 1  # one keep-alive connection served all three polls
