"""Postmark: the requests its documentation describes, and its documented answers.

https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails,
https://postmarkapp.com/developer/user-guide/sending-with-api,
https://postmarkapp.com/developer/api/overview
"""

from __future__ import annotations

import json

import httpx
import pytest

from service.mail import (
    BackendRejected,
    MailError,
    MessageRejected,
    RateLimited,
    RecipientRejected,
    TemporaryError,
)
from service.mail.senders.postmark import PostmarkSender
from tests.unit.mail_api import (
    MAIL_FROM,
    RENDERED,
    FakeApi,
    answer,
    list_unsubscribe,
    raised,
    readers,
    refuse_connection,
    unsubscribe_url,
)

TOKEN = "server-token-1234"


def documented(request: httpx.Request) -> None:
    assert request.method == "POST"
    assert request.url.scheme == "https"
    assert request.url.host == "api.postmarkapp.com"
    assert request.url.path in ("/email", "/email/batch")
    assert request.headers["X-Postmark-Server-Token"] == TOKEN
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.content)
    for message in body if request.url.path == "/email/batch" else [body]:
        assert set(message) == {
            "From",
            "To",
            "Subject",
            "TextBody",
            "HtmlBody",
            "Headers",
            "MessageStream",
        }
        assert all(set(h) == {"Name", "Value"} for h in message["Headers"])


def ok(n: int, to: str) -> dict[str, object]:
    """One result of the documented batch answer."""
    return {
        "ErrorCode": 0,
        "Message": "OK",
        "MessageID": f"b7bc2f4a-e38e-4336-af7d-e6c392c2f81{n}",
        "SubmittedAt": "2010-11-26T12:01:05.1794748-05:00",
        "To": to,
    }


def sender(api: FakeApi, **kwargs: str) -> PostmarkSender:
    return PostmarkSender(TOKEN, client=api.client(), **kwargs)


def test_a_batch_is_one_call_with_each_reader_alone_in_their_message() -> None:
    messages = readers(3)
    api = FakeApi(
        documented,
        answer(200, [ok(n, f"reader{n}@example.com") for n in range(3)]),
    )
    results = sender(api).send_many(messages)

    assert results == [f"b7bc2f4a-e38e-4336-af7d-e6c392c2f81{n}" for n in range(3)]
    assert [r.url.path for r in api.requests] == ["/email/batch"]
    batch = api.json()
    for n, (sent, message) in enumerate(zip(batch, messages, strict=True)):
        assert sent["From"] == MAIL_FROM
        assert sent["To"] == f"Reader {n} <reader{n}@example.com>"
        assert sent["Subject"] == RENDERED.subject
        assert sent["MessageStream"] == "broadcast"  # bulk mail goes to the Broadcast stream
        assert f"Unsubscribe: {unsubscribe_url(n)}\n" in sent["TextBody"]
        assert f'href="{unsubscribe_url(n).replace("&", "&amp;")}"' in sent["HtmlBody"]
        assert (sent["TextBody"], sent["HtmlBody"]) == (message.parts.text, message.parts.html)  # type: ignore[union-attr]
        headers = {h["Name"]: h["Value"] for h in sent["Headers"]}
        assert headers == {
            "List-Unsubscribe": list_unsubscribe(n),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "Daily <daily.courier.example>",
            "Feedback-ID": "daily:digest:newsletter",
            "Auto-Submitted": "auto-generated",
            "Precedence": "bulk",
        }
        others = [f"reader{m}@example.com" for m in range(3) if m != n]
        assert not any(o in json.dumps(sent) for o in others)


def test_the_message_stream_is_configurable() -> None:
    api = FakeApi(documented, answer(200, [ok(0, "reader0@example.com")]))
    sender(api, message_stream="digests").send_many(readers(1))
    assert api.json()[0]["MessageStream"] == "digests"


def test_one_inactive_recipient_in_a_200_batch_fails_that_message_alone() -> None:
    inactive = {
        "ErrorCode": 406,
        "Message": "You tried to send to recipient(s) that have been marked as inactive. "
        "Found inactive addresses: reader1@example.com. Inactive recipients are ones that "
        "have generated a hard bounce, a spam complaint, or a manual suppression.",
    }
    api = FakeApi(documented, answer(200, [ok(0, "reader0@example.com"), inactive, ok(2, "r2@x")]))
    results = sender(api).send_many(readers(3))

    assert results[0] == "b7bc2f4a-e38e-4336-af7d-e6c392c2f810"
    assert isinstance(results[1], RecipientRejected)
    assert "406" in results[1].detail
    assert results[1].code is None  # it came in a 200 answer
    assert results[2] == "b7bc2f4a-e38e-4336-af7d-e6c392c2f812"


