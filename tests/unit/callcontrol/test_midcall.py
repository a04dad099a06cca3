"""Mid-call features: hold/resume across legs, blind transfer, INFO DTMF, media timeout, early media,
echo, trunk digest auth, and a failing repository that must not kill the call."""

from __future__ import annotations

from media.control import Direction as MediaDirection
from media.control import MediaTimeout
from signaling.callcontrol.actions import Contact, RouteEcho, RouteQuery, RouteToContacts
from signaling.callcontrol.config import CallControlConfig, Trunk
from signaling.sdp import Direction
from signaling.sip.invite import InDialogResponse, InviteState, Terminated
from signaling.sip.message import build_response
from tests.unit.callcontrol.harness import FailingCallRepository, Switchboard

CONTACTS = {
    "bob": "sip:bob@192.0.2.20:5062",
    "carol": "sip:carol@192.0.2.30:5064",
}


def by_user(query: RouteQuery):
    if query.user == "echo":
        return RouteEcho("echo")
    return RouteToContacts(
        target=f"sip:{query.user}@uc-edge.local",
        contacts=(Contact(CONTACTS[query.user]),),
        to_uri=f"<sip:{query.user}@uc-edge.local>",
    )


def connected(board: Switchboard | None = None):
    board = board or Switchboard(by_user)
    alice = board.phone("alice", "192.0.2.10", 5060, 40000)
    bob = board.phone("bob", "192.0.2.20", 5062, 42000)
    board.dial(alice, "sip:bob@uc-edge.local")
    bob.session.answer(200, board.now)
    board.settle()
    assert alice.session.state is InviteState.CONFIRMED
    return board, alice, bob


def endpoint_of(board, leg):
    return board.media.endpoints[leg.endpoint_id]


def direction_seen_by(phone) -> Direction:
    remote = phone.session.negotiator.remote
    return remote.direction_of(remote.media[0])


def test_hold_and_resume_from_caller_are_passed_to_callee_and_media() -> None:
    board, alice, bob = connected()
    call = board.call
    b_leg = call.bridge[1]
    alice.session.hold(board.now)
    board.settle()
    assert direction_seen_by(alice) is Direction.RECVONLY
    assert direction_seen_by(bob) is Direction.SENDONLY  # the re-INVITE to bob says we only send
    assert endpoint_of(board, call.a).params.direction is MediaDirection.RECVONLY
    assert endpoint_of(board, b_leg).params.direction is MediaDirection.SENDONLY
    # no media timeout while on hold
    call.handle_media_event(MediaTimeout(call.a.endpoint_id, 30.0), board.now)
    board.settle()
    assert not call.ended
    alice.session.resume(board.now)
    board.settle()
    assert direction_seen_by(bob) is Direction.SENDRECV
    assert endpoint_of(board, b_leg).params.direction is MediaDirection.SENDRECV
    assert alice.session.state is InviteState.CONFIRMED and bob.session.state is InviteState.CONFIRMED


def test_hold_from_callee_is_passed_to_caller() -> None:
    board, alice, bob = connected()
    bob.session.hold(board.now)
    board.settle()
    assert direction_seen_by(alice) is Direction.SENDONLY
    assert direction_seen_by(bob) is Direction.RECVONLY


def test_info_dtmf_goes_to_the_other_legs_endpoint() -> None:
    board, alice, _bob = connected()
    alice.session.send_request(
        "INFO", board.now, body=b"Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay"
    )
    board.settle()
    b_leg = board.call.bridge[1]
    assert endpoint_of(board, b_leg).dtmf == [("5", 160)]
    (reply,) = [e for e in alice.drain() if isinstance(e, InDialogResponse)]
    assert reply.response.code == 200
    alice.session.send_request("INFO", board.now, body=b"Signal=Z\r\n", content_type="application/dtmf-relay")
    board.settle()
    assert [e.response.code for e in alice.drain() if isinstance(e, InDialogResponse)][-1] == 400


def test_media_timeout_byes_both_legs_with_reason() -> None:
    board, alice, bob = connected()
    call = board.call
    call.handle_media_event(MediaTimeout(call.a.endpoint_id, 30.0), board.now)
    board.settle()
    for phone in (alice, bob):
        bye = phone.received[-1]
        assert bye.method == "BYE"
        assert bye.headers.get("Reason") == 'SIP;cause=408;text="media timeout"'
        assert phone.session.state is InviteState.DISCONNECTED
    row = board.session_row()
    assert row.termination_cause == "media_timeout" and row.ended_by == "system"
    assert call.finished


