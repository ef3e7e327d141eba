"""SendGrid v3 Mail Send: one body, a personalization per reader, SendGrid's answers.

https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send,
https://www.twilio.com/docs/sendgrid/for-developers/sending-email/personalizations,
https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors,
https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from service.mail import (
    BackendRejected,
    MailError,
    MessageRejected,
    OutgoingMessage,
    RateLimited,
    RecipientRejected,
    Rendered,
    TemporaryError,
    prepare,
)
from service.mail.senders.sendgrid import SendgridSender
from tests.unit.mail_api import (
    RENDERED,
    FakeApi,
    answer,
    digest,
    list_unsubscribe,
    raised,
    reader,
    readers,
    refuse_connection,
)

KEY = "SG.test-key"
NOW = 1_774_760_400.0  # 2026-03-29 05:00 UTC
PLAIN = Rendered("Welcome", "Hello.\n", "<p>Hello.</p>")  # a one-off body, no slots


def documented(request: httpx.Request) -> None:
    assert request.method == "POST"
    assert str(request.url) == "https://api.sendgrid.com/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.content)
    assert set(body) <= {"personalizations", "from", "subject", "content", "headers"}
    assert 1 <= len(body["personalizations"]) <= 1000
    # text/plain must come before text/html
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    addresses = [p["to"][0]["email"].lower() for p in body["personalizations"]]
    assert len(set(addresses)) == len(addresses), "SendGrid refuses an address twice"
    for block in body["personalizations"]:
        assert len(block["to"]) == 1  # readers never see each other
        assert set(block) <= {"to", "headers", "substitutions", "custom_args"}
        assert all(isinstance(v, str) for v in block.get("substitutions", {}).values())


def accepted(
    message_id: str = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
) -> httpx.Response:
    return answer(202, headers={"X-Message-Id": message_id})


def as_delivered(body: dict[str, Any], block: dict[str, Any]) -> tuple[str, str]:
    """The text and HTML one personalization gets: its substitutions applied to the content."""
    text, html = (c["value"] for c in body["content"])
    for key, value in block.get("substitutions", {}).items():
        text, html = text.replace(key, value), html.replace(key, value)
    return text, html


def sender(api: FakeApi) -> SendgridSender:
    return SendgridSender(KEY, client=api.client(), clock=lambda: NOW)


def test_readers_of_one_digest_share_one_call_and_each_gets_their_own_message() -> None:
    messages = readers(3)
    api = FakeApi(documented, accepted("msg-id-1"))
    assert sender(api).send_many(messages) == ["msg-id-1"] * 3

    (request,) = api.requests
    body = json.loads(request.content)
    assert body["from"] == {"email": "news@courier.example", "name": "Harbour Courier"}
    assert body["subject"] == RENDERED.subject
    assert body["headers"] == {  # shared by every reader
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": "Daily <daily.courier.example>",
        "Feedback-ID": "daily:digest:newsletter",
        "Auto-Submitted": "auto-generated",
        "Precedence": "bulk",
    }
    for n, (block, message) in enumerate(zip(body["personalizations"], messages, strict=True)):
        assert block["to"] == [{"email": f"reader{n}@example.com", "name": f"Reader {n}"}]
        assert block["headers"] == {"List-Unsubscribe": list_unsubscribe(n)}
        assert block["custom_args"] == {"message_id": f"<d.{n}@courier.example>"}
        assert message.parts is not None
        # what SendGrid builds for this reader is what the message holds, escaping included
        assert as_delivered(body, block) == (message.parts.text, message.parts.html)
        others = [f"reader{m}@example.com" for m in range(3) if m != n]
        assert not any(o in json.dumps(block) for o in others)


def test_a_single_send_is_one_personalization() -> None:
    api = FakeApi(documented, accepted("one"))
    assert sender(api).send(readers(1)[0]) == "one"
    assert len(api.json()["personalizations"]) == 1


def test_different_bodies_and_a_repeated_address_go_in_separate_calls() -> None:
    first, second = digest(), prepare(PLAIN, mail_from="n@courier.example")
    plain = second.personalize(to="reader9@example.com", message_id="<p.9@courier.example>")
    messages: list[OutgoingMessage] = [
        reader(first, 0),
        plain,
        reader(first, 1),
        reader(first, 2, address="READER0@example.com"),  # the same address again
    ]
    api = FakeApi(documented, accepted("a"), accepted("b"), accepted("c"))
    assert sender(api).send_many(messages) == ["a", "b", "a", "c"]
    calls = [[p["to"][0]["email"] for p in api.json(i)["personalizations"]] for i in range(3)]
    assert calls == [
        ["reader0@example.com", "reader1@example.com"],
        ["reader9@example.com"],
        ["READER0@example.com"],
    ]
    assert "headers" not in api.json(1)  # not bulk mail: nothing to share
    assert "substitutions" not in api.json(1)["personalizations"][0]


def refusal(status: int, message: str, field: str | None = None) -> httpx.Response:
    """SendGrid's documented error body; `help` links to the errors page."""
    help_url = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
    error = {"message": message, "field": field, "help": f"{help_url}#message.{field}"}
    return answer(status, {"errors": [error]})


