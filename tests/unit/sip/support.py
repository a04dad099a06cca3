"""Shared builders for the SIP unit tests (no sockets, no clock: time is passed by hand)."""

from __future__ import annotations

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import Event
from signaling.sip.message import Request, build_request, parse_message
from signaling.sip.routing import TransportAddress

ALICE = TransportAddress("udp", "192.0.2.10", 5060)
BOB = TransportAddress("udp", "192.0.2.20", 5060)


def make_request(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bKtest1",
    via_host: str = "192.0.2.10",
    via_port: int = 5060,
    transport: str = "UDP",
    call_id: str = "call-1@test",
    cseq: int = 1,
    from_tag: str = "ftag1",
    to_tag: str | None = None,
    max_forwards: int = 70,
) -> Request:
    return build_request(
        method,
        "sip:bob@192.0.2.20",
        from_uri="<sip:alice@example.com>",
        to_uri="<sip:bob@example.com>",
        via_host=via_host,
        via_port=via_port,
        via_transport=transport,
        branch=branch,
        from_tag=from_tag,
        to_tag=to_tag,
        call_id=call_id,
        cseq=cseq,
        contact="<sip:alice@192.0.2.10:5060>",
        max_forwards=max_forwards,
    )


def wire(request: Request) -> bytes:
    from signaling.sip.message import serialize

    return serialize(request)


def drain(endpoint: SipEndpoint) -> list[Event]:
    events = []
    while (event := endpoint.next_event()) is not None:
        events.append(event)
    return events


def sent_codes(endpoint: SipEndpoint) -> list[int | str]:
    """Status codes (responses) or methods (requests) of everything queued, in order."""
    out: list[int | str] = []
    for data, _destination in endpoint.datagrams_to_send():
        message = parse_message(data)
        out.append(message.method if isinstance(message, Request) else message.code)
    return out


def fire_timers_until(endpoint: SipEndpoint, end: float) -> list[float]:
    """Fire every timer due before ``end`` one by one, like the asyncio glue would. Returns fire times."""
    fired = []
    while (deadline := endpoint.get_timer()) is not None and deadline <= end:
        endpoint.handle_timer(deadline)
        fired.append(deadline)
    return fired
