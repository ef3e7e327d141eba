"""The SMTP sender against a real SMTP server (aiosmtpd on 127.0.0.1), no mocks."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from service.config import Settings
from service.mail import (
    BackendRejected,
    ListInfo,
    OutgoingMessage,
    RecipientRejected,
    Rendered,
    TemporaryError,
    build_message,
    make_message_id,
    sender_from_settings,
)
from service.mail.senders.smtp import SmtpSender

pytestmark = pytest.mark.smtp

USER, PASSWORD = "mailer@news.example.org", "p@ss:w/rd%"


def message(n: int, to: str = "reader@example.com") -> OutgoingMessage:
    return build_message(
        Rendered(
            f"Digest {n}",
            f"Post {n}: caf\N{LATIN SMALL LETTER E WITH ACUTE} opens.\n.\nA line with a dot.\n",
            f"<html><body><p>Post {n}</p></body></html>",
        ),
        to=to,
        mail_from="Example News <news@news.example.org>",
        message_id=make_message_id("delivery", n, domain="news.example.org"),
        list_info=ListInfo(
            "News <news.example.org>", "https://news.example.org/u/T", None, "news:digest"
        ),
    )


@dataclass
class Recorder:
    """aiosmtpd handler: keeps what arrived and which connections (sessions) carried mail."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    received: list[Envelope] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not any(s is session for s in self.sessions):
            self.sessions.append(session)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}"


class DropsMidData(SMTP):
    """Accepts DATA, reads a few lines of the message, then hangs up."""

    async def smtp_DATA(self, arg: str) -> None:
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        for _ in range(3):
            await self._reader.readline()
        assert self.transport is not None
        self.transport.close()


class ServerController(Controller):
    def __init__(self, handler: Recorder, smtp_class: type[SMTP], **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
        self.smtp_class = smtp_class

    def factory(self) -> SMTP:
        return self.smtp_class(self.handler, **self.SMTP_kwargs)


@dataclass
class Server:
    controller: ServerController
    handler: Recorder

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.controller.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    controllers: list[ServerController] = []

    def start(smtp_class: type[SMTP] = SMTP, **smtp_kwargs: Any) -> Server:
        handler = Recorder()
        controller = ServerController(handler, smtp_class, **smtp_kwargs)
        controller.start()
        controllers.append(controller)
        return Server(controller, handler)

    yield start
    for controller in controllers:
        controller.stop()


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
    broken = start_server(DropsMidData)
    with pytest.raises(TemporaryError):
        make_sender(broken.url).send(message(1))
    assert broken.handler.received == []

    healthy = start_server()
    make_sender(healthy.url).send(message(2))
    assert len(healthy.handler.received) == 1


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
    make_sender(f"{url}{server.controller.port}").send(message(1))
    assert len(server.handler.received) == 1


def test_login_with_bad_credentials_is_backend_rejected(
    start_server: Callable[..., Server], make_sender: Callable[..., SmtpSender]
) -> None:
    server = start_server(authenticator=authenticator, auth_require_tls=False)
    url = f"smtp://{quote(USER, safe='')}:wrong@127.0.0.1:{server.controller.port}"
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
