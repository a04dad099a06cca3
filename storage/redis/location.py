"""Registrar location bindings in Redis (layout: ``storage/redis/keys.py``).

Each write is one Lua script, so an upsert either lands whole or not at all (the binding limit is checked
before anything is written) and concurrent REGISTERs of one AOR cannot interleave. Scores and deadlines
travel as the decimal strings Python produced: Lua numbers print with 14 significant digits, which would
round sub-millisecond epoch times.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as PlainConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from storage.memory.hot import check_same_aor, sort_bindings
from storage.ports import (
    Binding,
    BindingLimitExceeded,
    ContactLimitExceeded,
    OutOfOrderRegister,
    check_hot_key,
)
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

# A whole REGISTER (RFC 3261 §10.3 steps 7-8) in one round trip. ARGV 4: store limit, 5: caller limit,
# 6: Call-ID, 7: CSeq, 8: '1' to remove every binding, 9: number of removals R, 10..9+R: binding ids to
# remove, then (binding_id, expires_at, json) triples to upsert. Returns {status, count, json...}: status 1
# written (then the JSON of every live binding that was not upserted), 2 out of order, 3 over the caller's
# limit, 0 over the store's limit (nothing written unless 1).
_APPLY = (
    _REFRESH
    + """
drop_expired()
local now = tonumber(ARGV[1])
local call_id = ARGV[6]
local cseq = tonumber(ARGV[7])
local removals = tonumber(ARGV[9])
local wanted = {}
local order = {}
local function want(id, binding)
  if wanted[id] == nil then table.insert(order, id) end
  wanted[id] = binding
end
if ARGV[8] == '1' then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do want(id, false) end
end
for i = 10, 9 + removals do want(ARGV[i], false) end
for i = 10 + removals, #ARGV, 3 do
  if tonumber(ARGV[i + 1]) > now then want(ARGV[i], {ARGV[i + 1], ARGV[i + 2]}) else want(ARGV[i], false) end
end
for _, id in ipairs(order) do
  local stored = redis.call('HGET', KEYS[1], id)
  if stored then
    local binding = cjson.decode(stored)
    if binding.call_id == call_id and cseq <= tonumber(binding.cseq) then return {2, 0} end
  end
end
local count = redis.call('ZCARD', KEYS[2])
for _, id in ipairs(order) do
  local exists = redis.call('ZSCORE', KEYS[2], id)
  if wanted[id] and not exists then count = count + 1 end
  if not wanted[id] and exists then count = count - 1 end
end
if count > tonumber(ARGV[5]) then return {3, count} end
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
local result = {1, count}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if not wanted[id] then table.insert(result, redis.call('HGET', KEYS[1], id)) end
end
return result
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


_KEY_CACHE_SIZE = 16_384
# One encoder for every binding: json.dumps(separators=...) builds a new JSONEncoder per call.
_JSON = json.JSONEncoder(separators=(",", ":"))


