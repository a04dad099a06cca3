"""Where SIP messages go: transport addresses, Via received/rport (RFC 3581), response routing (§18.2.2)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from sipmessage import Parameters, Via

from signaling.sip.message import format_parameters

TransportName = Literal["udp", "tcp", "tls", "ws", "wss"]
TRANSPORTS: frozenset[str] = frozenset(("udp", "tcp", "tls", "ws", "wss"))
RELIABLE_TRANSPORTS: frozenset[str] = frozenset(("tcp", "tls", "ws", "wss"))
DEFAULT_PORTS: dict[str, int] = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


@dataclasses.dataclass(frozen=True, slots=True)
class TransportAddress:
    """One end of a SIP hop. ``connection_id`` names the TCP/TLS/WS connection a message came in on
    (or must go out on); ``None`` for UDP or when any connection to ``host:port`` will do.

    ``server_name``: for TLS to an address that a host name resolved to, the name the server's
    certificate must be valid for (and the SNI sent), RFC 5922 §4 — dialling the address must not
    weaken the check to the address. It does not take part in equality: it says how to reach the
    peer, not which peer it is."""

    transport: TransportName
    host: str
    port: int
    connection_id: str | None = None
    server_name: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.transport!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS


_TRANSPORT_NAMES: dict[str, TransportName] = {
    "udp": "udp",
    "tcp": "tcp",
    "tls": "tls",
    "ws": "ws",
    "wss": "wss",
}


def via_transport_name(via: Via) -> TransportName | None:
    return _TRANSPORT_NAMES.get(via.transport.lower())


def stamp_received(via: Via, source: TransportAddress) -> Via:
    """§18.2.1 + RFC 3581: add ``received`` when the sent-by host differs from the packet source
    (always when ``rport`` is asked for) and fill an empty ``rport`` with the source port."""
    params = dict(via.parameters)
    if not _stamp(params, via.host, source):
        return via
    return Via(via.transport, via.host, via.port, Parameters(**params))


def stamp_and_route(via: Via, source: TransportAddress) -> tuple[str | None, TransportAddress]:
    """:func:`stamp_received` and :func:`response_destination` of the stamped Via in one pass over its
    parameters, for a request just received: the stamped Via as header text (``None`` when nothing
    changes) and where its responses go."""
    # One copy into a plain dict: sipmessage's Parameters answers ``in``/``get`` for a missing name by
    # raising and catching KeyError, and iterates through the Mapping machinery.
    params = dict(via.parameters)
    text = None
    if _stamp(params, via.host, source):
        port = f":{via.port}" if via.port is not None else ""
        text = f"SIP/2.0/{via.transport} {via.host}{port}{format_parameters(params)}"
    return text, _destination(via, params, source)


def _stamp(params: dict[str, str | None], via_host: str, source: TransportAddress) -> bool:
    """Stamp ``params`` in place; True when something changed."""
    wants_rport = "rport" in params
    source_host = source.host
    changed = False
    if wants_rport or via_host.strip("[]") != source_host.strip("[]"):
        params["received"] = source_host if ":" not in source_host else f"[{source_host.strip('[]')}]"
        changed = True
    if wants_rport and params["rport"] is None:
        params["rport"] = str(source.port)
        changed = True
    return changed


def response_destination(via: Via, source: TransportAddress | None) -> TransportAddress:
    """§18.2.2 (+ RFC 3581): where a response to the request that carried ``via`` goes.

    Connection-oriented requests are answered over the connection they came in on (its id is
    kept; the transport falls back to ``received``:sent-by-port if that connection is gone).
    """
    return _destination(via, dict(via.parameters), source)


def _destination(
    via: Via, params: dict[str, str | None], source: TransportAddress | None
) -> TransportAddress:
    if source is not None and source.reliable and source.connection_id is not None:
        return TransportAddress(source.transport, source.host, source.port, source.connection_id)
    received = params.get("received")
    host = (received or via.host).strip("[]")
    transport = via_transport_name(via) or (source.transport if source else "udp")
    maddr = params.get("maddr")
    if maddr:
        return TransportAddress(transport, maddr.strip("[]"), via.port or DEFAULT_PORTS[transport])
    rport = params.get("rport")
    if rport and rport.isdigit():
        return TransportAddress(transport, host, int(rport))
    port = via.port or DEFAULT_PORTS[transport]
    return TransportAddress(transport, host, port)
