"""Invite sessions wired together in memory (no sockets, fake clock): the core call flows.

``Network`` carries every message through ``serialize`` → ``parse_message`` so the wire form is
exercised too. One caller (UAC) and one or more callees (forks); in-dialog requests go to the
callee whose tag is in To, responses to the side whose tag is in From.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from signaling.sdp import (
    Direction,
    OfferStream,
    Origin,
    SessionDescription,
    create_answer,
    create_offer,
)
from signaling.sip.dialog import LocalAddress
from signaling.sip.errors import LocalProtocolError
from signaling.sip.invite import (
    Answered,
    EarlyMedia,
    InviteEvent,
    InviteSession,
    InviteState,
    MediaUpdate,
    Outgoing,
    Reason,
    Ringing,
    SendAck,
    SendRequest,
    SendResponse,
    Terminated,
)
from signaling.sip.message import (
    Request,
    Response,
    build_response,
    from_tag,
    parse_message,
    serialize,
    to_tag,
)
from signaling.sip.timers import TimerSettings

ALICE = LocalAddress("UDP", "192.0.2.10", 5060)
BOB = LocalAddress("UDP", "192.0.2.20", 5062)
TIMERS = TimerSettings(t1=0.5, t2=4.0)


def offer_for(host: str, port: int, direction: Direction = Direction.SENDRECV) -> SessionDescription:
    return create_offer(Origin("-", "4242", 1, host), host, [OfferStream(port, direction=direction)])


def answerer_for(host: str, port: int) -> Callable[[SessionDescription], SessionDescription]:
    def answer(offer: SessionDescription) -> SessionDescription:
        return create_answer(offer, origin=Origin("-", "777", 1, host), address=host, port=port)

    return answer


def media_direction(sdp: SessionDescription) -> Direction:
    return sdp.direction_of(sdp.media[0])


def make_alice(offer: bool = True, **options: object) -> InviteSession:
    options.setdefault("timers", TIMERS)
    options.setdefault("answerer", answerer_for("192.0.2.10", 40000))
    return InviteSession.create_uac(
        from_uri="<sip:alice@example.com>",
        to_uri="<sip:bob@example.com>",
        request_uri="sip:bob@192.0.2.20:5062",
        local_address=ALICE,
        local_contact="<sip:alice@192.0.2.10:5060>",
        offer=offer_for("192.0.2.10", 40000) if offer else None,
        **options,  # type: ignore[arg-type]
    )


def bob_factory(**options: object) -> Callable[[Request, object], InviteSession]:
    options.setdefault("timers", TIMERS)
    options.setdefault("answerer", answerer_for("192.0.2.20", 50000))

    def make(invite: Request, transaction: object) -> InviteSession:
        return InviteSession.create_uas(
            invite,
            local_address=BOB,
            local_contact="<sip:bob@192.0.2.20:5062>",
            transaction=transaction,
            **options,
        )

    return make


def wire(message: Request | Response) -> Request | Response:
    return parse_message(serialize(message))


class Network:
    """Delivers the outputs of a caller and its callees to each other until nothing moves."""

    def __init__(
        self,
        alice: InviteSession,
        make_bob: Callable[[Request, object], InviteSession] | None = None,
        forks: int = 1,
    ) -> None:
        self.alice = alice
        self.make_bob = make_bob or bob_factory()
        self.forks = forks
        self.bobs: list[InviteSession] = []
        self.now = 0.0
        self.log: list[tuple[str, Outgoing]] = []
        self.drop: Callable[[str, Outgoing], bool] = lambda _sender, _out: False

    @property
    def bob(self) -> InviteSession:
        return self.bobs[0]

    def _name(self, session: InviteSession) -> str:
        if session is self.alice:
            return "alice"
        return f"bob{self.bobs.index(session)}" if session in self.bobs else "replaced-bob"

    def _deliver_request(self, sender: InviteSession, request: Request) -> None:
        if sender is self.alice:
            if request.method == "INVITE" and to_tag(request) is None:
                # A new INVITE transaction (first one, or a retry after 421/422) makes new callees.
                self.bobs = [self.make_bob(request, ("tx", request.method)) for _ in range(self.forks)]
                return
            targets = [b for b in self.bobs if to_tag(request) in (None, b.local_tag)]
            for bob in targets:
                bob.receive_request(request, self.now, transaction=("tx", request.method))
        else:
            self.alice.receive_request(request, self.now, transaction=("tx", request.method))

    def _deliver_response(self, sender: InviteSession, response: Response) -> None:
        if sender is self.alice:
            for bob in self.bobs:
                if bob.local_tag == from_tag(response):
                    bob.receive_response(response, self.now)
        else:
            self.alice.receive_response(response, self.now)

    def pump(self) -> list[tuple[str, Outgoing]]:
        moved: list[tuple[str, Outgoing]] = []
        for _ in range(1000):
            batch = [(s, out) for s in [self.alice, *self.bobs] for out in s.messages_to_send()]
            if not batch:
                return moved
            for sender, out in batch:
                name = self._name(sender)
                moved.append((name, out))
                self.log.append((name, out))
                if self.drop(name, out):
                    continue
                if isinstance(out, (SendRequest, SendAck)):
                    message = wire(out.request)
                    assert isinstance(message, Request)
                    self._deliver_request(sender, message)
                else:
                    assert isinstance(out, SendResponse)
                    message = wire(out.response)
                    assert isinstance(message, Response)
                    self._deliver_response(sender, message)
        raise AssertionError("messages never stopped flowing")

    def sessions(self) -> list[InviteSession]:
        return [self.alice, *self.bobs]

    def advance(self, until: float) -> list[tuple[str, Outgoing]]:
        """Fire every timer of every session due up to ``until``, in time order, pumping after each."""
        moved = self.pump()
        while True:
            due = [(t, s) for s in self.sessions() if (t := s.get_timer()) is not None and t <= until]
            if not due:
                break
            when, session = min(due, key=lambda item: item[0])
            self.now = max(self.now, when)
            session.handle_timer(self.now)
            moved += self.pump()
        self.now = max(self.now, until)
        return moved


def events(session: InviteSession) -> list[InviteEvent]:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


def kinds(moved: list[tuple[str, Outgoing]], sender: str | None = None) -> list[str]:
    """Compact trace: 'INVITE', 'ACK', '180', '200/INVITE' ..."""
    names = []
    for name, out in moved:
        if sender is not None and name != sender:
            continue
        if isinstance(out, SendResponse):
            names.append(f"{out.response.code}/{out.response.headers['CSeq'].split()[1]}")
        else:
            assert isinstance(out, (SendRequest, SendAck))
            names.append(out.request.method)
    return names


def connect(net: Network, *, ring: bool = True) -> None:
    net.alice.send_invite(net.now)
    net.pump()
    if ring:
        net.bob.answer(180, net.now)
        net.pump()
    net.bob.answer(200, net.now)
    net.pump()


# ============================================================================ basic call


def test_basic_call_invite_180_200_ack_bye() -> None:
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    assert alice.state is InviteState.CALLING
    net.pump()
    bob = net.bob
    assert bob.state is InviteState.INCOMING
    bob.answer(180, 0.1)
    trace = net.pump()
    assert kinds(trace) == ["180/INVITE"]
    assert {alice.state, bob.state} == {InviteState.EARLY}
    assert [type(e) for e in events(alice)] == [Ringing]

    bob.answer(200, 1.0)
    trace = net.pump()
    assert kinds(trace) == ["200/INVITE", "ACK"]
    assert {alice.state, bob.state} == {InviteState.CONFIRMED}
    alice_events, bob_events = events(alice), events(bob)
    assert [type(e) for e in alice_events] == [MediaUpdate, Answered]
    assert [type(e) for e in bob_events] == [MediaUpdate, Answered]
    update = alice_events[0]
    assert isinstance(update, MediaUpdate)
    assert update.remote.media[0].port == 50000 and update.local.media[0].port == 40000
    assert alice.dialog_id is not None and bob.dialog_id is not None
    assert alice.dialog_id.local_tag == bob.dialog_id.remote_tag
    assert alice.dialog_id.remote_tag == bob.dialog_id.local_tag

    alice.end_session(5.0)
    trace = net.pump()
    assert kinds(trace) == ["BYE", "200/BYE"]
    assert {alice.state, bob.state} == {InviteState.DISCONNECTED}
    (ended,) = events(bob)
    assert isinstance(ended, Terminated) and ended.by_remote and ended.status_code == 200
    assert alice.get_timer() is None and bob.get_timer() is None


def test_ack_and_bye_carry_dialog_identity_and_cseq() -> None:
    alice = make_alice()
    net = Network(alice)
    connect(net)
    ack = next(out.request for _name, out in net.log if isinstance(out, SendAck))
    invite = next(out.request for _name, out in net.log if isinstance(out, SendRequest))
    assert ack.headers["CSeq"] == f"{invite.headers['CSeq'].split()[0]} ACK"
    assert ack.headers["Via"] != invite.headers["Via"]  # the ACK of a 2xx has its own branch
    assert str(ack.uri) == "sip:bob@192.0.2.20:5062"  # the remote target from bob's Contact
    net.bob.end_session(2.0)
    (bye_name, bye_out), _ = net.pump()
    assert bye_name == "bob0" and isinstance(bye_out, SendRequest)
    assert bye_out.request.headers["CSeq"] == "1 BYE"  # callee's own CSeq space
    assert str(bye_out.request.uri) == "sip:alice@192.0.2.10:5060"


def test_late_offer_offer_in_200_answer_in_ack() -> None:
    alice = make_alice(offer=False)
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    bob = net.bob
    assert not bob.invite or not bob.invite.body
    with pytest.raises(LocalProtocolError):
        bob.answer(200, 0.5)  # a late offer needs our offer in the 2xx
    bob.answer(200, 0.5, sdp=offer_for("192.0.2.20", 50000))
    trace = net.pump()
    assert kinds(trace) == ["200/INVITE", "ACK"]
    ack = trace[1][1]
    assert isinstance(ack, SendAck) and b"m=audio 40000" in ack.request.body
    assert bob.state is InviteState.CONFIRMED
    (bob_update, _answered) = events(bob)
    assert isinstance(bob_update, MediaUpdate)
    assert bob_update.local.media[0].port == 50000 and bob_update.remote.media[0].port == 40000
    alice_update = events(alice)[0]
    assert isinstance(alice_update, MediaUpdate) and alice_update.remote.media[0].port == 50000


def test_reinvite_hold_and_resume_change_direction_and_version() -> None:
    alice = make_alice()
    net = Network(alice)
    connect(net)
    events(alice), events(net.bob)
    first_version = alice.negotiator.local.origin.session_version  # type: ignore[union-attr]

    alice.hold(10.0)
    trace = net.pump()
    assert kinds(trace) == ["INVITE", "200/INVITE", "ACK"]
    (alice_update,) = events(alice)
    (bob_update,) = events(net.bob)
    assert isinstance(alice_update, MediaUpdate) and isinstance(bob_update, MediaUpdate)
    assert media_direction(alice_update.local) is Direction.SENDONLY
    assert media_direction(alice_update.remote) is Direction.RECVONLY
    assert media_direction(bob_update.local) is Direction.RECVONLY
    assert alice_update.local.origin.session_version == first_version + 1

    alice.resume(20.0)
    net.pump()
    (alice_update,) = events(alice)
    assert isinstance(alice_update, MediaUpdate)
    assert media_direction(alice_update.local) is Direction.SENDRECV
    assert media_direction(alice_update.remote) is Direction.SENDRECV
    assert alice_update.local.origin.session_version == first_version + 2
    assert alice.state is InviteState.CONFIRMED and net.bob.state is InviteState.CONFIRMED


def test_reinvite_rejected_with_488_keeps_the_old_session() -> None:
    alice = make_alice()

    def picky(offer: SessionDescription) -> SessionDescription:
        if media_direction(offer) is Direction.SENDONLY:
            from signaling.sdp import NoCommonCodecError

            raise NoCommonCodecError("no hold here")
        return answerer_for("192.0.2.20", 50000)(offer)

    net = Network(alice, bob_factory(answerer=picky))
    connect(net)
    before = alice.negotiator.local
    events(alice)
    alice.hold(3.0)
    trace = net.pump()
    assert kinds(trace) == ["INVITE", "488/INVITE"]
    from signaling.sip.invite import OfferRejected

    assert events(alice) == [OfferRejected("INVITE", 488)]
    assert alice.negotiator.local is before and alice.state is InviteState.CONFIRMED


# ============================================================================ CANCEL


def inviting() -> tuple[InviteSession, Network]:
    """Alice's INVITE delivered to Bob, who has not answered yet."""
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    return alice, net


