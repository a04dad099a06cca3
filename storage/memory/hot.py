"""In-memory fakes of the hot-path ports (what Redis holds in production).

Every fake takes a ``clock`` (a zero-argument callable returning epoch seconds) so tests move time by
hand with ``ManualClock`` instead of sleeping. Expired entries are dropped whenever they are touched and
on every write, so memory stays bounded by what is live. Values are deep-copied through JSON on the way
in and out, as a real store would serialise them: callers cannot mutate what is stored, and a value
that is not JSON-able fails here as it would against Redis.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage.ports import (
    Binding,
    BindingLimitExceeded,
    CachedCall,
    ContactLimitExceeded,
    JsonObject,
    OutOfOrderRegister,
    RateDecision,
    check_hot_key,
    check_ttl,
)

Clock = Callable[[], float]


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds


def _json_copy(value: Mapping[str, Any]) -> JsonObject:
    copied: JsonObject = json.loads(json.dumps(value))
    return copied


def sort_bindings(bindings: list[Binding]) -> list[Binding]:
    """Highest q first (none given counts as 1.0), then most recently updated, then by id."""
    return sorted(bindings, key=lambda b: (-(1.0 if b.q is None else b.q), -b.updated_at, b.binding_id))


def check_same_aor(aor: str, bindings: Sequence[Binding]) -> None:
    check_hot_key("aor", aor)
    for binding in bindings:
        if binding.aor != aor:
            raise ValueError(f"binding for {binding.aor!r} given to upsert of {aor!r}")


class MemoryLocationStore:
    def __init__(self, clock: Clock = time.time, max_bindings_per_aor: int = 32) -> None:
        self._clock = clock
        self._max_bindings = max_bindings_per_aor
        self._by_aor: dict[str, dict[str, Binding]] = {}

    def _live(self, aor: str, now: float | None = None) -> dict[str, Binding]:
        now = self._clock() if now is None else now
        bindings = self._by_aor.get(aor, {})
        for binding_id in [bid for bid, b in bindings.items() if b.expires_at <= now]:
            del bindings[binding_id]
        if not bindings:
            self._by_aor.pop(aor, None)
        return bindings

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        check_hot_key("aor", aor)
        return sort_bindings(list(self._live(aor, now).values()))

    async def save(self, aor: str, upserts: Sequence[Binding], removals: Sequence[str], now: float) -> None:
        check_same_aor(aor, upserts)
        merged = dict(self._live(aor, now))
        for binding_id in removals:
            merged.pop(binding_id, None)
        for binding in upserts:
            if binding.expires_at <= now:
                merged.pop(binding.binding_id, None)
            else:
                merged[binding.binding_id] = binding
        if len(merged) > self._max_bindings:
            raise BindingLimitExceeded(f"{aor} would hold {len(merged)} bindings, limit {self._max_bindings}")
        if merged:
            self._by_aor[aor] = merged
        else:
            self._by_aor.pop(aor, None)

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
        current = self._live(aor, now)
        removing = list(current) if remove_all else [k for k in removals if k in current]
        for binding_id in [*removing, *(b.binding_id for b in upserts)]:
            existing = current.get(binding_id)
            if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                raise OutOfOrderRegister(f"{aor}: CSeq {cseq} is not above the binding's {existing.cseq}")
        merged = dict(current)
        for binding_id in removing:
            merged.pop(binding_id, None)
        for binding in upserts:
            if binding.expires_at <= now:
                merged.pop(binding.binding_id, None)
            else:
                merged[binding.binding_id] = binding
        if len(merged) > max_bindings:
            raise ContactLimitExceeded(f"{aor} would hold {len(merged)} bindings, limit {max_bindings}")
        await self.save(aor, upserts, removing, now)  # the store's own limit; subclasses see the write
        return sort_bindings(list(self._live(aor, now).values()))

    async def upsert(self, aor: str, bindings: Sequence[Binding]) -> None:
        await self.save(aor, bindings, (), self._clock())

    async def remove(self, aor: str, binding_id: str) -> bool:
        check_hot_key("aor", aor)
        bindings = self._live(aor)
        removed = bindings.pop(binding_id, None) is not None
        if not bindings:
            self._by_aor.pop(aor, None)
        return removed

    async def remove_all(self, aor: str) -> int:
        check_hot_key("aor", aor)
        removed = len(self._live(aor))
        self._by_aor.pop(aor, None)
        return removed

    async def list_bindings(self, aor: str) -> list[Binding]:
        return await self.lookup(aor, self._clock())

    async def count(self, aor: str) -> int:
        check_hot_key("aor", aor)
        return len(self._live(aor))

    async def list_aors(self, limit: int = 1000) -> list[str]:
        live = [aor for aor in list(self._by_aor) if self._live(aor)]
        return sorted(live)[:limit]


@dataclass(slots=True)
class _Expiring:
    value: Any
    expires_at: float


class _ExpiringMap:
    """A dict whose entries vanish at their deadline (read by the injected clock)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entries: dict[str, _Expiring] = {}

    def get(self, key: str) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            del self._entries[key]
            return None
        return entry.value

    def put(self, key: str, value: Any, ttl_seconds: float) -> None:
        self.purge()
        self._entries[key] = _Expiring(value, self._clock() + ttl_seconds)

    def put_if_absent(self, key: str, value: Any, ttl_seconds: float) -> bool:
        if self.get(key) is not None:
            return False
        self.put(key, value, ttl_seconds)
        return True

    def pop(self, key: str) -> Any | None:
        value = self.get(key)
        self._entries.pop(key, None)
        return value

    def purge(self) -> None:
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[key]

    def __len__(self) -> int:
        self.purge()
        return len(self._entries)


