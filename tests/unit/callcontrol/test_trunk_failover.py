"""A trunk whose host name resolved to several addresses: the pure Call tries them one after the other
(RFC 3263 §4.3) when an INVITE gets no response (Timer B), a transport error or a 503, and stops at the
callee's real answer, at the last address, or when the caller cancels.

The route comes from the real :class:`CallRouter` over a :class:`TrunkAddresses` filled by hand; the
clock is the switchboard's. An address in ``black_holes`` swallows what is sent to it: its INVITE's
Timer B is fired by hand (what the transaction layer reports through ``Call.request_failed``).
"""

from __future__ import annotations

from typing import Any

import pytest

from signaling.callcontrol.actions import CreateEndpoint, RouteQuery, SendSip
from signaling.callcontrol.call import CallerIdentity
from signaling.callcontrol.config import CallControlConfig, Trunk, TrunkFailover
from signaling.callcontrol.router import CallRouter
from signaling.sip.invite import InviteState, SendRequest, Terminated
from signaling.sip.message import build_cancel, cseq_of
from storage.memory.hot import MemoryLocationStore
from tests.unit.callcontrol.harness import TIMERS, Phone, Switchboard, wire

CARRIER = Trunk(name="carrier", host="sip.carrier.test", port=5060, prefixes=("00",))
ADDRESSES = ("192.0.2.31", "192.0.2.32", "192.0.2.33")
NUMBER = "0049301234"
URI = f"sip:{NUMBER}@sip.carrier.test:5060"


def target(address: str) -> str:
    return f"{URI};maddr={address}"


class FailoverBoard(Switchboard):
    """A switchboard whose trunk addresses may be black holes, and whose B-leg endpoints may be held."""

    def __init__(self, addresses: tuple[str, ...] = ADDRESSES, **kwargs: Any) -> None:
        config = CallControlConfig(trunks=(CARRIER,), no_answer_timeout=300.0)
        config.trunk_addresses.set(CARRIER.name, addresses)
        router = CallRouter(config, location=MemoryLocationStore())

        def route(query: RouteQuery) -> Any:
            found = router.resolve_static(query)
            assert found is not None
            return found

        super().__init__(route, config=config, **kwargs)
        self.black_holes: set[str] = set()
        self.swallowed: list[SendSip] = []  # INVITEs sent to a black hole, Timer B not fired yet
        self.sent_to: list[str] = []  # the address of every INVITE sent, in order
        self.failovers: list[TrunkFailover] = []
        config.trunk_addresses.add_listener(self.failovers.append)
        self.hold_endpoints_from: int | None = None  # hold the n-th CreateEndpoint and later ones
        self.creates = 0
        self.held_endpoints: list[CreateEndpoint] = []

    def _to_phone(self, action: SendSip) -> None:
        out = action.message
        if isinstance(out, SendRequest) and out.request.method == "INVITE":
            assert action.destination is not None
            self.sent_to.append(action.destination.host)
        if action.destination is not None and action.destination.host in self.black_holes:
            if isinstance(out, SendRequest) and out.request.method == "INVITE":
                self.swallowed.append(action)
            return
        super()._to_phone(action)

    def _execute(self, action: Any) -> None:
        if isinstance(action, CreateEndpoint):
            self.creates += 1
            if self.hold_endpoints_from is not None and self.creates >= self.hold_endpoints_from:
                self.held_endpoints.append(action)
                return
        super()._execute(action)

    def release_endpoints(self) -> None:
        held, self.held_endpoints, self.hold_endpoints_from = self.held_endpoints, [], None
        for action in held:
            super()._execute(action)
        self.settle()

    def fire_timer_b(self) -> None:
        """Timer B of every swallowed INVITE: the clock moves 64*T1 on, the transaction layer reports."""
        assert self.call is not None
        self.advance(TIMERS.timer_b)
        swallowed, self.swallowed = self.swallowed, []
        for action in swallowed:
            assert isinstance(action.message, SendRequest)
            request = action.message.request
            self.call.request_failed(action.leg_id, "INVITE", cseq_of(request).sequence, self.now, 408)
        self.settle()

    def carrier(self, address: str, auto_answer: int | None = None) -> Phone:
        phone = self.phone("carrier", address, 5060, 42000 + len(self.phones))
        phone.auto_answer = auto_answer
        return phone


