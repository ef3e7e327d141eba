"""Provider webhook fixtures and the providers' side of signing them, for the webhook tests.

Each signer does what the provider documents, with keys made here: SendGrid's ECDSA P-256
signature over timestamp + body, Mailgun's HMAC-SHA256 of timestamp + token, Postmark's basic
credentials. `tampered` changes a signed body the way an attacker would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service.bounces.webhooks import WebhookRequest

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
MAILGUN_KEY = "key-7f3a9c1e5b2d8f4a6c0e2b9d1f3a5c7e"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hook", "s3cret-Long-Random-Password"


def fixture(provider: str, name: str) -> Any:
    return json.loads((FIXTURES / provider / f"{name}.json").read_text())


def body_of(payload: Any) -> bytes:
    return json.dumps(payload, indent=2).encode()


def tampered(body: bytes) -> bytes:
    """The signed body with one address changed: the attacker's own victim."""
    changed = body.replace(b"@", b"@evil.", 1)
    assert changed != body
    return changed


def request(body: bytes, headers: dict[str, str] | None = None) -> WebhookRequest:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    return WebhookRequest(body=body, headers=lowered, query={}, url="https://news.example/webhooks")


# -- Postmark --------------------------------------------------------------------------------


def basic(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


# -- SendGrid --------------------------------------------------------------------------------


class SendgridSigner:
    """SendGrid's key pair: the private half signs, the public half is what it shows us."""

    def __init__(self, curve: ec.EllipticCurve | None = None) -> None:
        self.key = ec.generate_private_key(curve or ec.SECP256R1())

    @property
    def public_key(self) -> str:
        """As SendGrid's settings page shows it: base64 of the DER SubjectPublicKeyInfo."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }


# -- Mailgun ---------------------------------------------------------------------------------


def mailgun_signature(
    key: str = MAILGUN_KEY, *, timestamp: int | None = None, token: str | None = None
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)  # 50 characters, as Mailgun's
    digest = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": stamp, "token": token, "signature": digest}


def mailgun_body(event_data: dict[str, Any], signature: dict[str, str] | None = None) -> bytes:
    return body_of({"signature": signature or mailgun_signature(), "event-data": event_data})