class _RespProtocol(asyncio.Protocol):
    """Replies of one pipelined connection, matched to their commands in order (RESP has no ids)."""

    def __init__(self, on_lost: Callable[[_RespProtocol, Exception], None]) -> None:
        self.reader = hiredis.Reader()
        self.pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self._on_lost = on_lost
        self._outgoing: list[bytes] = []

    def send(self, command: bytes, future: asyncio.Future[Any], sent_at: float) -> None:
        """Queue ``command`` (its reply resolves ``future``). Commands queued during one loop iteration
        leave in one write: one system call for a burst of REGISTERs instead of one each."""
        self.pending.append((future, sent_at))
        if not self._outgoing:
            future.get_loop().call_soon(self._flush)
        self._outgoing.append(command)

    def _flush(self) -> None:
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        if self.transport is not None:  # else connection_lost has failed their futures already
            self.transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        reader, pending = self.reader, self.pending
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not pending:  # a reply nobody asked for: the stream is out of step, start over
                self.abort(ConnectionError("Redis sent an unexpected reply"))
                return
            future, _sent = pending.popleft()
            if not future.done():  # the caller may have been cancelled meanwhile
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = exc if exc is not None else ConnectionError("Redis closed the connection")
        while self.pending:
            future, _sent = self.pending.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"Redis connection lost: {error}"))
        self._on_lost(self, error)

    def abort(self, error: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()  # connection_lost fails every pending command
        self.connection_lost(error)


def _command(*args: Any) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class PipelinedScripts:
    """The store's hot-path scripts over one dedicated, pipelined Redis connection.

    redis-py spends ~100-150 µs of CPU per command (connection pool, timeout and retry wrappers); here a
    command is one ``transport.write`` and a future resolved by hiredis' C parser, and concurrent
    REGISTERs share the connection without waiting for each other's replies. Plain TCP only (see
    :meth:`for_client`). A command left unanswered for ``timeout`` seconds drops the connection and fails
    every command on it; the next command reconnects.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._address = (host, port)
        self._setup: list[tuple[str, ...]] = []
        # AUTH and SELECT are sent first on every (re)connection.
        if password is not None:
            self._setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._setup.append(("SELECT", str(db)))
        self._timeout = timeout
        self._protocol: _RespProtocol | None = None
        self._connecting: asyncio.Future[_RespProtocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    def for_client(cls, client: Redis, timeout: float = 5.0) -> PipelinedScripts | None:
        """Same server, database and credentials as ``client``; ``None`` unless it speaks plain TCP."""
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if pool.connection_class is not PlainConnection or kwargs.get("credential_provider") is not None:
            return None
        return cls(
            str(kwargs.get("host", "localhost")),
            int(kwargs.get("port", 6379)),
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            timeout=timeout,
        )

    async def run(self, script: Any, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA (EVAL if Redis does not know the script); a Redis error raises ``ResponseError``."""
        tail = (str(len(keys)), *keys, *args)
        reply = await self._submit(_command("EVALSHA", sha, *tail))
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            reply = await self._submit(_command("EVAL", script, *tail))
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def aclose(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._protocol is not None:
            self._protocol.abort(ConnectionError("closed"))

    def _submit(self, command: bytes) -> Awaitable[Any]:
        """The reply's future when connected (no coroutine frame between the caller and the reply:
        one REGISTER resumes through one level less), else a coroutine that connects first."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return self._call(command)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        protocol.send(command, future, loop.time())
        return future

    async def _call(self, command: bytes) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        assert protocol.transport is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        protocol.send(command, future, loop.time())
        return await future

    async def _connect(self) -> _RespProtocol:
        if self._closed:
            raise ConnectionError("the pipelined Redis connection is closed")
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(connecting)  # one caller's cancellation must not stop the others
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        host, port = self._address
        _transport, protocol = await asyncio.wait_for(
            loop.create_connection(lambda: _RespProtocol(self._lost), host, port), self._timeout
        )
        assert protocol.transport is not None
        futures = []
        for command in self._setup:
            future: asyncio.Future[Any] = loop.create_future()
            protocol.pending.append((future, loop.time()))
            protocol.transport.write(_command(*command))
            futures.append(future)
        try:
            for reply in await asyncio.wait_for(asyncio.gather(*futures), self._timeout):
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"Redis refused the connection setup: {reply}")
        except BaseException:
            protocol.abort(ConnectionError("setup failed"))
            raise
        self._protocol = protocol
        if self._watchdog is None:
            self._watchdog = loop.call_later(1.0, self._check_overdue)
        return protocol

    def _lost(self, protocol: _RespProtocol, error: Exception) -> None:
        if self._protocol is protocol:
            self._protocol = None

    def _check_overdue(self) -> None:
        self._watchdog = None
        protocol = self._protocol
        if protocol is None:
            return  # re-armed by the next connection
        loop = asyncio.get_running_loop()
        if protocol.pending and loop.time() - protocol.pending[0][1] > self._timeout:
            protocol.abort(TimeoutError(f"no reply from Redis within {self._timeout} s"))
            return
        self._watchdog = loop.call_later(1.0, self._check_overdue)


class RedisLocationStore:
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        max_bindings_per_aor: int = 32,
        grace_seconds: int = 60,
        pipelined: bool = False,
    ) -> None:
        """``pipelined``: run ``lookup``/``save``/``apply_register`` over a dedicated pipelined connection
        (:class:`PipelinedScripts`, when ``client`` speaks plain TCP); call :meth:`aclose` when done."""
        self._redis = client
        self._pipe = PipelinedScripts.for_client(client) if pipelined else None
        self._keys = KeySpace(prefix)
        self._key_cache: dict[str, list[str]] = {}  # AOR -> its script keys (a phone re-registers)
        self._clock = clock
        self._max_bindings = max_bindings_per_aor
        self._grace = grace_seconds
        self._save = client.register_script(_SAVE)
        self._remove = client.register_script(_REMOVE)
        self._remove_all = client.register_script(_REMOVE_ALL)
        self._list = client.register_script(_LIST)
        self._apply = client.register_script(_APPLY)

    @property
    def pipelined(self) -> bool:
        """``lookup``/``save``/``apply_register`` run over the pipelined connection: they await plain
        futures only (no redis-py command, nothing that needs a current asyncio Task)."""
        return self._pipe is not None

    async def aclose(self) -> None:
        """Close the pipelined connection (the redis-py client stays the caller's)."""
        if self._pipe is not None:
            await self._pipe.aclose()

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        if self._pipe is not None:
            return await self._pipe.run(script.script, script.sha, keys, args)
        return await script(keys=keys, args=args)

    def _script_keys(self, aor: str) -> list[str]:
        """The keys every script takes for ``aor`` (callers only read the list: it is shared)."""
        keys = self._key_cache.get(aor)
        if keys is None:
            check_hot_key("aor", aor)
            keys = [
                self._keys.location_bindings(aor),
                self._keys.location_expiries(aor),
                self._keys.location_index(),
            ]
            if len(self._key_cache) >= _KEY_CACHE_SIZE:  # bounded: cleared when full
                self._key_cache.clear()
            self._key_cache[aor] = keys
        return keys

    def _script_args(self, aor: str, now: float | None = None) -> list[Any]:
        return [repr(float(self._clock() if now is None else now)), aor, self._grace]

    async def save(self, aor: str, upserts: Sequence[Binding], removals: Sequence[str], now: float) -> None:
        check_same_aor(aor, upserts)
        args = [*self._script_args(aor, now), self._max_bindings, len(removals), *removals]
        for binding in upserts:
            payload = _JSON.encode(binding.to_json())
            args += [binding.binding_id, repr(float(binding.expires_at)), payload]
        stored, count = await self._run(self._save, self._script_keys(aor), args)
        if not stored:
            raise BindingLimitExceeded(f"{aor} would hold {count} bindings, limit {self._max_bindings}")

    async def upsert(self, aor: str, bindings: Sequence[Binding]) -> None:
        await self.save(aor, bindings, (), self._clock())

    async def apply_register(
        self,
        aor: str,
        upserts: Sequence[Binding],
        removals: Sequence[str],
        now: float,
        *,
        call_id: str,
        cseq: int,
        max_bindings: int,
        remove_all: bool = False,
    ) -> list[Binding]:
        check_same_aor(aor, upserts)
        args = [
            *self._script_args(aor, now),
            self._max_bindings,
            max_bindings,
            call_id,
            cseq,
            "1" if remove_all else "0",
            len(removals),
            *removals,
        ]
        written: dict[str, Binding] = {}
        for binding in upserts:
            payload = _JSON.encode(binding.to_json())
            args += [binding.binding_id, repr(float(binding.expires_at)), payload]
            if binding.expires_at > now:
                written[binding.binding_id] = binding
            else:
                written.pop(binding.binding_id, None)
        status, count, *kept = await self._run(self._apply, self._script_keys(aor), args)
        if status == 2:
            raise OutOfOrderRegister(f"{aor}: CSeq {cseq} of {call_id!r} is not above a stored binding's")
        if status == 3:
            raise ContactLimitExceeded(f"{aor} would hold {count} bindings, limit {max_bindings}")
        if status != 1:
            raise BindingLimitExceeded(f"{aor} would hold {count} bindings, limit {self._max_bindings}")
        bindings = [Binding.from_json(json.loads(as_text(p))) for p in kept if p is not None]
        return sort_bindings([*bindings, *written.values()])

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        payloads = await self._run(self._list, self._script_keys(aor), self._script_args(aor, now))
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
