"""Glare (491), session timers (RFC 4028), 100rel/PRACK (RFC 3262) and UPDATE (RFC 3311)."""

from __future__ import annotations

from signaling.sdp import Direction
from signaling.sip.invite import (
    Answered,
    EarlyMedia,
    GlareRetry,
    InviteState,
    MediaUpdate,
    RefreshNeeded,
    SendAck,
    SendRequest,
    SendResponse,
    SessionRefreshed,
    Terminated,
)
from signaling.sip.session_timer import SessionTimerSettings
from tests.unit.sip.test_invite import (
    Network,
    answerer_for,
    bob_factory,
    connect,
    events,
    kinds,
    make_alice,
    media_direction,
    offer_for,
)

# ============================================================================ glare


def test_glare_both_reinvite_491_then_retry_after_the_timer() -> None:
    alice = make_alice(rng=lambda: 0.5)
    net = Network(alice, bob_factory(rng=lambda: 0.5))
    connect(net)
    bob = net.bob
    events(alice), events(bob)
    net.now = 10.0
    alice.hold(10.0)
    bob.reinvite(10.0, offer=offer_for("192.0.2.20", 50002))
    trace = net.pump()
    assert sorted(kinds(trace)) == sorted(["INVITE", "INVITE", "491/INVITE", "491/INVITE"])
    # Alice chose the Call-ID: she waits 2.1 + 1.9*0.5 = 3.05 s; Bob waits 2.0*0.5 = 1.0 s (§14.1).
    assert events(alice) == [GlareRetry("INVITE", 2.1 + 1.9 * 0.5)]
    assert events(bob) == [GlareRetry("INVITE", 1.0)]
    assert alice.get_timer() == 10.0 + 3.05 and bob.get_timer() == 11.0

    trace = net.advance(11.0)
    assert kinds(trace) == ["INVITE", "200/INVITE", "ACK"]  # bob's retry goes through
    (bob_update,) = events(bob)
    assert isinstance(bob_update, MediaUpdate) and bob_update.remote.media[0].port == 40000
    events(alice)

    trace = net.advance(13.1)
    assert kinds(trace) == ["INVITE", "200/INVITE", "ACK"]  # then alice's hold
    (alice_update,) = events(alice)
    assert isinstance(alice_update, MediaUpdate)
    assert media_direction(alice_update.local) is Direction.SENDONLY
    assert alice.state is InviteState.CONFIRMED and bob.state is InviteState.CONFIRMED
    assert alice.get_timer() is None


def test_update_offer_while_our_offer_is_pending_gets_491() -> None:
    alice = make_alice(rng=lambda: 0.0)
    net = Network(alice, bob_factory(rng=lambda: 0.0))
    connect(net)
    events(alice), events(net.bob)
    net.now = 5.0
    alice.update(5.0, offer=offer_for("192.0.2.10", 40002))
    net.bob.update(5.0, offer=offer_for("192.0.2.20", 50002))
    trace = net.pump()
    assert sorted(kinds(trace)) == sorted(["UPDATE", "UPDATE", "491/UPDATE", "491/UPDATE"])
    assert [type(e) for e in events(alice)] == [GlareRetry]
    assert [type(e) for e in events(net.bob)] == [GlareRetry]
    trace = net.advance(5.0)  # bob (delay 2.0 * 0) retries at once
    assert kinds(trace) == ["UPDATE", "200/UPDATE"]
    assert alice.get_timer() == 5.0 + 2.1
    trace = net.advance(7.2)  # alice (the Call-ID owner) waits 2.1 s
    assert kinds(trace) == ["UPDATE", "200/UPDATE"]
    assert [type(e) for e in events(alice)] == [MediaUpdate, MediaUpdate]


# ============================================================================ session timers

TIMER = SessionTimerSettings(session_expires=120, min_se=90)


def test_session_timer_negotiated_and_refreshed_at_half_interval() -> None:
    alice = make_alice(session_timer=TIMER)
    net = Network(alice, bob_factory(session_timer=TIMER))
    alice.send_invite(0.0)
    net.pump()
    invite = net.log[0][1]
    assert isinstance(invite, SendRequest)
    assert invite.request.headers["Session-Expires"] == "120"
    assert "timer" in invite.request.headers["Supported"]
    net.bob.answer(200, 0.0)
    trace = net.pump()
    ok = trace[0][1]
    assert isinstance(ok, SendResponse)
    assert ok.response.headers["Session-Expires"] == "120;refresher=uac"
    assert ok.response.headers["Require"] == "timer"
    assert SessionRefreshed(120, True) in events(alice)
    assert SessionRefreshed(120, False) in events(net.bob)
    assert alice.get_timer() == 60.0  # refresh at half the interval
    assert net.bob.get_timer() == 88.0  # expiry: interval - min(32, interval/3)

    trace = net.advance(200.0)
    assert kinds(trace) == ["UPDATE", "200/UPDATE"] * 3  # at 60, 120, 180
    assert alice.state is InviteState.CONFIRMED and net.bob.state is InviteState.CONFIRMED
    assert net.bob.get_timer() == 180.0 + 88.0