def test_a_refused_personalization_fails_its_message_and_holds_back_the_others() -> None:
    refused = refusal(400, "Does not contain a valid address.", "personalizations.1.to.0.email")
    results = sender(FakeApi(documented, refused)).send_many(readers(3))
    assert isinstance(results[1], RecipientRejected)
    assert "personalizations.1.to.0.email" in results[1].detail
    for held in (results[0], results[2]):
        assert isinstance(held, TemporaryError)  # not sent: goes out on the retry
        assert "refused the request for <d.1@courier.example>" in str(held)


def test_an_error_about_the_shared_body_fails_every_message_of_the_call() -> None:
    refused = refusal(
        400,
        "The content value must be a string at least one character in length.",
        "content.0.value",
    )
    results = sender(FakeApi(documented, refused)).send_many(readers(2))
    assert all(isinstance(r, MessageRejected) for r in results)
    error = raised(lambda: sender(FakeApi(documented, refused)).send(readers(1)[0]))
    assert type(error) is MessageRejected
    assert "content.0.value" in error.detail


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (
            refusal(401, "The provided authorization grant is invalid, expired, or revoked"),
            BackendRejected,
        ),
        (
            refusal(
                403,
                "The from address does not match a verified Sender Identity. Mail cannot be "
                "sent until this error is resolved.",
                "from",
            ),
            BackendRejected,
        ),
        (
            refusal(400, "The from email does not contain a valid address.", "from.email"),
            BackendRejected,
        ),
        (refusal(413, "Payload Too Large"), MessageRejected),
        (refusal(500, "Internal server error"), TemporaryError),
        (answer(503, "Service Unavailable"), TemporaryError),
        (answer(400, "<html>not JSON</html>"), MessageRejected),
    ],
)
def test_answers_about_the_whole_call(response: httpx.Response, kind: type[MailError]) -> None:
    error = raised(lambda: sender(FakeApi(documented, response)).send(readers(1)[0]))
    assert type(error) is kind
    assert error.code == response.status_code
    # In a batch, a refusal of the message is each message's result; the rest is raised.
    batch = sender(FakeApi(documented, response))
    if kind is MessageRejected:
        assert [type(r) for r in batch.send_many(readers(2))] == [kind, kind]
    else:
        assert type(raised(lambda: batch.send_many(readers(2)))) is kind


def test_429_waits_until_the_rate_limit_resets() -> None:
    too_many = {"errors": [{"field": None, "message": "too many requests"}]}
    reset = answer(
        429,
        too_many,
        headers={
            "X-RateLimit-Limit": "150",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(NOW) + 42),
        },
    )
    error = raised(lambda: sender(FakeApi(documented, reset)).send_many(readers(2)))
    assert isinstance(error, RateLimited)
    assert error.retry_after == 42.0
    assert error.detail == "too many requests"

    told = answer(429, too_many, headers={"Retry-After": "7"})
    error = raised(lambda: sender(FakeApi(documented, told)).send(readers(1)[0]))
    assert isinstance(error, RateLimited)
    assert error.retry_after == 7.0


def test_a_later_call_s_failure_is_its_messages_result_once_one_call_went_out() -> None:
    other = prepare(PLAIN, mail_from="n@courier.example")
    messages = [*readers(2), other.personalize(to="x@example.com", message_id="<x@c.example>")]
    api = FakeApi(documented, accepted("a"), answer(503, "Service Unavailable"))
    results = sender(api).send_many(messages)
    assert results[:2] == ["a", "a"]
    assert isinstance(results[2], TemporaryError)


def test_accepted_without_an_id_still_counts_as_sent() -> None:
    assert sender(FakeApi(documented, answer(202))).send(readers(1)[0]) == ""
    sandbox = answer(200)  # "valid, but not queued": sandbox mode only
    assert sender(FakeApi(documented, sandbox)).send_many(readers(1)) == [""]


def test_a_refused_connection_is_temporary() -> None:
    error = raised(lambda: sender(FakeApi(documented, refuse_connection)).send_many(readers(2)))
    assert type(error) is TemporaryError


def test_at_most_1000_readers_a_batch() -> None:
    assert SendgridSender.batch_size == 1000
    with pytest.raises(ValueError, match="1000"):
        sender(FakeApi(documented)).send_many(readers(1) * 1001)