class MemoryActiveCallCache:
    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._calls = _ExpiringMap(clock)
        self._heartbeats = _ExpiringMap(clock)

    async def set(self, call_id: str, state: Mapping[str, Any], *, node_id: str, ttl_seconds: float) -> None:
        check_hot_key("call_id", call_id)
        check_hot_key("node_id", node_id)
        ttl = check_ttl(ttl_seconds)
        self._calls.put(call_id, CachedCall(call_id, node_id, _json_copy(state), self._clock()), ttl)

    async def get(self, call_id: str) -> CachedCall | None:
        check_hot_key("call_id", call_id)
        cached: CachedCall | None = self._calls.get(call_id)
        if cached is None:
            return None
        return CachedCall(cached.call_id, cached.node_id, _json_copy(cached.state), cached.updated_at)

    async def delete(self, call_id: str) -> bool:
        check_hot_key("call_id", call_id)
        return self._calls.pop(call_id) is not None

    async def list_by_node(self, node_id: str) -> list[str]:
        check_hot_key("node_id", node_id)
        self._calls.purge()
        return sorted(
            call_id
            for call_id in list(self._calls._entries)
            if (cached := self._calls.get(call_id)) is not None and cached.node_id == node_id
        )

    async def set_heartbeat(self, node_id: str, ttl_seconds: float) -> None:
        check_hot_key("node_id", node_id)
        self._heartbeats.put(node_id, self._clock(), check_ttl(ttl_seconds))

    async def get_heartbeat(self, node_id: str) -> float | None:
        check_hot_key("node_id", node_id)
        beat: float | None = self._heartbeats.get(node_id)
        return beat


class MemoryRoutingCache:
    def __init__(self, clock: Clock = time.time) -> None:
        self._results = _ExpiringMap(clock)

    async def get(self, target: str) -> JsonObject | None:
        check_hot_key("target", target)
        result = self._results.get(target)
        return None if result is None else _json_copy(result)

    async def put(self, target: str, result: Mapping[str, Any], ttl_seconds: float) -> None:
        check_hot_key("target", target)
        self._results.put(target, _json_copy(result), check_ttl(ttl_seconds))

    async def invalidate(self, target: str) -> bool:
        check_hot_key("target", target)
        return self._results.pop(target) is not None


def check_limit(limit: int, window_seconds: float) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"rate limit must be a positive integer, got {limit!r}")
    check_ttl(window_seconds)


class MemoryRateLimiter:
    """Sliding-window log: the timestamps of allowed requests within the window, per key."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, deque[float]]] = {}

    async def allow(self, key: str, limit: int, window_seconds: float) -> RateDecision:
        check_hot_key("rate-limit key", key)
        check_limit(limit, window_seconds)
        now = self._clock()
        self._forget_idle(now)
        hits = self._windows.get(key, (window_seconds, deque()))[1]
        self._windows[key] = (window_seconds, hits)
        while hits and hits[0] <= now - window_seconds:
            hits.popleft()
        if len(hits) < limit:
            hits.append(now)
            return RateDecision(True, limit - len(hits), 0.0)
        return RateDecision(False, 0, max(0.0, hits[0] + window_seconds - now))

    def _forget_idle(self, now: float) -> None:
        # A key whose newest hit has left its window holds nothing that can still count (as Redis' TTL).
        idle = [k for k, (window, hits) in self._windows.items() if not hits or hits[-1] <= now - window]
        for key in idle:
            del self._windows[key]

    async def reset(self, key: str) -> None:
        check_hot_key("rate-limit key", key)
        self._windows.pop(key, None)


class MemoryIdempotencyKeys:
    def __init__(self, clock: Clock = time.time) -> None:
        self._claims = _ExpiringMap(clock)

    async def claim(self, key: str, ttl_seconds: float) -> bool:
        check_hot_key("idempotency key", key)
        return self._claims.put_if_absent(key, True, check_ttl(ttl_seconds))

    async def release(self, key: str) -> bool:
        check_hot_key("idempotency key", key)
        return self._claims.pop(key) is not None

    async def is_claimed(self, key: str) -> bool:
        check_hot_key("idempotency key", key)
        return self._claims.get(key) is not None
