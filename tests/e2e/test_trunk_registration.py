"""Outbound registration to a real registrar: Kamailio with digest auth on loopback.

The node side is the real shell (:class:`TrunkRegistrations`) over a real transport hub and endpoint. The
binding is checked in Kamailio twice over: its user location table (``kamcmd ul.lookup``) and by routing
an OPTIONS to ``sip:edge@kamailio``, which reaches our hub only while the binding exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edge.trunk_registration import TrunkRegistrations
from signaling.callcontrol.config import Trunk
from signaling.sip.endpoint import SipEndpoint
from signaling.sip.message import Response, parse_message
from signaling.sip.outbound_registration import RegistrationClient, RegistrationState
from signaling.sip.timers import TimerSettings
from signaling.transport.application import SipRouter
from signaling.transport.hub import SipTransportHub
from tests.e2e.conftest import free_port, kill_group, require_binary, run_bounded

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).resolve().parents[1] / "data" / "kamailio-trunk-registrar.cfg"
USER = "edge"
PASSWORD = "trunkpass"
HOST = "127.0.0.1"


@dataclass
class Kamailio:
    port: int
    ctl: Path
    log: Path

    def lookup(self) -> str:
        """Kamailio's bindings for USER (``ul.lookup``), or its 'not found' error."""
        kamcmd = require_binary("kamcmd")
        result = run_bounded([kamcmd, "-s", f"unix:{self.ctl}", "ul.lookup", "location", USER], timeout=10)
        return result.stdout + result.stderr

    def options_to_user(self) -> Response | None:
        """An OPTIONS to sip:USER@kamailio: Kamailio relays it to USER's bindings or answers 404."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            sock.settimeout(5.0)
            local = sock.getsockname()[1]
            request = (
                f"OPTIONS sip:{USER}@{HOST}:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:probe@{HOST}>;tag=probe\r\n"
                f"To: <sip:{USER}@{HOST}>\r\n"
                f"Call-ID: {uuid.uuid4().hex}@{HOST}\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            sock.sendto(request.encode(), (HOST, self.port))
            try:
                while True:
                    message = parse_message(sock.recv(65_536))
                    if isinstance(message, Response) and message.code >= 200:
                        return message
            except TimeoutError:
                return None


def probe(port: int) -> bool:
    """Whether something answers SIP on ``port`` (any response to an OPTIONS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(0.3)
        local = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:nobody@{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK{uuid.uuid4().hex[:16]}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@{HOST}>;tag=1\r\nTo: <sip:nobody@{HOST}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (HOST, port))
        try:
            return bool(sock.recv(65_536))
        except (TimeoutError, ConnectionRefusedError):
            return False


@contextlib.contextmanager
def kamailio(workdir: Path, **defines: int) -> Iterator[Kamailio]:
    binary = require_binary("kamailio")
    port = free_port()
    ctl = workdir / "kamailio.ctl"
    log = workdir / "kamailio.log"
    arguments = [f"LISTEN=udp:{HOST}:{port}", f'CTL="unix:{ctl}"', f'PASSWORD="{PASSWORD}"', f'USER="{USER}"']
    arguments += [f"{name}={value}" for name, value in defines.items()]
    command = [binary, "-f", str(CONFIG), "-DD", "-E", "-n", "1", "-m", "64", "-M", "8"]
    command += ["-Y", str(workdir), "-P", str(workdir / "kamailio.pid")]
    command += [arg for define in arguments for arg in ("-A", define)]
    with open(log, "w") as output:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True
        )
    try:
        for _ in range(50):
            if process.poll() is not None or probe(port):
                break
        if process.poll() is not None or not probe(port):
            pytest.fail(f"kamailio did not start: {log.read_text()[-2000:]}")
        yield Kamailio(port, ctl, log)
    finally:
        kill_group(process)


