"""Idempotency keys (``idempotency_keys``) in Redis: ``SET NX PX`` (layout: ``storage/redis/keys.py``).

The TTL must cover the redelivery window of the at-least-once consumer; callers check their configured
value with ``storage.ports.check_idempotency_ttl`` (24-72 h). This adapter accepts any positive TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis

from storage.ports import check_hot_key, check_ttl
from storage.redis.keys import DEFAULT_PREFIX, KeySpace


class RedisIdempotencyKeys:
    def __init__(
        self, client: Redis, *, prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = client
        self._keys = KeySpace(prefix)
        self._clock = clock

    async def claim(self, key: str, ttl_seconds: float) -> bool:
        redis_key = self._keys.idempotency(check_hot_key("idempotency key", key))
        ttl_ms = max(1, round(check_ttl(ttl_seconds) * 1000))
        return bool(await self._redis.set(redis_key, repr(self._clock()), nx=True, px=ttl_ms))

    async def release(self, key: str) -> bool:
        redis_key = self._keys.idempotency(check_hot_key("idempotency key", key))
        return bool(await self._redis.delete(redis_key))

    async def is_claimed(self, key: str) -> bool:
        redis_key = self._keys.idempotency(check_hot_key("idempotency key", key))
        return bool(await self._redis.exists(redis_key))
