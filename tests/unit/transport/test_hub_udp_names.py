"""A UDP send to a host name never reaches ``sendto`` as a name (asyncio's selector loop would resolve it
synchronously, uvloop raises ValueError): the hub resolves it off the loop first, or fails the
transaction with a clear transport error. The loop's resolver is replaced: no sockets, no DNS."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import Event, TransportError
from signaling.sip.message import build_request
from signaling.sip.routing import TransportAddress
from signaling.transport.hub import SipTransportHub


class LiteralOnlyDatagrams:
    """A datagram transport that refuses names, as uvloop's does."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        ipaddress.ip_address(addr[0])  # ValueError for a name
        self.sent.append((data, addr))

    def close(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event, hub: SipTransportHub) -> None:
        self.events.append(event)


def options_to(host: str) -> Any:
    branch = f"z9hG4bK-{host.strip('[]').replace(':', '-')}"
    return build_request(
        "OPTIONS",
        f"sip:probe@{host}",
        from_uri="<sip:edge@uc-edge.local>",
        to_uri=f"<sip:probe@{host}>",
        via_host="192.0.2.1",
        via_port=5060,
        branch=branch,
    )


@pytest.fixture
async def hub(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[SipTransportHub, LiteralOnlyDatagrams, Recorder, list[str]]:
    recorder = Recorder()
    hub = SipTransportHub(SipEndpoint(), application=recorder)
    datagrams = LiteralOnlyDatagrams()
    hub._udp = datagrams  # type: ignore[assignment]
    lookups: list[str] = []
    answers = {"sip.carrier.test": "203.0.113.5"}

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        lookups.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (answers[host], port))]

    monkeypatch.setattr(hub.loop, "getaddrinfo", getaddrinfo)
    return hub, datagrams, recorder, lookups


async def settle(hub: SipTransportHub) -> None:
    await asyncio.gather(*list(hub._tasks))


async def test_a_name_is_resolved_off_the_loop_then_sent(
    hub: tuple[SipTransportHub, LiteralOnlyDatagrams, Recorder, list[str]],
) -> None:
    transport_hub, datagrams, recorder, lookups = hub
    transport_hub.send_request(
        options_to("sip.carrier.test"), TransportAddress("udp", "sip.carrier.test", 5080)
    )
    assert datagrams.sent == []  # nothing sent (nor resolved) inside the call
    await settle(transport_hub)
    assert lookups == ["sip.carrier.test"]
    ((data, addr),) = datagrams.sent
    assert addr == ("203.0.113.5", 5080) and data.startswith(b"OPTIONS sip:probe@sip.carrier.test SIP/2.0")
    assert transport_hub.stats.udp_datagrams_out == 1 and not recorder.events


async def test_a_name_that_does_not_resolve_fails_the_transaction(
    hub: tuple[SipTransportHub, LiteralOnlyDatagrams, Recorder, list[str]],
) -> None:
    transport_hub, datagrams, recorder, _lookups = hub
    key = transport_hub.send_request(
        options_to("nowhere.test"), TransportAddress("udp", "nowhere.test", 5060)
    )
    await settle(transport_hub)
    assert datagrams.sent == []
    (error,) = [event for event in recorder.events if isinstance(event, TransportError)]
    assert error.transaction == key and "cannot resolve nowhere.test" in error.reason
    assert transport_hub.stats.send_failures == 1


async def test_ip_literals_go_straight_to_sendto(
    hub: tuple[SipTransportHub, LiteralOnlyDatagrams, Recorder, list[str]],
) -> None:
    transport_hub, datagrams, _recorder, lookups = hub
    transport_hub.send_request(options_to("198.51.100.7"), TransportAddress("udp", "198.51.100.7", 5060))
    transport_hub.send_request(options_to("[2001:db8::7]"), TransportAddress("udp", "2001:db8::7", 5060))
    assert [addr for _data, addr in datagrams.sent] == [("198.51.100.7", 5060), ("2001:db8::7", 5060)]
    assert lookups == [] and not transport_hub._tasks
