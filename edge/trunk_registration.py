"""Outbound registration to trunks: the asyncio shell around :class:`RegistrationClient` (one per trunk).

    registrations = TrunkRegistrations(hub, trunks, registry=REGISTRY)
    await registrations.start()      # after hub.start(): our Contact is the hub's listening address
    registrations.snapshot()         # for /api/v1/node
    await registrations.stop()       # before hub.stop(): unregisters (Expires: 0), bounded in time

A trunk whose host is a DNS name registers at the address the node resolved it to (``addresses``, kept
by edge/trunk_dns.py), looked up for every REGISTER so a refresh follows the name; the registrar URI,
AOR and To keep the name. While the name has no address, the attempt fails and is retried with backoff.

Each REGISTER goes out as a client transaction of the node's endpoint (``hub.request``), so it is
retransmitted and timed out like any other request; the outcome is fed back into the client. One loop
timer per client follows ``client.get_timer()``. The clock is the hub's (``loop.time()``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from edge.logs import get_logger
from signaling.callcontrol.config import Trunk, TrunkAddresses
from signaling.sip.dialog import LocalAddress
from signaling.sip.outbound_registration import (
    RegistrationClient,
    RegistrationConfig,
    RegistrationState,
    SendRegister,
    StatusChanged,
)
from signaling.sip.routing import TransportAddress
from signaling.transport.hub import SipTransportHub

log = get_logger("uc_edge.trunk_registration")

DEFAULT_STOP_TIMEOUT = 5.0


def registration_config(trunk: Trunk, local: LocalAddress, **policy: Any) -> RegistrationConfig:
    """The binding ``trunk`` asks for, with our Contact at ``local``. ``policy``: refresh_margin,
    retry_base, retry_max (see :class:`RegistrationConfig`)."""
    user = trunk.registration_user
    if user is None:
        raise ValueError(f"trunk {trunk.name}: register needs register_user or username")
    domain = trunk.registration_domain
    transport = "" if trunk.transport == "udp" else f";transport={trunk.transport}"
    # Without a separate domain the registrar is the trunk's host:port itself.
    registrar = f"sip:{domain}" if trunk.register_domain else f"sip:{trunk.host}:{trunk.port}{transport}"
    host = f"[{local.host}]" if ":" in local.host and not local.host.startswith("[") else local.host
    return RegistrationConfig(
        name=trunk.name,
        registrar_uri=registrar,
        aor=f"sip:{user}@{domain}",
        contact=f"<sip:{user}@{host}:{local.port}{transport}>",
        destination=TransportAddress(trunk.transport, trunk.host, trunk.port),  # type: ignore[arg-type]
        local=local,
        username=trunk.username,
        password=trunk.password,
        expires=trunk.register_expires,
        **policy,
    )


class TrunkRegistrations:
    """Every trunk with ``register = true``, kept registered while the node runs."""

    def __init__(
        self,
        hub: SipTransportHub,
        trunks: Iterable[Trunk],
        *,
        registry: CollectorRegistry | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        random_fraction: Callable[[], float] = random.random,
        addresses: TrunkAddresses | None = None,
        **policy: Any,
    ) -> None:
        self.hub = hub
        self.trunks = tuple(trunk for trunk in trunks if trunk.register)
        # None: names go to the hub as they are (it resolves them per request, off the loop)
        self.addresses = addresses
        self._by_name = {trunk.name: trunk for trunk in self.trunks}
        self.stop_timeout = stop_timeout
        self.clients: dict[str, RegistrationClient] = {}
        self.unavailable: dict[str, str] = {}  # trunk -> why it cannot register (no listener...)
        self._policy = policy
        self._random = random_fraction
        self._registry = registry
        self._collector: TrunkRegistrationCollector | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        now = self.hub.now()
        for trunk in self.trunks:
            address = self.hub.endpoint.local_addresses.get(trunk.transport)
            if address is None:
                reason = f"no {trunk.transport} listener to register from"
                self.unavailable[trunk.name] = reason
                log.error("trunk registration unavailable", trunk=trunk.name, reason=reason)
                continue
            local = LocalAddress(trunk.transport.upper(), address[0], address[1])
            client = RegistrationClient(
                registration_config(trunk, local, **self._policy), random_fraction=self._random
            )
            self.clients[trunk.name] = client
            client.start(now)
            self._pump(client)
        if self._registry is not None and self.trunks and self._collector is None:
            self._collector = TrunkRegistrationCollector(self)
            self._registry.register(self._collector)

    async def stop(self) -> None:
        """Unregister every trunk; give up waiting after ``stop_timeout`` seconds."""
        self._stopping = True
        now = self.hub.now()
        for client in self.clients.values():
            client.unregister(now)
            self._pump(client)
        try:
            await asyncio.wait_for(self._all_stopped(), self.stop_timeout)
        except TimeoutError:
            waiting = [name for name, c in self.clients.items() if c.state is not RegistrationState.STOPPED]
            log.warning("trunk unregistration unfinished", trunks=waiting)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._registry is not None and self._collector is not None:
            self._registry.unregister(self._collector)
            self._collector = None

    def snapshot(self) -> list[dict[str, object]]:
        """Per trunk: state, AOR, registrar, last status and reason, granted expiry, next attempt."""
        now = self.hub.now()
        found: list[dict[str, object]] = [client.status().as_dict(now) for client in self.clients.values()]
        found += [
            {"name": name, "state": "unavailable", "last_reason": reason}
            for name, reason in self.unavailable.items()
        ]
        return found

    # ------------------------------------------------------------------ plumbing

    async def _all_stopped(self) -> None:
        while any(client.state is not RegistrationState.STOPPED for client in self.clients.values()):
            self._changed.clear()
            await self._changed.wait()

    def _pump(self, client: RegistrationClient) -> None:
        while (action := client.next_action()) is not None:
            if isinstance(action, SendRegister):
                task = asyncio.ensure_future(self._transact(client, action))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(action, StatusChanged):
                self._log(action)
        self._changed.set()
        self._arm(client)

    def _arm(self, client: RegistrationClient) -> None:
        name = client.config.name
        previous = self._timers.pop(name, None)
        if previous is not None:
            previous.cancel()
        deadline = client.get_timer()
        if deadline is not None and not self._stopping:
            self._timers[name] = self.hub.loop.call_at(deadline, self._on_timer, client)

    def _on_timer(self, client: RegistrationClient) -> None:
        self._timers.pop(client.config.name, None)
        client.handle_timer(self.hub.now())
        self._pump(client)

    def _destination(
        self, client: RegistrationClient, configured: TransportAddress
    ) -> TransportAddress | None:
        """Where this REGISTER goes: the configured host, or the address its name resolves to now
        (None while it has none)."""
        trunk = self._by_name.get(client.config.name)
        if trunk is None or not trunk.host_is_name or self.addresses is None:
            return configured
        host = self.addresses.transport_host(trunk)
        if host is None:
            return None
        return dataclasses.replace(configured, host=host, server_name=self.addresses.server_name(trunk))

    async def _transact(self, client: RegistrationClient, action: SendRegister) -> None:
        destination = self._destination(client, action.destination)
        if destination is None:
            host = action.destination.host
            client.request_failed(action.request, f"host {host} is not resolved yet", self.hub.now())
            self._pump(client)
            return
        try:
            response = await self.hub.request(action.request, destination)
        except (TimeoutError, ConnectionError) as error:
            client.request_failed(action.request, str(error) or type(error).__name__, self.hub.now())
        except Exception as error:  # a request the endpoint refused to send (a bug or a closed hub)
            log.exception("trunk REGISTER could not be sent", trunk=client.config.name)
            client.request_failed(action.request, f"not sent: {error}", self.hub.now())
        else:
            client.receive_response(response, self.hub.now())
        self._pump(client)

    @staticmethod
    def _log(action: StatusChanged) -> None:
        status = action.status
        fields = {
            "trunk": status.name,
            "state": status.state.value,
            "status": status.last_status,
            "reason": status.last_reason,
        }
        if status.state in (RegistrationState.RETRYING, RegistrationState.FAILED):
            log.warning("trunk registration failed", failures=status.consecutive_failures, **fields)
        elif status.state in (RegistrationState.REGISTERED, RegistrationState.STOPPED):
            log.info("trunk registration", expires=status.expires, **fields)
        else:
            log.debug("trunk registration", **fields)


def trunk_registration_lines(rows: Iterable[dict[str, object]]) -> list[str]:
    """``snapshot()`` rows (as served by /api/v1/node) as one tab-separated line per trunk, for the CLI."""
    lines = []
    for row in rows:
        status = row.get("last_status")
        parts = [
            str(row.get("name", "?")),
            str(row.get("state", "?")),
            str(row.get("aor") or "-"),
            f"status {status}" if status is not None else "status -",
        ]
        if row.get("expires_in") is not None:
            parts.append(f"expires in {row['expires_in']}s")
        if row.get("next_attempt_in") is not None:
            parts.append(f"next attempt in {row['next_attempt_in']}s")
        parts.append(str(row.get("last_reason") or ""))
        lines.append("\t".join(parts))
    return lines or ["no trunk registrations"]


class TrunkRegistrationCollector(Collector):
    """Per-trunk registration state and counters, read from the clients at scrape time."""

    def __init__(self, registrations: TrunkRegistrations) -> None:
        self._registrations = registrations

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        clients = self._registrations.clients
        state = GaugeMetricFamily(
            "uc_sip_trunk_registration_state",
            "outbound registration state per trunk (1 for the current state)",
            labels=["trunk", "state"],
        )
        registered = GaugeMetricFamily(
            "uc_sip_trunk_registered", "1 when the trunk holds our binding", labels=["trunk"]
        )
        counters = {
            key: CounterMetricFamily(name, help_text, labels=["trunk"])
            for key, name, help_text in (
                (
                    "attempts",
                    "uc_sip_trunk_registration_attempts",
                    "trunk registrations and refreshes begun",
                ),
                ("failures", "uc_sip_trunk_registration_failures", "trunk registration attempts that failed"),
                ("requests_sent", "uc_sip_trunk_register_requests", "REGISTER requests sent to trunks"),
                (
                    "challenges_answered",
                    "uc_sip_trunk_registration_challenges",
                    "digest challenges answered while registering to trunks",
                ),
            )
        }
        for name, client in clients.items():
            current = client.state
            for candidate in RegistrationState:
                state.add_metric([name, candidate.value], 1.0 if candidate is current else 0.0)
            registered.add_metric([name], 1.0 if current is RegistrationState.REGISTERED else 0.0)
            stats = client.stats.as_dict()
            for key, family in counters.items():
                family.add_metric([name], float(stats[key]))
        yield state
        yield registered
        yield from counters.values()

    def describe(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        return []
