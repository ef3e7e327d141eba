"""What can go wrong when sending mail, sorted by what the caller should do about it.

MailError                   base; `code` (SMTP/HTTP status or None) and `detail` (server text)
├── TemporaryError          retry later with backoff: SMTP 4xx, timeouts, dropped or
│   │                       refused connections, HTTP 429/5xx
│   └── RateLimited         the backend asked us to slow down; `retry_after` seconds if told
└── PermanentError          do not retry this message
    ├── RecipientRejected   5xx to RCPT or DATA for this message: fail the delivery and
    │                       suppress the address
    └── BackendRejected     the backend refuses us whatever the recipient (auth failure 535,
                            sender refused, bad configuration): pause sending

HeaderInjection(ValueError) a header value holds CR or LF; raised before anything is built,
                            so it is a programming or data error, not a sending error.
"""

from __future__ import annotations

__all__ = [
    "BackendRejected",
    "HeaderInjection",
    "MailError",
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


class BackendRejected(PermanentError):
    pass


class HeaderInjection(ValueError):
    pass
