"""A local stand-in for Postmark's batch API that rate-limits for a while, then accepts.

It answers `POST /email/batch` as Postmark documents
(https://postmarkapp.com/developer/api/overview, .../send-email-with-api/batch-emails): a wrong
`X-Postmark-Server-Token` is 401 with `{ErrorCode: 10}`; during the first ``limited_for``
seconds after its first call every call is HTTP 429 `{ErrorCode: 429, Message: "Rate limit
exceeded"}` with a `Retry-After` header (seconds); afterwards 200 with one
`{ErrorCode: 0, Message: "OK", MessageID, SubmittedAt, To}` per message, in order. Every call
is recorded with its time, answer and recipients.

    with PostmarkAPI("token", limited_for=60, retry_after=20) as api:
        sender = PostmarkSender("token", base_url=api.url)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.http_server import Served


@dataclass(frozen=True)
class Call:
    at: float  # time.monotonic() when the call arrived
    status: int
    to: tuple[str, ...]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        api = self.server.api
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/email/batch":
            self._answer(404, {"ErrorCode": 404, "Message": "Not found"})
            return
        if self.headers.get("X-Postmark-Server-Token") != api.token:
            self._answer(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
            return
        messages = json.loads(body)
        to = tuple(str(m["To"]) for m in messages)
        status, answer, headers = api.answer(to)
        self._answer(status, answer, headers)

    def _answer(self, status: int, answer: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: PostmarkAPI


class PostmarkAPI(Served):
    def __init__(self, token: str, *, limited_for: float, retry_after: int) -> None:
        self.token = token
        self.limited_for = limited_for
        self.retry_after = retry_after
        self.calls: list[Call] = []
        self.first_call: float | None = None
        self._lock = threading.Lock()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.api = self
        super().__init__(server)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, to: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            now = time.monotonic()
            if self.first_call is None:
                self.first_call = now
            if now - self.first_call < self.limited_for:
                self.calls.append(Call(now, 429, to))
                limited = {"ErrorCode": 429, "Message": "Rate limit exceeded"}
                return 429, limited, {"Retry-After": str(self.retry_after)}
            self.calls.append(Call(now, 200, to))
        submitted = datetime.now(UTC).isoformat()
        results = [
            {
                "ErrorCode": 0,
                "Message": "OK",
                "MessageID": str(uuid.uuid4()),
                "SubmittedAt": submitted,
                "To": address,
            }
            for address in to
        ]
        return 200, results, {}

    def accepted(self) -> Counter[str]:
        """How many times each recipient's message was accepted (200)."""
        return Counter(a for c in self.calls if c.status == 200 for a in c.to)

    def calls_for(self, address: str) -> list[Call]:
        return [c for c in self.calls if address in c.to]
