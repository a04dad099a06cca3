"""Trunk host names resolved by :class:`TrunkDns` with a fake resolver (no sockets, no DNS): which trunks
are looked up, family order, keep-last-good on failure and timeout, the refresh schedule (a fake sleep
stepped by hand), metrics and the grep-able warning."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
from prometheus_client.registry import CollectorRegistry
from structlog.testing import capture_logs

from edge.trunk_dns import UNRESOLVED_RETRY, TrunkDns
from edge.trunk_registration import TrunkRegistrations
from signaling.callcontrol.config import Trunk, TrunkAddresses, TrunkFailover
from signaling.sip.message import Request, Response, build_response
from signaling.sip.outbound_registration import RegistrationState
from signaling.sip.routing import TransportAddress

CARRIER = Trunk(name="carrier", host="sip.carrier.test", register=True, username="edge", password="pw")
BACKUP = Trunk(name="backup", host="backup.carrier.test", prefixes=("00",))
BY_ADDRESS = Trunk(name="by-address", host="198.51.100.7")


class FakeResolver:
    """Answers from ``answers`` (a list of addresses, or an exception to raise); records each lookup."""

    def __init__(self, answers: dict[str, Sequence[str] | Exception]) -> None:
        self.answers = answers
        self.lookups: list[tuple[str, int, str]] = []
        self.hang: set[str] = set()  # hosts whose lookup never completes

    async def __call__(self, host: str, port: int, transport: str) -> Sequence[str]:
        self.lookups.append((host, port, transport))
        if host in self.hang:
            await asyncio.Event().wait()
        answer = self.answers[host]
        if isinstance(answer, Exception):
            raise answer
        return answer


class SteppedSleep:
    """A sleep that returns only when the test lets it: records each requested delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._wake: asyncio.Queue[None] = asyncio.Queue()
        self.waiting = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.waiting.set()
        await self._wake.get()
        self.waiting.clear()

    async def step(self) -> None:
        """Wake the sleeper and wait until it sleeps again (one refresh done)."""
        self.waiting.clear()
        self._wake.put_nowait(None)
        await asyncio.wait_for(self.waiting.wait(), 5)


async def test_start_resolves_only_named_trunks_and_fills_the_holder() -> None:
    resolver = FakeResolver(
        {"sip.carrier.test": ["203.0.113.5", "2001:db8::5"], "backup.carrier.test": ["203.0.113.9"]}
    )
    addresses = TrunkAddresses()
    dns = TrunkDns([CARRIER, BACKUP, BY_ADDRESS], addresses, resolver=resolver, sleep=SteppedSleep())
    await dns.start()
    try:
        assert sorted(resolver.lookups) == [
            ("backup.carrier.test", 5060, "udp"),
            ("sip.carrier.test", 5060, "udp"),
        ]
        assert addresses.get("carrier") == ("203.0.113.5", "2001:db8::5")
        assert addresses.get("backup") == ("203.0.113.9",)
        assert addresses.get("by-address") == ()
        assert addresses.transport_host(BY_ADDRESS) == "198.51.100.7"  # an IP host is used as it is
    finally:
        await dns.stop()


async def test_the_family_of_our_socket_comes_first() -> None:
    resolver = FakeResolver(
        {"sip.carrier.test": ["2001:db8::5", "203.0.113.5", "2001:db8::6", "203.0.113.6"]}
    )
    addresses = TrunkAddresses()
    dns = TrunkDns([CARRIER], addresses, resolver=resolver, families={"udp": socket.AF_INET})
    await dns.refresh()
    assert addresses.get("carrier") == ("203.0.113.5", "203.0.113.6", "2001:db8::5", "2001:db8::6")
    assert addresses.transport_host(CARRIER) == "203.0.113.5"
    dns6 = TrunkDns([CARRIER], addresses, resolver=resolver, families={"udp": socket.AF_INET6})
    await dns6.refresh()
    assert addresses.transport_host(CARRIER) == "2001:db8::5"


async def test_a_failed_refresh_keeps_the_last_good_answer_warns_and_counts() -> None:
    resolver = FakeResolver({"sip.carrier.test": ["203.0.113.5"]})
    addresses = TrunkAddresses()
    registry = CollectorRegistry()
    dns = TrunkDns([CARRIER], addresses, resolver=resolver, registry=registry, sleep=SteppedSleep())
    await dns.start()
    try:
        resolver.answers["sip.carrier.test"] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure")
        with capture_logs() as logs:
            await dns.refresh()
        assert addresses.get("carrier") == ("203.0.113.5",)  # kept
        (warning,) = [line for line in logs if line["event"] == "trunk dns resolution failed"]
        assert warning["trunk"] == "carrier" and warning["log_level"] == "warning"
        assert warning["kept"] == ["203.0.113.5"] and "Temporary failure" in warning["error"]

        resolver.answers["sip.carrier.test"] = []  # an empty answer is a failure too, not "no address"
        await dns.refresh()
        assert addresses.get("carrier") == ("203.0.113.5",)
        assert registry.get_sample_value("uc_sip_trunk_dns_failures_total", {"trunk": "carrier"}) == 2
        assert registry.get_sample_value("uc_sip_trunk_dns_lookups_total", {"trunk": "carrier"}) == 3
        assert registry.get_sample_value("uc_sip_trunk_dns_addresses", {"trunk": "carrier"}) == 1

        resolver.answers["sip.carrier.test"] = ["203.0.113.77"]  # the name moved: follow it
        await dns.refresh()
        assert addresses.get("carrier") == ("203.0.113.77",)
        assert dns.snapshot()[0]["last_error"] is None
    finally:
        await dns.stop()
    assert registry.get_sample_value("uc_sip_trunk_dns_failures_total", {"trunk": "carrier"}) is None


