"""The send-rate limit in one process (no server), and the setting that turns it on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings
from service.mail.throttle import LocalTokenBucket, RedisTokenBucket, throttle_from_settings


def test_the_burst_is_granted_at_once_then_sends_are_paced_at_the_rate() -> None:
    bucket = LocalTokenBucket(200)  # default burst: a tenth of a second's worth, 20
    started = time.monotonic()
    waits = [bucket.acquire() for _ in range(20)]
    assert time.monotonic() - started < 0.05
    assert waits == [0.0] * 20
    waits += [bucket.acquire() for _ in range(80)]
    elapsed = time.monotonic() - started
    assert 0.38 <= elapsed < 1.5  # (100 - 20) / 200 = 0.4 s
    assert 0.0 < waits[-1] < 0.1  # one token's worth (5 ms) plus scheduling


def test_threads_share_one_rate() -> None:
    bucket = LocalTokenBucket(200, burst=1)
    granted: list[float] = []

    def draw() -> None:
        for _ in range(25):
            bucket.acquire()
            granted.append(time.monotonic())

    threads = [threading.Thread(target=draw) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 100
    assert 0.48 <= max(granted) - started < 1.5  # 99 tokens after the first, at 200/s


def test_several_tokens_at_once_wait_for_all_of_them() -> None:
    bucket = LocalTokenBucket(100, burst=10)
    assert bucket.acquire(10) == 0.0
    assert 0.04 <= bucket.acquire(5) < 0.5  # 5 tokens at 100/s


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, None), (-5, None), (float("nan"), None), (10, 0.5)]
)
def test_a_bucket_that_could_grant_nothing_is_refused(rate: float, burst: float | None) -> None:
    with pytest.raises(ValueError, match=r"(rate|burst) must be"):
        LocalTokenBucket(rate, burst)


@pytest.mark.parametrize("n", [0, 6])
def test_more_than_the_bucket_holds_is_refused_not_waited_for_forever(n: int) -> None:
    with pytest.raises(ValueError, match="1 to 5 tokens"):
        LocalTokenBucket(50).acquire(n)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "fast"])
def test_an_invalid_rate_limit_setting_is_refused(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_RATE_LIMIT", value)
    with pytest.raises(ValidationError, match="rate_limit"):
        Settings(var_dir=tmp_path)


@pytest.mark.parametrize(("value", "expected"), [("", None), ("0", None), ("12.5", 12.5)])
def test_rate_limit_from_the_environment(
    value: str, expected: float | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_RATE_LIMIT", value)
    assert Settings(var_dir=tmp_path).rate_limit == expected


def test_no_rate_limit_no_throttle(tmp_path: Path) -> None:
    assert throttle_from_settings(Settings(var_dir=tmp_path), "smtp") is None


def test_the_embedded_broker_throttles_per_process_with_one_bucket_per_backend(
    tmp_path: Path,
) -> None:
    settings = Settings(var_dir=tmp_path, rate_limit=7)
    smtp = throttle_from_settings(settings, "smtp")
    assert isinstance(smtp, LocalTokenBucket)
    assert smtp.rate == 7
    # Every caller in the process draws from the same bucket, else each would get the full rate.
    assert throttle_from_settings(settings, "smtp") is smtp
    assert throttle_from_settings(settings, "outbox") is not smtp


def test_a_redis_broker_throttles_through_redis(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, rate_limit=7, broker_url="redis://redis.invalid:6379/0")
    throttle = throttle_from_settings(settings, "smtp")  # connects only when asked for tokens
    assert isinstance(throttle, RedisTokenBucket)
    assert throttle.key == "newsletter:throttle:smtp"
    assert throttle.rate == 7
