"""Active-call cache (``session_cache``) and node heartbeats in Redis (layout: ``storage/redis/keys.py``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from storage.ports import CachedCall, check_hot_key, check_ttl
from storage.redis.client import as_text
from storage.redis.keys import DEFAULT_PREFIX, KeySpace

# KEYS: 1 call key, 2 the node's call set.  ARGV: 1 payload, 2 TTL ms, 3 call id.
# The set lives as long as its longest-lived call, so a node that stops writing leaves nothing behind.
_SET_CALL = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""


def _ttl_ms(ttl_seconds: float) -> int:
    return max(1, round(check_ttl(ttl_seconds) * 1000))


class RedisActiveCallCache:
    def __init__(
        self, client: Redis, *, prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = client
        self._keys = KeySpace(prefix)
        self._clock = clock
        self._set_call = client.register_script(_SET_CALL)

    async def set(self, call_id: str, state: Mapping[str, Any], *, node_id: str, ttl_seconds: float) -> None:
        check_hot_key("call_id", call_id)
        check_hot_key("node_id", node_id)
        payload = json.dumps(
            {"node_id": node_id, "state": dict(state), "updated_at": self._clock()}, separators=(",", ":")
        )
        await self._set_call(
            keys=[self._keys.call(call_id), self._keys.node_calls(node_id)],
            args=[payload, _ttl_ms(ttl_seconds), call_id],
        )

    async def get(self, call_id: str) -> CachedCall | None:
        check_hot_key("call_id", call_id)
        raw = await self._redis.get(self._keys.call(call_id))
        if raw is None:
            return None
        data = json.loads(as_text(raw))
        return CachedCall(call_id, data["node_id"], data["state"], float(data["updated_at"]))

    async def delete(self, call_id: str) -> bool:
        check_hot_key("call_id", call_id)
        cached = await self.get(call_id)
        if cached is None:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._keys.call(call_id))
            pipe.srem(self._keys.node_calls(cached.node_id), call_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def list_by_node(self, node_id: str) -> list[str]:
        check_hot_key("node_id", node_id)
        set_key = self._keys.node_calls(node_id)
        members = sorted(as_text(m) for m in await self._redis.smembers(set_key))
        if not members:
            return []
        payloads = await self._redis.mget([self._keys.call(m) for m in members])
        owned, stale = [], []
        for call_id, raw in zip(members, payloads, strict=True):
            # Expired, deleted elsewhere, or since taken over by another node.
            if raw is not None and json.loads(as_text(raw))["node_id"] == node_id:
                owned.append(call_id)
            else:
                stale.append(call_id)
        if stale:
            await self._redis.srem(set_key, *stale)
        return owned

    async def set_heartbeat(self, node_id: str, ttl_seconds: float) -> None:
        check_hot_key("node_id", node_id)
        await self._redis.set(
            self._keys.node_heartbeat(node_id), repr(self._clock()), px=_ttl_ms(ttl_seconds)
        )

    async def get_heartbeat(self, node_id: str) -> float | None:
        check_hot_key("node_id", node_id)
        raw = await self._redis.get(self._keys.node_heartbeat(node_id))
        return None if raw is None else float(as_text(raw))
