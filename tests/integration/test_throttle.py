"""The send-rate limit shared through the real Redis by separate worker processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import pytest
import redis

from service.config import Settings
from service.mail.errors import TemporaryError
from service.mail.throttle import RedisTokenBucket, throttle_from_settings
from tests.processes import free_port

RATE = 50.0
SECONDS = 4.0
SETTLE = 0.5  # left out at each end of the run: the initial burst, processes stopping


def _draw(
    broker_url: str, threads: int, ready: Queue[int], go: Event, results: Queue[list[float]]
) -> None:
    """A worker process: several threads send as fast as the throttle lets them."""
    throttle = throttle_from_settings(Settings(broker_url=broker_url, rate_limit=RATE), "smtp")
    assert throttle is not None
    redis.Redis.from_url(broker_url).ping()  # connected before the clock starts
    ready.put(1)
    go.wait()
    until = time.time() + SECONDS
    granted: list[float] = []

    def send() -> None:
        while True:
            throttle.acquire()
            now = time.time()  # wall clock: comparable across the processes of one machine
            if now >= until:
                return
            granted.append(now)

    pool = [threading.Thread(target=send) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    results.put(granted)


@pytest.mark.process
def test_two_workers_together_keep_to_one_rate(redis_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready: Queue[int] = ctx.Queue()
    results: Queue[list[float]] = ctx.Queue()
    go = ctx.Event()
    workers = [ctx.Process(target=_draw, args=(redis_url, 2, ready, go, results)) for _ in (1, 2)]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=30)
        started = time.time()
        go.set()
        grants = [results.get(timeout=SECONDS + 30) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
    assert [w.exitcode for w in workers] == [0, 0]

    window = (started + SETTLE, started + SECONDS - SETTLE)
    steady = [[t for t in g if window[0] <= t < window[1]] for g in grants]
    total = sum(len(s) for s in steady)
    measured = total / (window[1] - window[0])
    shares = [len(s) / total for s in steady]
    print(f"\nglobal rate {measured:.2f}/s (limit {RATE:g}/s); shares {shares}")
    assert abs(measured - RATE) <= RATE * 0.10
    assert min(shares) >= 0.25  # neither worker starves
    # Over the whole run too, nothing beyond the rate and the one initial burst.
    assert sum(map(len, grants)) <= RATE * (SECONDS + 0.1) + RATE / 10


@pytest.mark.redis
def test_an_idle_bucket_leaves_nothing_in_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    bucket = RedisTokenBucket(client, "newsletter:throttle:test", rate=100, burst=5)
    for _ in range(5):
        assert bucket.acquire() == 0.0
    assert 0 < bucket.acquire() <= 0.5  # empty: one token at 100/s is 10 ms away
    assert 0 < client.pttl(bucket.key) <= 51  # full again in 5 tokens / 100/s
    time.sleep(0.1)
    assert not client.exists(bucket.key)
    assert bucket.acquire() == 0.0  # and a missing bucket is a full one


def test_no_redis_is_a_temporary_error_not_an_unthrottled_send() -> None:
    settings = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit=RATE)
    throttle = throttle_from_settings(settings, "smtp")
    assert throttle is not None
    started = time.monotonic()
    with pytest.raises(TemporaryError, match="send-rate limiter unavailable"):
        throttle.acquire()
    assert time.monotonic() - started < 3
