"""Send through Amazon SES with the v2 API's SendEmail, one raw MIME message per call.

The raw message is sent as built (`message.data`): our List-Unsubscribe, List-Id and
Feedback-ID headers and our DKIM signature reach the reader unchanged. Requests are signed
with Signature Version 4 by botocore's own signer (`SigV4Auth`), not a copy of the algorithm.

What this relies on, from AWS's documentation:

- https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html — `POST
  /v2/email/outbound-emails` on `email.{region}.amazonaws.com`, a JSON body with
  `Content.Raw.Data` (the base64 MIME message), `Destination.ToAddresses`,
  `FromEmailAddress` and an optional `ConfigurationSetName`; 200 answers `{"MessageId": …}`.
  Its errors: TooManyRequestsException (429), and with 400 AccountSuspendedException,
  SendingPausedException, MailFromDomainNotVerifiedException, MessageRejected,
  LimitExceededException and BadRequestException; NotFoundException (404) for an unknown
  configuration set. (The same status codes are in botocore's service model for `sesv2`.)
- https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html — errors of every
  AWS API: IncompleteSignature, InvalidClientTokenId (403), AccessDeniedException,
  MissingAuthenticationToken, RequestExpired, ThrottlingException, InternalFailure (500),
  ServiceUnavailable (503).
- https://docs.aws.amazon.com/ses/latest/dg/troubleshoot-error-messages.html and
  https://repost.aws/knowledge-center/ses-554-400-message-rejected-error — "Email address is
  not verified" comes as a 400 MessageRejected: an identity (the sender, or in the sandbox the
  recipient too) is not verified in that region. That is configuration: pause sending.
- https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html — exceeding the
  daily quota or the maximum send rate is a throttling error ("Daily message quota exceeded",
  "Maximum sending rate exceeded"): retry later.

The error's name is in the `x-amzn-ErrorType` header (`Name:namespace…`) or the JSON body's
`__type` / `code`, as botocore's REST-JSON parser reads them; the text is the body's `message`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from service.mail.errors import (
    BackendRejected,
    MailError,
    RateLimited,
    TemporaryError,
)
from service.mail.message import OutgoingMessage
from service.mail.senders import SendResult, send_each
from service.mail.senders.http import (
    body_text,
    error_for_status,
    make_client,
    post,
    read_json,
    retry_after,
)

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["SesSender"]

PATH = "/v2/email/outbound-emails"
SIGNING_NAME = "ses"  # botocore's sesv2 model: endpointPrefix "email", signingName "ses"

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")

_THROTTLED = frozenset(
    {"TooManyRequestsException", "LimitExceededException", "ThrottlingException", "Throttling"}
)
_BACKEND = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",  # e.g. the configuration set does not exist
        # credentials and signing (common errors)
        "AccessDeniedException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "NotAuthorized",
        "OptInRequired",
    }
)


class SesSender:
    name = "ses"
    batch_size = 1  # SendEmail takes one message; send_many is one call each

    def __init__(
        self,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        *,
        configuration_set: str = "",
        client: httpx.Client | None = None,
    ) -> None:
        if not _REGION.match(region):
            raise ValueError(f"not an AWS region: {region!r}")
        if not (access_key_id and secret_access_key):
            raise ValueError("an AWS access key ID and secret access key are required")
        self.region = region
        self.url = f"https://email.{region}.amazonaws.com{PATH}"
        self.configuration_set = configuration_set
        self._signer = SigV4Auth(
            Credentials(access_key_id, secret_access_key), SIGNING_NAME, region
        )
        self._client = client or make_client()

    @classmethod
    def from_settings(cls, settings: Settings) -> SesSender:
        return cls(
            settings.ses_region,
            settings.ses_access_key_id,
            settings.ses_secret_access_key.get_secret_value(),
            configuration_set=settings.ses_configuration_set,
        )

    def send(self, message: OutgoingMessage) -> str:
        payload: dict[str, Any] = {
            "FromEmailAddress": message.envelope_from,
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {"Raw": {"Data": base64.b64encode(message.data).decode("ascii")}},
        }
        if self.configuration_set:
            payload["ConfigurationSetName"] = self.configuration_set
        body = json.dumps(payload).encode()
        response = post(self._client, self.url, content=body, headers=self._sign(body))
        if response.status_code != 200:
            raise _error(response)
        answer = read_json(response)
        # 200 means SES queued it: an unreadable id still means sent.
        value = answer.get("MessageId") if isinstance(answer, dict) else None
        return value if isinstance(value, str) else ""

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return send_each(self, messages)

    def close(self) -> None:
        self._client.close()

    def _sign(self, body: bytes) -> dict[str, str]:
        """Content-Type, X-Amz-Date and Authorization for this body, signed now (each call:
        a signature is valid for five minutes)."""
        request = AWSRequest(
            method="POST", url=self.url, data=body, headers={"Content-Type": "application/json"}
        )
        self._signer.add_auth(request)
        return {name: str(value) for name, value in request.headers.items()}


def _error(response: httpx.Response) -> MailError:
    answer = read_json(response)
    kind = _error_type(response, answer)
    text = ""
    if isinstance(answer, dict):
        text = str(answer.get("message") or answer.get("Message") or "")
    detail = f"{kind or 'SES error'}: {text or body_text(response)}"
    status = response.status_code
    if kind in _THROTTLED or status == 429:
        return RateLimited(detail, status, retry_after(response.headers.get("Retry-After")))
    if status >= 500:
        return TemporaryError(detail, status)
    if kind in _BACKEND or (kind == "MessageRejected" and "not verified" in text.lower()):
        return BackendRejected(detail, status)
    return error_for_status(response, detail)


def _error_type(response: httpx.Response, answer: Any) -> str:
    """The AWS error name: `x-amzn-ErrorType` ("Name:http://…"), else the body's `__type`
    ("namespace#Name") or `code`."""
    header = str(response.headers.get("x-amzn-ErrorType", ""))
    if header:
        return header.split(":", 1)[0].strip()
    if isinstance(answer, dict):
        value = answer.get("__type") or answer.get("code") or answer.get("Code") or ""
        return str(value).rsplit("#", 1)[-1].strip()
    return ""
