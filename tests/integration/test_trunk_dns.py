"""A trunk named ``localhost``, resolved for real through ``loop.getaddrinfo`` by :class:`TrunkDns`, on
loopback sockets: an INVITE through the real CallControlService and the outbound REGISTER reach a UDP
socket the test owns at the resolved address, while the Request-URI, To and registrar URI keep the name;
calls from that address are then accepted as the registering trunk's.

Only loopback sockets and the system resolver (``localhost`` from /etc/hosts): no services needed.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from edge.trunk_dns import TrunkDns
from edge.trunk_registration import TrunkRegistrations
from signaling.callcontrol.actions import RouteQuery, RouteToContacts
from signaling.callcontrol.call import CallEnvironment
from signaling.callcontrol.config import CallControlConfig, Trunk
from signaling.callcontrol.fakes import RecordingMediaControl
from signaling.callcontrol.router import CallRouter
from signaling.callcontrol.service import CallControlService
from signaling.flood import FloodConfig, FloodGuard
from signaling.sip.dialog import LocalAddress
from signaling.sip.digest import DigestAuthenticator
from signaling.sip.endpoint import SipEndpoint
from signaling.sip.message import Request, build_response, parse_message, serialize
from signaling.sip.outbound_registration import RegistrationState
from signaling.sip.timers import TimerSettings
from signaling.transport.application import SipRouter
from signaling.transport.hub import SipTransportHub
from storage.memory.hot import MemoryLocationStore
from storage.memory.sql_domains import MemoryCallRepository, MemoryCdrRepository
from storage.ports import CallRepository

TIMERS = TimerSettings(t1=0.1, t2=0.4)


class TrunkSocket(asyncio.DatagramProtocol):
    """The trunk: a UDP socket on 127.0.0.1 that keeps what it receives and answers REGISTERs 200."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[Request, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if not isinstance(message, Request):
            return
        self.received.put_nowait((message, addr))
        if message.method == "REGISTER" and self.transport is not None:
            contact = message.headers.get("Contact") or ""
            answer = build_response(message, 200, headers=[("Contact", f"{contact};expires=600")])
            self.transport.sendto(serialize(answer), addr)

    async def next(self, method: str) -> tuple[Request, tuple[str, int]]:
        while True:
            request, addr = await asyncio.wait_for(self.received.get(), 5)
            if request.method == method:
                return request, addr