def test_session_expires_without_refresh_sends_bye() -> None:
    alice = make_alice(session_timer=TIMER)
    net = Network(alice, bob_factory(session_timer=TIMER))
    connect(net)
    events(net.bob)
    net.drop = lambda sender, out: sender == "alice" and isinstance(out, SendRequest)
    trace = net.advance(100.0)
    assert "UPDATE" in kinds(trace, "alice")
    assert kinds(trace, "bob0") == ["BYE"]  # at 88 s, no refresh arrived
    assert net.bob.state is InviteState.DISCONNECTED
    (end,) = [e for e in events(net.bob) if isinstance(e, Terminated)]
    assert end.reason == "session expired" and end.status_code == 408
    assert alice.state is InviteState.DISCONNECTED


def test_refresh_by_reinvite_when_peer_does_not_allow_update() -> None:
    alice = make_alice(session_timer=TIMER)
    net = Network(alice, bob_factory(session_timer=TIMER))
    connect(net)
    alice.peer_allows = frozenset({"INVITE", "ACK", "BYE", "CANCEL"})
    trace = net.advance(61.0)
    assert kinds(trace) == ["INVITE", "200/INVITE", "ACK"]
    reinvite = trace[0][1]
    assert isinstance(reinvite, SendRequest) and reinvite.request.body  # same SDP, same version
    assert alice.negotiator.local is not None
    assert b"o=- 4242 1 " in reinvite.request.body


def test_manual_refresh_event_when_auto_refresh_is_off() -> None:
    alice = make_alice(session_timer=TIMER, auto_refresh=False)
    net = Network(alice, bob_factory(session_timer=TIMER))
    connect(net)
    events(alice)
    net.advance(60.0)
    assert events(alice) == [RefreshNeeded(120)]
    alice.refresh(60.0)
    assert kinds(net.pump()) == ["UPDATE", "200/UPDATE"]


def test_422_then_retry_with_min_se() -> None:
    alice = make_alice(session_timer=TIMER)
    strict = SessionTimerSettings(session_expires=1800, min_se=300)
    net = Network(alice, bob_factory(session_timer=strict))
    alice.send_invite(0.0)
    trace = net.pump()
    assert kinds(trace) == ["INVITE", "422/INVITE", "INVITE"]
    too_small = trace[1][1]
    assert isinstance(too_small, SendResponse) and too_small.response.headers["Min-SE"] == "300"
    retry = trace[2][1]
    assert isinstance(retry, SendRequest)
    first = trace[0][1]
    assert isinstance(first, SendRequest)
    assert retry.request.headers["Session-Expires"] == "300"
    assert retry.request.headers["Min-SE"] == "300"
    assert retry.request.headers["CSeq"] == "2 INVITE"
    assert retry.request.headers["Call-ID"] == first.request.headers["Call-ID"]
    assert retry.request.headers["Via"] != first.request.headers["Via"]
    assert alice.state is InviteState.CALLING
    net.bob.answer(200, 1.0)
    net.pump()
    assert alice.state.value == "confirmed"
    assert alice.session_timer is not None and alice.session_timer.interval == 300


# ============================================================================ 100rel / PRACK


