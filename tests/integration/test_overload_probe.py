"""Overload control on real sockets: the hub's probe measures how long a datagram waits to be read, and
INVITEs that wait in a standing queue are answered 503 while those before and after it go through."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import RequestReceived
from signaling.sip.message import Response, build_response, parse_message
from signaling.sip.overload import OverloadConfig, OverloadControl
from signaling.transport.application import SipRouter
from signaling.transport.hub import SipTransportHub
from tests.unit.sip.support import make_request, wire

HOST = "127.0.0.1"
CONFIG = OverloadConfig(target_delay=0.05, limit_delay=0.15, probe_interval=0.02, window=0.1)


@pytest.fixture
async def probing_hub() -> AsyncIterator[SipTransportHub]:
    server = SipTransportHub(SipEndpoint(overload=OverloadControl(CONFIG)), application=SipRouter())
    await server.start(HOST, udp_port=0, tcp_port=None)
    yield server
    await server.stop()


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # on purpose: the event loop can do nothing else meanwhile


def invite(port: int, n: int) -> bytes:
    request = make_request("INVITE", branch=f"z9hG4bKload{n}", call_id=f"load-{n}@test", via_host=HOST)
    request.headers.set("Via", f"SIP/2.0/UDP {HOST}:{port};branch=z9hG4bKload{n};rport")
    return wire(request)


async def final_codes(sock: socket.socket, count: int, within: float = 3.0) -> list[int]:
    """The first final response to each of ``count`` INVITEs, by Call-ID order of arrival."""
    loop = asyncio.get_running_loop()
    finals: dict[str, int] = {}
    deadline = loop.time() + within
    while len(finals) < count and loop.time() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65_536), deadline - loop.time())
        except TimeoutError:
            break
        message = parse_message(data)
        assert isinstance(message, Response)
        if message.code >= 200:
            finals.setdefault(message.headers["Call-ID"], message.code)
    return list(finals.values())


async def test_probes_measure_the_wait_without_reaching_the_sip_parser(probing_hub: SipTransportHub) -> None:
    hub = probing_hub
    probe = hub.load_probe
    assert probe is not None and probe.mode == "datagram" and probe.source is not None
    control = hub.endpoint.overload
    assert control is not None
    await asyncio.sleep(0.3)
    assert control.delay(hub.now()) < CONFIG.target_delay
    assert control.outstanding_probes <= 2 and control.probes_lost == 0
    assert hub.endpoint.stats.messages_in == 0 and hub.endpoint.stats.parse_errors == 0
    assert hub.stats.udp_datagrams_in == 0  # probes are not counted as SIP traffic


async def test_invites_waiting_in_a_standing_queue_get_503_and_later_ones_do_not() -> None:
    """A slow application (5 ms per INVITE) and 400 INVITEs at once: 2 s of work waits in the socket.
    The first ones are admitted; once probes have shown the wait standing above the limit for a window,
    the rest are refused, each answered; after the queue has drained a new INVITE is admitted again."""
    router = SipRouter()

    def slow_invite(event: RequestReceived, hub: SipTransportHub) -> None:
        block_the_loop(0.005)
        assert event.transaction is not None
        hub.respond(event.transaction, build_response(event.request, 486))

    router.route("INVITE", slow_invite)
    hub = SipTransportHub(SipEndpoint(overload=OverloadControl(CONFIG)), application=router)
    await hub.start(HOST, udp_port=0, tcp_port=None)
    try:
        assert hub.udp_address is not None
        control = hub.endpoint.overload
        assert control is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            client.bind((HOST, 0))
            client.setblocking(False)
            port = client.getsockname()[1]
            await asyncio.sleep(0.2)  # a few probes round trip first
            for n in range(400):
                client.sendto(invite(port, n), hub.udp_address)
            codes = await final_codes(client, 400, within=10.0)
            assert len(codes) == 400  # every INVITE answered, one way or the other
            assert codes[0] == 486  # before the queue stood, calls were admitted
            assert codes.count(503) == hub.endpoint.stats.invites_shed > 100
            assert codes[-1] == 503
            await asyncio.sleep(0.3)  # the queue has gone and the window forgets it
            assert control.delay(hub.now()) < CONFIG.target_delay
            client.sendto(invite(port, 999), hub.udp_address)
            assert await final_codes(client, 1) == [486]
    finally:
        await hub.stop()


async def test_without_udp_the_probe_measures_the_loop_lateness() -> None:
    """A loop kept busy (a 150 ms stall every 160 ms) reads as overloaded; a single stall does not."""
    server = SipTransportHub(SipEndpoint(overload=OverloadControl(CONFIG)), application=SipRouter())
    await server.start(HOST, udp_port=None, tcp_port=0)
    loop = asyncio.get_running_loop()
    try:
        assert server.load_probe is not None and server.load_probe.mode == "loop"
        control = server.endpoint.overload
        assert control is not None
        await asyncio.sleep(0.05)
        block_the_loop(0.3)
        await asyncio.sleep(0.15)
        assert control.delay(server.now()) < CONFIG.target_delay  # one stall: a burst, not a queue
        busy_until = loop.time() + 0.8

        def stall() -> None:
            block_the_loop(0.15)
            if loop.time() < busy_until:
                loop.call_later(0.01, stall)

        loop.call_soon(stall)
        await asyncio.sleep(0.6)
        assert control.delay(server.now()) > CONFIG.target_delay
    finally:
        await server.stop()
    assert server.load_probe.mode == "stopped"