def ringing() -> tuple[InviteSession, Network]:
    """Alice's INVITE answered 180 by Bob, the events so far read."""
    alice, net = inviting()
    net.bob.answer(180, 0.2)
    net.pump()
    events(alice)
    return alice, net


def test_cancel_during_ringing_gets_487() -> None:
    alice, net = ringing()
    alice.end_session(3.0, reason=Reason("SIP", 600, "Busy Everywhere"))
    trace = net.pump()
    assert kinds(trace) == ["CANCEL", "200/CANCEL", "487/INVITE"]
    assert alice.state is InviteState.DISCONNECTED and net.bob.state is InviteState.DISCONNECTED
    (alice_end,) = events(alice)
    assert isinstance(alice_end, Terminated) and alice_end.status_code == 487
    (bob_end,) = events(net.bob)
    assert isinstance(bob_end, Terminated) and bob_end.status_code == 487 and bob_end.by_remote
    assert bob_end.cause == Reason("SIP", 600, "Busy Everywhere")
    cancel = trace[0][1]
    invite = net.log[0][1]
    assert isinstance(cancel, SendRequest) and isinstance(invite, SendRequest)
    assert cancel.request.headers["Via"] == invite.request.headers["Via"]  # same branch as the INVITE


def test_cancel_before_any_provisional_waits_for_one() -> None:
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    alice.cancel(0.1)
    assert kinds(net.pump()) == []  # §9.1: no CANCEL before a provisional response
    net.bob.answer(180, 0.3)
    assert kinds(net.pump()) == ["180/INVITE", "CANCEL", "200/CANCEL", "487/INVITE"]
    assert alice.state is InviteState.DISCONNECTED


