"""Send through Mailgun's HTTP API: each message as its own raw MIME, one call per message.

Why not batch sending with recipient variables: one `/messages` call can carry up to 1000
readers, each seeing only their own address, with `%recipient.name%` placeholders filled per
reader. But Mailgun documents recipient variables as "variables that can be referenced in the
message body" (and the subject in its examples); nothing documents their substitution in
custom `h:` headers. Every bulk message has a List-Unsubscribe header of its own (RFC 8058
one-click, which Gmail and Yahoo require), and a literal `%recipient.…%` there would break
unsubscribing for a whole batch. So each message goes to `/messages.mime` as we built it:
its own List-Unsubscribe, Message-ID and DKIM signature intact, the reader alone in `to`.
`batch_size` is 1, and `send_many` is one call each.

What this relies on, from Mailgun's documentation:

- https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages —
  `POST /v3/{domain_name}/messages.mime` ("build a MIME string yourself … and submit it"),
  multipart/form-data with `to` and the MIME message as the file field `message`; basic auth
  `api:<key>`; the `recipient-variables` description quoted above.
- https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages — the EU region's
  base URL `https://api.eu.mailgun.net`; "parameter is not a valid address" for an address
  that fails RFC 5321/5322 syntax; the 25 MB message limit.
- https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/batch-sending —
  batch sending and recipient variables (not used, see above).
- https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses — 200
  `{"id": "<…>", "message": "Queued. Thank you."}`; 400 with a JSON `message`; 401/403 auth;
  404 not found (e.g. "Domain not found": a wrong domain or region); 429 rate limits, retry as
  the response says; 500 retry with backoff.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx

from service.mail.errors import (
    BackendRejected,
    MailError,
    RecipientRejected,
)
from service.mail.message import OutgoingMessage
from service.mail.senders import SendResult, send_each
from service.mail.senders.http import body_text, error_for_status, make_client, post, read_json

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["MailgunSender"]

API = "https://api.mailgun.net"
_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")

# 400 texts that are about our account or configuration, not this message.
_BACKEND_400 = ("'from' parameter", "sandbox", "not allowed to send", "domain")


class MailgunSender:
    name = "mailgun"
    batch_size = 1

    def __init__(
        self,
        api_key: str,
        domain: str,
        *,
        base_url: str = API,
        client: httpx.Client | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Mailgun API key is required")
        # A "/" would reach another endpoint, which Mailgun may answer 200 without sending.
        if not _DOMAIN.match(domain):
            raise ValueError(f"not a sending domain: {domain!r}")
        if not base_url.startswith("https://"):
            raise ValueError(f"the Mailgun API is reached over https, not {base_url!r}")
        self.domain = domain
        self.url = f"{base_url.rstrip('/')}/v3/{domain}/messages.mime"
        self._auth = httpx.BasicAuth("api", api_key)
        self._client = client or make_client()

    @classmethod
    def from_settings(cls, settings: Settings) -> MailgunSender:
        return cls(
            settings.mailgun_api_key.get_secret_value(),
            settings.mailgun_domain,
            base_url=settings.mailgun_base_url,
        )

    def send(self, message: OutgoingMessage) -> str:
        response = post(
            self._client,
            self.url,
            auth=self._auth,
            data={"to": message.recipient},
            files={"message": ("message.mime", message.data, "message/rfc822")},
        )
        answer = read_json(response)
        text = str(answer.get("message", "")) if isinstance(answer, dict) else ""
        if response.status_code != 200:
            raise _error(response, text or body_text(response))
        if not text.startswith("Queued"):
            # Not the answer to a send: Mailgun answers some wrong paths with a 200 page.
            raise BackendRejected(f"not a send confirmation: {body_text(response)}", 200)
        value = answer.get("id")
        return value if isinstance(value, str) else ""

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return send_each(self, messages)

    def close(self) -> None:
        self._client.close()


def _error(response: httpx.Response, detail: str) -> MailError:
    if response.status_code == 400:
        lowered = detail.lower()
        if "'to' parameter" in lowered:
            return RecipientRejected(detail, 400)
        if any(text in lowered for text in _BACKEND_400):
            return BackendRejected(detail, 400)
    return error_for_status(response, detail)
