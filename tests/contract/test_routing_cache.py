"""RoutingCache contract: the in-memory fake and the Redis adapter behave the same."""

from __future__ import annotations

import pytest

from storage.memory.hot import MemoryRoutingCache
from storage.ports import RoutingCache
from storage.redis.routing_cache import RedisRoutingCache
from tests.contract.conftest import HotBackend

RESULT = {"route": "pstn-gw-2", "attempts": [{"uri": "sip:+15551234567@gw2.example.net", "weight": 10}]}


@pytest.fixture
def cache(hot_backend: HotBackend) -> RoutingCache:
    if hot_backend.kind == "memory":
        return MemoryRoutingCache(hot_backend.clock)
    return RedisRoutingCache(hot_backend.require_redis(), prefix=hot_backend.prefix)


async def test_put_get_invalidate(cache: RoutingCache) -> None:
    assert await cache.get("+15551234567") is None
    await cache.put("+15551234567", RESULT, ttl_seconds=60)

    assert await cache.get("+15551234567") == RESULT
    assert await cache.get("+15557654321") is None
    assert await cache.invalidate("+15551234567") is True
    assert await cache.invalidate("+15551234567") is False
    assert await cache.get("+15551234567") is None


async def test_put_replaces_and_results_expire(cache: RoutingCache, hot_backend: HotBackend) -> None:
    await cache.put("sip:bob@example.com", RESULT, ttl_seconds=60)
    await cache.put("sip:bob@example.com", {"route": "local"}, ttl_seconds=0.4)
    await cache.put("sip:carol@example.com", {"route": "local"}, ttl_seconds=60)

    assert await cache.get("sip:bob@example.com") == {"route": "local"}
    await hot_backend.advance(0.8)
    assert await cache.get("sip:bob@example.com") is None
    assert await cache.get("sip:carol@example.com") == {"route": "local"}


async def test_bad_input_is_refused(cache: RoutingCache) -> None:
    with pytest.raises(ValueError, match="target"):
        await cache.put("", RESULT, ttl_seconds=60)
    with pytest.raises(ValueError, match="TTL"):
        await cache.put("x", RESULT, ttl_seconds=-1)
    with pytest.raises(TypeError):
        await cache.put("x", {"bad": {1, 2}}, ttl_seconds=60)
    assert await cache.get("x") is None