def test_a_second_cancel_of_the_same_invite_sends_nothing_more() -> None:
    # A call cancels a leg for more than one reason at once (the caller's CANCEL, the no-answer timer):
    # one CANCEL goes out (§9.1: its transaction retransmits it); a second would reuse the INVITE's branch
    # for a CANCEL transaction that already exists.
    alice, net = inviting()
    alice.cancel(0.1)  # before any provisional: wanted, sent on the 180
    alice.cancel(0.15, reason=Reason("SIP", 408, "no answer"))
    net.bob.answer(180, 0.2)
    assert kinds(net.pump()) == ["180/INVITE", "CANCEL", "200/CANCEL", "487/INVITE"]

    alice, net = ringing()
    alice.cancel(3.0)
    alice.cancel(3.1)
    assert kinds(net.pump()) == ["CANCEL", "200/CANCEL", "487/INVITE"]
    assert alice.state is InviteState.DISCONNECTED


def test_2xx_crossing_cancel_is_acked_then_byed() -> None:
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    net.bob.answer(180, 0.1)
    net.pump()
    net.bob.answer(200, 0.2)
    alice.cancel(0.2)
    # The 200 is in flight when alice cancels: deliver bob's 200 first, then alice's CANCEL.
    trace = net.pump()
    assert "ACK" in kinds(trace) and "BYE" in kinds(trace)
    assert alice.state is InviteState.DISCONNECTED and net.bob.state is InviteState.DISCONNECTED


