"""What the provider sender tests share: readers' messages from one prepared digest, and a
stand-in for a provider's API that checks each request and answers as its documentation shows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from service.mail import MailError, OutgoingMessage, PreparedMessage, Rendered, prepare, slot

UNSUB, PREFS = slot("unsubscribe_url"), slot("preferences_url")
RENDERED = Rendered(
    subject="Morning digest \N{EN DASH} Kyiv & Tokyo",
    text=f"Good morning.\n\nPreferences: {PREFS}\nUnsubscribe: {UNSUB}\n",
    html=(
        "<html><body><p>Good morning \N{EM DASH} caf\N{LATIN SMALL LETTER E WITH ACUTE}.</p>"
        f'<p><a href="{PREFS}">Preferences</a> <a href="{UNSUB}">Unsubscribe</a></p>'
        "</body></html>"
    ),
)
MAIL_FROM = "Harbour Courier <news@courier.example>"
DATE = datetime(2026, 3, 29, 5, 0, tzinfo=UTC)

Handler = Callable[[httpx.Request], httpx.Response]


def digest() -> PreparedMessage:
    """One rendered digest, prepared once for many readers (bulk mail)."""
    return prepare(
        RENDERED,
        mail_from=MAIL_FROM,
        list_id="Daily <daily.courier.example>",
        feedback_id="daily:digest:newsletter",
        unsubscribe_mailto="unsubscribe@courier.example",
        date=DATE,
    )


def unsubscribe_url(n: int) -> str:
    # "&" so the HTML part must carry it escaped and the text part as is.
    return f"https://courier.example/unsubscribe/tok{n}?a=1&b=2"


def reader(prepared: PreparedMessage, n: int, *, address: str | None = None) -> OutgoingMessage:
    return prepared.personalize(
        to=f"Reader {n} <{address or f'reader{n}@example.com'}>",
        message_id=f"<d.{n}@courier.example>",
        unsubscribe_url=unsubscribe_url(n),
        values={"preferences_url": f"https://courier.example/preferences/p{n}"},
    )


def readers(count: int, prepared: PreparedMessage | None = None) -> list[OutgoingMessage]:
    prepared = prepared or digest()
    return [reader(prepared, n) for n in range(count)]


def list_unsubscribe(n: int) -> str:
    return f"<{unsubscribe_url(n)}>, <mailto:unsubscribe@courier.example>"


class FakeApi:
    """An `httpx.MockTransport` handler: `check` looks at every request (raising
    AssertionError when it is not what the provider documents), then each request gets the
    next answer. Answers may be responses or functions of the request."""

    def __init__(
        self, check: Callable[[httpx.Request], None], *answers: httpx.Response | Handler
    ) -> None:
        self.check = check
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        self.check(request)
        assert self.answers, f"no answer left for request {len(self.requests)}"
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))

    def json(self, i: int = 0) -> Any:
        return json.loads(self.requests[i].content)


def answer(
    status: int, body: Any = None, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    """A response with a JSON body (or a text body when `body` is a str)."""
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers)
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def raised(call: Callable[[], object]) -> MailError:
    """The MailError `call` raises."""
    with pytest.raises(MailError) as caught:
        call()
    return caught.value


def refuse_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def parse_mime(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def form_fields(request: httpx.Request) -> list[tuple[str, str | None, bytes]]:
    """A multipart/form-data body (RFC 7578) as (name, filename, value) in order, the bytes
    exactly as sent (the email package would parse a message/rfc822 part instead)."""
    match = re.fullmatch(r"multipart/form-data; boundary=(\S+)", request.headers["Content-Type"])
    assert match, request.headers["Content-Type"]
    delimiter = b"--" + match[1].encode()
    chunks = request.content.split(b"\r\n" + delimiter)
    assert chunks[0].startswith(delimiter + b"\r\n")
    assert chunks[-1] == b"--\r\n"
    fields = []
    for chunk in [chunks[0][len(delimiter) :], *chunks[1:-1]]:
        head, _, value = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = re.search(
            rb'Content-Disposition: form-data; name="([^"]+)"(?:; filename="([^"]*)")?', head
        )
        assert disposition, head
        filename = disposition[2].decode() if disposition[2] is not None else None
        fields.append((disposition[1].decode(), filename, value))
    return fields


def verify_sigv4(
    request: httpx.Request, *, access_key_id: str, secret: str, region: str, service: str
) -> None:
    """Check `request`'s AWS Signature Version 4 the way AWS computes it, independently of
    botocore: canonical request, string to sign, derived key, HMAC-SHA256."""
    match = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([a-z0-9-]+)/([a-z0-9]+)/aws4_request, "
        r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
        request.headers["Authorization"],
    )
    assert match, request.headers["Authorization"]
    key_id, day, scope_region, scope_service, signed, signature = match.groups()
    amz_date = request.headers["X-Amz-Date"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", amz_date)
    assert (key_id, day, scope_region, scope_service) == (
        access_key_id,
        amz_date[:8],
        region,
        service,
    )
    names = signed.split(";")
    assert {"host", "x-amz-date"} <= set(names)
    canonical = "\n".join(
        [
            request.method,
            request.url.path,
            request.url.query.decode(),
            "".join(f"{n}:{' '.join(request.headers[n].split())}\n" for n in names),
            signed,
            hashlib.sha256(request.content).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, signature), "signature does not match the request"
