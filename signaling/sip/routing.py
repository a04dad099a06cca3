"""Where SIP messages go: transport addresses, Via received/rport (RFC 3581), response routing (§18.2.2)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from sipmessage import Via

TransportName = Literal["udp", "tcp", "tls", "ws", "wss"]
TRANSPORTS: frozenset[str] = frozenset(("udp", "tcp", "tls", "ws", "wss"))
RELIABLE_TRANSPORTS: frozenset[str] = frozenset(("tcp", "tls", "ws", "wss"))
DEFAULT_PORTS: dict[str, int] = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


@dataclasses.dataclass(frozen=True, slots=True)
class TransportAddress:
    """One end of a SIP hop. ``connection_id`` names the TCP/TLS/WS connection a message came in on
    (or must go out on); ``None`` for UDP or when any connection to ``host:port`` will do."""

    transport: TransportName
    host: str
    port: int
    connection_id: str | None = None

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.transport!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS


def via_transport_name(via: Via) -> TransportName | None:
    name = via.transport.lower()
    return name if name in TRANSPORTS else None  # type: ignore[return-value]


def stamp_received(via: Via, source: TransportAddress) -> Via:
    """§18.2.1 + RFC 3581: add ``received`` when the sent-by host differs from the packet source
    (always when ``rport`` is asked for) and fill an empty ``rport`` with the source port."""
    params = dict(via.parameters)
    wants_rport = "rport" in params
    changed = False
    if via.host.strip("[]") != source.host.strip("[]") or wants_rport:
        params["received"] = source.host if ":" not in source.host else f"[{source.host.strip('[]')}]"
        changed = True
    if wants_rport and params.get("rport") is None:
        params["rport"] = str(source.port)
        changed = True
    if not changed:
        return via
    return dataclasses.replace(via, parameters=type(via.parameters)(**params))


def response_destination(via: Via, source: TransportAddress | None) -> TransportAddress:
    """§18.2.2 (+ RFC 3581): where a response to the request that carried ``via`` goes.

    Connection-oriented requests are answered over the connection they came in on (its id is
    kept; the transport falls back to ``received``:sent-by-port if that connection is gone).
    """
    params = via.parameters
    received = params.get("received")
    host = (received or via.host).strip("[]")
    transport = via_transport_name(via) or (source.transport if source else "udp")
    if source is not None and source.reliable and source.connection_id is not None:
        return TransportAddress(source.transport, source.host, source.port, source.connection_id)
    maddr = params.get("maddr")
    if maddr:
        return TransportAddress(transport, maddr.strip("[]"), via.port or DEFAULT_PORTS[transport])
    rport = params.get("rport")
    if rport and rport.isdigit():
        return TransportAddress(transport, host, int(rport))
    port = via.port or DEFAULT_PORTS[transport]
    return TransportAddress(transport, host, port)
