"""Amazon SES feedback, delivered by Amazon SNS: ``POST /webhooks/ses``.

SES publishes bounces, complaints and deliveries to an SNS topic; the topic POSTs each message
to this endpoint as JSON. What this follows, from AWS's documentation:

- https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html — the string
  to sign is ``Name\\nValue\\n`` for each signed field in byte order: ``Message``,
  ``MessageId``, ``Subject`` (when present), ``Timestamp``, ``TopicArn``, ``Type`` for a
  Notification; ``Message``, ``MessageId``, ``SubscribeURL``, ``Timestamp``, ``Token``,
  ``TopicArn``, ``Type`` for a SubscriptionConfirmation or UnsubscribeConfirmation.
  ``Signature`` is its base64 SHA1withRSA (``SignatureVersion`` 1) or SHA256withRSA (2)
  signature, checked with the public key of the X.509 certificate at ``SigningCertURL``,
  fetched over HTTPS from SNS only. Reject a message of an unexpected ``TopicArn``.
- https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html (and the pages
  on each type) — the fields of the three message types; a SubscriptionConfirmation is
  confirmed by visiting its ``SubscribeURL``.
- https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html — the SES message
  (SNS's ``Message``): ``notificationType`` Bounce, Complaint or Delivery; ``mail`` (its
  ``messageId`` is what SES's SendEmail answered, our delivery's ``provider_id``; ``headers``
  and ``commonHeaders``, when the identity includes them, carry our own Message-ID);
  ``bounce.bounceType`` Permanent, Transient or Undetermined with ``bouncedRecipients[]``;
  ``complaint.complainedRecipients[]`` and ``complaintFeedbackType``; ``delivery.recipients``.
  "Applications that parse these notifications must be flexible enough to handle unknown
  fields"; one notification may name several recipients.
- https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html —
  a configuration set's event publishing sends the same objects with ``eventType`` in place of
  ``notificationType``, and more types (Send, Open, Click, DeliveryDelay…), kept as ``other``.

Trust rests on the certificate's origin: its URL must be ``https://sns.<region>.amazonaws.com/
….pem`` (checked before anything is fetched), so TLS vouches that SNS served it; the
certificate must be in its validity period and carry an RSA key. SNS serves the leaf alone, so
there is no chain to walk. Certificates are kept per URL (a few, see `CertificateCache`).

A message older than an hour is refused (403), as is one of another topic; an unset
``SES_TOPIC_ARN`` refuses everything (403). SNS's "raw message delivery" drops the signed
envelope, so it must stay off for this subscription.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from service.bounces.events import EventKind, MailEvent
from service.bounces.webhooks import (
    BadPayload,
    Context,
    Forbidden,
    Unauthorized,
    Unavailable,
    WebhookRequest,
    handler,
)

__all__ = [
    "CERTIFICATES",
    "CertificateCache",
    "SnsMessage",
    "Unavailable",
    "events",
    "parse_sns",
    "ses_events",
    "string_to_sign",
    "verify",
]

log = logging.getLogger(__name__)

PROVIDER = "ses"
MAX_AGE = timedelta(hours=1)
MAX_CERTIFICATE_BYTES = 64 * 1024  # an SNS signing certificate is about 2 KB
FETCH_TIMEOUT = 10.0

_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d+"
# The whole URL, not its parsed parts: no userinfo, port, query, fragment or odd character can
# slip past a parser that reads the URL differently from the one that fetches it.
_CERT_URL = re.compile(rf"https://sns\.{_REGION}\.amazonaws\.com/[A-Za-z0-9][A-Za-z0-9._-]*\.pem")
_SNS_HOST = re.compile(rf"sns\.{_REGION}\.amazonaws\.com")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)")

# The fields each type signs, in byte order; Subject is signed only when the message has one.
NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
SIGNED_FIELDS = {
    "Notification": NOTIFICATION,
    "SubscriptionConfirmation": CONFIRMATION,
    "UnsubscribeConfirmation": CONFIRMATION,
}
OPTIONAL_FIELDS = frozenset({"Subject"})


def _sha1() -> hashes.HashAlgorithm:
    return hashes.SHA1()  # noqa: S303 - SignatureVersion 1 is SHA1withRSA: SNS signs so


HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": _sha1, "2": hashes.SHA256}

BOUNCE_KINDS = {
    "Permanent": EventKind.HARD_BOUNCE,
    "Transient": EventKind.SOFT_BOUNCE,
    "Undetermined": EventKind.SOFT_BOUNCE,
}


@dataclass(frozen=True)
class SnsMessage:
    """An SNS message as posted, its fields checked for shape (not yet for authenticity)."""

    type: str
    message_id: str
    topic_arn: str
    timestamp: datetime
    message: str
    fields: Mapping[str, str]  # every signed field present, as received
    signature_version: str
    signature: str
    signing_cert_url: str
    subscribe_url: str | None


# --- the SNS envelope ---------------------------------------------------------------------


def parse_sns(body: bytes) -> SnsMessage:
    """Read the POSTed JSON; `BadPayload` when it is not an SNS message, `Unauthorized` when
    its signature fields are missing."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadPayload("Not JSON: SNS posts a JSON object.") from exc
    if not isinstance(data, dict):
        raise BadPayload("Not an SNS message: expected a JSON object.")
    kind = data.get("Type")
    if not isinstance(kind, str) or kind not in SIGNED_FIELDS:
        raise BadPayload(f"Not an SNS message type: {str(kind)[:60]!r}.")
    signed = {}
    for name in SIGNED_FIELDS[kind]:
        value = data.get(name)
        if value is None and name in OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise BadPayload(f"{kind} without a {name}.")
        signed[name] = value
    unsigned = {}
    for name in ("SignatureVersion", "Signature", "SigningCertURL"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise Unauthorized(f"Missing {name}: SNS signs every message.")
        unsigned[name] = value
    return SnsMessage(
        type=kind,
        message_id=signed["MessageId"],
        topic_arn=signed["TopicArn"],
        timestamp=_sns_timestamp(signed["Timestamp"]),
        message=signed["Message"],
        fields=signed,
        signature_version=unsigned["SignatureVersion"],
        signature=unsigned["Signature"],
        signing_cert_url=unsigned["SigningCertURL"],
        subscribe_url=signed.get("SubscribeURL"),
    )


def _sns_timestamp(value: str) -> datetime:
    if not _TIMESTAMP.fullmatch(value):
        raise BadPayload(f"Timestamp is not an ISO 8601 time: {value[:40]!r}.")
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise BadPayload(f"Timestamp is not a valid time: {value[:40]!r}.") from exc


def string_to_sign(fields: Mapping[str, str]) -> bytes:
    """The documented canonical form: ``Name\\nValue\\n`` per signed field, in byte order."""
    return "".join(f"{name}\n{fields[name]}\n" for name in sorted(fields)).encode()


def is_sns_url(url: str) -> bool:
    """An https URL on ``sns.<region>.amazonaws.com`` with no userinfo or port (for
    SubscribeURL, whose query carries the topic and token)."""
    if any(ch.isspace() or ch in "\\@" or ord(ch) < 0x20 for ch in url):
        return False
    parts = urlsplit(url)
    return (
        parts.scheme == "https"
        and _SNS_HOST.fullmatch(parts.netloc) is not None
        and not parts.fragment
    )


# --- the signature ------------------------------------------------------------------------


class CertificateCache:
    """SNS signing certificates by URL, the most recently used kept, at most ``size``.

    A process sees a handful (one per region, renewed rarely). Shared by the threads that
    serve requests; a certificate outside its validity period is dropped when asked for.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._certificates: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str, now: datetime) -> x509.Certificate | None:
        with self._lock:
            certificate = self._certificates.get(url)
            if certificate is None:
                return None
            if not _in_validity(certificate, now):
                del self._certificates[url]
                return None
            self._certificates.move_to_end(url)
            return certificate

    def put(self, url: str, certificate: x509.Certificate) -> None:
        with self._lock:
            self._certificates[url] = certificate
            self._certificates.move_to_end(url)
            while len(self._certificates) > self.size:
                self._certificates.popitem(last=False)

    def urls(self) -> list[str]:
        with self._lock:
            return list(self._certificates)

    def clear(self) -> None:
        with self._lock:
            self._certificates.clear()


CERTIFICATES = CertificateCache()


def verify(
    message: SnsMessage,
    client: httpx.Client,
    *,
    cache: CertificateCache = CERTIFICATES,
    now: datetime | None = None,
) -> None:
    """Check the message's signature as SNS documents it, or raise `Unauthorized` (or
    `Unavailable` when the certificate cannot be fetched now)."""
    now = now or datetime.now(UTC)
    if not _CERT_URL.fullmatch(message.signing_cert_url):
        raise Unauthorized("SigningCertURL is not an https://sns.<region>.amazonaws.com/ URL.")
    hash_algorithm = HASHES.get(message.signature_version)
    if hash_algorithm is None:
        raise Unauthorized(f"Unknown SignatureVersion {message.signature_version[:10]!r}.")
    try:
        signature = base64.b64decode(message.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Unauthorized("Signature is not base64.") from exc
    certificate = cache.get(message.signing_cert_url, now)
    if certificate is None:
        certificate = _fetch_certificate(client, message.signing_cert_url, now)
        cache.put(message.signing_cert_url, certificate)
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)  # checked when fetched
    try:
        key.verify(signature, string_to_sign(message.fields), padding.PKCS1v15(), hash_algorithm())
    except InvalidSignature as exc:
        raise Unauthorized("The signature does not match the message.") from exc


def _fetch_certificate(client: httpx.Client, url: str, now: datetime) -> x509.Certificate:
    try:
        response = client.get(url, follow_redirects=False, timeout=FETCH_TIMEOUT)
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"Could not fetch the signing certificate: {type(exc).__name__}."
        ) from exc
    if response.status_code != 200:
        raise Unavailable(f"The signing certificate URL answered {response.status_code}.")
    if len(response.content) > MAX_CERTIFICATE_BYTES:
        raise Unauthorized("The signing certificate is implausibly large.")
    try:
        certificate = x509.load_pem_x509_certificate(response.content)
    except ValueError as exc:
        raise Unauthorized("The signing certificate is not a PEM X.509 certificate.") from exc
    if not _in_validity(certificate, now):
        raise Unauthorized("The signing certificate is expired or not yet valid.")
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Unauthorized("The signing certificate's key cannot be read.") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise Unauthorized("The signing certificate does not carry an RSA key.")
    return certificate


def _in_validity(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


# --- the handler --------------------------------------------------------------------------


@handler(PROVIDER)
def events(request: WebhookRequest, ctx: Context) -> list[MailEvent]:
    """Verify an SNS message of the configured topic; confirm a subscription, or turn an SES
    notification into one `MailEvent` per recipient."""
    topic = ctx.settings.ses_topic_arn.strip()
    if not topic:
        raise Forbidden(
            "The SES webhook is off: set NEWSLETTER_SES_TOPIC_ARN to the SNS topic's ARN."
        )
    message = parse_sns(request.body)
    now = datetime.now(UTC)
    verify(message, ctx.client, now=now)
    if message.topic_arn != topic:
        raise Forbidden("The message is from another SNS topic than NEWSLETTER_SES_TOPIC_ARN.")
    if now - message.timestamp > MAX_AGE:
        raise Forbidden("The message is more than an hour old.")
    if message.timestamp - now > MAX_AGE:
        raise Forbidden("The message is dated more than an hour ahead.")
    if message.type == "SubscriptionConfirmation":
        _confirm(message, ctx.client)
        return []
    if message.type == "UnsubscribeConfirmation":
        log.warning("SNS unsubscribed this endpoint from %s", message.topic_arn)
        return []
    return ses_events(message)


def _confirm(message: SnsMessage, client: httpx.Client) -> None:
    url = message.subscribe_url or ""
    query = parse_qs(urlsplit(url).query)
    if not is_sns_url(url) or query.get("Action") != ["ConfirmSubscription"]:
        raise BadPayload("SubscribeURL is not an SNS ConfirmSubscription URL.")
    try:
        response = client.get(url, follow_redirects=False, timeout=FETCH_TIMEOUT)
    except httpx.HTTPError as exc:
        raise Unavailable(f"Could not confirm the subscription: {type(exc).__name__}.") from exc
    if response.status_code != 200:
        raise Unavailable(f"SNS answered {response.status_code} to the confirmation.")
    log.info("Confirmed the SNS subscription to %s", message.topic_arn)


# --- the SES notification -----------------------------------------------------------------


def ses_events(message: SnsMessage) -> list[MailEvent]:
    """One event per recipient of the SES notification in ``message`` (verified already).

    Its id is the SNS MessageId with the recipient: SNS keeps the MessageId when it retries,
    so a replay yields the same ids, and several recipients of one message yield several.
    """
    try:
        notification = json.loads(message.message)
    except (ValueError, RecursionError) as exc:
        raise BadPayload("The SNS Message is not an SES notification (not JSON).") from exc
    if not isinstance(notification, dict):
        raise BadPayload("The SNS Message is not an SES notification (not an object).")
    kind = notification.get("notificationType") or notification.get("eventType")
    if not isinstance(kind, str):
        raise BadPayload("The SES notification has no notificationType or eventType.")
    mail = notification.get("mail")
    mail = mail if isinstance(mail, dict) else {}
    base = _Common(
        sns=message,
        kind_name=kind,
        mail=mail,
        message_id=_our_message_id(mail),
        provider_message_id=_text(mail.get("messageId")),
    )
    if kind == "Bounce":
        return list(_bounces(base, _object(notification, "bounce", kind)))
    if kind == "Complaint":
        return list(_complaints(base, _object(notification, "complaint", kind)))
    if kind == "Delivery":
        return list(_deliveries(base, _object(notification, "delivery", kind)))
    # AmazonSnsSubscriptionSucceeded (SES saying the topic is wired) carries no recipient;
    # event publishing's Send, Open, Click, DeliveryDelay… are kept as evidence per recipient.
    destination = mail.get("destination")
    recipients = destination if isinstance(destination, list) else []
    return [
        base.event(EventKind.OTHER, address, base.sns.timestamp, kind[:100], {})
        for address in _unique(recipients)
    ]


@dataclass(frozen=True)
class _Common:
    sns: SnsMessage
    kind_name: str
    mail: dict[str, Any]
    message_id: str | None
    provider_message_id: str | None

    def event(
        self,
        kind: EventKind,
        address: str,
        occurred_at: datetime,
        detail: str,
        recipient: dict[str, Any],
    ) -> MailEvent:
        return MailEvent(
            provider=PROVIDER,
            event_id=_event_id(self.sns.message_id, address),
            kind=kind,
            email=address,
            occurred_at=occurred_at,
            message_id=self.message_id,
            provider_message_id=self.provider_message_id,
            detail=detail[:500],
            payload={
                "sns_message_id": self.sns.message_id,
                "topic_arn": self.sns.topic_arn,
                "type": self.kind_name,
                "mail": {k: v for k, v in self.mail.items() if k != "headers"},
                "recipient": recipient,
            },
        )


def _bounces(base: _Common, bounce: dict[str, Any]) -> Iterator[MailEvent]:
    bounce_type = _text(bounce.get("bounceType")) or "Undetermined"
    sub_type = _text(bounce.get("bounceSubType")) or "Undetermined"
    kind = BOUNCE_KINDS.get(bounce_type, EventKind.SOFT_BOUNCE)
    when = _when(bounce.get("timestamp"), base.sns.timestamp)
    seen: set[str] = set()
    for recipient in _list(bounce, "bouncedRecipients", "Bounce"):
        address = _address(recipient)
        if address is None or address.lower() in seen:
            continue
        seen.add(address.lower())
        parts = [f"{bounce_type}/{sub_type}"]
        parts += [p for p in (_text(recipient.get(k)) for k in ("status", "diagnosticCode")) if p]
        yield base.event(kind, address, when, " ".join(parts), recipient)


def _complaints(base: _Common, complaint: dict[str, Any]) -> Iterator[MailEvent]:
    feedback = _text(complaint.get("complaintFeedbackType")) or "unspecified"
    sub_type = _text(complaint.get("complaintSubType"))
    detail = f"complaint: {feedback}" + (f" ({sub_type})" if sub_type else "")
    when = _when(complaint.get("timestamp"), base.sns.timestamp)
    seen: set[str] = set()
    for recipient in _list(complaint, "complainedRecipients", "Complaint"):
        address = _address(recipient)
        if address is None or address.lower() in seen:
            continue
        seen.add(address.lower())
        yield base.event(EventKind.COMPLAINT, address, when, detail, recipient)


def _deliveries(base: _Common, delivery: dict[str, Any]) -> Iterator[MailEvent]:
    recipients = delivery.get("recipients")
    if not isinstance(recipients, list):
        raise BadPayload("A Delivery notification without a recipients list.")
    when = _when(delivery.get("timestamp"), base.sns.timestamp)
    detail = _text(delivery.get("smtpResponse")) or "delivered"
    for address in _unique(r for r in recipients if isinstance(r, str)):
        yield base.event(EventKind.DELIVERED, address, when, detail, {"emailAddress": address})


def _object(notification: dict[str, Any], name: str, kind: str) -> dict[str, Any]:
    value = notification.get(name)
    if not isinstance(value, dict):
        raise BadPayload(f"A {kind} notification without its {name} object.")
    return value


def _list(container: dict[str, Any], name: str, kind: str) -> list[dict[str, Any]]:
    value = container.get(name)
    if not isinstance(value, list):
        raise BadPayload(f"A {kind} notification without {name}.")
    return [item for item in value if isinstance(item, dict)]


def _address(recipient: dict[str, Any]) -> str | None:
    return _clean_address(recipient.get("emailAddress"))


def _clean_address(value: object) -> str | None:
    """The bare address (a DSN's Final-Recipient may come as ``Name <addr>``)."""
    if not isinstance(value, str):
        return None
    address = parseaddr(value)[1].strip() if "<" in value else value.strip()
    if "@" not in address or len(address) > 320 or any(c.isspace() for c in address):
        return None
    return address


def _unique(addresses: Any) -> Iterator[str]:
    seen: set[str] = set()
    for value in addresses:
        address = _clean_address(value)
        if address is not None and address.lower() not in seen:
            seen.add(address.lower())
            yield address


def _event_id(sns_message_id: str, address: str) -> str:
    """The SNS MessageId and the recipient; a hash of the address if that is too long for
    the column (300)."""
    event_id = f"{sns_message_id}:{address.lower()}"
    if len(event_id) <= 300:
        return event_id
    digest = hashlib.sha256(address.lower().encode()).hexdigest()
    return f"{sns_message_id[:200]}:{digest}"


def _our_message_id(mail: dict[str, Any]) -> str | None:
    """Our Message-ID header, from ``commonHeaders.messageId`` or the ``headers`` list, in the
    ``<…>`` form deliveries store."""
    common = mail.get("commonHeaders")
    value = common.get("messageId") if isinstance(common, dict) else None
    if not isinstance(value, str):
        headers = mail.get("headers")
        for header in headers if isinstance(headers, list) else []:
            if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
                value = header.get("value")
                break
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    return value[:300]


def _when(value: object, default: datetime) -> datetime:
    """An SES timestamp (ISO 8601, sometimes ``2018-10-08T14:05:45 +0000``), else ``default``."""
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        text = re.sub(r"\s+([+-]\d\d):?(\d\d)$", r"\1:\2", text)
        try:
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            return default
    return default


def _text(value: object) -> str | None:
    return (value.strip()[:300] or None) if isinstance(value, str) else None