def cancel(board: Switchboard, caller: Phone) -> None:
    """The caller CANCELs its INVITE, as a caller that got our server transaction's 100 Trying may
    (RFC 3261 §9.1): the CANCEL goes straight to the call (this switchboard has no transaction layer,
    and the caller's own session waits for a 1xx beyond 100 before it cancels)."""
    assert board.call is not None and caller.session is not None and caller.session.invite is not None
    board.call.handle_cancel(wire(build_cancel(caller.session.invite)), ("tx", "CANCEL"), board.now)
    board.settle()


def caller_end(phone: Phone) -> Terminated:
    (end,) = [e for e in phone.drain() if isinstance(e, Terminated)]
    return end


def attempts(board: Switchboard) -> list[tuple[int, str, str, int | None]]:
    """(step, target, result, status) of every attempt, by target: rows written at the same clock
    reading have no order of their own, and the addresses here sort in the order they are tried."""
    return sorted((a.step, a.target, a.result, a.sip_status) for a in board.attempts())


def test_first_address_times_out_then_the_invite_goes_to_the_second() -> None:
    board = FailoverBoard()
    board.black_holes.add(ADDRESSES[0])
    alice = board.phone("alice", "192.0.2.10")
    second = board.carrier(ADDRESSES[1])
    third = board.carrier(ADDRESSES[2])
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    assert board.sent_to == [ADDRESSES[0]] and second.session is None
    (first_invite,) = [a.message.request for a in board.swallowed if isinstance(a.message, SendRequest)]
    board.advance(TIMERS.timer_b - 1.0)
    assert second.session is None  # nothing moves before Timer B
    board.fire_timer_b()
    assert board.sent_to == [ADDRESSES[0], ADDRESSES[1]]
    assert second.session is not None and second.session.state is InviteState.INCOMING
    retry = second.received[-1]
    # the same request to the next server as a new transaction: the Request-URI and To keep the name
    assert str(retry.uri) == URI and "@sip.carrier.test>" in (retry.headers.get("To") or "")
    assert retry.headers["Via"] != first_invite.headers["Via"]
    second.session.answer(180, board.now)
    board.settle()
    second.session.answer(200, board.now)
    board.settle()
    assert alice.session is not None and alice.session.state is InviteState.CONFIRMED
    assert third.session is None
    assert attempts(board) == [
        (1, target(ADDRESSES[0]), "no_answer", 408),
        (1, target(ADDRESSES[1]), "answered", 200),
    ]
    assert board.failovers == [TrunkFailover("carrier", ADDRESSES[0], "timeout", ADDRESSES[1])]
    assert board.config.trunk_addresses.failovers("carrier") == 1
    outbound = [leg for leg in board.legs() if leg.direction == "outbound"]
    assert sorted((leg.remote_address, leg.status) for leg in outbound) == [
        (target(ADDRESSES[0]), "failed"),
        (target(ADDRESSES[1]), "confirmed"),
    ]
    # the failed address's endpoint is gone: the caller's and the winner's are left, bridged
    assert len(board.media.live()) == 2 and len(board.media.connections) == 1


def test_a_503_from_the_first_address_goes_on_to_the_second() -> None:
    board = FailoverBoard()
    alice = board.phone("alice", "192.0.2.10")
    board.carrier(ADDRESSES[0], auto_answer=503)
    board.carrier(ADDRESSES[1], auto_answer=200)
    third = board.carrier(ADDRESSES[2])
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    assert alice.session is not None and alice.session.state is InviteState.CONFIRMED
    assert board.sent_to == [ADDRESSES[0], ADDRESSES[1]] and third.session is None
    assert attempts(board) == [
        (1, target(ADDRESSES[0]), "failed", 503),
        (1, target(ADDRESSES[1]), "answered", 200),
    ]
    assert board.failovers == [TrunkFailover("carrier", ADDRESSES[0], "503", ADDRESSES[1])]
    assert board.session_row().direction == "outbound"