def test_blind_transfer_by_callee_with_notify_sipfrag() -> None:
    board, alice, bob = connected()
    carol = board.phone("carol", "192.0.2.30", 5064, 44000)
    bob.session.send_request("REFER", board.now, headers=[("Refer-To", "<sip:carol@uc-edge.local>")])
    board.settle()
    (accepted,) = [e for e in bob.drain() if isinstance(e, InDialogResponse)]
    assert accepted.response.code == 202
    notifies = [r for r in bob.received if r.method == "NOTIFY"]
    assert notifies[0].body == b"SIP/2.0 100 Trying\r\n"
    assert notifies[0].headers.get("Event") == "refer"
    assert notifies[0].headers.get("Content-Type").startswith("message/sipfrag")
    assert carol.session is not None and carol.session.state is InviteState.INCOMING
    carol.session.answer(200, board.now)
    board.settle()
    notifies = [r for r in bob.received if r.method == "NOTIFY"]
    assert notifies[-1].body == b"SIP/2.0 200 OK\r\n"
    assert notifies[-1].headers.get("Subscription-State").startswith("terminated")
    assert bob.session.state is InviteState.DISCONNECTED  # the transferor is released
    assert alice.session.state is InviteState.CONFIRMED and carol.session.state is InviteState.CONFIRMED
    call = board.call
    a_ep, c_ep = call.bridge[0].endpoint_id, call.bridge[1].endpoint_id
    assert frozenset((a_ep, c_ep)) in board.media.connections
    steps = [(a.step, a.target, a.result) for a in board.attempts()]
    assert steps == [(1, CONTACTS["bob"], "answered"), (2, CONTACTS["carol"], "answered")]
    # the new pair is a real bridge: carol hangs up, alice gets the BYE
    carol.session.end_session(board.now)
    board.settle()
    assert alice.session.state is InviteState.DISCONNECTED
    assert board.session_row().status == "ended"


def test_failed_transfer_notifies_the_failure_and_keeps_the_call() -> None:
    board, alice, bob = connected()
    board.phone("carol", "192.0.2.30", 5064, 44000).auto_answer = 486
    alice.session.send_request("REFER", board.now, headers=[("Refer-To", "<sip:carol@uc-edge.local>")])
    board.settle()
    notifies = [r for r in alice.received if r.method == "NOTIFY"]
    assert [n.body for n in notifies] == [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 486 Busy Here\r\n"]
    assert alice.session.state is InviteState.CONFIRMED and bob.session.state is InviteState.CONFIRMED
    assert not board.call.ended


def test_early_media_is_relayed_before_the_answer() -> None:
    board = Switchboard(by_user)
    alice = board.phone("alice", "192.0.2.10", 5060, 40000)
    bob = board.phone("bob", "192.0.2.20", 5062, 42000)
    board.dial(alice, "sip:bob@uc-edge.local")
    bob.session.answer(183, board.now, sdp=bob.answerer(bob.session.negotiator.pending_offer))
    board.settle()
    assert alice.session.state is InviteState.EARLY
    assert alice.session.negotiator.remote is not None  # early SDP reached the caller
    assert len(board.media.connections) == 1
    bob.session.answer(200, board.now)
    board.settle()
    assert alice.session.state is InviteState.CONFIRMED
    assert board.media.names().count("connect") == 1


def test_echo_number_answers_and_echoes() -> None:
    board = Switchboard(by_user)
    alice = board.phone("alice", "192.0.2.10", 5060, 40000)
    board.dial(alice, "sip:echo@uc-edge.local")
    assert alice.session.state is InviteState.CONFIRMED
    (endpoint,) = board.media.live()
    assert endpoint.echo and endpoint.params is not None
    assert board.attempts()[0].target == "echo"
    alice.session.end_session(board.now)
    board.settle()
    assert board.call.finished and board.session_row().termination_cause == "normal_clearing"


def test_trunk_challenge_is_answered_with_digest_credentials() -> None:
    trunk = Trunk("carrier", "192.0.2.40", 5070, username="edge", password="s3cret", prefixes=("+",))

    def via_trunk(query: RouteQuery) -> RouteToContacts:
        return RouteToContacts(
            target="sip:+15550100@192.0.2.40:5070",
            contacts=(Contact("sip:+15550100@192.0.2.40:5070"),),
            to_uri="<sip:+15550100@192.0.2.40>",
            trunk=trunk,
            leg_type="pstn",
        )

    board = Switchboard(via_trunk, config=CallControlConfig(trunks=(trunk,)))
    alice = board.phone("alice", "192.0.2.10", 5060, 40000)
    carrier = board.phone("carrier", "192.0.2.40", 5070, 46000)
    board.dial(alice, "sip:+15550100@uc-edge.local")
    first = carrier.received[0]
    challenge = build_response(
        first,
        407,
        to_tag="t1",
        headers=[("Proxy-Authenticate", 'Digest realm="carrier", nonce="abc", qop="auth", algorithm=MD5')],
    )
    carrier.session = None
    board.call.handle_response(challenge, board.now)
    board.settle()
    retry = carrier.received[-1]
    assert retry.method == "INVITE" and retry.headers.get("Call-ID") == first.headers.get("Call-ID")
    assert 'username="edge"' in retry.headers.get("Proxy-Authorization")
    assert retry.cseq.sequence == first.cseq.sequence + 1
    carrier.session.answer(200, board.now)
    board.settle()
    assert alice.session.state is InviteState.CONFIRMED
    assert board.session_row().direction == "outbound" and board.cdr() is None


def test_repository_failure_keeps_the_call_going() -> None:
    from tests.unit.callcontrol.harness import EPOCH

    broken = FailingCallRepository({"change_leg_state", "answer_call"}, node_id="test", clock=lambda: EPOCH)
    board, alice, bob = connected(Switchboard(by_user, calls_repo=broken))
    assert alice.session.state is InviteState.CONFIRMED
    assert {type(action).__name__ for action, _ in board.persist_errors} == {"RecordLegState", "RecordAnswer"}
    alice.session.end_session(board.now)
    board.settle()
    assert bob.session.state is InviteState.DISCONNECTED
    assert board.session_row().status == "ended" and board.cdr() is not None
    assert [e for e in alice.drain() if isinstance(e, Terminated)]
