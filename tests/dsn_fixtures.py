"""The bounce-mailbox fixtures of tests/fixtures/dsn, filled in for one delivery."""

from __future__ import annotations

import mailbox
from pathlib import Path
from string import Template

DSN_DIR = Path(__file__).parent / "fixtures" / "dsn"


def bounce(name: str, *, verp: str, reader: str, message_id: str) -> bytes:
    """Fixture ``name`` as the bounce of the message ``message_id`` to ``reader``, delivered
    to ``verp``."""
    text = Template((DSN_DIR / name).read_text()).substitute(
        verp=verp, reader=reader, message_id=message_id
    )
    return text.replace("\n", "\r\n").encode()


def maildir(path: Path, *messages: bytes) -> mailbox.Maildir:
    """A Maildir at ``path`` with ``messages`` delivered to its new/ folder."""
    box = mailbox.Maildir(path, create=True)
    for data in messages:
        box.add(data)
    return box