def test_reliable_183_retransmitted_until_prack() -> None:
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    bob = net.bob
    offer = bob.negotiator.pending_offer
    assert offer is not None
    answer = answerer_for("192.0.2.20", 50000)(offer)
    net.drop = lambda sender, out: sender == "bob0" and isinstance(out, SendResponse)
    bob.answer(183, 0.0, reliable=True, sdp=answer)
    trace = net.advance(3.6)
    sent = [out for name, out in trace if name == "bob0"]
    assert len(sent) == 4  # at 0, 0.5, 1.5, 3.5 (T1 doubling)
    first = sent[0]
    assert isinstance(first, SendResponse)
    assert first.response.headers["Require"] == "100rel" and first.response.headers.get("RSeq")
    assert all(
        isinstance(o, SendResponse) and o.response.headers["RSeq"] == first.response.headers["RSeq"]
        for o in sent
    )
    assert kinds(trace, "alice") == []

    net.drop = lambda sender, out: False
    trace = net.advance(8.0)  # the retransmission at 7.5 arrives: PRACK, then silence
    assert kinds(trace) == ["183/INVITE", "PRACK", "200/PRACK"]
    prack = trace[1][1]
    assert isinstance(prack, SendRequest)
    assert prack.request.headers["RAck"] == f"{first.response.headers['RSeq']} 1 INVITE"
    assert kinds(net.advance(30.0)) == []
    alice_events = events(alice)
    assert [type(e) for e in alice_events] == [MediaUpdate, EarlyMedia]
    assert isinstance(alice_events[0], MediaUpdate) and alice_events[0].early

    bob.answer(200, 31.0)
    assert kinds(net.pump()) == ["200/INVITE", "ACK"]
    assert alice.state is InviteState.CONFIRMED


def test_reliable_provisional_never_pracked_fails_the_invite() -> None:
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    net.drop = lambda sender, out: sender == "alice"
    net.bob.answer(180, 0.0, reliable=True)
    net.advance(40.0)
    assert net.bob.state is InviteState.DISCONNECTED
    (end,) = [e for e in events(net.bob) if isinstance(e, Terminated)]
    assert end.status_code == 504


def test_peer_requiring_100rel_forces_reliable_provisionals() -> None:
    alice = make_alice(require_100rel=True)
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    net.bob.answer(180, 0.1)  # not asked for, but the INVITE has Require: 100rel
    trace = net.pump()
    assert kinds(trace) == ["180/INVITE", "PRACK", "200/PRACK"]


def test_require_100rel_to_a_uas_without_it_gets_420() -> None:
    alice = make_alice(require_100rel=True)
    net = Network(alice, bob_factory(support_100rel=False))
    alice.send_invite(0.0)
    trace = net.pump()
    assert kinds(trace) == ["INVITE", "420/INVITE"]
    bad = trace[1][1]
    assert isinstance(bad, SendResponse) and bad.response.headers["Unsupported"] == "100rel"
    (end,) = [e for e in events(alice) if isinstance(e, Terminated)]
    assert end.status_code == 420 and alice.state is InviteState.DISCONNECTED


def test_uas_requiring_100rel_rejects_uac_without_it_with_421() -> None:
    alice = make_alice(support_100rel=False)
    net = Network(alice, bob_factory(require_100rel=True))
    alice.send_invite(0.0)
    trace = net.pump()
    assert kinds(trace) == ["INVITE", "421/INVITE"]
    reply = trace[1][1]
    assert isinstance(reply, SendResponse) and reply.response.headers["Require"] == "100rel"
    assert alice.state is InviteState.DISCONNECTED


# ============================================================================ UPDATE


def test_update_in_early_dialog_changes_media_before_answer() -> None:
    alice = make_alice()
    net = Network(alice)
    alice.send_invite(0.0)
    net.pump()
    bob = net.bob
    assert bob.negotiator.pending_offer is not None
    bob.answer(183, 0.1, reliable=True, sdp=answerer_for("192.0.2.20", 50000)(bob.negotiator.pending_offer))
    assert kinds(net.pump()) == ["183/INVITE", "PRACK", "200/PRACK"]
    events(alice), events(bob)

    alice.update(1.0, offer=offer_for("192.0.2.10", 40010, Direction.SENDONLY))
    trace = net.pump()
    assert kinds(trace) == ["UPDATE", "200/UPDATE"]
    (alice_update,) = events(alice)
    (bob_update,) = events(bob)
    assert isinstance(alice_update, MediaUpdate) and alice_update.early
    assert isinstance(bob_update, MediaUpdate) and bob_update.early
    assert bob_update.remote.media[0].port == 40010
    assert media_direction(alice_update.remote) is Direction.RECVONLY
    assert alice.state is InviteState.EARLY and bob.state is InviteState.EARLY

    bob.answer(200, 2.0)
    net.pump()
    assert alice.state.value == "confirmed"
    alice_events = events(alice)
    assert alice.dialog_id is not None and Answered(alice.dialog_id) in alice_events
    assert (
        alice.negotiator.remote is not None and media_direction(alice.negotiator.remote) is Direction.RECVONLY
    )


def test_ack_carries_no_body_when_offer_was_in_invite() -> None:
    alice = make_alice()
    net = Network(alice)
    connect(net)
    ack = next(out for _name, out in net.log if isinstance(out, SendAck))
    assert ack.request.body == b""