def test_cancel_from_end_session_is_refused_after_answer() -> None:
    alice = make_alice()
    net = Network(alice)
    connect(net)
    with pytest.raises(LocalProtocolError, match="uac invite session in state CONFIRMED cannot send_cancel"):
        alice.cancel(5.0)


# ============================================================================ 2xx / ACK reliability


def test_2xx_retransmitted_until_ack_at_t1_doubling_to_t2() -> None:
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    net.drop = lambda sender, out: sender == "bob0" and isinstance(out, SendResponse)
    net.bob.answer(200, 0.0)
    trace = net.advance(10.0)
    sent_at = [net.now for _ in ()]  # placeholder to keep mypy quiet about unused names
    del sent_at
    retransmissions = [out for name, out in trace if isinstance(out, SendResponse) and out.retransmission]
    # T1=0.5: 0.5, 1.5, 3.5, 7.5 (0.5, 1, 2, 4 intervals; capped at T2=4)
    assert len(retransmissions) == 4
    assert net.bob.state is InviteState.CONNECTING
    net.drop = lambda sender, out: False
    trace = net.advance(12.0)  # next retransmission at 11.5 gets through; alice ACKs it
    assert kinds(trace) == ["200/INVITE", "ACK"]
    assert {net.bob.state, alice.state} == {InviteState.CONFIRMED}
    assert net.bob.get_timer() is None


