"""ActiveCallCache (``session_cache``) contract: the in-memory fake and the Redis adapter behave the same."""

from __future__ import annotations

import pytest

from storage.memory.hot import MemoryActiveCallCache
from storage.ports import ActiveCallCache
from storage.redis.keys import KeySpace
from storage.redis.session_cache import RedisActiveCallCache
from tests.contract.conftest import HotBackend

STATE = {"state": "CONFIRMED", "legs": [{"leg_id": "a", "peer": "sip:alice@example.com"}], "media": None}


@pytest.fixture
def cache(hot_backend: HotBackend) -> ActiveCallCache:
    if hot_backend.kind == "memory":
        return MemoryActiveCallCache(hot_backend.clock)
    return RedisActiveCallCache(
        hot_backend.require_redis(), prefix=hot_backend.prefix, clock=hot_backend.clock
    )


async def test_set_get_delete(cache: ActiveCallCache, hot_backend: HotBackend) -> None:
    before = hot_backend.clock()
    await cache.set("call-1", STATE, node_id="edge-a", ttl_seconds=60)

    cached = await cache.get("call-1")
    assert cached is not None
    assert (cached.call_id, cached.node_id, cached.state) == ("call-1", "edge-a", STATE)
    assert before <= cached.updated_at <= hot_backend.clock()

    assert await cache.delete("call-1") is True
    assert await cache.delete("call-1") is False
    assert await cache.get("call-1") is None
    assert await cache.list_by_node("edge-a") == []


async def test_returned_state_is_a_copy(cache: ActiveCallCache) -> None:
    state = {"legs": ["a"]}
    await cache.set("call-1", state, node_id="edge-a", ttl_seconds=60)
    state["legs"].append("mutated after set")
    cached = await cache.get("call-1")
    assert cached is not None
    cached.state["legs"].append("mutated after get")

    again = await cache.get("call-1")
    assert again is not None and again.state == {"legs": ["a"]}


async def test_entries_expire(cache: ActiveCallCache, hot_backend: HotBackend) -> None:
    await cache.set("short", STATE, node_id="edge-a", ttl_seconds=0.4)
    await cache.set("long", STATE, node_id="edge-a", ttl_seconds=60)

    await hot_backend.advance(0.8)

    assert await cache.get("short") is None
    assert await cache.get("long") is not None
    assert await cache.list_by_node("edge-a") == ["long"]


async def test_list_by_node_follows_ownership(cache: ActiveCallCache) -> None:
    for call_id, node in [("c1", "edge-a"), ("c2", "edge-b"), ("c3", "edge-a"), ("c4", "edge-a")]:
        await cache.set(call_id, STATE, node_id=node, ttl_seconds=60)
    await cache.delete("c4")
    # edge-b takes over c3 (edge-a died): c3 is edge-b's now.
    await cache.set("c3", STATE, node_id="edge-b", ttl_seconds=60)

    assert await cache.list_by_node("edge-a") == ["c1"]
    assert await cache.list_by_node("edge-b") == ["c2", "c3"]
    assert await cache.list_by_node("edge-c") == []


async def test_heartbeats_expire(cache: ActiveCallCache, hot_backend: HotBackend) -> None:
    assert await cache.get_heartbeat("edge-a") is None
    before = hot_backend.clock()
    await cache.set_heartbeat("edge-a", ttl_seconds=0.4)
    await cache.set_heartbeat("edge-b", ttl_seconds=60)

    beat = await cache.get_heartbeat("edge-a")
    assert beat is not None and before <= beat <= hot_backend.clock()

    await hot_backend.advance(0.8)

    assert await cache.get_heartbeat("edge-a") is None
    assert await cache.get_heartbeat("edge-b") is not None


async def test_bad_input_is_refused(cache: ActiveCallCache) -> None:
    with pytest.raises(ValueError, match="call_id"):
        await cache.set("", STATE, node_id="edge-a", ttl_seconds=60)
    with pytest.raises(ValueError, match="TTL"):
        await cache.set("call-1", STATE, node_id="edge-a", ttl_seconds=0)
    with pytest.raises(ValueError, match="TTL"):
        await cache.set_heartbeat("edge-a", ttl_seconds=float("inf"))
    with pytest.raises(TypeError):
        await cache.set("call-1", {"not json": object()}, node_id="edge-a", ttl_seconds=60)
    assert await cache.get("call-1") is None


async def test_redis_node_call_set_is_bounded(hot_backend: HotBackend) -> None:
    if hot_backend.kind != "redis":
        pytest.skip("Redis key layout only")
    redis = hot_backend.require_redis()
    cache = RedisActiveCallCache(redis, prefix=hot_backend.prefix)
    keys = KeySpace(hot_backend.prefix)
    await cache.set("c1", STATE, node_id="edge-a", ttl_seconds=30)
    await cache.set("c2", STATE, node_id="edge-a", ttl_seconds=90)
    await cache.set("c3", STATE, node_id="edge-a", ttl_seconds=10)

    assert 85_000 < await redis.pttl(keys.node_calls("edge-a")) <= 90_000
    assert 0 < await redis.pttl(keys.call("c3")) <= 10_000
    await cache.delete("c2")
    assert await redis.smembers(keys.node_calls("edge-a")) == {"c1", "c3"}
