"""SES feedback as Amazon SNS delivers it, signed the way SNS signs, for the webhook tests.

The SES messages follow the examples of "Amazon SNS notification contents for Amazon SES"
and "Contents of event data that Amazon SES publishes to Amazon SNS" (invented addresses and
ids); the envelopes follow SNS's "HTTP/HTTPS notification JSON format" and its subscription
confirmation. `Signer` is a locally generated RSA key with a self-signed certificate; `FakeSns`
is an `httpx.MockTransport` handler answering as SNS does: the certificate at `CERT_URL`,
200 to a ConfirmSubscription GET. It records every request, so a test can say none was made.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

REGION = "eu-west-1"
TOPIC = "arn:aws:sns:eu-west-1:111122223333:courier-ses-feedback"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:444455556666:someone-elses-topic"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-xxxx.pem"
SUBSCRIBE_URL = (
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
    f"&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e2425a8a58"
)

# The fields SNS signs, in the order "Verifying the signatures of Amazon SNS messages" lists
# them (Subject only when the notification has one).
NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")

# mail.messageId: what SES's SendEmail answered when the mail went out (our provider_id).
SES_ID = "0100019a2c3d4e5f-6a7b8c9d-1e2f-4a3b-9c8d-7e6f5a4b3c2d-000000"
OUR_ID = "<delivery.42.7@courier.example>"


def _mail(destination: list[str], ses_id: str = SES_ID, headers: bool = True) -> dict[str, Any]:
    """A ``mail`` object; with ``headers`` as when the identity includes the original headers."""
    mail: dict[str, Any] = {
        "timestamp": "2026-11-27T07:00:01.120Z",
        "messageId": ses_id,
        "source": "news@courier.example",
        "sourceArn": "arn:aws:ses:eu-west-1:111122223333:identity/courier.example",
        "sourceIp": "203.0.113.10",
        "sendingAccountId": "111122223333",
        "destination": destination,
    }
    if headers:
        mail["headersTruncated"] = False
        mail["headers"] = [
            {"name": "From", "value": "The Harbour Courier <news@courier.example>"},
            {"name": "To", "value": ", ".join(destination)},
            {"name": "Message-ID", "value": OUR_ID},
            {"name": "Subject", "value": "Your morning digest"},
        ]
        mail["commonHeaders"] = {
            "from": ["The Harbour Courier <news@courier.example>"],
            "to": destination,
            "messageId": OUR_ID,
            "subject": "Your morning digest",
        }
    return mail


PERMANENT_BOUNCE: dict[str, Any] = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "ann@example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 <ann@example.com>... User unknown",
            },
            {
                "emailAddress": "bob@example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 <bob@example.com>... User unknown",
            },
        ],
        "reportingMTA": "dns; mx.example.com",
        "timestamp": "2026-11-27T07:00:03.512Z",
        "feedbackId": "0100019a2c3d4e60-11111111-2222-4333-8444-555555555555-000000",
        "remoteMtaIp": "198.51.100.25",
    },
    "mail": _mail(["ann@example.com", "bob@example.com"]),
}

TRANSIENT_BOUNCE: dict[str, Any] = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Transient",
        "bounceSubType": "MailboxFull",
        "bouncedRecipients": [
            {
                "emailAddress": "cat@example.com",
                "action": "failed",
                "status": "4.2.2",
                "diagnosticCode": "smtp; 452 4.2.2 Mailbox full",
            }
        ],
        "timestamp": "2026-11-27T09:12:40.001Z",
        "feedbackId": "0100019a2c3d4e61-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee-000000",
    },
    "mail": _mail(["cat@example.com"]),
}

UNDETERMINED_BOUNCE: dict[str, Any] = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Undetermined",
        "bounceSubType": "Undetermined",
        "bouncedRecipients": [{"emailAddress": "dan@example.com"}],
        "timestamp": "2026-11-27T09:13:00.000Z",
        "feedbackId": "0100019a2c3d4e62-12121212-3434-4565-8787-989898989898-000000",
    },
    "mail": _mail(["dan@example.com"], headers=False),
}

# Without the original headers (the identity's default): only SES's messageId names the mail.
COMPLAINT: dict[str, Any] = {
    "notificationType": "Complaint",
    "complaint": {
        "userAgent": "ExampleMail Feedback Loop (V0.01)",
        "complainedRecipients": [{"emailAddress": "eve@example.com"}],
        "complaintFeedbackType": "abuse",
        "arrivalDate": "2026-11-27T08:15:20.000Z",
        "timestamp": "2026-11-27T08:15:21.444Z",
        "feedbackId": "0100019a2c3d4e63-01010101-0202-4303-8404-050505050505-000000",
    },
    "mail": _mail(["eve@example.com"], headers=False),
}

DELIVERY: dict[str, Any] = {
    "notificationType": "Delivery",
    "mail": _mail(["fay@example.com"]),
    "delivery": {
        "timestamp": "2026-11-27T07:00:02.546Z",
        "processingTimeMillis": 546,
        "recipients": ["fay@example.com"],
        "smtpResponse": "250 2.0.0 OK  1732690802 a1si12345",
        "reportingMTA": "a8-70.smtp-out.amazonses.com",
        "remoteMtaIp": "198.51.100.30",
    },
}

# Event publishing (a configuration set's SNS destination): `eventType`, and fields this code
# has never heard of at every level, as SES reserves the right to add.
UNKNOWN_FIELDS: dict[str, Any] = {
    "eventType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "NoEmail",
        "bouncedRecipients": [
            {
                "emailAddress": "gus@example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 no such mailbox",
                "recipientNovelty": {"score": 0.5},
            }
        ],
        "timestamp": "2026-11-27T10:00:00.000Z",
        "feedbackId": "0100019a2c3d4e64-99999999-8888-4777-8666-555555555555-000000",
        "bounceFutureField": ["x", 1, None],
    },
    "mail": {
        **_mail(["gus@example.com"]),
        "tags": {"ses:configuration-set": ["courier"], "ses:operation": ["SendEmail"]},
        "mailFutureField": True,
    },
    "futureTopLevelObject": {"nested": {"deeper": [1, 2, 3]}},
}

SUBSCRIPTION_SUCCEEDED: dict[str, Any] = {
    "notificationType": "AmazonSnsSubscriptionSucceeded",
    "message": "You have successfully subscribed your Amazon SNS topic "
    f"'{TOPIC}' to receive 'Bounce' notifications from Amazon SES for identity "
    "'courier.example'.",
}

FIXTURES: dict[str, dict[str, Any]] = {
    "permanent_bounce": PERMANENT_BOUNCE,
    "transient_bounce": TRANSIENT_BOUNCE,
    "undetermined_bounce": UNDETERMINED_BOUNCE,
    "complaint": COMPLAINT,
    "delivery": DELIVERY,
    "unknown_fields": UNKNOWN_FIELDS,
}


def sns_timestamp(when: datetime | None = None) -> str:
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def notification(
    ses: dict[str, Any],
    *,
    message_id: str | None = None,
    topic: str = TOPIC,
    at: datetime | None = None,
    subject: str | None = None,
) -> dict[str, Any]:
    """The SNS Notification envelope around an SES message (not yet signed)."""
    envelope = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": json.dumps(ses),
        "Timestamp": sns_timestamp(at),
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"
        f"&SubscriptionArn={topic}:1f2e3d4c-5b6a-4978-8a6b-5c4d3e2f1a0b",
    }
    if subject is not None:
        envelope["Subject"] = subject
    return envelope


def confirmation(
    kind: str = "SubscriptionConfirmation",
    *,
    topic: str = TOPIC,
    subscribe_url: str = SUBSCRIBE_URL,
    at: datetime | None = None,
) -> dict[str, Any]:
    """A SubscriptionConfirmation (or UnsubscribeConfirmation) envelope (not yet signed)."""
    verb = "subscribe to the topic" if kind == "SubscriptionConfirmation" else "deactivate"
    return {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": "2336412f37fb687f5d51e6e2425a8a58",
        "TopicArn": topic,
        "Message": f"You have chosen to {verb} {topic}.\nTo confirm the subscription, "
        "visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url,
        "Timestamp": sns_timestamp(at),
    }


@dataclass(frozen=True)
class Signer:
    """A key and its self-signed certificate, standing in for SNS's."""

    key: rsa.RSAPrivateKey
    certificate_pem: bytes

    def sign(
        self, envelope: dict[str, Any], version: str = "1", cert_url: str = CERT_URL
    ) -> dict[str, Any]:
        """``envelope`` with SignatureVersion, Signature and SigningCertURL, as SNS sends it."""
        algorithm: hashes.HashAlgorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
        names = NOTIFICATION if envelope["Type"] == "Notification" else CONFIRMATION
        canonical = "".join(f"{n}\n{envelope[n]}\n" for n in names if n in envelope).encode()
        signature = self.key.sign(canonical, padding.PKCS1v15(), algorithm)
        return {
            **envelope,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": cert_url,
        }


