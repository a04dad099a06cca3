"""SIP over WebSocket (RFC 7118) on the aiohttp server: mount the handler at ``/sip``.

    app.router.add_get("/sip", sip_websocket_handler(hub))

The client must offer the ``sip`` subprotocol. Each WebSocket message carries exactly one SIP
message (text or binary frame). Browsers put ``.invalid`` hosts in Via/Contact: responses and later
requests reach them only over this connection, whose id travels in every ``TransportAddress``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from signaling.sip.routing import TransportAddress

if TYPE_CHECKING:
    from signaling.transport.hub import SipTransportHub

log = logging.getLogger(__name__)

SUBPROTOCOL = "sip"


class WebSocketConnection:
    def __init__(
        self, hub: SipTransportHub, ws: web.WebSocketResponse, transport_name: str, peer: tuple[str, int]
    ):
        self.hub = hub
        self.ws = ws
        self.transport_name = transport_name
        self.connection_id = hub.next_connection_id(transport_name)
        self.peer = peer
        self.server_name: str | None = None  # always a flow the browser opened
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writer = asyncio.ensure_future(self._write_loop())

    def write_message(self, data: bytes) -> None:
        self._queue.put_nowait(data)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def _write_loop(self) -> None:
        # One writer keeps frames in the order the endpoint produced them.
        while (data := await self._queue.get()) is not None:
            try:
                try:
                    await self.ws.send_str(data.decode("utf-8"))
                except UnicodeDecodeError:
                    await self.ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                break
        await self.ws.close()

    def stop_writer(self) -> None:
        self._writer.cancel()


def sip_websocket_handler(
    hub: SipTransportHub, *, heartbeat: float | None = 30.0
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler speaking SIP over WebSocket into ``hub``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if SUBPROTOCOL not in offered:
            return web.Response(status=400, text="the 'sip' WebSocket subprotocol is required (RFC 7118)")
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,), max_msg_size=hub.max_stream_message, heartbeat=heartbeat
        )
        await ws.prepare(request)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer = (str(peername[0]), int(peername[1])) if peername else (request.remote or "", 0)
        name = "wss" if request.secure else "ws"
        connection = WebSocketConnection(hub, ws, name, peer)
        if not hub.register_connection(connection):
            await ws.close()
            return ws
        source = TransportAddress(name, peer[0], peer[1], connection.connection_id)  # type: ignore[arg-type]
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    data = message.data.encode("utf-8")
                elif message.type == WSMsgType.BINARY:
                    data = message.data
                else:
                    continue
                hub.stats.stream_messages_in += 1
                hub.receive(data, source)
        finally:
            hub.unregister_connection(connection)
            connection.stop_writer()
        return ws

    return handler
