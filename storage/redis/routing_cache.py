"""Routing results cached in Redis per target (layout: ``storage/redis/keys.py``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from storage.ports import JsonObject, check_hot_key, check_ttl
from storage.redis.client import as_text
from storage.redis.keys import DEFAULT_PREFIX, KeySpace


class RedisRoutingCache:
    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = client
        self._keys = KeySpace(prefix)

    async def get(self, target: str) -> JsonObject | None:
        raw = await self._redis.get(self._keys.route(check_hot_key("target", target)))
        if raw is None:
            return None
        result: JsonObject = json.loads(as_text(raw))
        return result

    async def put(self, target: str, result: Mapping[str, Any], ttl_seconds: float) -> None:
        key = self._keys.route(check_hot_key("target", target))
        ttl_ms = max(1, round(check_ttl(ttl_seconds) * 1000))
        await self._redis.set(key, json.dumps(dict(result), separators=(",", ":")), px=ttl_ms)

    async def invalidate(self, target: str) -> bool:
        return bool(await self._redis.delete(self._keys.route(check_hot_key("target", target))))