@pytest.fixture
async def trunk_socket() -> AsyncIterator[tuple[TrunkSocket, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(TrunkSocket, local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def resolved(
    trunks: tuple[Trunk, ...], config: CallControlConfig, monkeypatch: pytest.MonkeyPatch
) -> TrunkDns:
    """The real resolver, our hub's UDP family (IPv4) first. Afterwards any other lookup on the loop
    fails: what is sent to the trunk must go to the address resolved here, not to the name."""
    dns = TrunkDns(trunks, config.trunk_addresses, families={"udp": socket.AF_INET})
    await dns.start()

    async def no_more_lookups(host: object, *args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_FAIL, f"unexpected lookup of {host}")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_more_lookups)
    return dns


async def test_an_invite_to_a_trunk_named_localhost_goes_to_its_address_and_keeps_the_name(
    trunk_socket: tuple[TrunkSocket, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    trunk_protocol, trunk_port = trunk_socket
    trunk = Trunk(name="loopback", host="localhost", port=trunk_port, prefixes=("00",))
    config = CallControlConfig(
        local_domains=frozenset({"uc-edge.local", "127.0.0.1"}), trunks=(trunk,), require_auth=False
    )
    dns = await resolved(config.trunks, config, monkeypatch)
    assert config.trunk_addresses.get("loopback")[0] == "127.0.0.1"
    route = CallRouter(config, location=MemoryLocationStore()).resolve_static(
        RouteQuery("0049301234", "uc-edge.local", None, None)
    )
    assert isinstance(route, RouteToContacts) and route.contacts[0].flow is not None
    assert route.contacts[0].flow.host == "127.0.0.1"

    hub, service = await call_node(config, MemoryCallRepository(node_id="it-node"))
    host, port = hub.endpoint.local_addresses["udp"]
    loop = asyncio.get_running_loop()
    caller, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    try:
        caller_port = caller.get_extra_info("sockname")[1]
        caller.sendto(invite("0049301234", caller_port), (host, port))
        request, source = await trunk_protocol.next("INVITE")
        assert str(request.uri) == f"sip:0049301234@localhost:{trunk_port}"
        assert "@localhost>" in (request.headers.get("To") or "")
        assert source == (host, port)  # sent by the node's UDP socket to the address localhost resolved to
    finally:
        caller.close()
        await service.stop()
        await hub.stop()
        await dns.stop()


async def call_node(
    config: CallControlConfig, calls: CallRepository, timers: TimerSettings = TIMERS
) -> tuple[SipTransportHub, CallControlService]:
    """Call control on a UDP hub bound to a free loopback port, in-memory repositories, media recorded;
    the caller stops both (service first)."""
    router = SipRouter()
    hub = SipTransportHub(SipEndpoint(timers=timers), application=router)
    await hub.start("127.0.0.1", 0, None)
    host, port = hub.endpoint.local_addresses["udp"]
    env = CallControlService.environment(
        CallEnvironment(config, {"udp": LocalAddress("UDP", host, port)}, timers=timers), hub.now
    )
    service = CallControlService(
        hub=hub,
        media=RecordingMediaControl(address="127.0.0.1"),
        calls=calls,
        cdrs=MemoryCdrRepository(node_id="it-node"),
        router=CallRouter(config, location=MemoryLocationStore()),
        env=env,
        authenticator=DigestAuthenticator("uc-edge", b"0123456789abcdef0123"),
        credentials=None,
        flood=FloodGuard(FloodConfig()),
    )
    service.install(router)
    await service.start()
    return hub, service


async def test_a_trunk_named_localhost_is_registered_at_its_address_and_trusted_from_it(
    trunk_socket: tuple[TrunkSocket, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    trunk_protocol, trunk_port = trunk_socket
    trunk = Trunk(
        name="carrier", host="localhost", port=trunk_port, register=True, username="edge", password="pw"
    )
    config = CallControlConfig(trunks=(trunk,))
    assert config.trunk_for_source("127.0.0.1") is None  # nothing resolved, nothing trusted
    dns = await resolved(config.trunks, config, monkeypatch)
    assert config.trunk_for_source("127.0.0.1") is trunk

    hub = SipTransportHub(SipEndpoint(timers=TIMERS), application=SipRouter())
    await hub.start("127.0.0.1", 0, None)
    registrations = TrunkRegistrations(hub, config.trunks, addresses=config.trunk_addresses)
    try:
        await registrations.start()
        request, source = await trunk_protocol.next("REGISTER")
        assert str(request.uri) == f"sip:localhost:{trunk_port}" and source == hub.udp_address
        client = registrations.clients["carrier"]
        for _ in range(100):
            if client.state is RegistrationState.REGISTERED:
                break
            await asyncio.sleep(0.02)
        assert client.state is RegistrationState.REGISTERED
    finally:
        await registrations.stop()
        await hub.stop()
        await dns.stop()
    assert client.status().state is RegistrationState.STOPPED  # unregistered at the address too


def invite(number: str, caller_port: int) -> bytes:
    body = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    head = (
        f"INVITE sip:{number}@uc-edge.local SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{caller_port};branch=z9hG4bK-trunk-dns-1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:caller@uc-edge.local>;tag=caller1\r\n"
        f"To: <sip:{number}@uc-edge.local>\r\n"
        "Call-ID: trunk-dns-it-1\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@127.0.0.1:{caller_port}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
