"""Fetch one feed over HTTP: politely (conditional GET, our own User-Agent) and defensively.

Whatever a site serves, a fetch ends within ``deadline`` seconds and holds at most ``max_bytes``
of decoded body in memory. Failures come back as one exception carrying what the poller needs:

FeedError
└── FetchFailed     ``reason`` (a short code, below), ``status``, ``retry_after``, ``permanent``

    reason               when
    timeout              connect or read timeout, or the total deadline passed
    too_large            Content-Length or the decoded body exceeds ``max_bytes``
    too_many_redirects   more than five redirects (loops included)
    http_<status>        any other non-success answer, e.g. http_404, http_500, http_503
    gone                 410: the feed was removed for good (``permanent``: disable the source)
    rate_limited         429
    connect              refused, reset, unresolvable host, connection lost mid-answer
    tls                  certificate or handshake failure
    protocol             a malformed HTTP answer
    bad_encoding         a gzip/deflate body that does not decompress
    not_http             a URL or redirect target that is not http(s) (file://, ftp://, ...)
    bad_url              a URL that cannot be parsed
"""

from __future__ import annotations

import contextvars
import ssl
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpcore
import httpx

from service.feeds.types import FeedError
from service.httpdate import retry_after as _retry_after

__all__ = [
    "ACCEPT",
    "FetchFailed",
    "FetchResult",
    "fetch_feed",
    "make_client",
]

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/xml;q=0.9, */*;q=0.5"
)
ACCEPT_ENCODING = "gzip, deflate"  # what _Decoder undoes; never br or zstd
MAX_REDIRECTS = 5
PERMANENT_REDIRECTS = frozenset({301, 308})
OK_STATUSES = frozenset({200, 203})

# The end of the fetch in flight on this thread (monotonic clock), read by every socket
# operation; None outside fetch_feed.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "feed_fetch_deadline", default=None
)


@dataclass(frozen=True)
class FetchResult:
    status: int  # 200, or 304 (not modified: no body)
    url: str  # where the body finally came from, after redirects
    moved_to: str | None  # the new URL when every redirect was permanent (301/308)
    body: bytes | None
    etag: str | None  # raw header values, sent back as they came
    last_modified: str | None
    content_type: str | None
    max_age: float | None  # Cache-Control max-age, seconds
    retry_after: float | None  # seconds
    elapsed: float  # seconds, the whole fetch


class FetchFailed(FeedError):
    def __init__(
        self,
        reason: str,
        message: str,
        *,
        url: str,
        status: int | None = None,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.url = url
        self.status = status
        self.retry_after = retry_after
        self.permanent = permanent


def make_client(
    user_agent: str, connect_timeout: float = 5.0, read_timeout: float = 15.0
) -> httpx.Client:
    """One client per worker process, reused across polls so connections are pooled."""
    return httpx.Client(
        transport=_DeadlineTransport(),
        headers={"User-Agent": user_agent, "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING},
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        # One long-lived client polls thousands of sites: a shared jar would grow without bound
        # and carry one site's cookies into later polls. Feeds need none.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


def fetch_feed(
    client: httpx.Client,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    conditional: bool = True,
    max_bytes: int = 10 * 1024 * 1024,
    deadline: float = 30.0,
) -> FetchResult:
    """GET ``url``; raise FetchFailed for anything but a body (200) or not-modified (304).

    ``conditional=False`` sends no validators, to get past a site whose ETag never changes.
    ``deadline`` bounds the whole fetch (connect, redirects, headers and body) when ``client``
    comes from make_client; the body loop checks it too, for any other client.
    """
    _check_scheme(url)
    started = time.monotonic()
    ends = started + deadline
    headers = {b"Accept-Encoding": ACCEPT_ENCODING.encode()}  # also for a caller's own client
    if conditional:
        headers |= _validators(etag, last_modified)
    token = _deadline.set(ends)
    try:
        with _mapped_errors(url, deadline), client.stream("GET", url, headers=headers) as response:
            return _result(response, etag, last_modified, max_bytes, ends, started)
    finally:
        _deadline.reset(token)


def _check_scheme(url: str) -> None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise FetchFailed("bad_url", f"{url}: not a valid URL: {exc}", url=url) from None
    if scheme not in ("http", "https"):
        raise FetchFailed("not_http", f"{url}: only http and https feeds are fetched", url=url)


# -- the answer ----------------------------------------------------------------------------------


def _result(
    response: httpx.Response,
    sent_etag: str | None,
    sent_last_modified: str | None,
    max_bytes: int,
    ends: float,
    started: float,
) -> FetchResult:
    status = response.status_code
    retry_after = _retry_after(response.headers.get("retry-after"))
    if status not in OK_STATUSES and status != 304:
        _raise_for_status(response, retry_after)
    if status == 304:
        # Read the (empty) answer to its end, so the connection goes back to the pool: an
        # unread response is closed, and every 304 would cost a new TCP and TLS handshake.
        _read_body(response, max_bytes, ends)
        body = None
    else:
        body = _read_body(response, max_bytes, ends)
    final = str(response.url)
    permanent = bool(response.history) and all(
        r.status_code in PERMANENT_REDIRECTS for r in response.history
    )
    etag = response.headers.get("etag")
    last_modified = response.headers.get("last-modified")
    if status == 304:  # many servers omit the validators on a 304: keep the ones that matched
        etag, last_modified = etag or sent_etag, last_modified or sent_last_modified
    return FetchResult(
        status=304 if status == 304 else 200,
        url=final,
        moved_to=final if permanent else None,
        body=body,
        etag=etag,
        last_modified=last_modified,
        content_type=response.headers.get("content-type"),
        max_age=_max_age(response.headers.get("cache-control")),
        retry_after=retry_after,
        elapsed=time.monotonic() - started,
    )


def _raise_for_status(response: httpx.Response, retry_after: float | None) -> NoReturn:
    status, url = response.status_code, str(response.url)
    text = f"{url}: HTTP {status} {response.reason_phrase}".rstrip()
    reason, permanent = f"http_{status}", False
    if status == 410:
        reason, permanent = "gone", True
        text += ": the site removed this feed for good"
    elif status == 429:
        reason = "rate_limited"
        text += ": too many requests"
    if retry_after is not None:
        text += f"; asked to wait {retry_after:.0f} s"
    raise FetchFailed(
        reason, text, url=url, status=status, retry_after=retry_after, permanent=permanent
    )


def _read_body(response: httpx.Response, max_bytes: int, ends: float) -> bytes:
    url = str(response.url)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        _too_large(url, max_bytes, f"Content-Length {int(declared)}")
    decoder = _decoder(response.headers.get("content-encoding", ""), url)
    body = bytearray()
    # iter_raw, not iter_bytes: httpx would inflate a whole network chunk at once, and 64 KB of
    # gzip can hold 64 MB of zeros.
    for raw in response.iter_raw():
        if time.monotonic() > ends:  # a byte a second never trips a read timeout
            raise FetchFailed("timeout", f"{url}: body still arriving at the deadline", url=url)
        for data in decoder.decode(raw):
            if len(body) + len(data) > max_bytes:
                _too_large(url, max_bytes, "the body")
            body += data
    return bytes(body)


def _too_large(url: str, max_bytes: int, what: str) -> NoReturn:
    limit = f"{max_bytes / 1024 / 1024:g} MB"
    raise FetchFailed("too_large", f"{url}: {what} exceeds the {limit} limit", url=url)


class _Decoder:
    """Content-Encoding undone in steps of bounded size: identity, gzip or deflate."""

    STEP = 256 * 1024

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._inflater: Any = None
        self._started = False
        if encoding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._inflater = zlib.decompressobj()

    def decode(self, data: bytes) -> Iterator[bytes]:
        """``data`` decoded, at most STEP bytes at a time: the caller stops on its limit."""
        if self._inflater is None:
            yield data
            return
        while True:
            out = self._inflate(data)
            if out:
                yield out
            data = self._inflater.unconsumed_tail
            if not data and len(out) < self.STEP:  # input used up and nothing left pending
                return

    def _inflate(self, data: bytes) -> bytes:
        first, self._started = not self._started, True
        try:
            return bytes(self._inflater.decompress(data, self.STEP))
        except zlib.error:
            if not (first and self._encoding == "deflate"):
                raise
        # "deflate" in the wild is often raw DEFLATE without the zlib header.
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        return bytes(self._inflater.decompress(data, self.STEP))


def _decoder(header: str, url: str) -> _Decoder:
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    known = [c for c in codings if c in ("gzip", "x-gzip", "deflate")]
    if len(known) > 1:
        raise FetchFailed("bad_encoding", f"{url}: stacked Content-Encoding {header!r}", url=url)
    # Unknown codings are ignored, as httpx does; the parser judges what arrives.
    return _Decoder(known[0] if known else "identity")


# -- headers -------------------------------------------------------------------------------------


def _validators(etag: str | None, last_modified: str | None) -> dict[bytes, bytes]:
    headers = {}
    if etag:
        headers[b"If-None-Match"] = _raw(etag)
    if last_modified:
        headers[b"If-Modified-Since"] = _raw(last_modified)
    return headers


def _raw(value: str) -> bytes:
    # httpx sends str headers as ASCII; a stored value that came in as Latin-1 goes back so.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _max_age(value: str | None) -> float | None:
    for directive in (value or "").split(","):
        name, _, arg = directive.strip().partition("=")
        if name.strip().lower() == "max-age":
            arg = arg.strip().strip('"')
            return float(arg) if arg.isdigit() else None
    return None


# -- errors --------------------------------------------------------------------------------------


@contextmanager
def _mapped_errors(url: str, deadline: float) -> Iterator[None]:
    """httpx's exceptions as FetchFailed, with a message an operator can act on."""
    try:
        yield
    except httpx.TooManyRedirects:
        raise FetchFailed(
            "too_many_redirects", f"{url}: more than {MAX_REDIRECTS} redirects", url=url
        ) from None
    except httpx.UnsupportedProtocol as exc:
        raise FetchFailed("not_http", f"{url}: redirected off http(s): {exc}", url=url) from None
    except httpx.TimeoutException as exc:
        ends = _deadline.get()
        if ends is not None and time.monotonic() >= ends:
            text = f"{url}: no complete answer within the {deadline:g} s deadline"
        else:
            text = f"{url}: {type(exc).__name__} ({exc or 'timed out'})"
        raise FetchFailed("timeout", text, url=url) from None
    except httpx.ConnectError as exc:
        reason = "tls" if _caused_by(exc, ssl.SSLError) else "connect"
        raise FetchFailed(reason, f"{url}: cannot connect: {exc}", url=url) from None
    except (httpx.ReadError, httpx.WriteError) as exc:
        raise FetchFailed("connect", f"{url}: connection lost: {exc}", url=url) from None
    except httpx.InvalidURL as exc:
        raise FetchFailed("bad_url", f"{url}: not a valid URL: {exc}", url=url) from None
    except zlib.error as exc:
        raise FetchFailed(
            "bad_encoding", f"{url}: body does not decompress: {exc}", url=url
        ) from None
    except httpx.HTTPError as exc:  # the rest are protocol errors: malformed answers
        raise FetchFailed("protocol", f"{url}: bad HTTP answer: {exc}", url=url) from None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# -- the total deadline --------------------------------------------------------------------------
# httpx's timeouts apply to each socket operation, so a server that drips a byte a second (in
# the headers as well as the body) never trips them. Every socket operation here waits at most
# until the fetch's deadline instead.


def _clamp(timeout: float | None, expired: type[Exception]) -> float | None:
    ends = _deadline.get()
    if ends is None:
        return timeout
    remaining = ends - time.monotonic()
    if remaining <= 0:
        raise expired("the fetch deadline passed")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport (HTTP/1.1, pooled, TLS verified) over the deadline backend.

    httpx takes no network backend, so the pool it built is swapped for an identical one that
    uses ours; a test with a dripping server guards this against httpx changes.
    """

    def __init__(self) -> None:
        super().__init__(http1=True, http2=False)
        limits = httpx.Limits()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_DeadlineBackend(),
        )
