"""Amazon SES v2: a signed SendEmail request carrying our raw MIME message, and SES's answers.

https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html,
https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from service.config import Settings
from service.mail import (
    BackendRejected,
    MailError,
    MessageRejected,
    RateLimited,
    TemporaryError,
)
from service.mail.senders.ses import SesSender
from tests.unit.mail_api import FakeApi, answer, parse_mime, raised, readers, verify_sigv4

REGION = "eu-west-1"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example key


def documented(request: httpx.Request) -> None:
    assert request.method == "POST"
    assert str(request.url) == f"https://email.{REGION}.amazonaws.com/v2/email/outbound-emails"
    assert request.headers["Content-Type"] == "application/json"
    verify_sigv4(request, access_key_id=KEY_ID, secret=SECRET, region=REGION, service="ses")


def sent(
    message_id: str = "010001234567890a-abcdef12-3456-7890-abcd-ef1234567890-000000",
) -> httpx.Response:
    return answer(200, {"MessageId": message_id})


def aws_error(status: int, error_type: str, message: str) -> httpx.Response:
    """An AWS REST-JSON error: the type in x-amzn-ErrorType, the text in the body."""
    return answer(
        status,
        {"message": message},
        headers={
            "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"
        },
    )


def sender(api: FakeApi, configuration_set: str = "") -> SesSender:
    return SesSender(
        REGION, KEY_ID, SECRET, configuration_set=configuration_set, client=api.client()
    )


def test_the_raw_message_goes_out_as_built_signed_with_sigv4() -> None:
    (message,) = readers(1)
    api = FakeApi(documented, sent("0100-id-1"))
    assert sender(api).send(message) == "0100-id-1"

    body = api.json()
    assert set(body) == {"FromEmailAddress", "Destination", "Content"}
    assert body["FromEmailAddress"] == "news@courier.example"
    assert body["Destination"] == {"ToAddresses": ["reader0@example.com"]}
    raw = base64.b64decode(body["Content"]["Raw"]["Data"], validate=True)
    assert raw == message.data  # byte for byte: our headers and DKIM signature survive
    assert parse_mime(raw)["List-Unsubscribe"] == (
        "<https://courier.example/unsubscribe/tok0?a=1&b=2>, <mailto:unsubscribe@courier.example>"
    )
    authorization = api.requests[0].headers["Authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert f"/{REGION}/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date, " in (
        authorization
    )


def test_the_configuration_set_is_named_when_set() -> None:
    api = FakeApi(documented, sent())
    sender(api, configuration_set="digests").send(readers(1)[0])
    assert api.json()["ConfigurationSetName"] == "digests"


def test_send_many_is_one_signed_call_per_reader() -> None:
    messages = readers(3)
    api = FakeApi(documented, sent("a"), sent("b"), sent("c"))
    ses = sender(api)
    assert ses.batch_size == 1
    assert ses.send_many(messages) == ["a", "b", "c"]
    assert [json.loads(r.content)["Destination"]["ToAddresses"] for r in api.requests] == [
        ["reader0@example.com"],
        ["reader1@example.com"],
        ["reader2@example.com"],
    ]


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (
            aws_error(
                400,
                "MessageRejected",
                "Email address is not verified. The following identities failed the check in "
                "region EU-WEST-1: news@courier.example",
            ),
            BackendRejected,
        ),
        (aws_error(400, "MessageRejected", "Illegal header."), MessageRejected),
        (
            aws_error(
                400, "MailFromDomainNotVerifiedException", "The MAIL FROM domain is not verified."
            ),
            BackendRejected,
        ),
        (
            aws_error(400, "AccountSuspendedException", "Your account has been suspended."),
            BackendRejected,
        ),
        (
            aws_error(400, "SendingPausedException", "Sending is paused for this account."),
            BackendRejected,
        ),
        (
            aws_error(404, "NotFoundException", "Configuration set <digests> does not exist."),
            BackendRejected,
        ),
        (aws_error(400, "BadRequestException", "Missing final '@domain'"), MessageRejected),
        (
            aws_error(
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            ),
            BackendRejected,
        ),
        (
            aws_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            ),
            BackendRejected,
        ),
        (
            aws_error(
                400, "IncompleteSignature", "Authorization header requires 'Signature' parameter."
            ),
            BackendRejected,
        ),
        (
            answer(
                403,
                {
                    "__type": "com.amazon.coral.service#UnrecognizedClientException",
                    "message": "The security token included in the request is invalid.",
                },
            ),
            BackendRejected,
        ),
        (
            answer(
                400, {"__type": "com.amazonaws.sesv2#MessageRejected", "message": "Illegal address"}
            ),
            MessageRejected,
        ),
        (aws_error(500, "InternalFailure", "An internal error occurred."), TemporaryError),
        (aws_error(503, "ServiceUnavailable", "Service unavailable."), TemporaryError),
        (answer(502, "<html>Bad Gateway</html>"), TemporaryError),
        (answer(400, "<html>not JSON</html>"), MessageRejected),
    ],
)
def test_documented_errors_mean_what_the_caller_should_do(
    response: httpx.Response, kind: type[MailError]
) -> None:
    error = raised(lambda: sender(FakeApi(documented, response)).send(readers(1)[0]))
    assert type(error) is kind
    assert error.code == response.status_code


@pytest.mark.parametrize(
    ("response", "retry_after"),
    [
        (aws_error(429, "TooManyRequestsException", "Maximum sending rate exceeded."), None),
        (aws_error(400, "LimitExceededException", "Daily message quota exceeded."), None),
        (aws_error(400, "ThrottlingException", "Rate exceeded"), None),
        (
            answer(
                429,
                {"message": "Maximum sending rate exceeded."},
                headers={"x-amzn-ErrorType": "TooManyRequestsException", "Retry-After": "2"},
            ),
            2.0,
        ),
    ],
)
def test_throttling_is_rate_limited(response: httpx.Response, retry_after: float | None) -> None:
    api = FakeApi(documented, response)
    with pytest.raises(RateLimited) as caught:
        sender(api).send(readers(1)[0])
    assert caught.value.retry_after == retry_after
    assert "exceeded" in caught.value.detail.lower()


def test_in_a_batch_a_throttle_after_a_sent_message_is_that_message_s_result() -> None:
    api = FakeApi(
        documented,
        sent("first"),
        aws_error(429, "TooManyRequestsException", "Maximum sending rate exceeded."),
    )
    results = sender(api).send_many(readers(3))
    assert results[0] == "first"
    assert isinstance(results[1], RateLimited)
    assert isinstance(results[2], TemporaryError)  # not attempted
    assert "not attempted" in str(results[2])
    assert len(api.requests) == 2


def test_a_first_refusal_about_the_account_is_raised() -> None:
    api = FakeApi(documented, aws_error(403, "InvalidClientTokenId", "invalid"))
    with pytest.raises(BackendRejected):
        sender(api).send_many(readers(2))
    assert len(api.requests) == 1


def test_a_message_rejection_in_a_batch_fails_that_message_and_goes_on() -> None:
    api = FakeApi(documented, aws_error(400, "MessageRejected", "Illegal header."), sent("ok"))
    results = sender(api).send_many(readers(2))
    assert isinstance(results[0], MessageRejected)
    assert results[1] == "ok"


def test_an_accepted_message_without_a_readable_id_still_counts_as_sent() -> None:
    api = FakeApi(documented, answer(200, "<html>?</html>"))
    assert sender(api).send(readers(1)[0]) == ""


def test_from_settings_and_bad_regions() -> None:
    settings = Settings(
        mail_backend="ses",
        ses_region=REGION,
        ses_access_key_id=KEY_ID,
        ses_secret_access_key=SECRET,
        ses_configuration_set="digests",
    )
    ses = SesSender.from_settings(settings)
    assert ses.url == "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
    assert ses.configuration_set == "digests"
    ses.close()
    for region in ("", "eu-west-1.evil.example/", "EU-WEST-1"):
        with pytest.raises(ValueError, match="region"):
            SesSender(region, KEY_ID, SECRET)
