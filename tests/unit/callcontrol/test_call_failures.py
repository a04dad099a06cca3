"""Calls that do not connect: CANCEL while ringing, forking, no answer, busy, 488, routing refusals."""

from __future__ import annotations

from signaling.callcontrol.actions import Contact, RouteQuery, RouteReject, RouteToContacts
from signaling.callcontrol.call import CallerIdentity
from signaling.callcontrol.config import CallControlConfig
from signaling.sip.invite import InviteState, Terminated
from tests.unit.callcontrol.harness import Switchboard


def contacts(*uris: str):
    def route(query: RouteQuery) -> RouteToContacts:
        return RouteToContacts(
            target="sip:bob@uc-edge.local",
            contacts=tuple(Contact(uri) for uri in uris),
            to_uri="<sip:bob@uc-edge.local>",
        )

    return route


def caller_end(phone) -> Terminated:
    (end,) = [e for e in phone.drain() if isinstance(e, Terminated)]
    return end


def test_cancel_during_ringing_cancels_b_leg_and_answers_487() -> None:
    board = Switchboard(contacts("sip:bob@192.0.2.20:5062"))
    alice = board.phone("alice", "192.0.2.10")
    bob = board.phone("bob", "192.0.2.20", 5062)
    board.dial(alice, "sip:bob@uc-edge.local")
    bob.session.answer(180, board.now)
    board.settle()
    assert alice.session.state is InviteState.EARLY
    board.now = 3.0
    alice.session.end_session(board.now)
    board.settle()
    assert caller_end(alice).status_code == 487
    assert bob.session.state is InviteState.DISCONNECTED
    cancel = next(r for r in bob.received if r.method == "CANCEL")
    assert cancel.headers.get("Reason") is not None
    row = board.session_row()
    assert row.termination_cause == "cancelled" and row.ended_by == "caller" and row.sip_status == 487
    (attempt,) = board.attempts()
    assert attempt.result == "cancelled"
    assert [leg.status for leg in board.legs()] == ["failed", "failed"]
    assert board.cdr().answered_at is None
    assert board.media.live() == [] and board.call.finished


def test_forking_first_answer_wins_others_cancelled_completed_elsewhere() -> None:
    board = Switchboard(
        contacts("sip:bob@192.0.2.20:5062", "sip:bob@192.0.2.21:5062", "sip:bob@192.0.2.22:5062")
    )
    alice = board.phone("alice", "192.0.2.10")
    desk = board.phone("bob", "192.0.2.20", 5062, 42000)
    mobile = board.phone("bob", "192.0.2.21", 5062, 43000)
    web = board.phone("bob", "192.0.2.22", 5062, 44000)
    board.dial(alice, "sip:bob@uc-edge.local")
    for phone in (desk, mobile, web):
        assert phone.session is not None and phone.session.state is InviteState.INCOMING
        phone.session.answer(180, board.now)
    board.settle()
    board.now = 4.0
    mobile.session.answer(200, board.now)
    board.settle()
    assert alice.session.state is InviteState.CONFIRMED and mobile.session.state is InviteState.CONFIRMED
    for loser in (desk, web):
        assert loser.session.state is InviteState.DISCONNECTED
        cancel = next(r for r in loser.received if r.method == "CANCEL")
        assert cancel.headers.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    results = {a.target: a.result for a in board.attempts()}
    assert results == {
        "sip:bob@192.0.2.20:5062": "cancelled",
        "sip:bob@192.0.2.21:5062": "answered",
        "sip:bob@192.0.2.22:5062": "cancelled",
    }
    # only the winner's endpoint (and the caller's) is left, bridged
    assert len(board.media.live()) == 2 and len(board.media.connections) == 1


def test_no_answer_timeout_cancels_and_answers_480() -> None:
    board = Switchboard(contacts("sip:bob@192.0.2.20:5062"), config=CallControlConfig(no_answer_timeout=20.0))
    alice = board.phone("alice", "192.0.2.10")
    bob = board.phone("bob", "192.0.2.20", 5062)
    board.dial(alice, "sip:bob@uc-edge.local")
    bob.session.answer(180, board.now)
    board.settle()
    board.advance(19.0)
    assert alice.session.state is InviteState.EARLY
    board.advance(2.0)
    assert caller_end(alice).status_code == 480
    cancel = next(r for r in bob.received if r.method == "CANCEL")
    assert "cause=480" in cancel.headers.get("Reason")
    (attempt,) = board.attempts()
    assert attempt.result == "no_answer"
    assert board.session_row().termination_cause == "no_answer_or_unavailable"
    board.advance(40.0)
    assert board.call.finished