def test_no_ack_after_64_t1_ends_the_call_with_bye() -> None:
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    net.drop = lambda sender, out: isinstance(out, SendAck)
    net.bob.answer(200, 0.0)
    trace = net.advance(40.0)
    bob_sent = kinds(trace, "bob0")
    # 2xx at 0 + retransmissions at 0.5, 1.5, 3.5, 7.5, 11.5, ..., then BYE at 32 s (64*T1).
    assert bob_sent.count("200/INVITE") == 1 + 10
    assert "BYE" in bob_sent
    assert net.bob.state is InviteState.DISCONNECTED
    ended = [e for e in events(net.bob) if isinstance(e, Terminated)]
    assert ended and ended[0].status_code == 408
    assert alice.state is InviteState.DISCONNECTED  # alice got the BYE
    # Alice re-sent her ACK for every retransmitted 2xx (§13.2.2.4).
    assert kinds(trace, "alice").count("ACK") == 11


def test_ack_is_resent_when_the_2xx_is_retransmitted() -> None:
    alice = make_alice()
    net = Network(alice)
    connect(net)
    last_200 = next(out.response for name, out in reversed(net.log) if isinstance(out, SendResponse))
    acks_before = kinds(net.log).count("ACK")
    alice.receive_response(wire(last_200), 5.0)  # type: ignore[arg-type]
    again = alice.messages_to_send()
    assert len(again) == 1 and isinstance(again[0], SendAck)
    assert kinds(net.log).count("ACK") == acks_before
    assert alice.state is InviteState.CONFIRMED


def test_uas_that_does_not_retransmit_still_gives_up() -> None:
    alice = make_alice()
    net = Network(alice, bob_factory(retransmit_2xx=False))
    alice.send_invite(0.0)
    net.pump()
    net.drop = lambda sender, out: isinstance(out, SendAck)
    net.bob.answer(200, 0.0)
    trace = net.advance(40.0)
    assert kinds(trace, "bob0") == ["200/INVITE", "BYE"]


# ============================================================================ dialog checks


def test_in_dialog_request_with_old_cseq_gets_500() -> None:
    alice = make_alice()
    net = Network(alice)
    connect(net)
    bob = net.bob
    assert alice.dialog is not None
    info = alice.send_request("INFO", 1.0, body=b"x", content_type="text/plain")
    net.pump()
    (request_event,) = [e for e in events(bob) if not isinstance(e, (MediaUpdate, Answered))]
    stale = alice.dialog.create_request("INFO", ALICE, cseq=1)
    assert int(info.headers["CSeq"].split()[0]) > 1
    bob.receive_request(wire(stale), 2.0, transaction="t")  # type: ignore[arg-type]
    (out,) = bob.messages_to_send()
    assert isinstance(out, SendResponse) and out.response.code == 500 and out.transaction == "t"
    assert bob.state is InviteState.CONFIRMED
    del request_event


def test_unknown_dialog_gets_481() -> None:
    alice = make_alice()
    net = Network(alice)
    connect(net)
    assert alice.dialog is not None
    bye = alice.dialog.create_request("BYE", ALICE)
    bye.headers.set("To", "<sip:bob@example.com>;tag=nosuchtag")
    net.bob.receive_request(wire(bye), 3.0, transaction="t")  # type: ignore[arg-type]
    (out,) = net.bob.messages_to_send()
    assert isinstance(out, SendResponse) and out.response.code == 481
    assert net.bob.state is InviteState.CONFIRMED


def test_options_in_dialog_and_unknown_method() -> None:
    alice = make_alice()
    net = Network(alice)
    connect(net)
    assert alice.dialog is not None
    options = alice.dialog.create_request("OPTIONS", ALICE)
    net.bob.receive_request(wire(options), 3.0)  # type: ignore[arg-type]
    (out,) = net.bob.messages_to_send()
    assert isinstance(out, SendResponse) and out.response.code == 200
    odd = alice.dialog.create_request("FOO", ALICE)
    net.bob.receive_request(wire(odd), 3.0)  # type: ignore[arg-type]
    (out,) = net.bob.messages_to_send()
    assert isinstance(out, SendResponse) and out.response.code == 501


