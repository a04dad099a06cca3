"""Pike-like flood protection: per-source request rate limits and authentication-failure limits.

Pure and synchronous: the caller passes ``now`` and acts on the verdict (drop the datagram, or answer
503 statelessly). Rates use a two-bucket sliding window (the previous window's count weighted by how
much of it still overlaps), which costs O(1) memory per tracked key. Memory is bounded: at most
``max_tracked`` keys per table, least recently seen evicted first; :meth:`FloodGuard.sweep` drops
idle keys. IPv6 sources are aggregated per prefix (a /64 is one subscriber), so rotating addresses
inside one prefix does not escape the limit.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["BanPolicy", "FloodConfig", "FloodGuard", "FloodStats", "Verdict"]


class BanPolicy(enum.Enum):
    DROP = "drop"
    REJECT_503 = "503"


class Verdict(enum.Enum):
    ALLOW = "allow"
    DROP = "drop"
    REJECT_503 = "503"


@dataclass(frozen=True, slots=True)
class FloodConfig:
    window: float = 2.0  # seconds
    max_requests: int = 64  # per source per window (SIPp at 3k/s comes from one IP: raise it there)
    ban_time: float = 300.0
    policy: BanPolicy = BanPolicy.DROP
    exempt_sources: frozenset[str] = frozenset()  # e.g. the Kamailio front, trunks
    auth_window: float = 60.0
    max_auth_failures_per_user: int = 10
    max_auth_failures_per_source: int = 30
    auth_ban_time: float = 600.0
    max_tracked: int = 100_000
    ipv6_prefix: int = 64

    def __post_init__(self) -> None:
        if self.window <= 0 or self.auth_window <= 0:
            raise ValueError("flood windows must be positive")
        if min(self.max_requests, self.max_auth_failures_per_user, self.max_auth_failures_per_source) < 1:
            raise ValueError("flood limits must be at least 1")
        if self.max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")


@dataclass(slots=True)
class FloodStats:
    allowed: int = 0
    dropped: int = 0
    rejected_503: int = 0
    bans: int = 0
    auth_failures: int = 0
    auth_blocked: int = 0
    auth_bans: int = 0
    evictions: int = 0


@dataclass(slots=True)
class _Counter:
    window_start: float
    current: int = 0
    previous: int = 0
    banned_until: float = float("-inf")
    last_seen: float = 0.0


class _RateTable:
    """Sliding-window counters keyed by string, least recently seen first, bounded in size."""

    def __init__(self, window: float, limit: int, ban_time: float, capacity: int) -> None:
        self.window, self.limit, self.ban_time, self.capacity = window, limit, ban_time, capacity
        self.entries: OrderedDict[str, _Counter] = OrderedDict()
        self.evictions = 0

    def banned(self, key: str, now: float) -> bool:
        entry = self.entries.get(key)
        return entry is not None and now < entry.banned_until

    def hit(self, key: str, now: float) -> tuple[bool, bool]:
        """Count one event; returns (banned now, newly banned by this event)."""
        entry = self.entries.get(key)
        if entry is None:
            entry = _Counter(window_start=now)
            self.entries[key] = entry
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
                self.evictions += 1
        else:
            self.entries.move_to_end(key)
        entry.last_seen = now
        self._roll(entry, now)
        if now < entry.banned_until:
            return True, False
        entry.current += 1
        overlap = 1.0 - (now - entry.window_start) / self.window
        estimate = entry.previous * max(overlap, 0.0) + entry.current
        if estimate > self.limit:
            entry.banned_until = now + self.ban_time
            return True, True
        return False, False

    def _roll(self, entry: _Counter, now: float) -> None:
        elapsed_windows = int((now - entry.window_start) // self.window)
        if elapsed_windows <= 0:
            return
        entry.previous = entry.current if elapsed_windows == 1 else 0
        entry.current = 0
        entry.window_start += elapsed_windows * self.window

    def reset(self, key: str) -> None:
        self.entries.pop(key, None)

    def sweep(self, now: float) -> int:
        """Drop keys idle for two windows and not banned; returns how many were dropped."""
        idle = [
            key
            for key, entry in self.entries.items()
            if now - entry.last_seen > 2 * self.window and now >= entry.banned_until
        ]
        for key in idle:
            del self.entries[key]
        return len(idle)


_SOURCE_KEY_CACHE = 4096


class FloodGuard:
    def __init__(self, config: FloodConfig | None = None) -> None:
        self.config = config or FloodConfig()
        c = self.config
        self.stats = FloodStats()
        self._requests = _RateTable(c.window, c.max_requests, c.ban_time, c.max_tracked)
        self._auth_by_user = _RateTable(
            c.auth_window, c.max_auth_failures_per_user, c.auth_ban_time, c.max_tracked
        )
        self._auth_by_source = _RateTable(
            c.auth_window, c.max_auth_failures_per_source, c.auth_ban_time, c.max_tracked
        )
        # source address -> its key: ipaddress parsing costs microseconds and every request asks. Bounded
        # (cleared when full), so rotating addresses cannot grow it.
        self._source_keys: dict[str, str] = {}

    def source_key(self, source_ip: str) -> str:
        key = self._source_keys.get(source_ip)
        if key is None:
            key = self._source_key(source_ip)
            if len(self._source_keys) >= _SOURCE_KEY_CACHE:
                self._source_keys.clear()
            self._source_keys[source_ip] = key
        return key

    def _source_key(self, source_ip: str) -> str:
        try:
            address = ipaddress.ip_address(source_ip)
        except ValueError:
            return source_ip[:64]
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            network = ipaddress.IPv6Network((address, self.config.ipv6_prefix), strict=False)
            return str(network)
        return str(address)

    # -- request rate -------------------------------------------------------------------------------

    def check_request(self, source_ip: str, now: float) -> Verdict:
        """Count one request from ``source_ip``; tell the caller whether to process it."""
        if source_ip in self.config.exempt_sources:
            self.stats.allowed += 1
            return Verdict.ALLOW
        banned, newly_banned = self._requests.hit(self.source_key(source_ip), now)
        self.stats.bans += newly_banned
        if not banned:
            self.stats.allowed += 1
            return Verdict.ALLOW
        if self.config.policy is BanPolicy.REJECT_503:
            self.stats.rejected_503 += 1
            return Verdict.REJECT_503
        self.stats.dropped += 1
        return Verdict.DROP

    def is_banned(self, source_ip: str, now: float) -> bool:
        return self._requests.banned(self.source_key(source_ip), now)

    # -- authentication failures ----------------------------------------------------------------

    def auth_blocked(self, username: str, source_ip: str, now: float) -> bool:
        """True when this user or source failed too often: refuse without checking the password."""
        blocked = self._auth_by_user.banned(username, now) or self._auth_by_source.banned(
            self.source_key(source_ip), now
        )
        self.stats.auth_blocked += blocked
        return blocked

    def record_auth_failure(self, username: str, source_ip: str, now: float) -> None:
        self.stats.auth_failures += 1
        _, user_banned = self._auth_by_user.hit(username, now)
        _, source_banned = self._auth_by_source.hit(self.source_key(source_ip), now)
        self.stats.auth_bans += user_banned + source_banned

    def record_auth_success(self, username: str, now: float) -> None:
        """A correct password clears the user's failure history (not the source's)."""
        if not self._auth_by_user.banned(username, now):
            self._auth_by_user.reset(username)

    # -- housekeeping ---------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Drop idle, unbanned keys; call periodically (e.g. every window)."""
        for table in (self._requests, self._auth_by_user, self._auth_by_source):
            table.sweep(now)

    @property
    def tracked(self) -> int:
        return sum(len(t.entries) for t in (self._requests, self._auth_by_user, self._auth_by_source))

    @property
    def evictions(self) -> int:
        return sum(t.evictions for t in (self._requests, self._auth_by_user, self._auth_by_source))
