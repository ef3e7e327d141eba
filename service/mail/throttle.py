"""A send-rate limit per mail backend: a token bucket every worker draws from.

throttle = throttle_from_settings(settings, "smtp")   # None: no limit configured
if throttle is not None:
    throttle.acquire()                                 # blocks until this message may go
sender.send(message)

Celery's own ``rate_limit`` is per worker process, so N workers send N times the rate the
provider allows. The bucket therefore lives in Redis when Redis is the broker, and is shared by
every process on every machine; with the embedded broker (and with RabbitMQ, which has no place
to keep it) it is per process.

A bucket holds at most ``burst`` tokens and gains ``rate`` a second; a send takes one. ``burst``
is kept small by default (a tenth of a second's worth) so that the rate measured over any few
seconds never runs much above ``rate`` however many workers start at once.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Protocol

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from service.mail.errors import TemporaryError

if TYPE_CHECKING:
    from service.config import Settings

__all__ = [
    "LocalTokenBucket",
    "RedisTokenBucket",
    "Throttle",
    "throttle_from_settings",
    "throttle_key",
]


class Throttle(Protocol):
    def acquire(self, n: int = 1) -> float:
        """Block until ``n`` tokens are granted; return the seconds it slept for them.

        0.0 when they were there at once: the time a send was held back by the limit.

        Safe to call from several threads at once.
        """
        ...


def throttle_key(backend: str) -> str:
    return f"newsletter:throttle:{backend}"


class _TokenBucket:
    """The waiting loop both buckets share; subclasses say how to take tokens once."""

    def __init__(self, rate: float, burst: float | None) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of tokens a second, not {rate!r}")
        burst = max(1.0, rate / 10) if burst is None else burst
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be at least 1 token, not {burst!r}")
        self.rate = rate
        self.burst = burst

    def acquire(self, n: int = 1) -> float:
        # A request larger than the bucket could never be granted: refuse it at once.
        if not 1 <= n <= self.burst:
            raise ValueError(f"can take 1 to {self.burst:g} tokens at a time, not {n}")
        waited = 0.0
        # Nothing is held while sleeping: the wait is only a hint, and whoever asks first once
        # the tokens are there gets them, so a slow or dead caller never blocks the others.
        while (wait := self._take(n)) > 0:
            started = time.monotonic()
            time.sleep(wait)
            waited += time.monotonic() - started
        return waited

    def _take(self, n: int) -> float:
        """Take ``n`` tokens and return 0, or take nothing and return the seconds to wait."""
        raise NotImplementedError


class LocalTokenBucket(_TokenBucket):
    """A bucket in this process only, for the embedded broker (no Redis to share one through)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        super().__init__(rate, burst)
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = time.monotonic()  # monotonic: a wall-clock step must not mint tokens

    def _take(self, n: int) -> float:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= n:
                self._tokens -= n
                return 0.0
            return (n - self._tokens) / self.rate


# One round trip, atomic: read, refill, take, write. The time comes from Redis itself (`TIME`),
# not from the callers, so workers on machines whose clocks disagree still share one rate.
# Writing after `TIME` needs effect replication, the default since Redis 5.
# Returns 0 when granted, else the microseconds until `n` tokens will be there (an integer:
# Redis truncates Lua numbers in replies).
_TAKE = """
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(state[1]), tonumber(state[2])
if tokens == nil or updated == nil then
  tokens, updated = burst, now  -- no key: never used, or idle long enough to be full again
end
-- max(0, ...): should the server's clock step back, no tokens are minted or lost
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate / 1000000)
if tokens < n then
  return math.ceil((n - tokens) * 1000000 / rate)
end
tokens = tokens - n
-- numbers, not tostring(): Redis converts them at full precision, Lua's tostring keeps 14 digits
redis.call('HSET', KEYS[1], 'tokens', tokens, 'updated', now)
-- Gone once it would be full again: a missing key reads as a full bucket, so an idle backend
-- leaves nothing behind.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1)
return 0
"""


class RedisTokenBucket(_TokenBucket):
    """One bucket in Redis shared by every process that names the same key."""

    def __init__(
        self, client: redis.Redis, key: str, rate: float, burst: float | None = None
    ) -> None:
        super().__init__(rate, burst)
        self.key = key
        self._client = client
        self._script = client.register_script(_TAKE)  # EVALSHA, loaded again after a restart

    def _take(self, n: int) -> float:
        try:
            micros = self._script(keys=[self.key], args=[repr(self.rate), repr(self.burst), n])
        except redis.RedisError as exc:
            # Sending unthrottled could get the account blocked: fail this send so it is
            # retried later, as for any other passing outage.
            raise TemporaryError(f"send-rate limiter unavailable (Redis: {exc})") from exc
        return int(micros) / 1_000_000


_local: dict[tuple[str, float], LocalTokenBucket] = {}
_redis: dict[str, redis.Redis] = {}
_shared_lock = threading.Lock()


def throttle_from_settings(settings: Settings, backend: str) -> Throttle | None:
    """The send-rate limit for ``backend``, or None when ``RATE_LIMIT`` is not set.

    Callers in one process share one local bucket per backend (a new bucket per call would
    start full each time and limit nothing) and one Redis connection pool.
    """
    rate = settings.rate_limit
    if rate is None:
        return None
    url = settings.rate_limit_storage_url
    with _shared_lock:
        if not url.startswith(("redis://", "rediss://")):
            if (backend, rate) not in _local:
                _local[backend, rate] = LocalTokenBucket(rate)
            return _local[backend, rate]
        if url not in _redis:
            # Fail fast when Redis is down (two quick retries, not redis-py's default ten with
            # backoff): the send is retried later anyway, and a worker must not hang on it.
            _redis[url] = redis.Redis.from_url(
                url,
                socket_connect_timeout=2,
                socket_timeout=2,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
            )
        return RedisTokenBucket(_redis[url], throttle_key(backend), rate)
