"""Thin asyncio transports for the sans-IO SIP endpoint: UDP, TCP, TLS and WebSocket (RFC 7118).

endpoint = SipEndpoint()
hub = SipTransportHub(endpoint, application=SipRouter())
await hub.start("0.0.0.0", udp_port=5060, tcp_port=5060, tls_port=5061, certfile=..., keyfile=...)
aiohttp_app.router.add_get("/sip", sip_websocket_handler(hub))
"""

from signaling.transport.application import SipRouter
from signaling.transport.hub import HubStats, SipApplication, SipTransportHub
from signaling.transport.websocket import sip_websocket_handler

__all__ = ["HubStats", "SipApplication", "SipRouter", "SipTransportHub", "sip_websocket_handler"]
