"""The SMTP sender against a real SMTP server (aiosmtpd on 127.0.0.1), no mocks."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from service.config import Settings
from service.mail import (
    BackendRejected,
    ListInfo,
    MessageRejected,
    OutgoingMessage,
    PermanentError,
    RecipientRejected,
    Rendered,
    TemporaryError,
    build_message,
    make_message_id,
    sender_from_settings,
)
from service.mail.senders.smtp import SmtpSender
from tests.processes import free_port
from tests.smtp_server import Recorder, Server

pytestmark = pytest.mark.smtp

USER, PASSWORD = "mailer@news.example.org", "p@ss:w/rd%"


UNSUBSCRIBE = "https://news.example.org/u/T"


def message(n: int, to: str = "reader@example.com") -> OutgoingMessage:
    return build_message(
        Rendered(
            f"Digest {n}",
            f"Post {n}: caf\N{LATIN SMALL LETTER E WITH ACUTE} opens.\n.\nA line with a dot.\n"
            f"Unsubscribe: {UNSUBSCRIBE}\n",
            f'<html><body><p>Post {n}</p><p><a href="{UNSUBSCRIBE}">Unsubscribe</a></p>'
            "</body></html>",
        ),
        to=to,
        mail_from="Example News <news@news.example.org>",
        message_id=make_message_id("delivery", n, domain="news.example.org"),
        list_info=ListInfo("News <news.example.org>", UNSUBSCRIBE, None, "news:digest"),
    )


class _HangUpAfter:
    """Stands in for the server's stream reader: after `lines` lines it closes the connection."""

    def __init__(self, reader: asyncio.StreamReader, transport: Any, lines: int) -> None:
        self.reader, self.transport, self.lines = reader, transport, lines

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        if self.lines == 0:
            # The rest of the message (maybe already buffered) never arrives: hang up and wait.
            # aiosmtpd's connection_lost() cancels the DATA being read, as it does when a client
            # or the network drops the connection.
            self.transport.close()
            await asyncio.Event().wait()
        self.lines -= 1
        return await self.reader.readuntil(separator)


class DropsMidData(SMTP):
    """Runs aiosmtpd's own DATA, but hangs up after a few lines of the message while the
    handler's `drop_data` says so; afterwards a plain server."""

    async def smtp_DATA(self, arg: str) -> None:
        handler = self.event_handler
        assert isinstance(handler, Recorder)
        if handler.drop_data > 0:
            handler.drop_data -= 1
            self._reader = _HangUpAfter(self._reader, self.transport, lines=3)  # type: ignore[assignment]
        await super().smtp_DATA(arg)


@pytest.fixture
def make_sender(start_server: Callable[..., Server]) -> Iterator[Callable[..., SmtpSender]]:
    """Senders are closed before the servers stop (this fixture depends on start_server)."""
    senders: list[SmtpSender] = []

    def make(url: str, **kwargs: Any) -> SmtpSender:
        kwargs.setdefault("timeout", 5.0)
        sender = SmtpSender(url, **kwargs)
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        sender.close()


