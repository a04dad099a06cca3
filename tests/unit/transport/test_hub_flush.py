"""The hub's flush: one per received message even when the application answers from ``on_event``, and
events the answer causes reach the application after ``on_event`` returns (never nested inside it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import Event, RequestReceived, TransportError
from signaling.sip.message import build_request, build_response, serialize
from signaling.sip.routing import TransportAddress
from signaling.transport.hub import SipTransportHub

PHONE = TransportAddress("udp", "192.0.2.7", 5062)
GONE_WS = TransportAddress("ws", "df7jal23ls0d.invalid", 0, "ws-99")


class Datagrams:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        pass


class Answering:
    """Answers every request 200 from inside ``on_event``; records how deep it was called."""

    def __init__(self) -> None:
        self.depth = 0
        self.max_depth = 0
        self.events: list[Event] = []

    def on_event(self, event: Event, hub: SipTransportHub) -> None:
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        try:
            self.events.append(event)
            if isinstance(event, RequestReceived) and event.transaction is not None:
                hub.respond(event.transaction, build_response(event.request, 200))
                # a request to a WebSocket flow that is gone: the hub fails it (TransportError event)
                hub.send_stateless(build_response(event.request, 200), GONE_WS)
        finally:
            self.depth -= 1


def options(branch: str) -> bytes:
    request = build_request(
        "OPTIONS",
        "sip:edge@203.0.113.1",
        from_uri="<sip:probe@example.com>",
        to_uri="<sip:edge@example.com>",
        via_host=PHONE.host,
        via_port=PHONE.port,
        branch=branch,
    )
    return serialize(request)


@pytest.fixture
async def hub() -> AsyncIterator[tuple[SipTransportHub, Answering, Datagrams]]:
    app = Answering()
    server = SipTransportHub(SipEndpoint(local_addresses={"udp": ("203.0.113.1", 5060)}), application=app)
    udp = Datagrams()
    server._udp = udp  # type: ignore[assignment]
    yield server, app, udp
    await server.stop()


async def test_an_answer_from_on_event_is_sent_by_the_one_flush(
    hub: tuple[SipTransportHub, Answering, Datagrams], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _app, udp = hub
    timer_reads = 0
    get_timer = server.endpoint.get_timer

    def counting_get_timer() -> float | None:
        nonlocal timer_reads
        timer_reads += 1
        return get_timer()

    monkeypatch.setattr(server.endpoint, "get_timer", counting_get_timer)
    server.receive(options("z9hG4bKflush1"), PHONE)
    assert [data.split(b"\r\n", 1)[0] for data, _ in udp.sent] == [b"SIP/2.0 200 OK"]
    assert udp.sent[0][1] == (PHONE.host, PHONE.port)
    assert timer_reads == 1  # the nested respond did not flush (and re-arm the timer) a second time
    assert server.stats.udp_datagrams_out == 1


async def test_events_caused_inside_on_event_come_after_it_returns(
    hub: tuple[SipTransportHub, Answering, Datagrams],
) -> None:
    server, app, _udp = hub
    server.receive(options("z9hG4bKflush2"), PHONE)
    assert app.max_depth == 1
    assert [type(event) for event in app.events] == [RequestReceived, TransportError]
    assert server.stats.send_failures == 1


async def test_flush_after_an_application_failure_still_sends_and_rearms(
    hub: tuple[SipTransportHub, Answering, Datagrams],
) -> None:
    server, app, udp = hub

    def broken(event: Event, hub_: SipTransportHub) -> None:
        raise RuntimeError("handler bug")

    app.on_event = broken  # type: ignore[method-assign]
    server.receive(options("z9hG4bKflush3"), PHONE)
    assert server.stats.application_errors == 1
    # the next message is handled normally: the flush flag was reset
    app.on_event = Answering().on_event  # type: ignore[method-assign]
    server.receive(options("z9hG4bKflush4"), PHONE)
    assert any(data.startswith(b"SIP/2.0 200 ") for data, _ in udp.sent)
