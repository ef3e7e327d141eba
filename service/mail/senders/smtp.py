"""Send through an SMTP server over a small pool of connections reused across messages.

`smtp://[user:pass@]host:port[?starttls=require|auto|off]` (auto: STARTTLS when offered, and
required when there are credentials; off sends them in clear) or `smtps://…` (TLS from the first
byte). Up to `pool_size` connections are open at once; idle ones wait in a LIFO so the warmest
is reused and the rest can time out on the server side.

A connection that saw any error is closed, never pooled again. A send is never retried here: if
the connection drops after the final "." the server may have queued the mail, and only the
caller's retry policy (reusing the stable Message-ID) should decide to send it again.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from service.mail.errors import (
    BackendRejected,
    MailError,
    MessageRejected,
    PermanentError,
    RecipientRejected,
    TemporaryError,
)
from service.mail.message import OutgoingMessage
from service.mail.senders import SendResult, send_each

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["SmtpSender"]

IDLE_CHECK_AFTER = 30.0  # seconds idle before a NOOP checks the server has not hung up


@dataclass
class _Connection:
    smtp: smtplib.SMTP
    last_used: float


class _SMTP(smtplib.SMTP):
    """`smtplib.SMTP` that remembers the host given to `connect()`.

    smtplib passes `self._host` as `server_hostname` when it wraps the socket (STARTTLS, and
    SMTP_SSL on connect) but only sets it in the constructor, which we call without a host (see
    `_connect`). Without it TLS has no SNI name and no name to check the certificate against.
    """

    _host: str

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        self._host = host
        return super().connect(host, port, source_address)


class _SMTP_SSL(_SMTP, smtplib.SMTP_SSL):
    pass


class SmtpSender:
    name = "smtp"
    batch_size = 1

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

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return send_each(self, messages)

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
            smtp = _SMTP_SSL(timeout=self.timeout, context=self.tls_context)
        else:
            smtp = _SMTP(timeout=self.timeout)
        try:
            # connect() outside the constructor so a failed handshake still closes the socket;
            # _SMTP.connect() records the host for TLS server_hostname (SNI, certificate check).
            code, text = smtp.connect(self.host, self.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, text)
            smtp.ehlo_or_helo_if_needed()
            if not self.implicit_tls and self.starttls != "off":
                offered = smtp.has_extn("starttls")
                # auto with credentials behaves as require: AUTH must never go out in clear
                # because a server (or someone in the path) left STARTTLS out of EHLO. Sending
                # credentials without TLS takes an explicit starttls=off.
                if not offered and (self.starttls == "require" or self.username):
                    raise BackendRejected(
                        "server does not offer STARTTLS; refusing to send credentials in clear"
                        if self.username
                        else "server does not offer STARTTLS (starttls=require)"
                    )
                if offered:
                    smtp.starttls(context=self.tls_context)
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
    sender = message.mail_from_envelope  # the delivery's VERP address when there is one
    code, text = smtp.mail(sender, options)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, text, sender)
    code, text = smtp.rcpt(message.recipient)
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({message.recipient: (code, text)})
    # data() raises SMTPDataError when DATA is not answered 354, but RETURNS the reply to the
    # final "." whatever it is: a 451 greylisting or a 554 spam rejection arrives here.
    code, text = smtp.data(message.data)
    if code != 250:
        raise smtplib.SMTPDataError(code, text)
    return text.decode("utf-8", "replace")


def _mail_error(exc: OSError) -> MailError:
    """Sort an smtplib/socket failure by what the caller should do (see errors.py)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return _from_reply(code, text, _rejection(code, text, at_rcpt=True))
    if isinstance(exc, smtplib.SMTPDataError):
        reply = exc.smtp_error
        return _from_reply(exc.smtp_code, reply, _rejection(exc.smtp_code, reply, at_rcpt=False))
    if isinstance(exc, smtplib.SMTPSenderRefused) and _too_large(exc.smtp_code, exc.smtp_error):
        # MAIL FROM with SIZE= refused: this message is too big, the sender is fine.
        return _from_reply(exc.smtp_code, exc.smtp_error, MessageRejected)
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


# RFC 3463 enhanced status code at the start of the reply text, e.g. "5.1.1 No such user".
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")


def _enhanced(text: bytes | str) -> tuple[int, int, int] | None:
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    match = _ENHANCED.match(detail)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _too_large(code: int, text: bytes | str) -> bool:
    status = _enhanced(text)
    if status is not None:
        return status[1:] in ((3, 4), (2, 3))
    return code == 552


def _rejection(code: int, text: bytes | str, *, at_rcpt: bool) -> type[PermanentError]:
    """Which PermanentError a 5xx to RCPT or DATA means (4xx are temporary whatever this says).

    Only a problem with the address suppresses the reader, so anything unclear is a
    MessageRejected: failing one message is cheap, dropping a subscriber by mistake is not.
    """
    status = _enhanced(text)
    if status is not None:
        _, subject, detail = status
        if subject == 1 and detail in (7, 8):  # bad sender mailbox / sender system address
            return BackendRejected
        if subject == 1 or (subject == 2 and detail != 3):  # X.2.3: message length limit
            return RecipientRejected
        return MessageRejected  # 5.7.x policy, 5.6.x content, 5.3.4 too big, 5.5.x, ...
    if at_rcpt and code in (550, 551, 553):
        return RecipientRejected
    return MessageRejected


def _from_reply(code: int, text: bytes | str, permanent: type[PermanentError]) -> MailError:
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if 500 <= code < 600:
        return permanent(detail, code)
    return TemporaryError(detail, code)  # 4xx, or a reply that makes no sense


def _close_quietly(smtp: smtplib.SMTP) -> None:
    # close() without QUIT: mid-DATA a QUIT would only be more message body.
    with contextlib.suppress(OSError):
        smtp.close()
