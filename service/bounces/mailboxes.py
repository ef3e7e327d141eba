"""Where bounces wait: a Maildir on this machine, or an IMAP mailbox.

Both hand out each message once per run and move a message, once it is dealt with, to a
`processed` folder beside it (a Maildir++ subfolder `.processed`, or an IMAP mailbox of that
name), marked seen. The inbox so holds only what no run has finished, and a rerun reads nothing
twice; were a message processed but not moved (a crash between the two), reading it again stores
nothing new, as each bounce's events are stored once by id.
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["PROCESSED", "ImapBox", "Mailbox", "MailboxError", "MaildirBox", "open_mailbox"]

PROCESSED = "processed"


class MailboxError(Exception):
    """The mailbox cannot be opened or read: the message says why."""


class Mailbox(Protocol):
    def messages(self) -> Iterator[tuple[str, bytes]]:
        """(key, the raw message) of each message waiting."""
        ...

    def done(self, key: str) -> None:
        """Move the message to the processed folder."""
        ...

    def close(self) -> None: ...


class MaildirBox:
    def __init__(self, path: Path) -> None:
        if not (path / "cur").is_dir() or not (path / "new").is_dir():
            raise MailboxError(f"{path} is not a Maildir (no cur/ and new/)")
        self._box = mailbox.Maildir(path, factory=None, create=False)
        self._processed: mailbox.Maildir | None = None

    def messages(self) -> Iterator[tuple[str, bytes]]:
        for key in sorted(self._box.keys()):  # a list taken now: moving does not disturb it
            try:
                data = self._box.get_bytes(key)
            except KeyError:  # moved away meanwhile (another run)
                continue
            yield key, data

    def done(self, key: str) -> None:
        if self._processed is None:
            exists = PROCESSED in self._box.list_folders()
            self._processed = (
                self._box.get_folder(PROCESSED) if exists else self._box.add_folder(PROCESSED)
            )
        message = self._box.get_message(key)
        message.set_subdir("cur")
        message.add_flag("S")
        self._processed.add(message)
        self._box.remove(key)

    def close(self) -> None:
        self._box.close()


class ImapBox:
    """``imaps://user:pass@host[:port]/MAILBOX`` (TLS from the first byte) or ``imap://…``
    (STARTTLS, required unless ``?starttls=off``). The mailbox defaults to INBOX."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname:
            raise MailboxError("not an imap:// or imaps:// URL")
        if not parts.username:
            raise MailboxError("the IMAP URL names no user: imaps://user:pass@host/INBOX")
        self.folder = unquote(parts.path.lstrip("/")) or "INBOX"
        starttls = parse_qs(parts.query).get("starttls", ["require"])[-1]
        context = ssl.create_default_context()
        conn: imaplib.IMAP4
        try:
            if parts.scheme == "imaps":
                conn = imaplib.IMAP4_SSL(
                    parts.hostname, parts.port or 993, ssl_context=context, timeout=timeout
                )
            else:
                conn = imaplib.IMAP4(parts.hostname, parts.port or 143, timeout=timeout)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"IMAP {parts.hostname}: {exc}") from exc
        try:
            if parts.scheme == "imap" and starttls != "off":
                conn.starttls(context)  # refuses when the server does not offer it
            conn.login(unquote(parts.username), unquote(parts.password or ""))
            typ, _ = conn.select(_quote(self.folder))
            if typ != "OK":
                raise MailboxError(f"no mailbox {self.folder!r}")
        except (OSError, imaplib.IMAP4.error, MailboxError) as exc:
            with contextlib.suppress(OSError):
                conn.shutdown()
            if isinstance(exc, MailboxError):
                raise
            raise MailboxError(f"IMAP {parts.hostname}: {exc}") from exc
        self._conn = conn
        self._created = False
        self._moved = False

    def messages(self) -> Iterator[tuple[str, bytes]]:
        typ, found = self._conn.uid("SEARCH", "UNDELETED")
        uids = found[0].split() if typ == "OK" and found and found[0] else []
        for uid in uids:
            typ, data = self._conn.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in data if isinstance(item, tuple)), None)
            if typ == "OK" and isinstance(raw, bytes):
                yield uid.decode(), raw

    def done(self, key: str) -> None:
        if not self._created:
            self._conn.create(_quote(PROCESSED))  # NO when it exists: fine
            self._created = True
        typ, answer = self._conn.uid("STORE", key, "+FLAGS", r"(\Seen)")
        if typ == "OK" and "MOVE" in self._conn.capabilities:  # RFC 6851
            typ, answer = self._conn.uid("MOVE", key, PROCESSED)
        elif typ == "OK":
            # Without MOVE: copy, mark deleted, expunge when done (a plain EXPUNGE also
            # removes other messages someone marked deleted in this mailbox).
            typ, answer = self._conn.uid("COPY", key, PROCESSED)
            if typ == "OK":
                typ, answer = self._conn.uid("STORE", key, "+FLAGS", r"(\Deleted)")
                self._moved = True
        if typ != "OK":
            raise MailboxError(f"could not move message {key} to {PROCESSED}: {answer!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            if self._moved:
                self._conn.expunge()
            self._conn.close()
            self._conn.logout()
        with contextlib.suppress(OSError):
            self._conn.shutdown()  # after LOGOUT a no-op; after a failure it frees the socket


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9._/-]+", name) else '"' + name.replace('"', r"\"") + '"'


def open_mailbox(maildir: Path | None, imap: str | None) -> Mailbox:
    if (maildir is None) == (imap is None):
        raise MailboxError("give one of --maildir PATH or --imap URL")
    if maildir is not None:
        return MaildirBox(maildir)
    assert imap is not None
    return ImapBox(imap)
