"""What waits in the broker: each queue's depth and the age of its oldest message.

Read from the broker itself at the moment of asking, so the answer is true whichever hosts the
workers run on. Each broker answers what it can:

- **Redis**: a queue is a list per priority step (``mail``, ``mail\\x06\\x163``, …; kombu pushes
  on the left and pops on the right), so the depth is the lists' lengths and the oldest message
  is the rightmost one. Its age comes from the ``published_at`` header every task carries
  (`service.tasks` stamps it on publish) or, for a task held back by a countdown, from its
  ``eta``: a message is only late once it could have run.
- **RabbitMQ** (and any other kombu transport): a passive queue declare gives the message and
  consumer counts; AMQP offers no way to look at the head message without taking it, so there
  is no age (``oldest_age`` None).
- **Embedded broker** (``filesystem://``): one file per message in the queue folder; the depth
  is the number of files, the age that of the oldest file's header (or its mtime).

Tasks a worker has taken but not yet acknowledged (prefetched, or waiting for their countdown)
are not in a queue and are not counted here: the database's `queued` deliveries cover them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from service.config import Settings
from service.health import CHECK_TIMEOUT

__all__ = ["PUBLISHED_AT", "QueueDepth", "queue_depths"]

PUBLISHED_AT = "published_at"  # the header (Unix seconds) every task message carries
_REDIS_PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: "<queue><sep><priority>"
_REDIS_PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's default steps; 0 is the bare queue name


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    messages: int
    oldest_age: float | None  # seconds the oldest ready message has waited; None: empty or unknown
    consumers: int | None = None  # RabbitMQ only


def queue_depths(
    settings: Settings, queues: tuple[str, ...], now: float | None = None
) -> list[QueueDepth]:
    """Every queue's depth; raises when the broker cannot be reached (the caller reports it)."""
    now = time.time() if now is None else now
    if settings.is_embedded_broker:
        return _embedded(settings, queues, now)
    scheme = settings.broker_url.split(":", 1)[0]
    if scheme in ("redis", "rediss"):
        return _redis(settings.broker_url, queues, now)
    return _amqp(settings.broker_url, queues)


def message_age(message: dict[str, Any], now: float, fallback: float | None = None) -> float | None:
    """Seconds a message has been ready to run: since it was published, or since its eta."""
    headers = message.get("headers") or {}
    ready: float | None = None
    published = headers.get(PUBLISHED_AT)
    if isinstance(published, int | float):
        ready = float(published)
    eta = headers.get("eta")
    if isinstance(eta, str):
        try:
            at = datetime.fromisoformat(eta).timestamp()
        except ValueError:
            at = None
        if at is not None:
            ready = at if ready is None else max(ready, at)
    if ready is None:
        ready = fallback
    return None if ready is None else max(0.0, now - ready)


def _redis(url: str, queues: tuple[str, ...], now: float) -> list[QueueDepth]:
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT
    )
    try:
        keys = {
            q: [q if p == 0 else f"{q}{_REDIS_PRIORITY_SEP}{p}" for p in _REDIS_PRIORITY_STEPS]
            for q in queues
        }
        pipe = client.pipeline(transaction=False)
        for q in queues:
            for key in keys[q]:
                pipe.llen(key)
                pipe.lindex(key, -1)  # the next to be taken: the oldest
        answers = pipe.execute()
    finally:
        client.close()
    found = []
    for i, q in enumerate(queues):
        steps = len(_REDIS_PRIORITY_STEPS)
        pairs = [
            (answers[2 * (i * steps + j)], answers[2 * (i * steps + j) + 1]) for j in range(steps)
        ]
        ages = [_age_of(raw, now) for size, raw in pairs if size and raw is not None]
        known = [a for a in ages if a is not None]
        found.append(
            QueueDepth(q, sum(int(size) for size, _ in pairs), max(known) if known else None)
        )
    return found


def _age_of(raw: bytes | str, now: float, fallback: float | None = None) -> float | None:
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return message_age(message, now, fallback) if isinstance(message, dict) else fallback


def _amqp(url: str, queues: tuple[str, ...]) -> list[QueueDepth]:
    from kombu.connection import Connection

    found = []
    with Connection(url, connect_timeout=CHECK_TIMEOUT) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=CHECK_TIMEOUT)
        channel = conn.default_channel
        for q in queues:
            try:
                _, messages, consumers = channel.queue_declare(queue=q, passive=True)
            except conn.channel_errors:  # not declared yet: no worker ever started on it
                channel = conn.channel()  # a failed passive declare closes the channel
                found.append(QueueDepth(q, 0, None, 0))
                continue
            found.append(QueueDepth(q, int(messages), None, int(consumers)))
    return found


def _embedded(settings: Settings, queues: tuple[str, ...], now: float) -> list[QueueDepth]:
    folder = settings.var_dir / "broker" / "queue"
    if not folder.is_dir():
        raise FileNotFoundError(f"the embedded broker's queue folder {folder} is missing")
    files: dict[str, list[tuple[float, Path]]] = {q: [] for q in queues}
    with os.scandir(folder) as entries:
        for entry in entries:
            # "<ms>_<uuid>.<queue>.msg"
            rest = entry.name.partition(".")[2]
            queue = rest.removesuffix(".msg")
            if queue in files and rest.endswith(".msg"):
                try:
                    files[queue].append((entry.stat().st_mtime, Path(entry.path)))
                except FileNotFoundError:  # taken by a worker meanwhile
                    continue
    found = []
    for q in queues:
        age = None
        if files[q]:
            mtime, path = min(files[q])
            try:
                age = _age_of(path.read_bytes(), now, mtime)
            except FileNotFoundError:
                age = max(0.0, now - mtime)
        found.append(QueueDepth(q, len(files[q]), age))
    return found
