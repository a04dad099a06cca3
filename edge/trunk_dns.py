"""Trunk host names resolved off the event loop, at start and then periodically, into :class:`TrunkAddresses`.

    addresses = config.trunk_addresses          # the holder routing and call control read
    trunk_dns = TrunkDns(config.trunks, addresses, refresh_interval=60.0, registry=REGISTRY)
    await trunk_dns.start()     # before call control: resolves every named trunk once (bounded in time)
    ...
    await trunk_dns.stop()

Only trunks whose ``host`` is a DNS name are looked up; an IP host is used as it is. Each lookup is
``loop.getaddrinfo`` (A and AAAA) under a timeout. A static trunk names its next hop as ``host:port``, so
RFC 3263's NAPTR/SRV steps do not apply: the address records of the host are all we need. A failed
refresh (error, timeout, empty answer) keeps the last good addresses, logs ``trunk dns resolution
failed`` with the trunk name and counts ``uc_sip_trunk_dns_failures``; a trunk never resolved has no
address, and calls to it are refused with 503 until a refresh succeeds.

Calls use every address: an INVITE that gets no response, a transport error or a 503 from one address
goes on to the next (RFC 3263 §4.3, done by the call itself). While started, each such move is logged
here as ``trunk address failed, trying next`` (trunk, address, reason, next address; the line carries the
call's ids) and counted in ``uc_sip_trunk_failovers``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from edge.logs import get_logger
from signaling.callcontrol.config import Trunk, TrunkAddresses, TrunkFailover

log = get_logger("uc_edge.trunk_dns")

DEFAULT_REFRESH_INTERVAL = 60.0
DEFAULT_TIMEOUT = 5.0
# A trunk without any address yet is looked up again this soon (or at the refresh interval, if
# shorter): waiting a whole interval would refuse its calls needlessly long after a DNS blip at start.
UNRESOLVED_RETRY = 5.0


class HostResolver(Protocol):
    async def __call__(self, host: str, port: int, transport: str) -> Sequence[str]:
        """The IP addresses ``host`` resolves to (A and AAAA), in preference order."""
        ...


async def resolve_with_loop(host: str, port: int, transport: str) -> Sequence[str]:
    """``loop.getaddrinfo``: the system resolver (hosts file, DNS) in the loop's thread pool."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    found = await asyncio.get_running_loop().getaddrinfo(host, port, family=socket.AF_UNSPEC, type=kind)
    return [str(sockaddr[0]) for _family, _type, _proto, _name, sockaddr in found]


@dataclasses.dataclass(slots=True)
class TrunkDnsStats:
    lookups: int = 0
    failures: int = 0
    last_error: str | None = None


