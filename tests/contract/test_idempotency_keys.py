"""IdempotencyKeys contract: the in-memory fake and the Redis adapter behave the same."""

from __future__ import annotations

import asyncio

import pytest

from storage.memory.hot import MemoryIdempotencyKeys
from storage.ports import (
    IDEMPOTENCY_TTL_MAX_SECONDS,
    IDEMPOTENCY_TTL_MIN_SECONDS,
    IdempotencyKeys,
    check_idempotency_ttl,
)
from storage.redis.idempotency import RedisIdempotencyKeys
from storage.redis.keys import KeySpace
from tests.contract.conftest import HotBackend

DAY = 24 * 3600


@pytest.fixture
def keys(hot_backend: HotBackend) -> IdempotencyKeys:
    if hot_backend.kind == "memory":
        return MemoryIdempotencyKeys(hot_backend.clock)
    return RedisIdempotencyKeys(
        hot_backend.require_redis(), prefix=hot_backend.prefix, clock=hot_backend.clock
    )


async def test_only_the_first_claim_wins(keys: IdempotencyKeys) -> None:
    assert await keys.is_claimed("cdr-events:evt-1") is False
    assert await keys.claim("cdr-events:evt-1", ttl_seconds=DAY) is True
    assert await keys.claim("cdr-events:evt-1", ttl_seconds=DAY) is False
    assert await keys.is_claimed("cdr-events:evt-1") is True
    assert await keys.claim("cdr-events:evt-2", ttl_seconds=DAY) is True


async def test_release_lets_a_redelivery_claim_again(keys: IdempotencyKeys) -> None:
    await keys.claim("evt-1", ttl_seconds=DAY)
    assert await keys.release("evt-1") is True
    assert await keys.release("evt-1") is False
    assert await keys.claim("evt-1", ttl_seconds=DAY) is True


async def test_a_claim_expires_with_its_ttl(keys: IdempotencyKeys, hot_backend: HotBackend) -> None:
    assert await keys.claim("evt-1", ttl_seconds=0.4) is True
    await hot_backend.advance(0.8)
    assert await keys.is_claimed("evt-1") is False
    assert await keys.claim("evt-1", ttl_seconds=0.4) is True


async def test_concurrent_claims_have_one_winner(keys: IdempotencyKeys) -> None:
    outcomes = await asyncio.gather(*(keys.claim("evt-race", ttl_seconds=DAY) for _ in range(25)))
    assert outcomes.count(True) == 1


async def test_bad_input_is_refused(keys: IdempotencyKeys) -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        await keys.claim("", ttl_seconds=DAY)
    with pytest.raises(ValueError, match="TTL"):
        await keys.claim("evt-1", ttl_seconds=0)
    assert await keys.is_claimed("evt-1") is False


def test_caller_side_ttl_window() -> None:
    assert check_idempotency_ttl(IDEMPOTENCY_TTL_MIN_SECONDS) == 24 * 3600
    assert check_idempotency_ttl(48 * 3600) == 48 * 3600
    assert check_idempotency_ttl(IDEMPOTENCY_TTL_MAX_SECONDS) == 72 * 3600
    for outside in (3600, 73 * 3600):
        with pytest.raises(ValueError, match="redelivery window"):
            check_idempotency_ttl(outside)


async def test_redis_claim_is_set_nx_with_ttl(hot_backend: HotBackend) -> None:
    if hot_backend.kind != "redis":
        pytest.skip("Redis key layout only")
    redis = hot_backend.require_redis()
    await RedisIdempotencyKeys(redis, prefix=hot_backend.prefix).claim("evt-1", ttl_seconds=2 * DAY)
    assert 2 * DAY - 5 <= await redis.ttl(KeySpace(hot_backend.prefix).idempotency("evt-1")) <= 2 * DAY
