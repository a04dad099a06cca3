"""Pre-opened RTP/RTCP socket pairs, reused across calls (the asyncio side of ``media.portpool``).

Opening an endpoint used to cost two ``create_datagram_endpoint`` calls (RTP and RTCP) and closing it two
more; in a calls/s run that was about a quarter of the server's CPU. The pool binds ``size`` pairs once
(``warm``) and keeps them, with their transports, for the life of the plane. A call takes the pair that
has been idle the longest and gives it back when its endpoint is destroyed, so the round-robin of
``PortPool`` keeps its purpose: a pair freed by a finished call is the last one reused, and stray packets
of the old call are unlikely to meet a new one.

A pair that is not in use is attached to :class:`IdleProtocol`, which drops whatever still arrives
(counted as ``dropped_unroutable``). When a call takes the pair, its endpoint becomes the transports'
protocol (``BaseTransport.set_protocol``: no extra call per packet) and starts with a fresh latch, so it
learns its new peer's address afresh. When more pairs are needed than are idle, more are opened on
demand from the port range. On release a pair is closed (its ports freed) only when ``size`` pairs are
idle and at least as many are idle as in use: under a load above the pool size the pool grows to what
the calls hold and keeps it while they last, instead of binding and closing a pair per endpoint (two
sockets, two transports and their epoll registrations each way); when the load falls it shrinks back
to ``size``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket

from media.control import MediaError
from media.endpoint import MediaCounters
from media.latching import Address
from media.portpool import PortPool

log = logging.getLogger(__name__)

MAX_BIND_ATTEMPTS = 32
# A pool that runs dry binds on the call path; say so at most this often (loop seconds).
DRY_WARNING_INTERVAL = 60.0


class IdleProtocol(asyncio.DatagramProtocol):
    """The protocol of a pair no call holds: drop and count (late packets of a finished call)."""

    __slots__ = ("_counters",)

    def __init__(self, counters: MediaCounters) -> None:
        self._counters = counters

    def datagram_received(self, data: bytes, addr: Address) -> None:
        counters = self._counters
        counters.packets_in += 1
        counters.bytes_in += len(data)
        counters.dropped_unroutable += 1

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors about the previous call's peer


class SocketPair:
    """An RTP socket on an even port and its RTCP socket on the odd port above, with their transports."""

    __slots__ = ("port", "rtcp", "rtp", "uses")

    def __init__(self, port: int, rtp: asyncio.DatagramTransport, rtcp: asyncio.DatagramTransport) -> None:
        self.port = port
        self.rtp = rtp
        self.rtcp = rtcp
        self.uses = 0

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


class SocketPool:
    """Bound RTP/RTCP pairs: ``size`` are kept open between calls, more are opened while calls need them."""

    def __init__(self, ports: PortPool, bind_address: str, size: int, counters: MediaCounters) -> None:
        if size < 0:
            raise ValueError("the RTP socket pool size cannot be negative")
        self._ports = ports
        self._bind_address = bind_address
        self.size = min(size, ports.capacity)
        self._idle: collections.deque[SocketPair] = collections.deque()
        self._idle_protocol = IdleProtocol(counters)
        self._family = socket.AF_INET6 if ":" in bind_address else socket.AF_INET
        self.opened = 0
        """Pairs bound since the start (warm-up and on demand): the cost the pool saves shows here."""
        self.in_use = 0
        self.closed = False
        self._warmed = False
        self._dry_warned_at: float | None = None

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def warm(self) -> int:
        """Open pairs until ``size`` are idle (or the range is exhausted); returns how many were opened."""
        opened = 0
        while not self.closed and len(self._idle) < self.size:
            try:
                pair = await self._open()
            except (MediaError, OSError) as exc:
                log.warning("RTP socket pool warmed to %d of %d pairs: %s", len(self._idle), self.size, exc)
                break
            if self.closed:
                self._discard(pair)
                break
            self._idle.append(pair)
            opened += 1
        self._warmed = True
        return opened

    async def acquire(self) -> SocketPair:
        """The pair idle the longest, or a newly bound one; :class:`MediaError` when none can be had."""
        if self.closed:
            raise MediaError("media plane is closed")
        idle = self._idle
        if idle:
            pair = idle.popleft()
        else:
            self._warn_dry()
            pair = await self._open()
        pair.uses += 1
        self.in_use += 1
        return pair

    def _warn_dry(self) -> None:
        if not self._warmed or self.size == 0:
            return  # still warming up, or pooling is off on purpose
        now = asyncio.get_running_loop().time()
        if self._dry_warned_at is None or now - self._dry_warned_at >= DRY_WARNING_INTERVAL:
            self._dry_warned_at = now
            log.warning(
                "RTP socket pool empty: binding sockets on the call path (%d pairs pooled, %d in use; it "
                "keeps what the load holds, but set UC_EDGE_RTP_SOCKET_POOL to about twice the calls "
                "relayed at once to bind them at start)",
                self.size,
                self.in_use,
            )

    def release(self, pair: SocketPair) -> None:
        """Back to the pool (packets still arriving are dropped); closed when enough pairs are idle."""
        self.in_use -= 1
        idle_protocol = self._idle_protocol
        pair.rtp.set_protocol(idle_protocol)
        pair.rtcp.set_protocol(idle_protocol)
        idle = self._idle
        keep = max(self.size, self.in_use)
        if self.closed or len(idle) >= keep:
            self._discard(pair)
        else:
            idle.append(pair)
        while len(idle) > keep:  # the load fell: back towards ``size``, the longest idle first
            self._discard(idle.popleft())

    def close(self) -> None:
        self.closed = True
        while self._idle:
            self._discard(self._idle.popleft())

    # -- internals ------------------------------------------------------------------------------------

    def _discard(self, pair: SocketPair) -> None:
        pair.close()
        self._ports.release(pair.port)

    async def _open(self) -> SocketPair:
        ports = self._ports
        last_error: OSError | None = None
        for _ in range(min(MAX_BIND_ATTEMPTS, ports.capacity)):
            port = ports.acquire()
            try:
                pair = await self._bind(port)
            except OSError as exc:
                ports.mark_unusable(port)
                last_error = exc
                continue
            self.opened += 1
            return pair
        raise MediaError(f"could not bind an RTP/RTCP port pair on {self._bind_address}: {last_error}")

    async def _bind(self, port: int) -> SocketPair:
        # Bound here rather than by create_datagram_endpoint(local_addr=...): no address resolution.
        loop = asyncio.get_running_loop()
        sockets: list[socket.socket] = []
        transports: list[asyncio.DatagramTransport] = []
        try:
            for number in (port, port + 1):
                sock = socket.socket(self._family, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.setblocking(False)
                sock.bind((self._bind_address, number))
            for sock in sockets:
                transport, _ = await loop.create_datagram_endpoint(lambda: self._idle_protocol, sock=sock)
                transports.append(transport)
        except BaseException:
            for transport in transports:
                transport.close()
            for sock in sockets[len(transports) :]:
                sock.close()
            raise
        return SocketPair(port, transports[0], transports[1])
