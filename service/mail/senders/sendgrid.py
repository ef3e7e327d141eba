"""Send through SendGrid's v3 Mail Send API, up to 1000 readers of one body per call.

One call carries the shared body once and one personalization per reader: that reader's
address (alone in its `to`, so readers never see each other), their own headers
(List-Unsubscribe) and `substitutions` that fill the body's slots. The text and the HTML part
get different keys, because a value goes into HTML escaped (`&amp;`) and into text as is.
Messages from different prepared bodies (`parts.template`) go in different calls, and an
address appears at most once per call (SendGrid refuses duplicates).

What this relies on, from SendGrid's documentation:

- https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send — `POST
  https://api.sendgrid.com/v3/mail/send` with `Authorization: Bearer <key>`; body
  `personalizations`, `from`, `subject`, `content` (text/plain first, then text/html),
  `headers`; answers 202 Accepted with no body and the id in `X-Message-Id`.
- https://www.twilio.com/docs/sendgrid/for-developers/sending-email/personalizations — each
  personalization has its own `to`, `headers`, `substitutions` and `custom_args`;
  substitutions "apply to the text and html content of the body", with no template.
- https://www.twilio.com/docs/sendgrid/for-developers/sending-email/substitution-tags —
  substitution tags work in the subject and the body without a template; at most 50,000 bytes
  per personalization.
- https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors — at most 1000
  personalizations per request, each address once; the status codes (200 valid but not sent:
  sandbox mode only; 202 queued; 400 with `{"errors": [{"message", "field", "help"}]}` where
  `field` names e.g. `personalizations.0.to.0.email`; 401; 403 (e.g. a From address that is
  no verified Sender Identity); 413 payload too large; 429; 500 and 503).
- https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits
  — 429 comes with `X-RateLimit-Reset`, the Unix time the limit resets.

A 400 whose errors name one personalization fails only that reader's message; the other
messages of the call were not sent either (SendGrid refuses the whole request), so they get a
`TemporaryError` and go out on the retry, without the refused one.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Sequence
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

import httpx

from service.mail.errors import (
    BackendRejected,
    MailError,
    MessageRejected,
    RateLimited,
    RecipientRejected,
    TemporaryError,
)
from service.mail.message import MessageParts, OutgoingMessage, slot
from service.mail.senders import SendResult, send_in_calls
from service.mail.senders.http import (
    body_text,
    error_for_status,
    make_client,
    parts_of,
    post,
    read_json,
    retry_after,
)

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["SendgridSender"]

URL = "https://api.sendgrid.com/v3/mail/send"
PERSONALIZATIONS_LIMIT = 1000

_SLOT = re.compile(r"%%nl:([a-z_]+)%%")
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)(?:\.(\w+))?")


def html_slot(name: str) -> str:
    """The key a slot has in the HTML part (its value HTML-escaped)."""
    return f"%%nl-html:{name}%%"


class SendgridSender:
    name = "sendgrid"
    batch_size = PERSONALIZATIONS_LIMIT

    def __init__(
        self,
        api_key: str,
        *,
        client: httpx.Client | None = None,
        url: str = URL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key:
            raise ValueError("a SendGrid API key is required")
        self.url = url
        self._key = api_key
        self._client = client or make_client()
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> SendgridSender:
        return cls(settings.sendgrid_api_key.get_secret_value())

    def send(self, message: OutgoingMessage) -> str:
        result = self._call([message])[0]
        if isinstance(result, MailError):
            raise result
        return result

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if len(messages) > PERSONALIZATIONS_LIMIT:
            raise ValueError(f"at most {PERSONALIZATIONS_LIMIT} messages, not {len(messages)}")
        return send_in_calls(messages, _calls(messages), self._call)

    def close(self) -> None:
        self._client.close()

    def _call(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """One request for messages personalized from one template, each address once."""
        response = post(
            self._client,
            self.url,
            json=_payload(messages),
            headers={"Authorization": f"Bearer {self._key}"},
        )
        if response.is_success:  # 202 queued; 200 valid but not sent (sandbox mode)
            # Accepted: one id for the request (SendGrid's per-recipient ids in its events
            # start with it). A missing header still means sent.
            return [response.headers.get("X-Message-Id", "")] * len(messages)
        return self._refused(response, messages)

    def _refused(
        self, response: httpx.Response, messages: list[OutgoingMessage]
    ) -> list[SendResult]:
        answer = read_json(response)
        errors = answer.get("errors") if isinstance(answer, dict) else None
        errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
        detail = "; ".join(_describe(e) for e in errors) or body_text(response)
        status = response.status_code
        if status == 429:
            raise RateLimited(detail, status, self._wait(response))
        if status != 400:
            raise error_for_status(response, detail)
        # Errors that name a personalization fail that message alone.
        own: dict[int, MailError] = {}
        shared = []
        for error in errors:
            match = _PERSONALIZATION_FIELD.match(str(error.get("field") or ""))
            if match and int(match[1]) < len(messages):
                kind = RecipientRejected if match[2] == "to" else MessageRejected
                own.setdefault(int(match[1]), kind(_describe(error), status))
            else:
                shared.append(error)
        if shared or not own:
            # About what every reader shares (content, subject, from): all of them.
            raise _shared_error(shared, detail, status)
        refused = ", ".join(messages[i].message_id for i in sorted(own))
        blocked = TemporaryError(f"not sent: SendGrid refused the request for {refused}")
        return [own.get(i, blocked) for i in range(len(messages))]

    def _wait(self, response: httpx.Response) -> float | None:
        reset = response.headers.get("X-RateLimit-Reset", "")
        if reset.strip().isdigit():
            return max(0.0, int(reset) - self._clock())
        return retry_after(response.headers.get("Retry-After"))


def _calls(messages: Sequence[OutgoingMessage]) -> list[list[int]]:
    """Indexes of `messages` per request: same template, each address once, in order."""
    calls: list[list[int]] = []
    by_template: dict[int, list[tuple[list[int], set[str]]]] = {}
    for i, message in enumerate(messages):
        candidates = by_template.setdefault(id(parts_of(message).template), [])
        address = message.recipient.lower()
        call = next((c for c in candidates if address not in c[1]), None)
        if call is None:
            call = ([], set())
            candidates.append(call)
            calls.append(call[0])
        call[0].append(i)
        call[1].add(address)
    return calls


def _payload(messages: list[OutgoingMessage]) -> dict[str, Any]:
    first = parts_of(messages[0])
    template = first.template
    name, email = parseaddr(first.mail_from)
    payload: dict[str, Any] = {
        "personalizations": [_personalization(m) for m in messages],
        "from": {"email": email, "name": name} if name else {"email": email},
        "subject": first.subject,
        "content": [
            {"type": "text/plain", "value": template.rendered.text},
            {
                "type": "text/html",
                "value": _SLOT.sub(lambda m: html_slot(m[1]), template.rendered.html),
            },
        ],
    }
    if template.headers:
        payload["headers"] = dict(template.headers)
    return payload


def _personalization(message: OutgoingMessage) -> dict[str, Any]:
    parts = parts_of(message)
    name, email = parseaddr(parts.to)
    block: dict[str, Any] = {
        "to": [{"email": email, "name": name} if name else {"email": email}],
        "custom_args": {"message_id": message.message_id},
    }
    headers = own_headers(parts)
    if headers:
        block["headers"] = dict(headers)
    names = sorted(parts.template.slots)
    if names:
        # The same escaping `MessageParts.html` applies, done here for SendGrid to insert.
        text = {slot(n): parts.values[n] for n in names}
        block["substitutions"] = text | {html_slot(n): html.escape(parts.values[n]) for n in names}
    return block


def own_headers(parts: MessageParts) -> list[tuple[str, str]]:
    """The headers only this reader has (List-Unsubscribe), not the ones of the template."""
    shared = set(parts.template.headers)
    return [h for h in parts.headers if h not in shared]


def _describe(error: dict[str, Any]) -> str:
    field = error.get("field")
    message = str(error.get("message") or "")
    return f"{message} (field {field})" if field else message


def _shared_error(errors: list[dict[str, Any]], detail: str, status: int) -> MailError:
    fields = {str(e.get("field") or "") for e in errors}
    text = detail.lower()
    if fields & {"from", "from.email"} or "sender identity" in text:
        return BackendRejected(detail, status)
    return MessageRejected(detail, status)
