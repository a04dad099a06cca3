"""RateLimiter contract: the in-memory fake and the Redis adapter behave the same."""

from __future__ import annotations

import asyncio

import pytest

from storage.memory.hot import MemoryRateLimiter
from storage.ports import RateLimiter
from storage.redis.keys import KeySpace
from storage.redis.rate_limit import RedisRateLimiter
from tests.contract.conftest import HotBackend


@pytest.fixture
def limiter(hot_backend: HotBackend) -> RateLimiter:
    if hot_backend.kind == "memory":
        return MemoryRateLimiter(hot_backend.clock)
    return RedisRateLimiter(hot_backend.require_redis(), prefix=hot_backend.prefix)


async def test_allows_up_to_the_limit_then_refuses(limiter: RateLimiter) -> None:
    decisions = [await limiter.allow("register:192.0.2.1", limit=3, window_seconds=10) for _ in range(5)]

    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert decisions[0].retry_after_seconds == 0
    assert 9 < decisions[3].retry_after_seconds <= 10
    assert bool(decisions[0]) is True and bool(decisions[3]) is False


async def test_the_window_slides(limiter: RateLimiter, hot_backend: HotBackend) -> None:
    """Limit 2 per 2 s: hits at t=0 and t=1; at t=2.4 the first has left the window, the second not."""
    key = "invite:alice"
    assert (await limiter.allow(key, 2, 2.0)).allowed
    await hot_backend.advance(1.0)
    assert (await limiter.allow(key, 2, 2.0)).allowed
    refused = await limiter.allow(key, 2, 2.0)
    assert not refused.allowed and 0.5 < refused.retry_after_seconds <= 1.0

    await hot_backend.advance(1.4)

    assert (await limiter.allow(key, 2, 2.0)).allowed
    assert not (await limiter.allow(key, 2, 2.0)).allowed


async def test_refused_requests_do_not_extend_the_window(
    limiter: RateLimiter, hot_backend: HotBackend
) -> None:
    assert (await limiter.allow("k", 1, 0.5)).allowed
    for _ in range(5):
        assert not (await limiter.allow("k", 1, 0.5)).allowed
    await hot_backend.advance(0.7)
    assert (await limiter.allow("k", 1, 0.5)).allowed


async def test_keys_are_independent_and_reset(limiter: RateLimiter) -> None:
    assert (await limiter.allow("a", 1, 10)).allowed
    assert (await limiter.allow("b", 1, 10)).allowed
    assert not (await limiter.allow("a", 1, 10)).allowed
    await limiter.reset("a")
    assert (await limiter.allow("a", 1, 10)).allowed
    assert not (await limiter.allow("b", 1, 10)).allowed


async def test_concurrent_callers_never_exceed_the_limit(
    hot_backend: HotBackend, limiter: RateLimiter
) -> None:
    # For Redis: three limiter objects (three nodes) racing over pooled connections.
    limiters = [limiter] * 3
    if hot_backend.kind == "redis":
        limiters = [
            RedisRateLimiter(hot_backend.require_redis(), prefix=hot_backend.prefix) for _ in range(3)
        ]

    decisions = await asyncio.gather(*(limiters[i % 3].allow("burst", 10, 30) for i in range(60)))

    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


async def test_bad_input_is_refused(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        await limiter.allow("k", 0, 1)
    with pytest.raises(ValueError, match="positive integer"):
        await limiter.allow("k", True, 1)
    with pytest.raises(ValueError, match="TTL"):
        await limiter.allow("k", 1, 0)
    with pytest.raises(ValueError, match="rate-limit key"):
        await limiter.allow("", 1, 1)


async def test_redis_window_key_expires_when_idle(hot_backend: HotBackend) -> None:
    if hot_backend.kind != "redis":
        pytest.skip("Redis key layout only")
    redis = hot_backend.require_redis()
    await RedisRateLimiter(redis, prefix=hot_backend.prefix).allow("k", 5, 30)
    key = KeySpace(hot_backend.prefix).rate_limit("k")
    assert 29_000 < await redis.pttl(key) <= 30_001
    assert await redis.zcard(key) == 1