async def test_a_failover_of_a_call_is_logged_and_counted_while_started() -> None:
    resolver = FakeResolver({"backup.carrier.test": ["203.0.113.5", "203.0.113.6"]})
    addresses = TrunkAddresses()
    registry = CollectorRegistry()
    dns = TrunkDns([BACKUP], addresses, resolver=resolver, registry=registry, sleep=SteppedSleep())
    moved = TrunkFailover("backup", "203.0.113.5", "timeout", "203.0.113.6")
    await dns.start()
    await dns.start()  # started twice: still one line per failover
    try:
        assert registry.get_sample_value("uc_sip_trunk_failovers_total", {"trunk": "backup"}) == 0
        with capture_logs() as logs:
            addresses.note_failover(moved)  # what a call reports when it moves on (call.py)
        (line,) = [line for line in logs if line["event"] == "trunk address failed, trying next"]
        assert line["log_level"] == "warning"
        assert (line["trunk"], line["address"], line["reason"], line["next_address"]) == (
            "backup",
            "203.0.113.5",
            "timeout",
            "203.0.113.6",
        )
        assert registry.get_sample_value("uc_sip_trunk_failovers_total", {"trunk": "backup"}) == 1
        assert dns.snapshot()[0]["failovers"] == 1
    finally:
        await dns.stop()
    with capture_logs() as logs:
        addresses.note_failover(moved)
    assert logs == [] and addresses.failovers("backup") == 2  # counted, no longer logged


async def test_a_lookup_that_hangs_times_out_and_the_others_still_resolve() -> None:
    resolver = FakeResolver({"sip.carrier.test": ["203.0.113.5"], "backup.carrier.test": ["203.0.113.9"]})
    resolver.hang.add("sip.carrier.test")
    addresses = TrunkAddresses()
    dns = TrunkDns([CARRIER, BACKUP], addresses, resolver=resolver, timeout=0.05)
    await dns.refresh()
    assert addresses.get("carrier") == () and addresses.transport_host(CARRIER) is None
    assert addresses.get("backup") == ("203.0.113.9",)
    assert dns.stats["carrier"].failures == 1 and dns.stats["carrier"].last_error == "TimeoutError"


async def test_refreshes_follow_the_interval_sooner_while_a_trunk_has_no_address() -> None:
    resolver = FakeResolver({"sip.carrier.test": OSError("resolver down")})
    addresses = TrunkAddresses()
    sleep = SteppedSleep()
    dns = TrunkDns([CARRIER], addresses, resolver=resolver, refresh_interval=60.0, sleep=sleep)
    await dns.start()  # the first lookup fails: the node starts anyway
    try:
        await asyncio.wait_for(sleep.waiting.wait(), 5)
        assert addresses.get("carrier") == () and sleep.delays == [UNRESOLVED_RETRY]
        resolver.answers["sip.carrier.test"] = ["203.0.113.5"]
        await sleep.step()
        assert addresses.get("carrier") == ("203.0.113.5",)
        assert sleep.delays == [UNRESOLVED_RETRY, 60.0]
        resolver.answers["sip.carrier.test"] = OSError("resolver down")
        await sleep.step()
        assert addresses.get("carrier") == ("203.0.113.5",)  # kept, so the normal interval
        assert sleep.delays[-1] == 60.0 and len(resolver.lookups) == 3
    finally:
        await dns.stop()
    assert dns._task is None


async def test_no_named_trunk_no_task_and_no_metrics() -> None:
    registry = CollectorRegistry()
    dns = TrunkDns([BY_ADDRESS], TrunkAddresses(), resolver=FakeResolver({}), registry=registry)
    await dns.start()
    assert dns._task is None and list(registry.collect()) == []
    await dns.stop()


def test_settings_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TrunkDns([CARRIER], TrunkAddresses(), refresh_interval=0)


class FakeHub:
    """What TrunkRegistrations uses of the hub: the clock, a listener address, ``request`` (answered 200)."""

    def __init__(self) -> None:
        self.endpoint = SimpleNamespace(local_addresses={"udp": ("192.0.2.1", 5060)})
        self.destinations: list[TransportAddress] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def now(self) -> float:
        return self.loop.time()

    async def request(self, request: Request, destination: TransportAddress) -> Response:
        self.destinations.append(destination)
        contact = request.headers.get("Contact") or ""
        return build_response(request, 200, headers=[("Contact", f"{contact};expires=600")])


async def test_a_registration_waits_for_its_name_then_goes_to_the_resolved_address() -> None:
    addresses = TrunkAddresses()
    hub = FakeHub()
    waiting = TrunkRegistrations(hub, [CARRIER], addresses=addresses, retry_base=600.0)  # type: ignore[arg-type]
    await waiting.start()
    await asyncio.gather(*waiting._tasks)
    status = waiting.clients["carrier"].status()
    assert hub.destinations == [] and status.state is RegistrationState.RETRYING
    assert status.last_reason == "host sip.carrier.test is not resolved yet"
    await waiting.stop()

    addresses.set("carrier", ["203.0.113.5"])
    registrations = TrunkRegistrations(hub, [CARRIER], addresses=addresses)  # type: ignore[arg-type]
    await registrations.start()
    await asyncio.gather(*registrations._tasks)
    assert registrations.clients["carrier"].state is RegistrationState.REGISTERED
    assert hub.destinations == [TransportAddress("udp", "203.0.113.5", 5060)]
    await registrations.stop()
    assert hub.destinations[-1] == TransportAddress("udp", "203.0.113.5", 5060)  # the unregister too
