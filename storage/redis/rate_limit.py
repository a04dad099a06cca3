"""Sliding-window rate limiter in Redis (layout: ``storage/redis/keys.py``).

One sorted set per key holds a member per allowed request, scored by the Redis server's clock in
microseconds, so every node of a cluster judges the same window regardless of its own clock. The whole
check-and-count is one Lua script, which Redis runs atomically: concurrent callers cannot both take the
last slot. Refused requests are not recorded, so a client hammering a closed window does not extend it.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from storage.memory.hot import check_limit
from storage.ports import RateDecision, check_hot_key
from storage.redis.keys import DEFAULT_PREFIX, KeySpace

# KEYS: 1 window zset.  ARGV: 1 limit, 2 window µs, 3 unique member.
# Returns {allowed 0/1, remaining, retry_after µs}. string.format('%d') keeps µs exact (< 2^53).
_ALLOW = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - window))
local used = redis.call('ZCARD', KEYS[1])
if used < limit then
  redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1)
  return {1, limit - used - 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local retry = tonumber(oldest[2]) + window - now
if retry < 0 then retry = 0 end
return {0, 0, retry}
"""


class RedisRateLimiter:
    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = client
        self._keys = KeySpace(prefix)
        self._allow = client.register_script(_ALLOW)

    async def allow(self, key: str, limit: int, window_seconds: float) -> RateDecision:
        check_hot_key("rate-limit key", key)
        check_limit(limit, window_seconds)
        window_us = max(1, round(window_seconds * 1_000_000))
        allowed, remaining, retry_us = await self._allow(
            keys=[self._keys.rate_limit(key)], args=[limit, window_us, uuid.uuid4().hex]
        )
        return RateDecision(bool(allowed), int(remaining), int(retry_us) / 1_000_000)

    async def reset(self, key: str) -> None:
        await self._redis.delete(self._keys.rate_limit(check_hot_key("rate-limit key", key)))
