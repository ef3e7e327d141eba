"""What can go wrong when sending mail, sorted by what the caller should do about it.

MailError                   base; `code` (SMTP/HTTP status or None) and `detail` (server text)
├── TemporaryError          retry later with backoff: SMTP 4xx, timeouts, dropped or
│   │                       refused connections, HTTP 429/5xx
│   └── RateLimited         the backend asked us to slow down; `retry_after` seconds if told
└── PermanentError          do not retry this message
    ├── RecipientRejected   the address itself is refused (5xx with enhanced status 5.1.x bad
    │                       mailbox or address, 5.2.x mailbox full or disabled; at RCPT with no
    │                       enhanced status, 550/551/553): fail the delivery and suppress the
    │                       address
    ├── MessageRejected     this message is refused, not the reader (content or policy: spam,
    │                       5.7.x, 5.6.x, too large 552/5.3.4/5.2.3; any other 5xx to RCPT or
    │                       DATA): fail this delivery, keep the subscription
    └── BackendRejected     the backend refuses us whatever the recipient (auth failure 535,
                            sender refused or 5.1.7/5.1.8 bad sender address, TLS certificate
                            or STARTTLS problems, bad configuration): pause sending

HeaderInjection(ValueError) a header value holds CR or LF; raised before anything is built,
                            so it is a programming or data error, not a sending error.
"""

from __future__ import annotations

__all__ = [
    "BackendRejected",
    "HeaderInjection",
    "MailError",
    "MessageRejected",
    "PermanentError",
    "RateLimited",
    "RecipientRejected",
    "TemporaryError",
]


class MailError(Exception):
    def __init__(self, detail: str, code: int | None = None) -> None:
        super().__init__(f"{code} {detail}" if code is not None else detail)
        self.code = code
        self.detail = detail


class TemporaryError(MailError):
    pass


class RateLimited(TemporaryError):
    def __init__(
        self, detail: str, code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(detail, code)
        self.retry_after = retry_after


class PermanentError(MailError):
    pass


class RecipientRejected(PermanentError):
    pass


class MessageRejected(PermanentError):
    pass


class BackendRejected(PermanentError):
    pass


class HeaderInjection(ValueError):
    pass
