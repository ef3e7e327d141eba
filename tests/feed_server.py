"""A real HTTP/1.1 server on 127.0.0.1 for feed tests: well-behaved answers and hostile ones.

Routes map a path to a function of the request handler; the factories below build the usual
ones (a fixed answer, a redirect, a dripping or endless body). Every request is recorded, and
so is every client that hung up while a route was still writing.

    with FeedServer() as server:
        server.routes["/feed"] = answer(200, b"<rss/>", {"Content-Type": "application/rss+xml"})
        fetch_feed(client, server.url("/feed"))
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.http_server import Served

Route = Callable[["Handler"], None]
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Seen:
    path: str
    headers: Mapping[str, str]  # lower-case names
    client_port: int


@dataclass(frozen=True)
class HangUp:
    path: str
    bytes_sent: int


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's pool is exercised
    server: _Server

    def do_GET(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.feed.requests.append(Seen(self.path, headers, self.client_address[1]))
        route = self.server.feed.routes.get(self.path.split("?")[0])
        self.sent = 0
        try:
            if route is None:
                answer(404, b"no such route")(self)
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self.server.feed.hang_up(HangUp(self.path, self.sent))

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.sent += len(data)

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read self.requests
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a dripping route may still be asleep when the tests end
    feed: FeedServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up mid-answer is what these tests provoke


class FeedServer(Served):
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.hang_ups: list[HangUp] = []
        self._hung_up = threading.Condition()
        server = _Server(("127.0.0.1", 0), Handler)
        server.feed = self
        super().__init__(server)

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def seen(self, path: str) -> Seen:
        """The last request for ``path``."""
        return next(r for r in reversed(self.requests) if r.path == path)

    def hang_up(self, event: HangUp) -> None:
        with self._hung_up:
            self.hang_ups.append(event)
            self._hung_up.notify_all()

    def wait_hang_up(self, path: str, timeout: float = 5.0) -> HangUp:
        """Wait until the client of ``path`` disconnected while the route was writing."""
        with self._hung_up:
            found = self._hung_up.wait_for(
                lambda: [h for h in self.hang_ups if h.path == path], timeout
            )
        assert found, f"the client never hung up on {path}"
        return found[-1]


# -- routes -----------------------------------------------------------------------------------


def _head(h: Handler, status: int, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    h.send_response(status)
    for name, value in headers.items() if isinstance(headers, Mapping) else headers:
        h.send_header(name, value)
    h.end_headers()


def answer(status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Route:
    """A fixed answer with a Content-Length (none on a 304)."""
    fields = dict(headers or {})
    if status != 304:
        fields["Content-Length"] = str(len(body))

    def route(h: Handler) -> None:
        _head(h, status, fields)
        if status != 304:
            h.write(body)

    return route


def redirect(location: str, status: int = 302) -> Route:
    return answer(status, b"", {"Location": location})


def endless(total: int, *, content_length: bool) -> Route:
    """``total`` bytes of XML-ish filler, declared up front or delimited by closing."""

    def route(h: Handler) -> None:
        fields = {"Content-Type": "application/rss+xml"}
        if content_length:
            fields["Content-Length"] = str(total)
        else:
            h.close_connection = True  # HTTP/1.1 with no length: the body ends at close
            fields["Connection"] = "close"
        _head(h, 200, fields)
        chunk = b"<item>" + b"x" * (CHUNK - 13) + b"</item>"
        while h.sent < total:
            h.write(chunk[: total - h.sent])

    return route


def drip(prefix: bytes, byte: bytes = b"x", every: float = 1.0, count: int = 120) -> Route:
    """Send ``prefix`` raw, then one byte per ``every`` seconds: no read timeout ever trips."""

    def route(h: Handler) -> None:
        h.close_connection = True
        h.write(prefix)
        for _ in range(count):
            time.sleep(every)
            h.write(byte)

    return route


def stall(seconds: float) -> Route:
    """Say nothing for ``seconds``, then answer."""

    def route(h: Handler) -> None:
        time.sleep(seconds)
        answer(200, b"late")(h)

    return route
