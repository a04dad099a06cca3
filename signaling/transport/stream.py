"""TCP and TLS: Content-Length framing, CRLF keep-alives, size limits, slow and idle peers closed."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, cast

from signaling.sip.framing import FramingError, StreamFramer
from signaling.sip.routing import TransportAddress

if TYPE_CHECKING:
    from signaling.transport.hub import SipTransportHub


class StreamConnection(asyncio.Protocol):
    """One TCP/TLS flow. Its ``connection_id`` travels in every ``TransportAddress`` it produces, so
    responses and later requests can go back over it (RFC 3261 §18.2.2, RFC 5626 flows)."""

    def __init__(self, hub: SipTransportHub, transport_name: str, server_name: str | None = None) -> None:
        self.hub = hub
        self.transport_name = transport_name
        self.connection_id = hub.next_connection_id(transport_name)
        self.peer: tuple[str, int] = ("", 0)
        # The name this side checked the server's certificate against (connections it opened over TLS);
        # None for accepted connections and plain TCP.
        self.server_name = server_name
        self.framer = StreamFramer(hub.max_stream_message)
        self.transport: asyncio.Transport | None = None
        self.connected = asyncio.get_running_loop().create_future()
        self._last_activity = 0.0
        self._partial_since: float | None = None
        self._registered = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it: no isinstance check.
        self.transport = stream = cast(asyncio.Transport, transport)
        peername = stream.get_extra_info("peername") or ("", 0)
        self.peer = (str(peername[0]), int(peername[1]))
        self._last_activity = self.hub.now()
        if not self.hub.register_connection(self):
            stream.abort()
            return
        self._registered = True
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        hub = self.hub
        now = hub.now()
        self._last_activity = now
        try:
            messages = self.framer.feed(data)
        except FramingError:
            hub.stats.framing_errors += 1
            self.close()
            return
        pongs = self.framer.take_pongs()
        if pongs and self.transport is not None:
            hub.stats.keepalive_pongs += pongs
            self.transport.write(b"\r\n" * pongs)
        self._partial_since = (self._partial_since or now) if self.framer.buffered else None
        source = TransportAddress(self.transport_name, self.peer[0], self.peer[1], self.connection_id)  # type: ignore[arg-type]
        for message in messages:
            hub.stats.stream_messages_in += 1
            hub.receive(message, source)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._registered:
            self.hub.unregister_connection(self)
            self._registered = False
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("connection closed"))

    # Connection (what the hub uses)

    def write_message(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def timeout_reason(self, now: float) -> str | None:
        if self._partial_since is not None and now - self._partial_since > self.hub.message_timeout:
            return "slow"
        if now - self._last_activity > self.hub.idle_timeout:
            return "idle"
        return None


async def start_stream_server(
    hub: SipTransportHub, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> asyncio.Server:
    name = "tls" if ssl_context is not None else "tcp"
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: StreamConnection(hub, name), host, port, ssl=ssl_context, reuse_address=True
    )


async def connect_stream(hub: SipTransportHub, destination: TransportAddress) -> StreamConnection:
    """Open an outgoing TCP/TLS connection (a request to a new peer, or a response whose flow died)."""
    loop = asyncio.get_running_loop()
    context: ssl.SSLContext | None = None
    server_name: str | None = None
    if destination.transport == "tls":
        context = hub.tls_client_context or ssl.create_default_context()
        # The certificate is checked against the name (an address a trunk's name resolved to carries
        # it in server_name), else against the host dialled.
        server_name = destination.server_name or destination.host
    _transport, protocol = await asyncio.wait_for(
        loop.create_connection(
            lambda: StreamConnection(hub, destination.transport, server_name),
            destination.host,
            destination.port,
            ssl=context,
            server_hostname=server_name,
        ),
        timeout=hub.message_timeout,
    )
    await protocol.connected
    return protocol
