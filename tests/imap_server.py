"""A small IMAP4rev1 server for tests, in a thread of the test process: just the commands
`newsletter bounces process` uses (LOGIN, SELECT, CREATE, UID SEARCH/FETCH/MOVE/COPY/STORE,
EXPUNGE, CLOSE, LOGOUT), one user, mailboxes kept in memory, no TLS."""

from __future__ import annotations

import re
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest

_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"|(\(.*\)|\S+)')


@dataclass
class Stored:
    uid: int
    data: bytes
    flags: set[str] = field(default_factory=set)


@dataclass
class ImapState:
    user: str
    password: str
    move: bool = True  # advertise RFC 6851 MOVE; without it clients COPY, STORE and EXPUNGE
    boxes: dict[str, list[Stored]] = field(default_factory=lambda: {"INBOX": []})
    next_uid: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def deliver(self, data: bytes, box: str = "INBOX") -> None:
        with self.lock:
            self.boxes.setdefault(box, []).append(Stored(self.next_uid, data))
            self.next_uid += 1


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def send(self, line: bytes) -> None:
        self.wfile.write(line + b"\r\n")

    def handle(self) -> None:
        state = self.server.state
        caps = b"IMAP4rev1 MOVE" if state.move else b"IMAP4rev1"
        self.send(b"* OK test IMAP ready")
        selected: str | None = None
        while line := self.rfile.readline():
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            args = [m[1] if m[1] is not None else m[2] for m in _TOKEN.finditer(rest)]
            command = args[0].upper() if args else b""
            if command == b"UID" and len(args) > 1:
                command, args = b"UID " + args[1].upper(), args[1:]
            with state.lock:
                if command == b"CAPABILITY":
                    self.send(b"* CAPABILITY " + caps)
                elif command == b"LOGIN":
                    if [a.decode() for a in args[1:3]] != [state.user, state.password]:
                        self.send(tag + b" NO [AUTHENTICATIONFAILED] wrong")
                        continue
                elif command == b"SELECT":
                    name = args[1].decode()
                    if name not in state.boxes:
                        self.send(tag + b" NO no such mailbox")
                        continue
                    selected = name
                    self.send(b"* %d EXISTS" % len(state.boxes[name]))
                    self.send(b"* FLAGS (\\Seen \\Deleted)")
                elif command == b"CREATE":
                    if args[1].decode() in state.boxes:
                        self.send(tag + b" NO [ALREADYEXISTS] exists")
                        continue
                    state.boxes[args[1].decode()] = []
                elif command == b"UID SEARCH" and selected:
                    uids = [m.uid for m in state.boxes[selected] if "\\Deleted" not in m.flags]
                    self.send(b"* SEARCH" + b"".join(b" %d" % u for u in uids))
                elif command == b"UID FETCH" and selected:
                    for n, m in enumerate(state.boxes[selected], 1):
                        if m.uid == int(args[1]):
                            self.wfile.write(
                                b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (n, m.uid, len(m.data))
                            )
                            self.wfile.write(m.data + b")\r\n")
                elif command in (b"UID MOVE", b"UID COPY") and selected:
                    if command == b"UID MOVE" and not state.move:
                        self.send(tag + b" BAD no MOVE here")
                        continue
                    target = args[2].decode()
                    if target not in state.boxes:
                        self.send(tag + b" NO [TRYCREATE] no such mailbox")
                        continue
                    box = state.boxes[selected]
                    for n, m in enumerate(box, 1):
                        if m.uid == int(args[1]):
                            state.boxes[target].append(Stored(state.next_uid, m.data, set(m.flags)))
                            state.next_uid += 1
                            if command == b"UID MOVE":
                                box.remove(m)
                                self.send(b"* %d EXPUNGE" % n)
                            break
                elif command == b"UID STORE" and selected:
                    for m in state.boxes[selected]:
                        if m.uid == int(args[1]):
                            m.flags |= set(args[3].strip(b"()").decode().split())
                elif command in (b"EXPUNGE", b"CLOSE") and selected:
                    state.boxes[selected] = [
                        m for m in state.boxes[selected] if "\\Deleted" not in m.flags
                    ]
                elif command == b"LOGOUT":
                    self.send(b"* BYE")
                    self.send(tag + b" OK bye")
                    return
                elif command != b"NOOP":
                    self.send(tag + b" BAD not here")
                    continue
            self.send(tag + b" OK done")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: ImapState) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)


@dataclass
class ImapServer:
    state: ImapState
    port: int

    def url(self, folder: str = "INBOX") -> str:
        user, password = quote(self.state.user, safe=""), quote(self.state.password, safe="")
        return f"imap://{user}:{password}@127.0.0.1:{self.port}/{folder}?starttls=off"


@pytest.fixture
def imap_server() -> Iterator[ImapServer]:
    server = _Server(ImapState(user="bounces", password="s3cret pass"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ImapServer(server.state, server.server_address[1])
    server.shutdown()
    server.server_close()