def test_a_transport_error_goes_on_to_the_next_address() -> None:
    board = FailoverBoard(ADDRESSES[:2])
    board.black_holes.add(ADDRESSES[0])
    alice = board.phone("alice", "192.0.2.10")
    board.carrier(ADDRESSES[1], auto_answer=200)
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    assert board.call is not None
    (swallowed,) = board.swallowed
    board.call.request_failed(swallowed.leg_id, "INVITE", 1, board.now, 503)  # what a TransportError gives
    board.settle()
    assert alice.session is not None and alice.session.state is InviteState.CONFIRMED
    assert board.failovers == [TrunkFailover("carrier", ADDRESSES[0], "transport error", ADDRESSES[1])]


@pytest.mark.parametrize("status", [486, 404, 408, 603])
def test_a_final_answer_other_than_503_is_the_callees_and_stops_the_failover(status: int) -> None:
    board = FailoverBoard()
    alice = board.phone("alice", "192.0.2.10")
    board.carrier(ADDRESSES[0], auto_answer=status)  # 408 here is a peer's answer, not our Timer B
    second = board.carrier(ADDRESSES[1], auto_answer=200)
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    assert board.sent_to == [ADDRESSES[0]] and second.session is None
    assert caller_end(alice).status_code == status
    assert [a[1] for a in attempts(board)] == [target(ADDRESSES[0])]
    assert board.failovers == []
    assert board.call is not None and board.call.finished


def test_a_503_after_the_callee_rang_stops_the_failover() -> None:
    board = FailoverBoard()
    alice = board.phone("alice", "192.0.2.10")
    first = board.carrier(ADDRESSES[0])
    second = board.carrier(ADDRESSES[1], auto_answer=200)
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    assert first.session is not None
    first.session.answer(180, board.now)
    board.settle()
    first.session.answer(503, board.now)
    board.settle()
    assert second.session is None
    assert caller_end(alice).status_code == 500  # a downstream 503 as the caller hears it today


def outcome(addresses: tuple[str, ...], failures: tuple[int | None, ...]) -> tuple[int, str | None, Any]:
    """What the caller hears when address i fails with failures[i] (None: no response, Timer B)."""
    board = FailoverBoard(addresses)
    alice = board.phone("alice", "192.0.2.10")
    for address, status in zip(addresses, failures, strict=True):
        if status is None:
            board.black_holes.add(address)
        else:
            board.carrier(address, auto_answer=status)
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    while board.swallowed:
        board.fire_timer_b()
    assert board.sent_to == list(addresses)  # every address was tried, in order, once
    end = caller_end(alice)
    row = board.session_row()
    assert board.call is not None and board.call.finished
    assert len(board.attempts()) == len(addresses)
    return end.status_code, row.termination_cause, (board, end)


@pytest.mark.parametrize(
    "failures",
    [(None, None, None), (503, 503, 503), (None, 503, 503), (503, None, 503)],
    ids=["all-time-out", "all-503", "timeout-then-503s", "mixed"],
)
def test_when_every_address_fails_the_caller_hears_what_one_such_failure_gives_today(
    failures: tuple[int | None, ...],
) -> None:
    status, cause, (board, _end) = outcome(ADDRESSES, failures)
    # one address failing with the failure the §16.7 choice prefers: what the code answered before
    preferred = 503 if all(f == 503 for f in failures) else None
    single_status, single_cause, _ = outcome(ADDRESSES[:1], (preferred,))
    assert (status, cause) == (single_status, single_cause)
    assert status == (500 if preferred == 503 else 408)
    assert len(board.failovers) == 2 and [f.next_address for f in board.failovers] == list(ADDRESSES[1:])
    results = [a[2] for a in attempts(board)]
    assert results == ["failed" if f == 503 else "no_answer" for f in failures]


