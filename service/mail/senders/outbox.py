"""Write each message as an .eml file: the default backend, for development and for looking at
exactly what would have been sent."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from service.mail.message import OutgoingMessage
from service.mail.senders import SendResult, send_each

__all__ = ["OutboxSender"]


class OutboxSender:
    name = "outbox"
    batch_size = 1

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> str:
        """Write `<UTC timestamp>-<hash of Message-ID>.eml`; return the file name.

        A retried send of the same Message-ID finds the first file and writes nothing, so one
        delivery stays one file. (Two processes racing on one id could still both write; the
        retry policy never runs one delivery twice at the same time.)
        """
        digest = hashlib.sha256(message.message_id.encode()).hexdigest()[:16]
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            existing = sorted(self.directory.glob(f"*-{digest}.eml"))
            if existing:
                return existing[0].name
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            name = f"{stamp}-{digest}.eml"
            # Temp file in the same folder, then rename: readers never see half a message.
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=".part", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(message.data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.directory / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return name

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return send_each(self, messages)

    def close(self) -> None:
        pass