@pytest.mark.parametrize(
    ("error_code", "message", "kind"),
    [
        (300, "Invalid 'To' address: 'reader1@example'.", RecipientRejected),
        (300, "Error parsing 'From': Illegal email address 'news@'.", BackendRejected),
        (300, "Provide either email TextBody or HtmlBody or both.", MessageRejected),
        (10, "Request does not contain a valid Server token.", BackendRejected),
        (100, "Maintenance", TemporaryError),
        (400, "Sender Signature not found", BackendRejected),
        (401, "Sender signature not confirmed", BackendRejected),
        (405, "Not allowed to send", BackendRejected),
        (411, "Forbidden attachment type", MessageRejected),
        (412, "Account is Pending", BackendRejected),
        (413, "Account May Not Send", BackendRejected),
        (429, "Rate Limit Exceeded", RateLimited),
        (9999, "Something new", MessageRejected),  # unknown: fail the message, keep the reader
    ],
)
def test_each_documented_error_code_means_what_the_caller_should_do(
    error_code: int, message: str, kind: type[MailError]
) -> None:
    api = FakeApi(
        documented,
        answer(200, [ok(0, "reader0@example.com"), {"ErrorCode": error_code, "Message": message}]),
    )
    results = sender(api).send_many(readers(2))
    assert type(results[1]) is kind
    assert isinstance(results[0], str)


def test_a_single_message_goes_to_email_and_its_refusal_is_raised() -> None:
    (message,) = readers(1)
    api = FakeApi(
        documented,
        answer(200, ok(0, "reader0@example.com")),
        answer(
            422,
            {
                "ErrorCode": 406,
                "Message": "You tried to send to a recipient that has been marked as inactive.",
            },
        ),
    )
    postmark = sender(api)
    assert postmark.send(message) == "b7bc2f4a-e38e-4336-af7d-e6c392c2f810"
    assert api.requests[0].url.path == "/email"
    assert api.json(0)["To"] == "Reader 0 <reader0@example.com>"

    with pytest.raises(RecipientRejected) as caught:
        postmark.send(message)
    assert caught.value.code == 422


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (
            answer(
                401,
                {
                    "ErrorCode": 10,
                    "Message": "No Account or Server API tokens were supplied in the HTTP headers.",
                },
            ),
            BackendRejected,
        ),
        (
            answer(
                422, {"ErrorCode": 10, "Message": "Request does not contain a valid Server token."}
            ),
            BackendRejected,
        ),
        (answer(422, {"ErrorCode": 410, "Message": "Too many batch messages."}), MessageRejected),
        (answer(422, {"ErrorCode": 412, "Message": "Account is Pending"}), BackendRejected),
        (answer(413, "Payload Too Large"), MessageRejected),
        (answer(500, {"ErrorCode": 0, "Message": "Internal Server Error"}), TemporaryError),
        (answer(503, "<html>Service Unavailable</html>"), TemporaryError),
    ],
)
def test_an_answer_about_the_whole_call_is_raised(
    response: httpx.Response, kind: type[MailError]
) -> None:
    error = raised(lambda: sender(FakeApi(documented, response)).send_many(readers(2)))
    assert type(error) is kind
    assert error.code == response.status_code


def test_429_says_when_to_come_back() -> None:
    api = FakeApi(
        documented,
        answer(
            429,
            {"ErrorCode": 429, "Message": "Rate limit exceeded."},
            headers={"Retry-After": "30"},
        ),
        answer(429, "Too Many Requests"),
    )
    postmark = sender(api)
    with pytest.raises(RateLimited) as caught:
        postmark.send_many(readers(2))
    assert caught.value.retry_after == 30.0
    assert caught.value.code == 429
    with pytest.raises(RateLimited) as caught:
        postmark.send(readers(1)[0])
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>Bad gateway</body></html>",
        json.dumps([{"ErrorCode": 0, "Message": "OK", "MessageID": "only-one"}]),
        json.dumps({"ErrorCode": 0}),
    ],
)
def test_a_batch_answer_that_is_not_one_result_each_leaves_the_batch_in_doubt(body: str) -> None:
    api = FakeApi(documented, answer(200, body))
    with pytest.raises(TemporaryError, match="not one result per message"):
        sender(api).send_many(readers(2))


def test_an_unreadable_result_in_a_batch_is_in_doubt_alone() -> None:
    api = FakeApi(documented, answer(200, [ok(0, "reader0@example.com"), "garbage"]))
    results = sender(api).send_many(readers(2))
    assert isinstance(results[0], str)
    assert isinstance(results[1], TemporaryError)


def test_an_accepted_single_message_without_a_readable_id_still_counts_as_sent() -> None:
    api = FakeApi(documented, answer(200, "not json"))
    assert sender(api).send(readers(1)[0]) == ""


def test_a_refused_connection_is_temporary() -> None:
    api = FakeApi(documented, refuse_connection)
    with pytest.raises(TemporaryError, match="ConnectError"):
        sender(api).send_many(readers(1))


def test_batches_are_at_most_500() -> None:
    assert PostmarkSender.batch_size == 500
    api = FakeApi(documented)
    prepared_messages = readers(1) * 501
    with pytest.raises(ValueError, match="500"):
        sender(api).send_many(prepared_messages)
    assert api.requests == []
    assert sender(api).send_many([]) == []
