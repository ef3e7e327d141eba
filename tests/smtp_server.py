"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 in a thread of the test process."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.processes import free_port


@dataclass
class Recorder:
    """aiosmtpd handler: keeps what arrived and which connections (sessions) carried mail.

    `rcpt_replies` / `data_replies` map a recipient to the reply its RCPT / final "." gets
    instead of 250 (a DATA so answered is not kept in `received`). `connections` counts TCP
    connections accepted (the Controller's own start-up probe included).
    """

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: dict[str, str] = field(default_factory=dict)
    received: list[Envelope] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    connections: int = 0
    drop_data: int = 0  # DropsMidData: hang up during this many more DATA
    data_delay: float = 0.0  # seconds before answering each DATA: a slow server
    greylist_every: int = 0  # 451 to every n-th new recipient, the first time only
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each accepted DATA
    _seen: set[str] = field(default_factory=set)

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
        if self.greylist_every and address not in self._seen:
            self._seen.add(address)
            if len(self._seen) % self.greylist_every == 0:
                return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        (recipient,) = envelope.rcpt_tos
        if recipient in self.data_replies:
            return self.data_replies[recipient]
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        self.received.append(envelope)
        self.arrivals.append(time.monotonic())
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}"

    def count_by_recipient(self) -> Counter[str]:
        return Counter(r for e in self.received for r in e.rcpt_tos)


class ServerController(Controller):
    def __init__(self, handler: Recorder, smtp_class: type[SMTP], **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
        self.smtp_class = smtp_class

    def factory(self) -> SMTP:  # once per accepted connection
        self.handler.connections += 1
        return self.smtp_class(self.handler, **self.SMTP_kwargs)


@dataclass
class Server:
    controller: ServerController
    handler: Recorder
    running: bool = True

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.controller.port}"

    def stop(self) -> None:
        """Take the server down: the port refuses connections, open sessions are dropped."""
        self.controller.stop()
        self.running = False

    def start_again(self) -> None:
        """Listen again on the same port with the same handler (what arrived is kept)."""
        self.controller.loop = asyncio.new_event_loop()  # stop() closed the old one
        self.controller.start()
        self.running = True


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(smtp_class: type[SMTP] = SMTP, **smtp_kwargs: Any) -> Server:
        handler = Recorder()
        controller = ServerController(handler, smtp_class, **smtp_kwargs)
        controller.start()
        servers.append(Server(controller, handler))
        return servers[-1]

    yield start
    for server in servers:
        if server.running:
            server.stop()