async def eventually(predicate: Callable[[], bool], within: float) -> bool:
    """Wait (without blocking the loop) until ``predicate()`` holds; False after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@contextlib.asynccontextmanager
async def node_hub(t1: float = 0.5) -> AsyncIterator[SipTransportHub]:
    """Our side: a real endpoint and hub on a free UDP port, answering OPTIONS like a node does."""
    hub = SipTransportHub(SipEndpoint(timers=TimerSettings(t1=t1)), application=SipRouter())
    await hub.start(HOST, udp_port=0, tcp_port=None)
    try:
        yield hub
    finally:
        await hub.stop()


def trunk(port: int, **fields: object) -> Trunk:
    values: dict[str, object] = {"username": USER, "password": PASSWORD, "register": True}
    values.update(fields)
    return Trunk("carrier", HOST, port, **values)  # type: ignore[arg-type]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"trunk": "carrier", **labels})


async def test_registers_with_digest_refreshes_and_unregisters_on_stop(tmp_path: Path) -> None:
    # Kamailio grants at most 4 s whatever we ask (max_expires): refreshes come every 2 s.
    with kamailio(tmp_path, MAX_EXPIRES=4) as registrar:
        async with node_hub() as hub:
            assert hub.udp_address is not None
            our_contact = f"sip:{USER}@{HOST}:{hub.udp_address[1]}"
            registry = CollectorRegistry()
            registrations = TrunkRegistrations(hub, [trunk(registrar.port)], registry=registry)
            await registrations.start()
            client: RegistrationClient = registrations.clients["carrier"]
            try:
                assert await eventually(lambda: client.state is RegistrationState.REGISTERED, 15), (
                    client.status(),
                    registrar.log.read_text()[-2000:],
                )
                assert client.status().expires == 4  # read from our Contact in Kamailio's 200
                assert client.stats.challenges_answered == 1

                bindings = await asyncio.to_thread(registrar.lookup)
                assert our_contact in bindings, bindings
                relayed = await asyncio.to_thread(registrar.options_to_user)
                assert relayed is not None and relayed.code == 200
                assert relayed.headers.get("Allow") == SipRouter().allow  # answered by our hub

                # Two refreshes later the binding has outlived the first grant, and no refresh was
                # challenged: the kept nonce was reused with a higher nonce-count.
                assert await eventually(lambda: client.stats.registrations >= 3, 30), client.status()
                assert client.state is RegistrationState.REGISTERED
                assert client.stats.failures == 0 and client.stats.challenges_answered == 1
                assert our_contact in await asyncio.to_thread(registrar.lookup)

                assert sample(registry, "uc_sip_trunk_registration_state", state="registered") == 1.0
                assert sample(registry, "uc_sip_trunk_registration_state", state="failed") == 0.0
                assert sample(registry, "uc_sip_trunk_registered") == 1.0
                attempts = sample(registry, "uc_sip_trunk_registration_attempts_total")
                assert attempts is not None and attempts >= 3
                assert sample(registry, "uc_sip_trunk_registration_failures_total") == 0.0
                (snapshot,) = registrations.snapshot()
                assert snapshot["state"] == "registered" and snapshot["expires"] == 4
                assert snapshot["aor"] == f"sip:{USER}@{HOST}"
            finally:
                await registrations.stop()

            assert client.state is RegistrationState.STOPPED
            assert client.stats.unregistrations == 1
            assert sample(registry, "uc_sip_trunk_registered") is None  # collector removed on stop
            assert "AOR not found" in await asyncio.to_thread(registrar.lookup)
            gone = await asyncio.to_thread(registrar.options_to_user)
            assert gone is not None and gone.code == 404


async def test_interval_too_brief_is_retried_with_kamailios_min_expires(tmp_path: Path) -> None:
    with kamailio(tmp_path, MIN_EXPIRES=120) as registrar:
        async with node_hub() as hub:
            registrations = TrunkRegistrations(hub, [trunk(registrar.port, register_expires=60)])
            await registrations.start()
            client = registrations.clients["carrier"]
            try:
                assert await eventually(lambda: client.state is not RegistrationState.REGISTERING, 15)
                assert client.state is RegistrationState.REGISTERED, client.status()
                assert client.stats.interval_too_brief == 1
                assert client.expires == 120 and client.status().expires == 120
                assert f"sip:{USER}@{HOST}" in await asyncio.to_thread(registrar.lookup)
            finally:
                await registrations.stop()
            assert client.state is RegistrationState.STOPPED and client.stats.unregistrations == 1
            assert "AOR not found" in await asyncio.to_thread(registrar.lookup)
            gone = await asyncio.to_thread(registrar.options_to_user)
            assert gone is not None and gone.code == 404


async def test_wrong_password_fails_without_a_binding(tmp_path: Path) -> None:
    with kamailio(tmp_path) as registrar:
        async with node_hub() as hub:
            registry = CollectorRegistry()
            registrations = TrunkRegistrations(
                hub, [trunk(registrar.port, password="wrong")], registry=registry, retry_base=600.0
            )
            await registrations.start()
            client = registrations.clients["carrier"]
            try:
                assert await eventually(lambda: client.state is RegistrationState.FAILED, 15), client.status()
                assert client.status().last_status == 401
                assert client.status().last_reason == "credentials rejected"
                assert sample(registry, "uc_sip_trunk_registration_state", state="failed") == 1.0
                assert sample(registry, "uc_sip_trunk_registration_failures_total") == 1.0
                assert sample(registry, "uc_sip_trunk_registered") == 0.0
                assert "AOR not found" in await asyncio.to_thread(registrar.lookup)
                relayed = await asyncio.to_thread(registrar.options_to_user)
                assert relayed is not None and relayed.code == 404
            finally:
                await registrations.stop()
            # nothing was bound, so nothing is unregistered
            assert client.state is RegistrationState.STOPPED and client.stats.unregistrations == 0


async def test_a_silent_registrar_is_retried_and_stop_does_not_hang() -> None:
    """No answer at all (Timer F, shortened by a small T1): RETRYING with the reason, and stop() returns
    within its bound although the unregister is never answered either."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((HOST, 0))
        port = silent.getsockname()[1]
        async with node_hub(t1=0.02) as hub:
            registrations = TrunkRegistrations(hub, [trunk(port)], retry_base=600.0, stop_timeout=0.5)
            await registrations.start()
            client = registrations.clients["carrier"]
            assert await eventually(lambda: client.state is RegistrationState.RETRYING, 15), client.status()
            assert "Timer F" in client.status().last_reason
            assert client.status().last_status is None
            await registrations.stop()
            assert client.state is RegistrationState.UNREGISTERING  # gave up waiting, by design
        silent.settimeout(1.0)
        assert b"REGISTER" in silent.recv(65_536)  # the REGISTERs did go out


async def test_a_trunk_on_a_transport_we_do_not_listen_on_is_reported() -> None:
    async with node_hub() as hub:
        registrations = TrunkRegistrations(hub, [trunk(5060, transport="tcp")])
        await registrations.start()
        try:
            assert registrations.clients == {}
            assert registrations.snapshot() == [
                {"name": "carrier", "state": "unavailable", "last_reason": "no tcp listener to register from"}
            ]
        finally:
            await registrations.stop()