def test_busy_is_mapped_through() -> None:
    board = Switchboard(contacts("sip:bob@192.0.2.20:5062"))
    alice = board.phone("alice", "192.0.2.10")
    bob = board.phone("bob", "192.0.2.20", 5062)
    bob.auto_answer = 486
    board.dial(alice, "sip:bob@uc-edge.local")
    assert caller_end(alice).status_code == 486
    row = board.session_row()
    assert row.termination_cause == "busy" and row.ended_by == "callee" and row.sip_status == 486
    (attempt,) = board.attempts()
    assert (attempt.result, attempt.sip_status) == ("busy", 486)
    assert board.cdr().termination_cause == "busy"


def test_all_forks_fail_busy_wins_over_not_found() -> None:
    board = Switchboard(contacts("sip:bob@192.0.2.20:5062", "sip:bob@192.0.2.21:5062"))
    alice = board.phone("alice", "192.0.2.10")
    board.phone("bob", "192.0.2.20", 5062).auto_answer = 404
    board.phone("bob", "192.0.2.21", 5062).auto_answer = 486
    board.dial(alice, "sip:bob@uc-edge.local")
    assert caller_end(alice).status_code == 486


def test_no_common_codec_is_488_before_routing() -> None:
    board = Switchboard(contacts("sip:bob@192.0.2.20:5062"))
    alice = board.phone("alice", "192.0.2.10", codecs=("G729",))
    board.dial(alice, "sip:bob@uc-edge.local")
    assert caller_end(alice).status_code == 488
    assert board.queries == []
    assert board.session_row().termination_cause == "no_common_codec"
    assert board.call.finished


def test_callee_488_is_passed_to_the_caller() -> None:
    board = Switchboard(contacts("sip:bob@192.0.2.20:5062"))
    alice = board.phone("alice", "192.0.2.10")
    board.phone("bob", "192.0.2.20", 5062).auto_answer = 488
    board.dial(alice, "sip:bob@uc-edge.local")
    assert caller_end(alice).status_code == 488
    assert board.attempts()[0].result == "incompatible"


def test_unknown_user_404_and_unregistered_480() -> None:
    for status, result in ((404, "not_found"), (480, "unavailable")):
        board = Switchboard(lambda q, s=status, r=result: RouteReject(f"sip:{q.user}@{q.host}", s, r))
        alice = board.phone("alice", "192.0.2.10")
        board.dial(alice, "sip:nobody@uc-edge.local")
        assert caller_end(alice).status_code == status
        (attempt,) = board.attempts()
        assert (attempt.target, attempt.result, attempt.sip_status) == (
            "sip:nobody@uc-edge.local",
            result,
            status,
        )
        assert board.cdr() is not None
        assert board.media.live() == [] and board.call.finished


def test_media_failure_for_caller_is_503() -> None:
    board = Switchboard(contacts("sip:bob@192.0.2.20:5062"))
    board.media.fail_creates = 1
    alice = board.phone("alice", "192.0.2.10")
    board.dial(alice, "sip:bob@uc-edge.local")
    assert caller_end(alice).status_code == 503


def test_route_resolved_later_still_places_the_call() -> None:
    board = Switchboard(contacts("sip:bob@192.0.2.20:5062"), caller=CallerIdentity(trunk="carrier"))
    board.hold_routing = True
    alice = board.phone("alice", "192.0.2.10")
    bob = board.phone("bob", "192.0.2.20", 5062)
    board.dial(alice, "sip:bob@uc-edge.local")
    (held,) = board.held_routes
    board.call.handle_route(held.step, board.route(held.query), board.now)
    board.settle()
    assert bob.session is not None and bob.session.state is InviteState.INCOMING
    assert board.session_row().direction == "inbound"
