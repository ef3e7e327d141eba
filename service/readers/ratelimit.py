"""Rate limits for what readers can make us do, shared through Redis when it is the broker."""

from __future__ import annotations

import hashlib
import logging
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from service.config import Settings

log = logging.getLogger(__name__)


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self._limiter = MovingWindowRateLimiter(
            storage_from_string(settings.rate_limit_storage_url)
        )
        self._rules: dict[str, RateLimitItem] = {
            "subscribe-ip": parse(settings.rate_limit_subscribe_per_ip),
            "subscribe-address": parse(settings.rate_limit_subscribe_per_address),
            "sign-in-ip": parse(settings.rate_limit_sign_in_per_ip),
        }

    def hit(self, rule: str, key: str) -> float | None:
        """Count one request; None if allowed, else the seconds until it would be."""
        item = self._rules[rule]
        # Keys are hashed: an address (or IP) must not sit in Redis in the clear.
        digest = hashlib.sha256(key.lower().encode()).hexdigest()[:32]
        try:
            if self._limiter.hit(item, rule, digest):
                return None
            reset = self._limiter.get_window_stats(item, rule, digest).reset_time
        except Exception:  # a limiter outage must not take subscriptions down with it
            log.warning("rate limiter unavailable; allowing", exc_info=True)
            return None
        return max(1.0, reset - time.time())
