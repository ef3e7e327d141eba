"""Mailgun: each message as raw MIME to /messages.mime, and Mailgun's documented answers.

https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages,
https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses
"""

from __future__ import annotations

import base64

import httpx
import pytest

from service.config import Settings
from service.mail import (
    BackendRejected,
    MailError,
    MessageRejected,
    RateLimited,
    RecipientRejected,
    TemporaryError,
)
from service.mail.senders.mailgun import MailgunSender
from tests.unit.mail_api import (
    FakeApi,
    answer,
    form_fields,
    parse_mime,
    raised,
    readers,
    refuse_connection,
)

KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DOMAIN = "mg.courier.example"
BASE = "https://api.mailgun.net"


def documented(request: httpx.Request, base: str = BASE) -> None:
    assert request.method == "POST"
    assert str(request.url) == f"{base}/v3/{DOMAIN}/messages.mime"
    expected = base64.b64encode(f"api:{KEY}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    fields = form_fields(request)
    assert [(name, filename is not None) for name, filename, _ in fields] == [
        ("to", False),
        ("message", True),  # the MIME message goes as a file upload
    ]


def queued(n: int = 0) -> httpx.Response:
    return answer(200, {"id": f"<20260329050000.1.{n}@{DOMAIN}>", "message": "Queued. Thank you."})


def sender(api: FakeApi, base_url: str = BASE) -> MailgunSender:
    return MailgunSender(KEY, DOMAIN, base_url=base_url, client=api.client())


def test_each_message_goes_as_built_to_its_reader_alone() -> None:
    messages = readers(3)
    api = FakeApi(documented, queued(0), queued(1), queued(2))
    mailgun = sender(api)
    assert mailgun.batch_size == 1
    assert mailgun.send_many(messages) == [f"<20260329050000.1.{n}@{DOMAIN}>" for n in range(3)]

    for n, (request, message) in enumerate(zip(api.requests, messages, strict=True)):
        (_, _, to), (_, _, mime) = form_fields(request)
        assert to == f"reader{n}@example.com".encode()  # one reader per call: never each other
        assert mime == message.data  # our List-Unsubscribe, Message-ID and DKIM, unchanged
        sent = parse_mime(mime)
        assert sent["To"] == f"Reader {n} <reader{n}@example.com>"
        assert sent["List-Unsubscribe"].startswith(
            f"<https://courier.example/unsubscribe/tok{n}?a=1&b=2>"
        )


def test_the_eu_region_is_a_base_url() -> None:
    eu = "https://api.eu.mailgun.net"
    api = FakeApi(lambda request: documented(request, eu), queued())
    assert sender(api, eu).send(readers(1)[0]) == f"<20260329050000.1.0@{DOMAIN}>"


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (
            answer(
                400,
                {"message": "'to' parameter is not a valid address. please check documentation"},
            ),
            RecipientRejected,
        ),
        (
            answer(
                400,
                {"message": "'from' parameter is not a valid address. please check documentation"},
            ),
            BackendRejected,
        ),
        (
            answer(
                400,
                {
                    "message": "Sandbox subdomains are for test purposes only. Please add your "
                    "own domain or add the address to authorized recipients in Account Settings."
                },
            ),
            BackendRejected,
        ),
        (answer(400, {"message": "Message size exceeds the limit"}), MessageRejected),
        (answer(401, "Forbidden"), BackendRejected),
        (answer(403, {"message": "Access denied"}), BackendRejected),
        (answer(404, {"message": f"Domain not found: {DOMAIN}"}), BackendRejected),
        (answer(413, "Request Entity Too Large"), MessageRejected),
        (answer(500, {"message": "Internal Server Error"}), TemporaryError),
        (answer(503, "<html>Service Unavailable</html>"), TemporaryError),
    ],
)
def test_documented_answers_mean_what_the_caller_should_do(
    response: httpx.Response, kind: type[MailError]
) -> None:
    error = raised(lambda: sender(FakeApi(documented, response)).send(readers(1)[0]))
    assert type(error) is kind
    assert error.code == response.status_code


def test_429_says_when_to_come_back() -> None:
    limited = answer(429, {"message": "Too Many Requests"}, headers={"Retry-After": "12"})
    error = raised(lambda: sender(FakeApi(documented, limited)).send_many(readers(2)))
    assert isinstance(error, RateLimited)
    assert error.retry_after == 12.0


def test_a_200_that_is_no_send_confirmation_is_a_configuration_problem() -> None:
    # Mailgun answers some wrong paths with a 200 page, having sent nothing.
    error = raised(
        lambda: sender(FakeApi(documented, answer(200, "Mailgun Magnificent API"))).send(
            readers(1)[0]
        )
    )
    assert type(error) is BackendRejected


def test_queued_without_an_id_still_counts_as_sent() -> None:
    api = FakeApi(documented, answer(200, {"message": "Queued. Thank you."}))
    assert sender(api).send(readers(1)[0]) == ""


def test_a_batch_stops_at_a_temporary_failure_after_the_first_message() -> None:
    api = FakeApi(documented, queued(0), refuse_connection)
    results = sender(api).send_many(readers(3))
    assert results[0] == f"<20260329050000.1.0@{DOMAIN}>"
    assert type(results[1]) is TemporaryError
    assert "not attempted" in str(results[2])
    assert len(api.requests) == 2


def test_from_settings_and_what_the_domain_and_url_may_be() -> None:
    settings = Settings(
        mail_backend="mailgun",
        mailgun_api_key=KEY,
        mailgun_domain=DOMAIN,
        mailgun_base_url="https://api.eu.mailgun.net/",
    )
    mailgun = MailgunSender.from_settings(settings)
    assert mailgun.url == f"https://api.eu.mailgun.net/v3/{DOMAIN}/messages.mime"
    mailgun.close()
    for domain in ("", "mg.example.org/../../v4", "mg example.org"):
        with pytest.raises(ValueError, match="domain"):
            MailgunSender(KEY, domain)
    with pytest.raises(ValueError, match="https"):
        MailgunSender(KEY, DOMAIN, base_url="http://api.mailgun.net")