def test_uas_rejects_call() -> None:
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    net.bob.end_session(0.5, status_code=486)
    assert kinds(net.pump()) == ["486/INVITE"]
    (end,) = [e for e in events(alice) if isinstance(e, Terminated)]
    assert end.status_code == 486 and end.by_remote
    assert net.bob.state is InviteState.DISCONNECTED


def test_uas_no_common_codec_answers_488() -> None:
    alice = make_alice()
    net = Network(alice, bob_factory(answerer=None))
    alice.send_invite(0.0)
    net.pump()
    net.bob.answer(200, 0.1)
    assert kinds(net.pump()) == ["488/INVITE"]
    assert alice.state is InviteState.DISCONNECTED and net.bob.state is InviteState.DISCONNECTED


def test_local_commands_outside_the_table_name_role_and_state() -> None:
    alice = make_alice()
    with pytest.raises(LocalProtocolError, match="uac invite session in state NULL cannot send_cancel"):
        alice.cancel(0.0)
    alice.send_invite(0.0)
    with pytest.raises(LocalProtocolError, match="in state CALLING cannot send_invite"):
        alice.send_invite(0.0)
    with pytest.raises(LocalProtocolError):
        alice.answer(200, 0.0)


def test_callee_hangup_before_ack_waits_for_the_ack() -> None:
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    net.drop = lambda sender, out: isinstance(out, SendAck)
    net.bob.answer(200, 0.0)
    net.pump()
    net.bob.end_session(0.1)
    assert kinds(net.pump(), "bob0") == []
    net.drop = lambda sender, out: False
    trace = net.advance(1.0)  # the 2xx retransmission at 0.5 brings the ACK, then the BYE
    assert kinds(trace) == ["200/INVITE", "ACK", "BYE", "200/BYE"]
    assert alice.state is InviteState.DISCONNECTED and net.bob.state is InviteState.DISCONNECTED


# ============================================================================ forking


def test_forking_two_early_dialogs_first_2xx_wins() -> None:
    alice = make_alice()
    net = Network(alice, forks=2)
    alice.send_invite(0.0)
    net.pump()
    bob0, bob1 = net.bobs
    assert bob0.local_tag != bob1.local_tag
    bob0.answer(180, 0.1)
    bob1.answer(183, 0.1, sdp=None)
    net.pump()
    assert len(alice.early_dialogs) == 2
    early = events(alice)
    assert [type(e) for e in early] == [Ringing, EarlyMedia]
    assert {
        e.dialog_id.remote_tag for e in early if isinstance(e, (Ringing, EarlyMedia)) and e.dialog_id
    } == {
        bob0.local_tag,
        bob1.local_tag,
    }

    bob1.answer(200, 0.5)
    net.pump()
    assert alice.state is InviteState.CONFIRMED
    assert alice.dialog_id is not None and alice.dialog_id.remote_tag == bob1.local_tag
    assert bob1.state is InviteState.CONFIRMED

    bob0.answer(200, 0.6)  # the losing fork answers too: ACK then BYE (§13.2.2.4)
    trace = net.pump()
    assert kinds(trace) == ["200/INVITE", "ACK", "BYE", "200/BYE"]
    assert bob0.state is InviteState.DISCONNECTED
    (end,) = [e for e in events(bob0) if isinstance(e, Terminated)]
    assert end.cause == Reason("SIP", 200, "Call completed elsewhere")
    assert alice.state is InviteState.CONFIRMED and alice.dialog_id.remote_tag == bob1.local_tag


def test_build_response_helpers_used_by_the_harness() -> None:
    alice = make_alice()
    alice.send_invite(0.0)
    (out,) = alice.messages_to_send()
    assert isinstance(out, SendRequest)
    response = build_response(out.request, 486, to_tag="x")
    alice.receive_response(wire(response), 0.1)  # type: ignore[arg-type]
    assert alice.state is InviteState.DISCONNECTED


def test_stray_2xx_on_our_dialog_never_ends_the_call() -> None:
    alice = make_alice()
    net = Network(alice)
    connect(net)
    last_200 = next(out.response for name, out in reversed(net.log) if isinstance(out, SendResponse))
    stray = wire(last_200)
    assert isinstance(stray, Response)
    stray.headers.set("CSeq", "77 INVITE")
    alice.receive_response(stray, 5.0)
    assert alice.messages_to_send() == [] and alice.state is InviteState.CONFIRMED
