"""Registrar location bindings in Redis (layout: ``storage/redis/keys.py``).

Each write is one Lua script, so an upsert either lands whole or not at all (the binding limit is checked
before anything is written) and concurrent REGISTERs of one AOR cannot interleave. Scores and deadlines
travel as the decimal strings Python produced: Lua numbers print with 14 significant digits, which would
round sub-millisecond epoch times.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from storage.memory.hot import check_same_aor, sort_bindings
from storage.ports import Binding, BindingLimitExceeded, check_hot_key
from storage.redis.client import as_text
from storage.redis.keys import DEFAULT_PREFIX, KeySpace

# Shared tail of every writing script: after the AOR's keys changed, give both keys a TTL of the latest
# deadline (+ grace) and rewrite the AOR's score in the index, or delete everything if nothing is left.
# KEYS: 1 bindings hash, 2 expiries zset, 3 AOR index.  ARGV: 1 now, 2 aor, 3 grace seconds.
_REFRESH = """
local function refresh()
  local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if #latest == 0 then
    redis.call('DEL', KEYS[1], KEYS[2])
    redis.call('ZREM', KEYS[3], ARGV[2])
  else
    local ttl = math.ceil(tonumber(latest[2]) - tonumber(ARGV[1])) + tonumber(ARGV[3])
    if ttl < 1 then ttl = 1 end
    redis.call('EXPIRE', KEYS[1], ttl)
    redis.call('EXPIRE', KEYS[2], ttl)
    redis.call('ZADD', KEYS[3], latest[2], ARGV[2])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
end
local function drop_expired()
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  if #expired > 0 then
    redis.call('HDEL', KEYS[1], unpack(expired))
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  end
end
"""

# ARGV 4: binding limit, 5: number of removals R, 6..5+R: binding ids to remove, then
# (binding_id, expires_at, json) triples to upsert. Returns {1, count} or {0, count} (limit exceeded).
_SAVE = (
    _REFRESH
    + """
drop_expired()
local now = tonumber(ARGV[1])
local removals = tonumber(ARGV[5])
local wanted = {}
local order = {}
local function want(id, binding)
  if wanted[id] == nil then table.insert(order, id) end
  wanted[id] = binding
end
for i = 6, 5 + removals do want(ARGV[i], false) end
for i = 6 + removals, #ARGV, 3 do
  if tonumber(ARGV[i + 1]) > now then want(ARGV[i], {ARGV[i + 1], ARGV[i + 2]}) else want(ARGV[i], false) end
end
local count = redis.call('ZCARD', KEYS[2])
for _, id in ipairs(order) do
  local exists = redis.call('ZSCORE', KEYS[2], id)
  if wanted[id] and not exists then count = count + 1 end
  if not wanted[id] and exists then count = count - 1 end
end
if count > tonumber(ARGV[4]) then return {0, count} end
for _, id in ipairs(order) do
  local binding = wanted[id]
  if binding then
    redis.call('HSET', KEYS[1], id, binding[2])
    redis.call('ZADD', KEYS[2], binding[1], id)
  else
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  end
end
refresh()
return {1, count}
"""
)

# ARGV 4: binding id. Returns 1 when a live binding was removed.
_REMOVE = (
    _REFRESH
    + """
drop_expired()
local removed = redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('HDEL', KEYS[1], ARGV[4])
refresh()
return removed
"""
)

# Returns the number of live bindings removed.
_REMOVE_ALL = """
local live = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return live
"""

# Returns the JSON of live bindings (and prunes expired ones on the way).
_LIST = (
    _REFRESH
    + """
drop_expired()
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
if #ids == 0 then
  refresh()
  return {}
end
return redis.call('HMGET', KEYS[1], unpack(ids))
"""
)


class RedisLocationStore:
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        max_bindings_per_aor: int = 32,
        grace_seconds: int = 60,
    ) -> None:
        self._redis = client
        self._keys = KeySpace(prefix)
        self._clock = clock
        self._max_bindings = max_bindings_per_aor
        self._grace = grace_seconds
        self._save = client.register_script(_SAVE)
        self._remove = client.register_script(_REMOVE)
        self._remove_all = client.register_script(_REMOVE_ALL)
        self._list = client.register_script(_LIST)

    def _script_keys(self, aor: str) -> list[str]:
        check_hot_key("aor", aor)
        return [
            self._keys.location_bindings(aor),
            self._keys.location_expiries(aor),
            self._keys.location_index(),
        ]

    def _script_args(self, aor: str, now: float | None = None) -> list[Any]:
        return [repr(float(self._clock() if now is None else now)), aor, self._grace]

    async def save(self, aor: str, upserts: Sequence[Binding], removals: Sequence[str], now: float) -> None:
        check_same_aor(aor, upserts)
        args = [*self._script_args(aor, now), self._max_bindings, len(removals), *removals]
        for binding in upserts:
            payload = json.dumps(binding.to_json(), separators=(",", ":"))
            args += [binding.binding_id, repr(float(binding.expires_at)), payload]
        stored, count = await self._save(keys=self._script_keys(aor), args=args)
        if not stored:
            raise BindingLimitExceeded(f"{aor} would hold {count} bindings, limit {self._max_bindings}")

    async def upsert(self, aor: str, bindings: Sequence[Binding]) -> None:
        await self.save(aor, bindings, (), self._clock())

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        payloads = await self._list(keys=self._script_keys(aor), args=self._script_args(aor, now))
        bindings = [Binding.from_json(json.loads(as_text(p))) for p in payloads if p is not None]
        return sort_bindings(bindings)

    async def remove(self, aor: str, binding_id: str) -> bool:
        removed = await self._remove(keys=self._script_keys(aor), args=[*self._script_args(aor), binding_id])
        return bool(removed)

    async def remove_all(self, aor: str) -> int:
        removed = await self._remove_all(keys=self._script_keys(aor), args=self._script_args(aor))
        return int(removed)

    async def list_bindings(self, aor: str) -> list[Binding]:
        return await self.lookup(aor, self._clock())

    async def count(self, aor: str) -> int:
        check_hot_key("aor", aor)
        now = repr(float(self._clock()))
        return int(await self._redis.zcount(self._keys.location_expiries(aor), f"({now}", "+inf"))

    async def list_aors(self, limit: int = 1000) -> list[str]:
        now = repr(float(self._clock()))
        aors = await self._redis.zrangebyscore(self._keys.location_index(), f"({now}", "+inf")
        return sorted(as_text(aor) for aor in aors if isinstance(aor, str | bytes))[:limit]