class TrunkDns:
    """Keeps ``addresses`` filled for every trunk in ``trunks`` whose host is a name.

    ``families``: per transport, the address family our socket for it sends from (the UDP listener's);
    addresses of that family are put first, since the first address is where requests go."""

    def __init__(
        self,
        trunks: Iterable[Trunk],
        addresses: TrunkAddresses,
        *,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        resolver: HostResolver = resolve_with_loop,
        families: Mapping[str, socket.AddressFamily] | None = None,
        registry: CollectorRegistry | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if refresh_interval <= 0 or timeout <= 0:
            raise ValueError("refresh_interval and timeout must be positive")
        self.trunks = tuple(trunk for trunk in trunks if trunk.host_is_name)
        self.addresses = addresses
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self.stats: dict[str, TrunkDnsStats] = {trunk.name: TrunkDnsStats() for trunk in self.trunks}
        self._resolver = resolver
        self._families = dict(families or {})
        self._registry = registry
        self._collector: TrunkDnsCollector | None = None
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Resolve every named trunk once (each bounded by ``timeout``), then keep refreshing."""
        if not self.trunks:
            return
        self.addresses.remove_listener(_log_failover)  # started twice: still one line per failover
        self.addresses.add_listener(_log_failover)
        if self._registry is not None and self._collector is None:
            self._collector = TrunkDnsCollector(self)
            self._registry.register(self._collector)
        await self.refresh()
        self._task = asyncio.ensure_future(self._keep_refreshing())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.addresses.remove_listener(_log_failover)
        if self._registry is not None and self._collector is not None:
            self._registry.unregister(self._collector)
            self._collector = None

    async def refresh(self) -> None:
        """Look every named trunk up once, concurrently; failures keep the previous answer."""
        await asyncio.gather(*(self._refresh_one(trunk) for trunk in self.trunks))

    def next_delay(self) -> float:
        """Seconds until the next refresh: sooner while some trunk has no address at all."""
        if any(not self.addresses.get(trunk.name) for trunk in self.trunks):
            return min(self.refresh_interval, UNRESOLVED_RETRY)
        return self.refresh_interval

    def snapshot(self) -> list[dict[str, object]]:
        """Per named trunk: host, current addresses, lookups, failures, last error, failovers."""
        return [
            {
                "name": trunk.name,
                "host": trunk.host,
                "addresses": list(self.addresses.get(trunk.name)),
                **dataclasses.asdict(self.stats[trunk.name]),
                "failovers": self.addresses.failovers(trunk.name),
            }
            for trunk in self.trunks
        ]

    # ------------------------------------------------------------------ plumbing

    async def _keep_refreshing(self) -> None:
        while True:
            await self._sleep(self.next_delay())
            await self.refresh()

    async def _refresh_one(self, trunk: Trunk) -> None:
        stats = self.stats[trunk.name]
        stats.lookups += 1
        try:
            async with asyncio.timeout(self.timeout):
                found = await self._resolver(trunk.host, trunk.port, trunk.transport)
            if not found:
                raise LookupError("no A or AAAA record")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # OSError (socket.gaierror), TimeoutError, a resolver's own failure
            stats.failures += 1
            stats.last_error = str(error) or type(error).__name__
            kept = self.addresses.get(trunk.name)
            log.warning(
                "trunk dns resolution failed",
                trunk=trunk.name,
                host=trunk.host,
                error=stats.last_error,
                kept=list(kept) if kept else None,
            )
            return
        stats.last_error = None
        ordered = self._preferred_first(trunk.transport, found)
        if ordered != self.addresses.get(trunk.name):
            log.info("trunk dns resolved", trunk=trunk.name, host=trunk.host, addresses=list(ordered))
        self.addresses.set(trunk.name, ordered)

    def _preferred_first(self, transport: str, found: Sequence[str]) -> tuple[str, ...]:
        unique = tuple(dict.fromkeys(found))
        family = self._families.get(transport)
        if family is None:
            return unique
        wants_ipv6 = family == socket.AF_INET6
        # a stable sort: the resolver's order (RFC 6724) holds within each family
        return tuple(sorted(unique, key=lambda address: (":" in address) != wants_ipv6))


def _log_failover(failover: TrunkFailover) -> None:
    log.warning(
        "trunk address failed, trying next",
        trunk=failover.trunk,
        address=failover.address,
        reason=failover.reason,
        next_address=failover.next_address,
    )


class TrunkDnsCollector(Collector):
    """Per named trunk: lookups, failures and how many addresses are held, read at scrape time."""

    def __init__(self, trunk_dns: TrunkDns) -> None:
        self._trunk_dns = trunk_dns

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        lookups = CounterMetricFamily(
            "uc_sip_trunk_dns_lookups", "trunk host name lookups begun", labels=["trunk"]
        )
        failures = CounterMetricFamily(
            "uc_sip_trunk_dns_failures",
            "trunk host name lookups that failed (the last good addresses were kept)",
            labels=["trunk"],
        )
        held = GaugeMetricFamily(
            "uc_sip_trunk_dns_addresses",
            "addresses a trunk host name resolves to now (0: calls to it get 503)",
            labels=["trunk"],
        )
        failovers = CounterMetricFamily(
            "uc_sip_trunk_failovers",
            "INVITEs to one address of a trunk that failed (no response, transport error, 503) and went "
            "on to its next address",
            labels=["trunk"],
        )
        trunk_dns = self._trunk_dns
        for trunk in trunk_dns.trunks:
            stats = trunk_dns.stats[trunk.name]
            lookups.add_metric([trunk.name], float(stats.lookups))
            failures.add_metric([trunk.name], float(stats.failures))
            held.add_metric([trunk.name], float(len(trunk_dns.addresses.get(trunk.name))))
            failovers.add_metric([trunk.name], float(trunk_dns.addresses.failovers(trunk.name)))
        yield lookups
        yield failures
        yield held
        yield failovers

    def describe(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        return []
