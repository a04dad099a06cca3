"""Two endpoints wired together in memory with packet loss: INVITE/100/180/200/ACK then BYE/200.

The TU on each side is a few lines of test harness (the dialog layer lives elsewhere): Bob rings and
answers, Alice ACKs every 2xx she is handed (end-to-end ACK, new branch) and later hangs up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import Event, RequestReceived, ResponseReceived, TransactionTimeout
from signaling.sip.message import (
    Request,
    Response,
    build_request,
    build_response,
    parse_message,
    to_tag,
)
from signaling.sip.routing import TransportAddress

ALICE = TransportAddress("udp", "192.0.2.10", 5060)
BOB = TransportAddress("udp", "192.0.2.20", 5060)


def describe(data: bytes) -> str:
    message = parse_message(data)
    if isinstance(message, Request):
        return message.method
    return f"{message.code} {message.headers['CSeq'].split()[1]}"


@dataclass
class Wire:
    """Delivers queued datagrams between the two endpoints, dropping what ``lose`` names."""

    alice: SipEndpoint
    bob: SipEndpoint
    lose: dict[str, int]  # "INVITE" / "200 INVITE" / "ACK" ... -> how many of them to drop
    log: list[str] = field(default_factory=list)

    def pump(self, now: float) -> bool:
        moved = False
        for sender, receiver, source in ((self.alice, self.bob, ALICE), (self.bob, self.alice, BOB)):
            for data, destination in sender.datagrams_to_send():
                assert destination in (ALICE, BOB)
                label = describe(data)
                if self.lose.get(label, 0) > 0:
                    self.lose[label] -= 1
                    self.log.append(f"lost {label}")
                    continue
                self.log.append(label)
                receiver.receive(data, source, now)
                moved = True
        return moved


@dataclass
class Call:
    alice: SipEndpoint = field(
        default_factory=lambda: SipEndpoint(local_addresses={"udp": ("192.0.2.10", 5060)})
    )
    bob: SipEndpoint = field(
        default_factory=lambda: SipEndpoint(local_addresses={"udp": ("192.0.2.20", 5060)})
    )
    invite: Request | None = None
    bob_dialog_tag: str = "bob-tag"
    acks_sent: int = 0
    acks_received: int = 0
    alice_answered: bool = False
    bye_done: bool = False
    timeouts: list[Event] = field(default_factory=list)

    def start(self, now: float) -> None:
        self.invite = build_request(
            "INVITE",
            "sip:bob@192.0.2.20",
            from_uri="<sip:alice@example.com>",
            to_uri="<sip:bob@example.com>",
            via_host="192.0.2.10",
            via_port=5060,
            call_id="loss-call@test",
            from_tag="alice-tag",
            contact="<sip:alice@192.0.2.10:5060>",
            body=b"v=0\r\n",
            content_type="application/sdp",
        )
        self.alice.send_request(self.invite, BOB, now)

    def run_tus(self, now: float) -> None:
        while (event := self.bob.next_event()) is not None:
            self.bob_tu(event, now)
        while (event := self.alice.next_event()) is not None:
            self.alice_tu(event, now)

    def bob_tu(self, event: Event, now: float) -> None:
        if isinstance(event, TransactionTimeout):
            self.timeouts.append(event)
        if not isinstance(event, RequestReceived):
            return
        request = event.request
        if request.method == "INVITE" and event.transaction is not None:
            self.bob.respond(event.transaction, build_response(request, 180, to_tag=self.bob_dialog_tag), now)
            answer = build_response(
                request,
                200,
                to_tag=self.bob_dialog_tag,
                headers=[("Contact", "<sip:bob@192.0.2.20:5060>")],
                body=b"v=0\r\n",
                content_type="application/sdp",
            )
            self.bob.respond(event.transaction, answer, now)
        elif request.method == "ACK":
            self.acks_received += 1
        elif request.method == "BYE" and event.transaction is not None:
            self.bob.respond(event.transaction, build_response(request, 200), now)

    def alice_tu(self, event: Event, now: float) -> None:
        if isinstance(event, TransactionTimeout):
            self.timeouts.append(event)
        if not isinstance(event, ResponseReceived):
            return
        response = event.response
        method = response.headers["CSeq"].split()[1]
        if method == "INVITE" and 200 <= response.code < 300:
            self.send_ack(response, now)
            self.alice_answered = True
        elif method == "BYE" and response.code == 200:
            self.bye_done = True

    def send_ack(self, response: Response, now: float) -> None:
        assert self.invite is not None
        ack = self.in_dialog_request("ACK", response, cseq=1)
        self.alice.send_stateless(ack, BOB)
        self.acks_sent += 1

    def in_dialog_request(self, method: str, response: Response, *, cseq: int) -> Request:
        return build_request(
            method,
            "sip:bob@192.0.2.20:5060",
            from_uri="<sip:alice@example.com>",
            to_uri="<sip:bob@example.com>",
            via_host="192.0.2.10",
            via_port=5060,
            call_id="loss-call@test",
            from_tag="alice-tag",
            to_tag=to_tag(response),
            cseq=cseq,
        )

    def hang_up(self, now: float) -> None:
        bye = build_request(
            "BYE",
            "sip:bob@192.0.2.20:5060",
            from_uri="<sip:alice@example.com>",
            to_uri="<sip:bob@example.com>",
            via_host="192.0.2.10",
            via_port=5060,
            call_id="loss-call@test",
            from_tag="alice-tag",
            to_tag=self.bob_dialog_tag,
            cseq=2,
        )
        self.alice.send_request(bye, BOB, now)


def run(call: Call, wire: Wire, until: Callable[[], bool], now: float, limit: float = 60.0) -> float:
    """Deliver, let the TUs react, and when the network is quiet jump the clock to the next timer."""
    while not until():
        call.run_tus(now)
        if wire.pump(now):
            continue
        call.run_tus(now)
        if until():
            break
        deadlines = [t for t in (call.alice.get_timer(), call.bob.get_timer()) if t is not None]
        assert deadlines, f"stuck at {now}: {wire.log}"
        now = min(deadlines)
        assert now <= limit, f"no progress by {limit}s: {wire.log}"
        call.alice.handle_timer(now)
        call.bob.handle_timer(now)
    return now


def full_call(lose: dict[str, int]) -> tuple[Call, Wire, float]:
    call = Call()
    wire = Wire(call.alice, call.bob, dict(lose))
    call.start(0.0)
    now = run(call, wire, lambda: call.alice_answered and call.acks_received >= 1, 0.0)
    call.hang_up(now)
    now = run(call, wire, lambda: call.bye_done, now)
    # let every transaction run out its timers: nothing may be left behind
    while (
        deadline := min(
            (t for t in (call.alice.get_timer(), call.bob.get_timer()) if t is not None), default=None
        )
    ) is not None:
        call.alice.handle_timer(deadline)
        call.bob.handle_timer(deadline)
        wire.pump(deadline)
        call.run_tus(deadline)
        now = deadline
    return call, wire, now


def test_call_without_loss() -> None:
    call, wire, _now = full_call({})
    assert wire.log[:6] == ["INVITE", "100 INVITE", "180 INVITE", "200 INVITE", "ACK", "BYE"]
    assert wire.log[6] == "200 BYE"
    assert call.acks_sent == 1 and call.acks_received == 1
    assert call.timeouts == []
    assert call.alice.active_transactions == 0 and call.bob.active_transactions == 0


def test_call_recovers_from_loss_of_each_message_once() -> None:
    lose = {"INVITE": 1, "200 INVITE": 1, "ACK": 1, "BYE": 1, "200 BYE": 1}
    call, wire, _now = full_call(lose)
    assert wire.log.count("lost INVITE") == 1 and wire.log.count("lost 200 INVITE") == 1
    assert wire.log.count("lost ACK") == 1 and wire.log.count("lost BYE") == 1
    assert "INVITE" in wire.log and "200 BYE" in wire.log
    # Bob retransmitted the 2xx until an ACK got through; Alice ACKed each 2xx she received.
    assert call.bob.stats.retransmissions_sent >= 2
    assert call.acks_sent >= 2 and call.acks_received >= 1
    assert call.bye_done
    assert call.timeouts == []
    assert call.alice.active_transactions == 0 and call.bob.active_transactions == 0


def test_call_recovers_from_a_burst_of_invite_losses() -> None:
    call, wire, _now = full_call({"INVITE": 4})
    assert wire.log[:4] == ["lost INVITE"] * 4
    assert call.alice.stats.retransmissions_sent >= 4
    assert call.bye_done and call.timeouts == []
