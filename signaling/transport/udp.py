"""UDP listener: one datagram = one SIP message (RFC 3261 §18), with ~4 MB socket buffers."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from signaling.sip.routing import TransportAddress

if TYPE_CHECKING:
    from signaling.transport.hub import SipTransportHub

# The kernel default (~212 KB) overflows at a few thousand calls/s and one overflow starts a
# retransmission storm; net.core.rmem_max allows 4 MB on the target machines.
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


# Source addresses remembered (cleared when full): a phone sends from the same address every time, and
# building and validating a TransportAddress per datagram costs more than the lookup.
SOURCE_CACHE_SIZE = 4096


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, hub: SipTransportHub) -> None:
        self.hub = hub
        self._sources: dict[tuple[str | int, ...], TransportAddress] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        hub = self.hub
        if addr[1] == hub.probe_port and hub.load_probe is not None and hub.load_probe.is_probe(addr):
            hub.load_probe.returned(data)  # overload control's probe, not SIP
            return
        hub.stats.udp_datagrams_in += 1
        source = self._sources.get(addr)
        if source is None:
            source = TransportAddress("udp", str(addr[0]), int(addr[1]))
            if len(self._sources) >= SOURCE_CACHE_SIZE:
                self._sources.clear()
            self._sources[addr] = source
        hub.receive(data, source)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: nothing to do per datagram; retransmission timers cope.
        self.hub.stats.send_failures += 1


async def open_udp_socket(
    hub: SipTransportHub, host: str, port: int
) -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    loop = asyncio.get_running_loop()
    transport, _protocol = await loop.create_datagram_endpoint(lambda: _UdpProtocol(hub), sock=sock)
    bound = sock.getsockname()
    return transport, (str(bound[0]), int(bound[1]))
