"""Send through an SMTP server over a small pool of connections reused across messages.

`smtp://[user:pass@]host:port[?starttls=require|auto|off]` (auto: STARTTLS when offered) or
`smtps://…` (TLS from the first byte). Up to `pool_size` connections are open at once; idle ones
wait in a LIFO so the warmest is reused and the rest can time out on the server side.

A connection that saw any error is closed, never pooled again. A send is never retried here: if
the connection drops after the final "." the server may have queued the mail, and only the
caller's retry policy (reusing the stable Message-ID) should decide to send it again.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from service.mail.errors import (
    BackendRejected,
    MailError,
    PermanentError,
    RecipientRejected,
    TemporaryError,
)
from service.mail.message import OutgoingMessage

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["SmtpSender"]

IDLE_CHECK_AFTER = 30.0  # seconds idle before a NOOP checks the server has not hung up


@dataclass
class _Connection:
    smtp: smtplib.SMTP
    last_used: float


class SmtpSender:
    name = "smtp"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 4,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        idle_check_after: float = IDLE_CHECK_AFTER,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"not an smtp:// or smtps:// URL: {parts.scheme}://{parts.hostname}")
        self.implicit_tls = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password or "")
        self.starttls = parse_qs(parts.query).get("starttls", ["auto"])[-1]
        if self.starttls not in ("require", "auto", "off"):
            raise ValueError(f"starttls must be require, auto or off, not {self.starttls!r}")
        self.timeout = timeout
        self.idle_check_after = idle_check_after
        self.tls_context = tls_context or ssl.create_default_context()
        self._idle: list[_Connection] = []  # LIFO
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSender:
        return cls(
            settings.smtp_url, pool_size=settings.smtp_pool_size, timeout=settings.smtp_timeout
        )

    def send(self, message: OutgoingMessage) -> str:
        with self._slots:
            conn = self._checkout()
            try:
                reply = _transmit(conn.smtp, message)
            except OSError as exc:  # smtplib.SMTPException included
                _close_quietly(conn.smtp)
                raise _mail_error(exc) from exc
            except BaseException:  # a bug or an interrupt: still never pool this connection
                _close_quietly(conn.smtp)
                raise
            conn.last_used = time.monotonic()
            with self._lock:
                self._idle.append(conn)
            return reply

    def close(self) -> None:
        """Quit the idle connections. Sending afterwards opens fresh ones."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(OSError):  # SMTPException is an OSError
                conn.smtp.quit()
            _close_quietly(conn.smtp)

    def _checkout(self) -> _Connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return _Connection(self._connect(), time.monotonic())
            if time.monotonic() - conn.last_used < self.idle_check_after:
                return conn
            # Servers drop idle clients; check before use. Nothing was sent yet, so a failed
            # check just means a fresh connection.
            try:
                if conn.smtp.noop()[0] == 250:
                    return conn
            except OSError:
                pass
            _close_quietly(conn.smtp)

    def _connect(self) -> smtplib.SMTP:
        smtp: smtplib.SMTP
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(timeout=self.timeout, context=self.tls_context)
        else:
            smtp = smtplib.SMTP(timeout=self.timeout)
        try:
            # connect() outside the constructor so a failed handshake still closes the socket.
            code, text = smtp.connect(self.host, self.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, text)
            smtp.ehlo_or_helo_if_needed()
            wants_tls = self.starttls == "require" or (
                self.starttls == "auto" and smtp.has_extn("starttls")
            )
            if wants_tls and not self.implicit_tls:
                smtp.starttls(context=self.tls_context)  # not offered: SMTPNotSupportedError
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password)
        except OSError as exc:
            _close_quietly(smtp)
            raise _mail_error(exc) from exc
        except BaseException:
            _close_quietly(smtp)
            raise
        return smtp


def _transmit(smtp: smtplib.SMTP, message: OutgoingMessage) -> str:
    """MAIL, RCPT, DATA for one recipient; returns the server's queue reply."""
    options = [f"SIZE={len(message.data)}"] if smtp.has_extn("size") else []
    code, text = smtp.mail(message.envelope_from, options)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, text, message.envelope_from)
    code, text = smtp.rcpt(message.recipient)
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({message.recipient: (code, text)})
    code, text = smtp.data(message.data)  # raises SMTPDataError unless 354 then 250
    return text.decode("utf-8", "replace")


def _mail_error(exc: OSError) -> MailError:
    """Sort an smtplib/socket failure by what the caller should do (see errors.py)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return _from_reply(code, text, RecipientRejected)
    if isinstance(exc, smtplib.SMTPDataError):
        return _from_reply(exc.smtp_code, exc.smtp_error, RecipientRejected)
    if isinstance(exc, smtplib.SMTPResponseException):
        # Sender refused, auth failed (535), greeting or STARTTLS refused: not this recipient.
        return _from_reply(exc.smtp_code, exc.smtp_error, BackendRejected)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TemporaryError(str(exc) or "server disconnected")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BackendRejected(f"TLS certificate: {exc}")  # configuration, not the weather
    if isinstance(exc, smtplib.SMTPException):
        # An SMTPException without a reply, e.g. STARTTLS required but not offered or no usable
        # AUTH mechanism: configuration. (Checked before OSError, its base class.)
        return BackendRejected(str(exc))
    # Refused, reset, timeouts (TimeoutError is an OSError).
    return TemporaryError(f"{type(exc).__name__}: {exc}")


def _from_reply(code: int, text: bytes | str, permanent: type[PermanentError]) -> MailError:
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if 500 <= code < 600:
        return permanent(detail, code)
    return TemporaryError(detail, code)  # 4xx, or a reply that makes no sense


def _close_quietly(smtp: smtplib.SMTP) -> None:
    # close() without QUIT: mid-DATA a QUIT would only be more message body.
    with contextlib.suppress(OSError):
        smtp.close()