def test_accepted_mail_arrives_whole(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server()
    sent = message(1)
    reply = make_sender(server.url).send(sent)
    assert reply == "2.0.0 Ok: queued as Q1"
    (envelope,) = server.handler.received
    assert envelope.mail_from == "news@news.example.org"
    assert envelope.rcpt_tos == ["reader@example.com"]
    assert envelope.original_content is not None
    got = message_from_bytes(envelope.original_content, policy=policy.default)
    want = message_from_bytes(sent.data, policy=policy.default)
    assert got.items() == want.items()
    assert [p.get_content() for p in got.iter_parts()] == [
        p.get_content() for p in want.iter_parts()
    ]
    assert "café opens.\r\n.\r\nA line" in next(got.iter_parts()).get_content()


def test_one_connection_carries_many_messages(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server()
    sender = make_sender(server.url, pool_size=1)
    for n in range(20):
        sender.send(message(n))
    assert len(server.handler.received) == 20
    assert len(server.handler.sessions) == 1


def test_concurrent_senders_stay_within_the_pool(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server()
    sender = make_sender(server.url, pool_size=3)
    with ThreadPoolExecutor(max_workers=3) as pool:
        replies = list(pool.map(sender.send, (message(n) for n in range(30))))
    assert len(set(replies)) == 30
    assert len(server.handler.received) == 30
    assert 1 <= len(server.handler.sessions) <= 3


def test_recipient_errors_are_sorted_and_the_pool_recovers(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server()
    server.handler.rcpt_replies = {
        "busy@example.com": "451 4.3.0 Try again",
        "gone@example.com": "550 5.1.1 No such user",
    }
    sender = make_sender(server.url, pool_size=1)

    with pytest.raises(TemporaryError) as temporary:
        sender.send(message(1, to="busy@example.com"))
    assert temporary.value.code == 451
    assert "Try again" in temporary.value.detail

    with pytest.raises(RecipientRejected) as rejected:
        sender.send(message(2, to="gone@example.com"))
    assert rejected.value.code == 550
    assert "No such user" in rejected.value.detail

    sender.send(message(3))
    assert [e.rcpt_tos for e in server.handler.received] == [["reader@example.com"]]


def test_connection_dropped_mid_data_is_temporary_and_delivers_nothing(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server(DropsMidData)
    server.handler.drop_data = 1  # only the first DATA is cut short
    sender = make_sender(server.url, pool_size=1)
    connections = server.handler.connections

    with pytest.raises(TemporaryError):
        sender.send(message(1))
    assert server.handler.drop_data == 0  # the hang-up really happened mid-DATA
    # No half message was delivered, and the sender did not quietly resend it.
    assert server.handler.received == []
    assert server.handler.connections == connections + 1

    # The broken connection is not reused: a new one carries the next message, exactly once,
    # and message 1 is not sent again behind the caller's back.
    reply = sender.send(message(2))
    assert server.handler.connections == connections + 2
    (envelope,) = server.handler.received
    assert reply == "2.0.0 Ok: queued as Q1"
    assert envelope.original_content is not None
    got = message_from_bytes(envelope.original_content, policy=policy.default)
    assert got["Message-ID"] == "<delivery.2@news.example.org>"


def test_connection_the_server_closed_while_idle_is_replaced(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server(timeout=0.3)  # the server hangs up on clients idle for 0.3 s
    sender = make_sender(server.url, pool_size=1, idle_check_after=0.1)
    sender.send(message(1))
    time.sleep(0.8)
    sender.send(message(2))  # NOOP finds the dead connection; a fresh one carries the mail
    assert len(server.handler.received) == 2
    assert len(server.handler.sessions) == 2


def test_server_that_never_answers_times_out_as_temporary(
    make_sender: Callable[..., SmtpSender],
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # the kernel completes the handshake; nobody ever speaks
        port = silent.getsockname()[1]
        sender = make_sender(f"smtp://127.0.0.1:{port}", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(TemporaryError):
            sender.send(message(1))
        assert time.monotonic() - started < 3


def test_connection_refused_is_temporary(make_sender: Callable[..., SmtpSender]) -> None:
    with pytest.raises(TemporaryError, match="ConnectionRefused"):
        make_sender(f"smtp://127.0.0.1:{free_port()}").send(message(1))


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode() == USER and auth_data.password.decode() == PASSWORD
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


def test_login_with_good_credentials_delivers(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server(authenticator=authenticator, auth_require_tls=False)
    url = f"smtp://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:"
    # starttls=off: credentials in clear only when asked for explicitly (this server has no TLS).
    make_sender(f"{url}{server.controller.port}?starttls=off").send(message(1))
    assert len(server.handler.received) == 1


def test_login_with_bad_credentials_is_backend_rejected(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server(authenticator=authenticator, auth_require_tls=False)
    url = f"smtp://{quote(USER, safe='')}:wrong@127.0.0.1:{server.controller.port}?starttls=off"
    with pytest.raises(BackendRejected) as rejected:
        make_sender(url).send(message(1))
    assert rejected.value.code == 535
    assert server.handler.received == []


def test_starttls_required_but_not_offered_is_backend_rejected(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server()
    with pytest.raises(BackendRejected, match="STARTTLS"):
        make_sender(f"{server.url}?starttls=require").send(message(1))
    assert server.handler.received == []


class AuthRecorder:
    """An authenticator that also notes every AUTH attempt it saw."""

    def __init__(self) -> None:
        self.attempts = 0

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.attempts += 1
        return authenticator(server, session, envelope, mechanism, auth_data)


def test_auto_starttls_with_credentials_refuses_a_server_without_tls(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    auth = AuthRecorder()
    server = start_server(authenticator=auth, auth_require_tls=False)
    url = f"smtp://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:"
    with pytest.raises(BackendRejected, match="refusing to send credentials in clear"):
        make_sender(f"{url}{server.controller.port}").send(message(1))  # starttls=auto
    assert auth.attempts == 0  # the password never went over the wire
    assert server.handler.received == []


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def server_tls(tls_cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_cert)
    return context


@pytest.fixture
def client_tls(tls_cert: tuple[Path, Path]) -> ssl.SSLContext:
    """Verifies the server as usual, trusting the test certificate."""
    return ssl.create_default_context(cafile=str(tls_cert[0]))


def assert_arrived_whole(server: Server, sent: OutgoingMessage) -> None:
    (envelope,) = server.handler.received
    assert envelope.rcpt_tos == [sent.recipient]
    assert envelope.original_content is not None
    assert envelope.original_content.replace(b"\r\n", b"\n") == sent.data.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_starttls_verifies_the_server_and_delivers(
    start_server: Callable[..., Server],
    make_sender: Callable[..., SmtpSender],
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    host: str,
) -> None:
    server = start_server(tls_context=server_tls, require_starttls=True)
    sent = message(1)
    url = f"smtp://{host}:{server.controller.port}?starttls=require"
    make_sender(url, tls_context=client_tls).send(sent)
    assert_arrived_whole(server, sent)
    assert server.handler.sessions[0].ssl is not None  # the mail went over the TLS session


def test_auto_starttls_logs_in_over_tls(
    start_server: Callable[..., Server],
    make_sender: Callable[..., SmtpSender],
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
) -> None:
    auth = AuthRecorder()
    # auth_require_tls (aiosmtpd's default): the server refuses AUTH before STARTTLS.
    server = start_server(tls_context=server_tls, authenticator=auth)
    url = f"smtp://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@localhost:"
    make_sender(f"{url}{server.controller.port}", tls_context=client_tls).send(message(1))
    assert auth.attempts == 1
    assert len(server.handler.received) == 1


def test_implicit_tls_verifies_the_server_and_delivers(
    start_server: Callable[..., Server],
    make_sender: Callable[..., SmtpSender],
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
) -> None:
    server = start_server(ssl_context=server_tls)
    sent = message(1)
    make_sender(f"smtps://localhost:{server.controller.port}", tls_context=client_tls).send(sent)
    assert_arrived_whole(server, sent)


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_untrusted_certificate_is_backend_rejected(
    start_server: Callable[..., Server],
    make_sender: Callable[..., SmtpSender],
    server_tls: ssl.SSLContext,
    mode: str,
) -> None:
    """The default context does not trust the self-signed certificate.

    BackendRejected, not TemporaryError: a certificate that fails verification is a
    configuration problem (wrong host, missing CA, expired certificate) that retrying every
    message with backoff will not fix, and sending must pause until someone looks.
    """
    if mode == "starttls":
        server = start_server(tls_context=server_tls, require_starttls=True)
        url = f"smtp://localhost:{server.controller.port}"
    else:
        server = start_server(ssl_context=server_tls)
        url = f"smtps://localhost:{server.controller.port}"
    with pytest.raises(BackendRejected, match="certificate"):
        make_sender(url).send(message(1))
    assert server.handler.received == []


# --- replies after DATA and how rejections are sorted -------------------------------------------


def test_data_rejected_after_the_final_dot_is_not_reported_as_sent(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server()
    server.handler.data_replies = {
        "grey@example.com": "451 4.7.1 Greylisted, try again later",
        "spam@example.com": "554 5.7.1 Rejected as spam",
    }
    sender = make_sender(server.url, pool_size=1)

    with pytest.raises(TemporaryError) as temporary:
        sender.send(message(1, to="grey@example.com"))
    assert temporary.value.code == 451
    assert "Greylisted" in temporary.value.detail

    with pytest.raises(PermanentError) as permanent:
        sender.send(message(2, to="spam@example.com"))
    assert type(permanent.value) is MessageRejected  # the reader is not to blame
    assert permanent.value.code == 554
    assert "Rejected as spam" in permanent.value.detail

    assert server.handler.received == []
    sender.send(message(3))  # and the pool recovers
    assert [e.rcpt_tos for e in server.handler.received] == [["reader@example.com"]]


@pytest.mark.parametrize(
    ("stage", "reply", "error"),
    [
        ("rcpt", "550 5.1.1 No such user", RecipientRejected),
        ("rcpt", "553 5.1.3 Bad recipient address syntax", RecipientRejected),
        ("rcpt", "552 5.2.2 Mailbox full", RecipientRejected),
        ("rcpt", "550 5.2.1 Mailbox disabled", RecipientRejected),
        ("rcpt", "550 No such user here", RecipientRejected),
        ("rcpt", "551 User not local", RecipientRejected),
        ("rcpt", "550 5.7.1 Relaying denied", MessageRejected),
        ("rcpt", "554 Transaction failed", MessageRejected),
        ("rcpt", "553 5.1.8 Sender address domain does not exist", BackendRejected),
        ("data", "550 5.1.1 Mailbox unavailable", RecipientRejected),
        ("data", "554 5.7.1 Rejected as spam", MessageRejected),
        ("data", "550 5.7.26 Unauthenticated mail is prohibited", MessageRejected),
        ("data", "554 5.6.0 Message content rejected", MessageRejected),
        ("data", "552 Message too large", MessageRejected),
        ("data", "552 5.3.4 Message size exceeds fixed limit", MessageRejected),
        ("data", "552 5.2.3 Message length exceeds administrative limit", MessageRejected),
        ("data", "550 Rejected", MessageRejected),
        ("data", "451 4.7.1 Greylisted", TemporaryError),
    ],
)
def test_rejections_suppress_the_reader_only_for_address_problems(
    start_server: Callable[..., Server],
    make_sender: Callable[..., SmtpSender],
    stage: str,
    reply: str,
    error: type[Exception],
) -> None:
    server = start_server()
    replies = server.handler.rcpt_replies if stage == "rcpt" else server.handler.data_replies
    replies["x@example.com"] = reply
    with pytest.raises(error) as raised:
        make_sender(server.url).send(message(1, to="x@example.com"))
    assert type(raised.value) is error
    assert str(raised.value) == reply
    assert server.handler.received == []


def test_settings_choose_smtp_and_url_options() -> None:
    sender = sender_from_settings(
        Settings(mail_backend="smtp", smtp_url="smtps://u%40x:p%2Fw@mail.example.org")
    )
    assert isinstance(sender, SmtpSender)
    assert (sender.host, sender.port, sender.implicit_tls) == ("mail.example.org", 465, True)
    assert (sender.username, sender.password) == ("u@x", "p/w")
    assert SmtpSender("smtp://mail.example.org").starttls == "auto"
    with pytest.raises(ValueError, match="starttls"):
        SmtpSender("smtp://mail.example.org:587?starttls=maybe")
    with pytest.raises(ValueError, match="smtp"):
        SmtpSender("http://mail.example.org")