def test_cancel_while_the_next_addresss_invite_is_pending_stops_the_failover() -> None:
    board = FailoverBoard()
    board.black_holes.add(ADDRESSES[1])
    alice = board.phone("alice", "192.0.2.10")
    board.carrier(ADDRESSES[0], auto_answer=503)
    third = board.carrier(ADDRESSES[2], auto_answer=200)
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    assert board.sent_to == [ADDRESSES[0], ADDRESSES[1]]
    cancel(board, alice)
    assert caller_end(alice).status_code == 487
    board.fire_timer_b()  # the INVITE to the second address now times out: nothing more is tried
    assert board.sent_to == [ADDRESSES[0], ADDRESSES[1]] and third.session is None
    assert attempts(board) == [
        (1, target(ADDRESSES[0]), "failed", 503),
        (1, target(ADDRESSES[1]), "cancelled", 408),
    ]
    assert len(board.failovers) == 1
    assert board.session_row().termination_cause == "cancelled"
    board.advance(60.0)
    assert board.call is not None and board.call.finished and board.media.live() == []


def test_cancel_before_the_next_address_is_dialled_sends_it_nothing() -> None:
    board = FailoverBoard()
    board.hold_endpoints_from = 3  # the caller's endpoint, the first address's, then held
    alice = board.phone("alice", "192.0.2.10")
    board.carrier(ADDRESSES[0], auto_answer=503)
    second = board.carrier(ADDRESSES[1], auto_answer=200)
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    assert len(board.held_endpoints) == 1 and board.sent_to == [ADDRESSES[0]]
    cancel(board, alice)
    assert caller_end(alice).status_code == 487
    board.release_endpoints()  # the endpoint arrives after the caller left
    assert board.sent_to == [ADDRESSES[0]] and second.session is None
    assert attempts(board) == [
        (1, target(ADDRESSES[0]), "failed", 503),
        (1, target(ADDRESSES[1]), "cancelled", None),
    ]
    assert board.call is not None and board.call.finished and board.media.live() == []


def test_cancel_while_the_first_invite_has_no_answer_yet_tries_nothing_else() -> None:
    board = FailoverBoard()
    board.black_holes.add(ADDRESSES[0])
    alice = board.phone("alice", "192.0.2.10")
    second = board.carrier(ADDRESSES[1], auto_answer=200)
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    cancel(board, alice)
    assert caller_end(alice).status_code == 487
    board.fire_timer_b()
    assert board.sent_to == [ADDRESSES[0]] and second.session is None and board.failovers == []


def test_a_single_address_trunk_is_recorded_with_its_address_and_fails_as_before() -> None:
    board = FailoverBoard(ADDRESSES[:1])
    board.black_holes.add(ADDRESSES[0])
    alice = board.phone("alice", "192.0.2.10")
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    board.fire_timer_b()
    assert caller_end(alice).status_code == 408
    assert attempts(board) == [(1, target(ADDRESSES[0]), "no_answer", 408)]
    assert board.failovers == []


def test_an_ip_trunk_has_one_address_and_its_target_is_the_uri() -> None:
    trunk = Trunk(name="ip", host="198.51.100.7", prefixes=("00",))
    config = CallControlConfig(trunks=(trunk,))
    board = Switchboard(
        lambda q: CallRouter(config, location=MemoryLocationStore()).resolve_static(q),  # type: ignore[arg-type,return-value]
        config=config,
        caller=CallerIdentity(username="alice"),
    )
    alice = board.phone("alice", "192.0.2.10")
    board.phone("carrier", "198.51.100.7", 5060).auto_answer = 503
    board.dial(alice, f"sip:{NUMBER}@uc-edge.local")
    assert caller_end(alice).status_code == 500
    assert attempts(board) == [(1, f"sip:{NUMBER}@198.51.100.7:5060", "failed", 503)]
