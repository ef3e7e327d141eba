"""Send through Postmark's Email API: `/email` for one message, `/email/batch` for up to 500.

What this relies on, from Postmark's documentation:

- https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails — the batch
  endpoint takes a JSON array of up to 500 messages (50 MB) and answers 200 with an array in
  the same order, one `{ErrorCode, Message, MessageID, SubmittedAt, To}` per message: the
  answer is 200 even when single messages fail, so each ErrorCode must be read. Bulk mail
  names its Broadcast stream in `MessageStream`.
- https://postmarkapp.com/developer/user-guide/sending-with-api — `/email`, the message fields
  (From, To, Subject, TextBody, HtmlBody, Headers as `[{Name, Value}]`, MessageStream) and the
  `X-Postmark-Server-Token` header; a missing or wrong token is HTTP 401.
- https://postmarkapp.com/developer/api/overview — HTTP 401 bad token, 404 no such endpoint,
  413 payload too large, 422 "something with the message isn't quite right" with a JSON body
  `{ErrorCode, Message}`, 429 rate limit, 500 and 503 their trouble; and the API error codes:
  10 bad or missing token, 100 maintenance, 300 invalid email request, 400/401 sender
  signature not found / not confirmed, 402/403/409 invalid, incompatible or missing JSON,
  405 not allowed to send (no credits), 406 inactive recipient (bounced, complained or
  unsubscribed: Postmark suppressed it), 410 too many batch messages, 411 forbidden attachment,
  412 account pending, 413 account may not send, 429 rate limit exceeded.
- https://postmarkapp.com/support/article/1180-what-does-errorcode-300-mean — 300 is an invalid
  address (To or From), an empty body, or more than 50 recipients.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from service.mail.message import OutgoingMessage
from service.mail.senders import SendResult
from service.mail.senders.http import (
    body_text,
    error_for_status,
    make_client,
    parts_of,
    post,
    read_json,
)

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["PostmarkSender"]

API = "https://api.postmarkapp.com"
BATCH_LIMIT = 500

# API error code -> what it means for the caller. Anything else: this message is refused.
_CODES: dict[int, type[MailError]] = {
    10: BackendRejected,  # bad or missing server token
    100: TemporaryError,  # maintenance
    400: BackendRejected,  # sender signature not found
    401: BackendRejected,  # sender signature not confirmed
    405: BackendRejected,  # not allowed to send: out of credits
    406: RecipientRejected,  # inactive recipient: Postmark has suppressed the address
    412: BackendRejected,  # account pending
    413: BackendRejected,  # account may not send
    429: RateLimited,
}


class PostmarkSender:
    name = "postmark"
    batch_size = BATCH_LIMIT

    def __init__(
        self,
        server_token: str,
        *,
        message_stream: str = "broadcast",
        client: httpx.Client | None = None,
        base_url: str = API,
    ) -> None:
        if not server_token:
            raise ValueError("a Postmark server token is required")
        self.message_stream = message_stream
        self.base_url = base_url.rstrip("/")
        self._token = server_token
        self._client = client or make_client()

    @classmethod
    def from_settings(cls, settings: Settings) -> PostmarkSender:
        return cls(
            settings.postmark_server_token.get_secret_value(),
            message_stream=settings.postmark_message_stream,
            base_url=settings.postmark_api_url,
        )

    def send(self, message: OutgoingMessage) -> str:
        response = self._post("/email", self._json(message))
        if response.status_code != 200:
            raise _call_error(response)
        answer = read_json(response)
        # 200 from /email means accepted (its refusals are 422): an unreadable body still
        # means sent, so it must not become an error that gets the message sent twice.
        if isinstance(answer, dict) and answer.get("ErrorCode", 0) != 0:
            raise _api_error(answer, 200)
        return _message_id(answer)

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if len(messages) > BATCH_LIMIT:
            raise ValueError(f"at most {BATCH_LIMIT} messages per batch, not {len(messages)}")
        if not messages:
            return []
        response = self._post("/email/batch", [self._json(m) for m in messages])
        if response.status_code != 200:
            raise _call_error(response)
        answers = read_json(response)
        if not isinstance(answers, list) or len(answers) != len(messages):
            # Postmark took the batch, but which messages it accepted is unknown: as after a
            # dropped connection, the caller's retry policy decides.
            raise TemporaryError(
                f"batch answer is not one result per message: {body_text(response)}", 200
            )
        return [_result(answer) for answer in answers]

    def close(self) -> None:
        self._client.close()

    def _post(self, path: str, payload: Any) -> httpx.Response:
        return post(
            self._client,
            self.base_url + path,
            json=payload,
            headers={"Accept": "application/json", "X-Postmark-Server-Token": self._token},
        )

    def _json(self, message: OutgoingMessage) -> dict[str, Any]:
        parts = parts_of(message)
        return {
            "From": parts.mail_from,
            "To": parts.to,
            "Subject": parts.subject,
            "TextBody": parts.text,
            "HtmlBody": parts.html,
            "Headers": [{"Name": name, "Value": value} for name, value in parts.headers],
            "MessageStream": self.message_stream,
        }


def _result(answer: Any) -> SendResult:
    if not isinstance(answer, dict) or not isinstance(answer.get("ErrorCode"), int):
        return TemporaryError(f"unreadable result in a batch answer: {answer!r}")
    if answer["ErrorCode"] != 0:
        return _api_error(answer, None)
    return _message_id(answer)


def _message_id(answer: Any) -> str:
    value = answer.get("MessageID") if isinstance(answer, dict) else None
    return value if isinstance(value, str) else ""


def _api_error(answer: dict[str, Any], status: int | None) -> MailError:
    """What a Postmark API error code means; `status` is the HTTP status it came with (None
    for a result inside a 200 batch answer)."""
    code, text = answer.get("ErrorCode"), str(answer.get("Message", ""))
    detail = f"Postmark error {code}: {text}"
    kind: type[MailError] = MessageRejected
    if code == 300:  # an invalid request: whose fault depends on what it names
        if "'To'" in text:
            kind = RecipientRejected
        elif "'From'" in text:
            kind = BackendRejected
    elif isinstance(code, int):
        kind = _CODES.get(code, MessageRejected)
    return kind(detail, status)


def _call_error(response: httpx.Response) -> MailError:
    """An answer other than 200: about the whole call."""
    answer = read_json(response)
    if isinstance(answer, dict) and isinstance(answer.get("ErrorCode"), int):
        if response.status_code == 422:
            return _api_error(answer, 422)
        detail = f"Postmark error {answer['ErrorCode']}: {answer.get('Message', '')}"
    else:
        detail = body_text(response)
    return error_for_status(response, detail)