def make_signer(*, not_before: datetime | None = None, not_after: datetime | None = None) -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return Signer(key, certificate.public_bytes(serialization.Encoding.PEM))


@cache
def signer() -> Signer:
    """One key for the whole test run (generating RSA keys is the slow part)."""
    return make_signer()


@cache
def other_signer() -> Signer:
    """Another key: what an impostor signs with."""
    return make_signer()


def ec_certificate_pem() -> bytes:
    """A valid certificate whose key is not RSA (SNS signs with RSA only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class FakeSns:
    """SNS's side of the conversation: certificates by URL, subscription confirmations."""

    certificates: dict[str, bytes] = field(default_factory=dict)
    confirm_status: int = 200
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url)
        if request.method == "GET" and url in self.certificates:
            return httpx.Response(200, content=self.certificates[url])
        if request.method == "GET" and request.url.params.get("Action") == "ConfirmSubscription":
            return httpx.Response(
                self.confirm_status,
                text="<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>"
                f"{TOPIC}:1f2e3d4c-5b6a-4978-8a6b-5c4d3e2f1a0b</SubscriptionArn>"
                "</ConfirmSubscriptionResult></ConfirmSubscriptionResponse>",
            )
        return httpx.Response(404, text="<Error><Code>NotFound</Code></Error>")

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))

    def urls(self) -> list[str]:
        return [str(r.url) for r in self.requests]


def fake_sns() -> FakeSns:
    return FakeSns(certificates={CERT_URL: signer().certificate_pem})


def body(message: dict[str, Any]) -> bytes:
    return json.dumps(message, indent=2).encode()


def ses_message(envelope: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(envelope["Message"])
    return decoded


def with_ses_message(envelope: dict[str, Any], ses: dict[str, Any]) -> dict[str, Any]:
    """The envelope with another Message put in after signing: a tampered copy."""
    changed = copy.deepcopy(envelope)
    changed["Message"] = json.dumps(ses)
    return changed
