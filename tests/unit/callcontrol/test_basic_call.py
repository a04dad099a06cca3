"""Basic call flows through the pure Call: answer, hang up from either side, rows and events."""

from __future__ import annotations

from signaling.callcontrol.actions import Contact, RouteQuery, RouteToContacts
from signaling.sip.invite import InviteState, Terminated
from tests.unit.callcontrol.harness import Switchboard


def to_bob(query: RouteQuery) -> RouteToContacts:
    return RouteToContacts(
        target="sip:bob@uc-edge.local",
        contacts=(Contact("sip:bob@192.0.2.20:5062"),),
        to_uri="<sip:bob@uc-edge.local>",
    )


def connected_call() -> tuple[Switchboard, object, object]:
    board = Switchboard(to_bob)
    alice = board.phone("alice", "192.0.2.10", 5060, 40000)
    bob = board.phone("bob", "192.0.2.20", 5062, 42000)
    board.dial(alice, "sip:bob@uc-edge.local")
    assert bob.session is not None
    bob.session.answer(180, board.now)
    board.settle()
    board.now = 2.0
    bob.session.answer(200, board.now)
    board.settle()
    return board, alice, bob


def test_basic_call_answer_media_anchored_and_rows() -> None:
    board, alice, bob = connected_call()
    assert alice.session.state is InviteState.CONFIRMED and bob.session.state is InviteState.CONFIRMED
    # Each side saw OUR media address, never the other phone's.
    alice_remote = alice.session.negotiator.remote
    bob_remote = bob.session.negotiator.remote
    assert alice_remote.connection.address == "192.0.2.1"
    assert bob_remote.connection.address == "192.0.2.1"
    assert alice_remote.media[0].port != bob_remote.media[0].port
    # B leg offer is built from our codecs (PCMU first), not a copy of Alice's (opus first).
    offered = [c.name for c in bob_remote.media[0].codecs()]
    assert offered[0] == "PCMU"
    # Both endpoints configured with what each side negotiated, then connected.
    live = board.media.live()
    assert len(live) == 2
    by_leg = {ep.leg_id: ep for ep in live}
    call = board.call
    a_ep = by_leg[str(call.a.leg_id)]
    assert a_ep.params.remote_address == "192.0.2.10" and a_ep.params.remote_port == 40000
    b_ep = next(ep for ep in live if ep is not a_ep)
    assert b_ep.params.remote_address == "192.0.2.20" and b_ep.params.remote_port == 42000
    assert frozenset((a_ep.local.endpoint_id, b_ep.local.endpoint_id)) in board.media.connections
    row = board.session_row()
    assert row.status == "answered" and row.answered_leg_id is not None
    assert [leg.status for leg in board.legs()] == ["confirmed", "confirmed"]
    (attempt,) = board.attempts()
    assert (attempt.step, attempt.target, attempt.result, attempt.sip_status) == (
        1,
        "sip:bob@192.0.2.20:5062",
        "answered",
        200,
    )
    assert board.persist_errors == []


def test_bye_from_caller_hangs_up_callee_with_reason_and_writes_cdr() -> None:
    board, alice, bob = connected_call()
    board.now = 62.0
    alice.session.end_session(board.now)
    board.settle()
    assert bob.session.state is InviteState.DISCONNECTED
    bye = bob.received[-1]
    assert bye.method == "BYE"
    assert bye.headers.get("Reason") == 'Q.850;cause=16;text="Normal call clearing"'
    row = board.session_row()
    assert row.status == "ended" and row.termination_cause == "normal_clearing" and row.ended_by == "caller"
    cdr = board.cdr()
    assert cdr is not None and cdr.duration_seconds == 62
    assert cdr.answered_at is not None and (cdr.ended_at - cdr.answered_at).total_seconds() == 60
    assert cdr.termination_cause == "normal_clearing" and cdr.account_id == board.caller.account_id
    assert board.media.live() == []
    assert board.call.finished
    assert board.call_event_types()[0] == "call.started" and board.call_event_types()[-1] == "call.ended"


def test_bye_from_callee_hangs_up_caller() -> None:
    board, alice, bob = connected_call()
    board.now = 10.0
    bob.session.end_session(board.now)
    board.settle()
    assert alice.session.state is InviteState.DISCONNECTED
    (end,) = [e for e in alice.drain() if isinstance(e, Terminated)]
    assert end.by_remote
    row = board.session_row()
    assert row.ended_by == "callee" and row.termination_cause == "normal_clearing"
    assert [leg.status for leg in board.legs()] == ["terminated", "terminated"]
    assert board.call.finished


def test_a_callee_leg_over_a_websocket_flow_carries_a_ws_via() -> None:
    """WS rides on the HTTP listener, so there is no "ws" local address: the Via must still say WS."""
    from signaling.callcontrol.call import CallEnvironment
    from signaling.callcontrol.config import CallControlConfig
    from signaling.sip.dialog import LocalAddress

    env = CallEnvironment(CallControlConfig(), {"udp": LocalAddress("UDP", "192.0.2.9", 5060)})
    assert env.local_address("udp") == LocalAddress("UDP", "192.0.2.9", 5060)
    ws = env.local_address("ws")
    assert ws.transport == "WS" and ws.via("z9hG4bKx").startswith("SIP/2.0/WS 192.0.2.9:5060;")
    assert env.local_address("TCP").transport == "TCP"
    assert env.contact(ws).endswith(";transport=ws>")


def test_callee_leg_carries_the_callers_max_forwards_less_one() -> None:
    for sent, expected in ((70, "69"), (10, "9"), (1, "0")):
        board = Switchboard(to_bob)
        alice = board.phone("alice", "192.0.2.10", 5060, 40000)
        bob = board.phone("bob", "192.0.2.20", 5062, 42000)
        board.dial(alice, "sip:bob@uc-edge.local", max_forwards=sent)
        invite = bob.received[0]
        assert invite.method == "INVITE"
        assert invite.headers.get("Max-Forwards") == expected, sent
