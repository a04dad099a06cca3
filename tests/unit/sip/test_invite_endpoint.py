"""Invite sessions glued to two real ``SipEndpoint`` transaction layers (datagrams in memory).

The glue here is what the asyncio layer will do: SendRequest → ``send_request``, SendAck →
``send_stateless``, SendResponse → ``respond`` on the server transaction the event named; endpoint
events go to the session. The endpoints retransmit INVITE 2xx themselves (RFC 6026), so the callee
runs with ``retransmit_2xx=False``.
"""

from __future__ import annotations

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import RequestReceived, ResponseReceived, TransactionKey
from signaling.sip.invite import (
    Answered,
    InviteEvent,
    InviteSession,
    InviteState,
    Outgoing,
    SendAck,
    SendRequest,
    SendResponse,
    Terminated,
)
from signaling.sip.message import Request
from signaling.sip.routing import TransportAddress
from tests.unit.sip.test_invite import bob_factory, make_alice

ALICE_AT = TransportAddress("udp", "192.0.2.10", 5060)
BOB_AT = TransportAddress("udp", "192.0.2.20", 5062)


class Leg:
    def __init__(self, endpoint: SipEndpoint, address: TransportAddress) -> None:
        self.endpoint = endpoint
        self.address = address
        self.session: InviteSession | None = None

    def flush(self, now: float) -> None:
        assert self.session is not None
        outputs: list[Outgoing] = self.session.messages_to_send()
        for out in outputs:
            if isinstance(out, SendRequest):
                hop = out.next_hop
                destination = TransportAddress("udp", hop.host, hop.port or 5060)
                self.endpoint.send_request(out.request, destination, now)
            elif isinstance(out, SendAck):
                hop = out.next_hop
                self.endpoint.send_stateless(out.request, TransportAddress("udp", hop.host, hop.port or 5060))
            elif isinstance(out, SendResponse):
                assert isinstance(out.transaction, TransactionKey)
                self.endpoint.respond(out.transaction, out.response, now)


class Pair:
    def __init__(self, lose: int = 0) -> None:
        self.alice = Leg(SipEndpoint(local_addresses={"udp": ("192.0.2.10", 5060)}), ALICE_AT)
        self.bob = Leg(SipEndpoint(local_addresses={"udp": ("192.0.2.20", 5062)}), BOB_AT)
        self.alice.session = make_alice()
        self.make_bob = bob_factory(retransmit_2xx=False)
        self.lose = lose  # drop this many of the next datagrams alice→bob
        self.now = 0.0

    def step(self) -> bool:
        moved = False
        for leg, peer in ((self.alice, self.bob), (self.bob, self.alice)):
            if leg.session is not None:
                leg.flush(self.now)
            for data, _destination in leg.endpoint.datagrams_to_send():
                moved = True
                if leg is self.alice and self.lose:
                    self.lose -= 1
                    continue
                peer.endpoint.receive(data, leg.address, self.now)
            while (event := peer.endpoint.next_event()) is not None:
                moved = True
                self.dispatch(peer, event)
        return moved

    def dispatch(self, leg: Leg, event: object) -> None:
        if isinstance(event, RequestReceived):
            request: Request = event.request
            if leg.session is None and request.method == "INVITE":
                leg.session = self.make_bob(request, event.transaction)
            elif leg.session is not None and event.cancels is not None:
                leg.session.receive_cancel(
                    request, self.now, transaction=event.transaction, respond_to_cancel=False
                )
            elif leg.session is not None:
                leg.session.receive_request(request, self.now, transaction=event.transaction)
        elif isinstance(event, ResponseReceived) and leg.session is not None:
            leg.session.receive_response(event.response, self.now)

    def run(self, until: float) -> None:
        while True:
            while self.step():
                pass
            deadlines = [
                t
                for t in (
                    self.alice.endpoint.get_timer(),
                    self.bob.endpoint.get_timer(),
                    self.alice.session.get_timer() if self.alice.session else None,
                    self.bob.session.get_timer() if self.bob.session else None,
                )
                if t is not None and t <= until
            ]
            if not deadlines:
                self.now = until
                return
            self.now = max(self.now, min(deadlines))
            for leg in (self.alice, self.bob):
                leg.endpoint.handle_timer(self.now)
                if leg.session is not None and (t := leg.session.get_timer()) is not None and t <= self.now:
                    leg.session.handle_timer(self.now)


def drain(session: InviteSession) -> list[InviteEvent]:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


def test_full_call_through_two_endpoints_with_a_lost_invite() -> None:
    pair = Pair(lose=1)  # the first INVITE datagram is lost: Timer A retransmits it
    alice = pair.alice.session
    assert alice is not None
    alice.send_invite(0.0)
    pair.run(1.0)
    bob = pair.bob.session
    assert bob is not None and bob.state is InviteState.INCOMING
    bob.answer(180, pair.now)
    pair.run(1.5)
    assert alice.state is InviteState.EARLY
    bob.answer(200, pair.now)
    pair.run(3.0)
    assert {alice.state, bob.state} == {InviteState.CONFIRMED}
    assert any(isinstance(e, Answered) for e in drain(bob))

    alice.hold(pair.now)
    pair.run(4.0)
    assert alice.negotiator.remote is not None
    assert alice.negotiator.remote.direction_of(alice.negotiator.remote.media[0]).value == "recvonly"

    bob.end_session(pair.now)
    pair.run(40.0)
    assert {alice.state, bob.state} == {InviteState.DISCONNECTED}
    (end,) = [e for e in drain(alice) if isinstance(e, Terminated)]
    assert end.by_remote and end.status_code == 200
    assert pair.alice.endpoint.active_transactions == 0 and pair.bob.endpoint.active_transactions == 0


def test_cancel_through_two_endpoints() -> None:
    pair = Pair()
    alice = pair.alice.session
    assert alice is not None
    alice.send_invite(0.0)
    pair.run(0.1)
    bob = pair.bob.session
    assert bob is not None
    bob.answer(180, pair.now)
    pair.run(0.2)
    alice.end_session(pair.now)
    pair.run(40.0)
    assert alice.state is InviteState.DISCONNECTED and bob.state is InviteState.DISCONNECTED
    (end,) = [e for e in drain(alice) if isinstance(e, Terminated)]
    assert end.status_code == 487
