"""Every transaction state and timer path (RFC 3261 §17 + RFC 6026), driven with a hand-moved clock."""

from __future__ import annotations

import gc
import weakref

import pytest

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.errors import LocalProtocolError
from signaling.sip.events import (
    RequestReceived,
    ResponseReceived,
    TransactionKey,
    TransactionTimeout,
    TransportError,
)
from signaling.sip.message import (
    Request,
    Response,
    build_cancel,
    build_response,
    parse_message,
    serialize,
    top_via,
)
from signaling.sip.routing import TransportAddress
from signaling.sip.timers import TimerSettings
from signaling.sip.transaction import TransactionState
from tests.unit.sip.support import ALICE, BOB, drain, fire_timers_until, make_request, sent_codes, wire

T = TimerSettings()


def new_endpoint(**kwargs: object) -> SipEndpoint:
    return SipEndpoint(local_addresses={"udp": ("192.0.2.10", 5060), "tcp": ("192.0.2.10", 5060)}, **kwargs)  # type: ignore[arg-type]


def response_to(request: Request, code: int, *, tag: str = "ttag") -> bytes:
    return serialize(build_response(request, code, to_tag=tag))


# ------------------------------------------------------------------ timers


def test_timer_values_derive_from_t1_t2_t4() -> None:
    custom = TimerSettings(t1=0.1, t2=1.0, t4=2.0)
    assert custom.timer_b == custom.timer_f == custom.timer_h == custom.timer_l == custom.timer_m == 6.4
    assert custom.timer_d(reliable=False) == 32.0 and custom.timer_d(reliable=True) == 0.0
    assert custom.timer_i(reliable=False) == custom.timer_k(reliable=False) == 2.0
    assert custom.timer_j(reliable=False) == 6.4 and custom.timer_j(reliable=True) == 0.0
    assert custom.next_interval(0.8, cap_at_t2=True) == 1.0
    assert custom.next_interval(0.8, cap_at_t2=False) == 1.6
    with pytest.raises(ValueError):
        TimerSettings(t1=5.0, t2=4.0)


# ------------------------------------------------------------------ client INVITE


def test_client_invite_timer_a_doubles_then_timer_b_times_out() -> None:
    endpoint = new_endpoint()
    invite = make_request("INVITE")
    key = endpoint.send_request(invite, BOB, now=0.0)
    assert sent_codes(endpoint) == ["INVITE"]
    fired = fire_timers_until(endpoint, 100.0)
    assert fired[:6] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert fired[6] == 32.0  # Timer B = 64*T1
    assert sent_codes(endpoint) == ["INVITE"] * 6
    assert drain(endpoint) == [TransactionTimeout(key, "B")]
    assert endpoint.active_transactions == 0
    assert endpoint.get_timer() is None
    assert endpoint.stats.retransmissions_sent == 6


def test_client_invite_provisional_stops_retransmission_and_timer_c_ends_it() -> None:
    endpoint = new_endpoint()
    invite = make_request("INVITE")
    key = endpoint.send_request(invite, BOB, now=0.0)
    endpoint.datagrams_to_send()
    endpoint.receive(response_to(invite, 180), BOB, now=0.2)
    tx = endpoint.client_transaction(key)
    assert tx is not None and tx.state is TransactionState.PROCEEDING
    [event] = drain(endpoint)
    assert isinstance(event, ResponseReceived) and event.response.code == 180
    assert endpoint.get_timer() == pytest.approx(0.2 + T.timer_c)
    fire_timers_until(endpoint, 1000.0)
    assert sent_codes(endpoint) == []  # no retransmission once Proceeding
    assert drain(endpoint) == [TransactionTimeout(key, "C")]
    assert endpoint.active_transactions == 0


def test_client_invite_failure_sends_ack_absorbs_retransmits_and_ends_on_timer_d() -> None:
    endpoint = new_endpoint()
    invite = make_request("INVITE")
    key = endpoint.send_request(invite, BOB, now=0.0)
    endpoint.datagrams_to_send()
    endpoint.receive(response_to(invite, 486), BOB, now=1.0)
    [ack_bytes] = [data for data, _ in endpoint.datagrams_to_send()]
    ack = parse_message(ack_bytes)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.headers["CSeq"] == "1 ACK"
    assert top_via(ack).parameters["branch"] == "z9hG4bKtest1"  # same branch: hop-by-hop ACK
    assert "tag=ttag" in ack.headers["To"]
    [event] = drain(endpoint)
    assert isinstance(event, ResponseReceived) and event.response.code == 486
    endpoint.receive(response_to(invite, 486), BOB, now=2.0)
    assert sent_codes(endpoint) == ["ACK"]  # retransmitted 486 -> ACK again, not passed up
    assert drain(endpoint) == []
    tx = endpoint.client_transaction(key)
    assert tx is not None and tx.state is TransactionState.COMPLETED
    assert endpoint.get_timer() == pytest.approx(1.0 + 32.0)
    endpoint.handle_timer(33.0)
    assert endpoint.active_transactions == 0


def test_client_invite_2xx_accepted_passes_every_2xx_up_until_timer_m() -> None:
    endpoint = new_endpoint()
    invite = make_request("INVITE")
    key = endpoint.send_request(invite, BOB, now=0.0)
    endpoint.datagrams_to_send()
    endpoint.receive(response_to(invite, 200), BOB, now=0.1)
    tx = endpoint.client_transaction(key)
    assert tx is not None and tx.state is TransactionState.ACCEPTED
    endpoint.receive(response_to(invite, 200), BOB, now=0.6)
    endpoint.receive(response_to(invite, 200, tag="fork2"), BOB, now=0.7)
    events = drain(endpoint)
    assert [type(e) for e in events] == [ResponseReceived] * 3
    assert sent_codes(endpoint) == []  # the ACK for 2xx is the TU's job
    assert endpoint.get_timer() == pytest.approx(0.1 + T.timer_m)
    endpoint.handle_timer(0.1 + T.timer_m)
    assert endpoint.active_transactions == 0
    assert drain(endpoint) == []


def test_client_invite_over_tcp_never_retransmits_and_ends_at_once_after_failure() -> None:
    endpoint = new_endpoint()
    invite = make_request("INVITE", transport="TCP")
    server = TransportAddress("tcp", "192.0.2.20", 5060, "conn-1")
    endpoint.send_request(invite, server, now=0.0)
    endpoint.datagrams_to_send()
    assert endpoint.get_timer() == pytest.approx(T.timer_b)  # only Timer B, no Timer A
    endpoint.receive(response_to(invite, 503), server, now=1.0)
    assert sent_codes(endpoint) == ["ACK"]
    assert endpoint.active_transactions == 0  # Timer D = 0 on reliable transports


# ------------------------------------------------------------------ client non-INVITE


def test_client_non_invite_timer_e_caps_at_t2_and_timer_f_times_out() -> None:
    endpoint = new_endpoint()
    key = endpoint.send_request(make_request("OPTIONS"), BOB, now=0.0)
    endpoint.datagrams_to_send()
    fired = fire_timers_until(endpoint, 100.0)
    assert fired == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0]
    assert sent_codes(endpoint) == ["OPTIONS"] * 10
    assert drain(endpoint) == [TransactionTimeout(key, "F")]
    assert endpoint.active_transactions == 0


def test_client_non_invite_proceeding_retransmits_every_t2() -> None:
    endpoint = new_endpoint()
    request = make_request("REGISTER")
    endpoint.send_request(request, BOB, now=0.0)
    endpoint.datagrams_to_send()
    endpoint.receive(response_to(request, 100), BOB, now=0.2)
    assert fire_timers_until(endpoint, 0.6) == [0.5]  # E fires in Proceeding ...
    assert endpoint.get_timer() == pytest.approx(0.5 + T.t2)  # ... and is re-armed at T2


def test_client_non_invite_completed_absorbs_retransmits_and_ends_on_timer_k() -> None:
    endpoint = new_endpoint()
    request = make_request("OPTIONS")
    key = endpoint.send_request(request, BOB, now=0.0)
    endpoint.datagrams_to_send()
    endpoint.receive(response_to(request, 200), BOB, now=0.3)
    endpoint.receive(response_to(request, 200), BOB, now=0.4)
    events = drain(endpoint)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived)
    tx = endpoint.client_transaction(key)
    assert tx is not None and tx.state is TransactionState.COMPLETED
    assert endpoint.get_timer() == pytest.approx(0.3 + T.t4)
    endpoint.handle_timer(0.3 + T.t4)
    assert endpoint.active_transactions == 0


def test_client_non_invite_over_tcp_terminates_on_final_response() -> None:
    endpoint = new_endpoint()
    request = make_request("OPTIONS", transport="TCP")
    endpoint.send_request(request, TransportAddress("tcp", "192.0.2.20", 5060), now=0.0)
    endpoint.receive(response_to(request, 200), BOB, now=0.3)
    assert endpoint.active_transactions == 0


def test_send_request_adds_missing_via_and_rejects_misuse() -> None:
    endpoint = new_endpoint()
    request = make_request("OPTIONS")
    request.headers.remove("Via")
    key = endpoint.send_request(request, BOB, now=0.0)
    assert key.branch.startswith("z9hG4bK")
    [(data, destination)] = endpoint.datagrams_to_send()
    assert b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK" in data and destination == BOB
    with pytest.raises(LocalProtocolError):
        endpoint.send_request(make_request("ACK"), BOB, now=0.0)
    with pytest.raises(LocalProtocolError):
        endpoint.send_request(make_request("OPTIONS", branch="old-style"), BOB, now=0.0)
    duplicate = make_request("OPTIONS", branch=key.branch)
    with pytest.raises(LocalProtocolError):
        endpoint.send_request(duplicate, BOB, now=0.0)


# ------------------------------------------------------------------ server INVITE


def receive_invite(
    endpoint: SipEndpoint, now: float = 0.0, **kwargs: object
) -> tuple[Request, TransactionKey]:
    return receive_request(endpoint, "INVITE", now, **kwargs)


def receive_request(
    endpoint: SipEndpoint, method: str, now: float = 0.0, **kwargs: object
) -> tuple[Request, TransactionKey]:
    request = make_request(method, **kwargs)  # type: ignore[arg-type]
    endpoint.receive(wire(request), ALICE, now=now)
    events = drain(endpoint)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    assert events[0].transaction is not None
    return events[0].request, events[0].transaction


def test_server_invite_sends_100_and_answers_retransmissions_with_last_provisional() -> None:
    endpoint = new_endpoint()
    invite, key = receive_invite(endpoint)
    assert sent_codes(endpoint) == [100]
    endpoint.respond(key, build_response(invite, 180, to_tag="b1"), now=0.1)
    assert sent_codes(endpoint) == [180]
    endpoint.receive(wire(make_request("INVITE")), ALICE, now=0.5)
    assert sent_codes(endpoint) == [180]
    assert drain(endpoint) == []  # the retransmission is absorbed
    assert endpoint.stats.retransmissions_absorbed == 1


def test_server_invite_failure_timer_g_then_timer_h() -> None:
    endpoint = new_endpoint()
    invite, key = receive_invite(endpoint)
    endpoint.datagrams_to_send()
    endpoint.respond(key, build_response(invite, 486, to_tag="b1"), now=0.0)
    assert sent_codes(endpoint) == [486]
    fired = fire_timers_until(endpoint, 100.0)
    assert fired == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0]
    assert sent_codes(endpoint) == [486] * 10
    assert drain(endpoint) == [TransactionTimeout(key, "H")]
    assert endpoint.active_transactions == 0


def test_server_invite_ack_confirms_then_timer_i_ends_it() -> None:
    endpoint = new_endpoint()
    invite, key = receive_invite(endpoint)
    endpoint.respond(key, build_response(invite, 404, to_tag="b1"), now=0.0)
    endpoint.datagrams_to_send()
    ack = make_request("ACK", to_tag="b1")
    endpoint.receive(wire(ack), ALICE, now=0.2)
    tx = endpoint.server_transaction(key)
    assert tx is not None and tx.state is TransactionState.CONFIRMED
    assert drain(endpoint) == []  # ACK for a non-2xx stays inside the transaction
    endpoint.receive(wire(ack), ALICE, now=0.3)  # retransmitted ACK absorbed
    assert drain(endpoint) == [] and sent_codes(endpoint) == []
    assert endpoint.get_timer() == pytest.approx(0.2 + T.t4)
    endpoint.handle_timer(0.2 + T.t4)
    assert endpoint.active_transactions == 0


def test_server_invite_2xx_retransmitted_until_ack_then_timer_l() -> None:
    endpoint = new_endpoint()
    invite, key = receive_invite(endpoint)
    endpoint.datagrams_to_send()
    endpoint.respond(key, build_response(invite, 200, to_tag="b1"), now=0.0)
    assert sent_codes(endpoint) == [200]
    assert fire_timers_until(endpoint, 2.0) == [0.5, 1.5]
    assert sent_codes(endpoint) == [200, 200]
    endpoint.receive(wire(make_request("INVITE")), ALICE, now=2.1)  # absorbed in Accepted
    assert sent_codes(endpoint) == []
    ack = make_request("ACK", branch="z9hG4bKack2xx", to_tag="b1")  # end-to-end ACK: new branch
    endpoint.receive(wire(ack), ALICE, now=2.2)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.request.method == "ACK"
    assert event.transaction is None
    assert endpoint.get_timer() == pytest.approx(T.timer_l)  # only Timer L left
    endpoint.handle_timer(T.timer_l)
    assert sent_codes(endpoint) == []
    assert drain(endpoint) == []  # ACK seen: no timeout reported
    assert endpoint.active_transactions == 0


def test_an_answered_invite_transaction_is_freed_when_it_ends_not_when_its_old_timer_c_would_fire() -> None:
    """Answering an INVITE replaces its 3-minute Timer C with Timer L (32 s); the endpoint's queue still
    holds the Timer C entry until its time. The ended transactions must not live on through it: at
    hundreds of calls a second that kept every call's two INVITE transactions for 3 minutes."""
    endpoint = new_endpoint()
    invite, server_key = receive_invite(endpoint)
    endpoint.respond(server_key, build_response(invite, 180, to_tag="b1"), now=0.0)
    endpoint.respond(server_key, build_response(invite, 200, to_tag="b1"), now=0.1)
    server_tx = endpoint.server_transaction(server_key)
    outgoing = make_request("INVITE", branch="z9hG4bKout")
    client_key = endpoint.send_request(outgoing, BOB, now=0.0)
    endpoint.receive(response_to(outgoing, 180), BOB, now=0.05)  # starts the client's Timer C
    endpoint.receive(response_to(outgoing, 200), BOB, now=0.1)
    client_tx = endpoint.client_transaction(client_key)
    assert server_tx is not None and client_tx is not None
    watched = [weakref.ref(server_tx), weakref.ref(client_tx)]
    del server_tx, client_tx
    ack = make_request("ACK", branch="z9hG4bKack", to_tag="b1")
    endpoint.receive(wire(ack), ALICE, now=0.2)
    drain(endpoint)
    # A later transaction's timer comes before the stale Timer C entries, as on a busy node (some call's
    # timer always does): they wait behind it.
    options, options_key = receive_request(endpoint, "OPTIONS", now=30.0, branch="z9hG4bKopt")
    endpoint.respond(options_key, build_response(options, 200), now=30.0)
    endpoint.datagrams_to_send()
    drain(endpoint)
    gc.disable()  # freed by reference counting, not left for the collector
    try:
        fire_timers_until(endpoint, 0.1 + max(T.timer_l, T.timer_m) + 1.0)
        assert endpoint.active_transactions == 1  # the OPTIONS one, waiting out Timer J
        assert [ref() for ref in watched] == [None, None]
    finally:
        gc.enable()
    fire_timers_until(endpoint, T.timer_c + 1.0)  # the stale entries go at their time, firing nothing
    assert endpoint.get_timer() is None and endpoint.active_transactions == 0 and drain(endpoint) == []


def test_stale_timer_entries_are_compacted_and_every_live_timer_still_fires() -> None:
    """Each answered INVITE leaves a stale Timer C entry (3 minutes) queued behind the live Timer L ones.
    The queue drops them in bulk once they would outnumber half the live entries, so it stays near what
    is live instead of holding minutes of dead entries, and no live timer is lost on the way."""
    endpoint = new_endpoint()
    calls = 3_000
    keys = []
    for n in range(calls):
        now = n * 0.002  # 500 calls/s
        invite, key = receive_invite(endpoint, now, branch=f"z9hG4bKc{n}", call_id=f"c{n}@test")
        endpoint.respond(key, build_response(invite, 200, to_tag=f"b{n}"), now=now)
        keys.append(key)
        live = endpoint.active_transactions
        assert endpoint.queued_timers <= max(1024, live + live // 2) + 1
    endpoint.datagrams_to_send()
    drain(endpoint)
    assert endpoint.stats.timer_compactions >= 2
    assert endpoint.queued_timers < calls * 2  # without compaction: one stale and one live entry per call
    fire_timers_until(endpoint, T.timer_c + 10.0)
    events = drain(endpoint)
    timed_out = [e.transaction for e in events if isinstance(e, TransactionTimeout) and e.timer == "L"]
    # every answered INVITE without an ACK timed out by its Timer L: each live timer fired, and once
    assert sorted(timed_out, key=str) == sorted(keys, key=str)
    assert endpoint.active_transactions == 0 and endpoint.get_timer() is None


def test_server_invite_2xx_without_ack_reports_timer_l() -> None:
    endpoint = new_endpoint()
    invite, key = receive_invite(endpoint)
    endpoint.respond(key, build_response(invite, 200, to_tag="b1"), now=0.0)
    fire_timers_until(endpoint, 100.0)
    assert drain(endpoint) == [TransactionTimeout(key, "L")]
    assert endpoint.active_transactions == 0


def test_server_invite_tu_silence_gets_408_at_timer_c() -> None:
    endpoint = new_endpoint()
    _invite, key = receive_invite(endpoint)
    endpoint.datagrams_to_send()
    endpoint.handle_timer(T.timer_c)
    assert sent_codes(endpoint) == [408]
    assert drain(endpoint) == [TransactionTimeout(key, "C")]
    tx = endpoint.server_transaction(key)
    assert tx is not None and tx.state is TransactionState.COMPLETED
    fire_timers_until(endpoint, 1000.0)
    assert endpoint.active_transactions == 0


def test_server_invite_rejects_second_final_and_late_provisional() -> None:
    endpoint = new_endpoint()
    invite, key = receive_invite(endpoint)
    endpoint.respond(key, build_response(invite, 486, to_tag="b1"), now=0.0)
    with pytest.raises(LocalProtocolError, match="server INVITE transaction in state Completed"):
        endpoint.respond(key, build_response(invite, 200, to_tag="b1"), now=0.1)
    with pytest.raises(LocalProtocolError):
        endpoint.respond(key, build_response(invite, 180, to_tag="b1"), now=0.1)
    with pytest.raises(LocalProtocolError):
        endpoint.respond(
            TransactionKey("server", "nope", "INVITE", "x:1"), build_response(invite, 200), now=0.1
        )


def test_server_invite_over_tcp_ends_on_ack_at_once() -> None:
    endpoint = new_endpoint()
    source = TransportAddress("tcp", "192.0.2.10", 40000, "conn-7")
    invite = make_request("INVITE", transport="TCP")
    endpoint.receive(wire(invite), source, now=0.0)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    endpoint.respond(event.transaction, build_response(event.request, 603, to_tag="b1"), now=0.0)
    destinations = {destination for _data, destination in endpoint.datagrams_to_send()}
    assert destinations == {source}  # back over the connection the INVITE came in on
    assert endpoint.get_timer() == pytest.approx(T.timer_h)  # no Timer G on TCP
    endpoint.receive(wire(make_request("ACK", transport="TCP", to_tag="b1")), source, now=0.1)
    assert endpoint.active_transactions == 0  # Timer I = 0


# ------------------------------------------------------------------ server non-INVITE


def test_server_non_invite_full_path_with_timer_j() -> None:
    endpoint = new_endpoint()
    request = make_request("REGISTER")
    endpoint.receive(wire(request), ALICE, now=0.0)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    key = event.transaction
    assert sent_codes(endpoint) == []  # no automatic 100 for non-INVITE
    endpoint.receive(wire(request), ALICE, now=0.1)
    assert sent_codes(endpoint) == [] and drain(endpoint) == []  # Trying absorbs
    endpoint.respond(key, build_response(event.request, 100), now=0.2)
    endpoint.receive(wire(request), ALICE, now=0.3)
    assert sent_codes(endpoint) == [100, 100]
    endpoint.respond(key, build_response(event.request, 200, to_tag="r1"), now=0.4)
    endpoint.receive(wire(request), ALICE, now=0.5)
    assert sent_codes(endpoint) == [200, 200]
    tx = endpoint.server_transaction(key)
    assert tx is not None and tx.state is TransactionState.COMPLETED
    assert endpoint.get_timer() == pytest.approx(0.4 + T.timer_j(reliable=False))
    endpoint.handle_timer(0.4 + 32.0)
    assert endpoint.active_transactions == 0


def test_server_non_invite_unanswered_is_dropped_by_the_guard() -> None:
    endpoint = new_endpoint()
    endpoint.receive(wire(make_request("MESSAGE")), ALICE, now=0.0)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    endpoint.handle_timer(T.server_non_invite_guard)
    assert drain(endpoint) == [TransactionTimeout(event.transaction, "guard")]
    assert endpoint.active_transactions == 0


def test_server_non_invite_over_tcp_terminates_on_final() -> None:
    endpoint = new_endpoint()
    source = TransportAddress("tcp", "192.0.2.10", 40000, "c1")
    endpoint.receive(wire(make_request("OPTIONS", transport="TCP")), source, now=0.0)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    endpoint.respond(event.transaction, build_response(event.request, 200), now=0.0)
    assert endpoint.active_transactions == 0


# ------------------------------------------------------------------ matching


def test_response_matching_uses_branch_and_cseq_method() -> None:
    endpoint = new_endpoint()
    invite = make_request("INVITE")
    invite_key = endpoint.send_request(invite, BOB, now=0.0)
    endpoint.receive(response_to(invite, 180), BOB, now=0.1)
    cancel = build_cancel(invite)
    cancel_key = endpoint.send_request(cancel, BOB, now=0.2)
    assert cancel_key.branch == invite_key.branch and cancel_key != invite_key
    drain(endpoint)
    endpoint.receive(response_to(cancel, 200), BOB, now=0.3)
    [event] = drain(endpoint)
    assert isinstance(event, ResponseReceived) and event.transaction == cancel_key
    invite_tx = endpoint.client_transaction(invite_key)
    assert invite_tx is not None and invite_tx.state is TransactionState.PROCEEDING
    endpoint.receive(response_to(invite, 487), BOB, now=0.4)
    [event] = drain(endpoint)
    assert isinstance(event, ResponseReceived) and event.transaction == invite_key


def test_stray_response_is_counted_and_dropped() -> None:
    endpoint = new_endpoint()
    endpoint.receive(response_to(make_request("OPTIONS"), 200), BOB, now=0.0)
    assert drain(endpoint) == [] and endpoint.stats.stray_responses == 1


def test_server_matching_includes_sent_by() -> None:
    endpoint = new_endpoint()
    endpoint.receive(wire(make_request("OPTIONS", via_host="192.0.2.10")), ALICE, now=0.0)
    endpoint.receive(wire(make_request("OPTIONS", via_host="192.0.2.11", cseq=2)), ALICE, now=0.0)
    events = drain(endpoint)
    assert len(events) == 2 and endpoint.active_transactions == 2


def test_cancel_finds_its_invite_and_gets_200() -> None:
    endpoint = new_endpoint()
    invite, invite_key = receive_invite(endpoint)
    endpoint.datagrams_to_send()
    endpoint.receive(wire(build_cancel(invite)), ALICE, now=0.5)
    assert sent_codes(endpoint) == [200]
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.request.method == "CANCEL"
    assert event.cancels == invite_key
    endpoint.respond(invite_key, build_response(invite, 487, to_tag="b1"), now=0.6)
    assert sent_codes(endpoint) == [487]


def test_cancel_without_invite_gets_481() -> None:
    endpoint = new_endpoint()
    endpoint.receive(wire(build_cancel(make_request("INVITE"))), ALICE, now=0.0)
    assert sent_codes(endpoint) == [481]
    assert drain(endpoint) == []


def test_cancel_after_final_response_gets_200_without_event() -> None:
    endpoint = new_endpoint()
    invite, invite_key = receive_invite(endpoint)
    endpoint.respond(invite_key, build_response(invite, 486, to_tag="b1"), now=0.0)
    endpoint.datagrams_to_send()
    endpoint.receive(wire(build_cancel(invite)), ALICE, now=0.5)
    assert sent_codes(endpoint) == [200]
    assert drain(endpoint) == []


def test_merged_request_gets_482() -> None:
    endpoint = new_endpoint()
    receive_invite(endpoint)
    endpoint.datagrams_to_send()
    endpoint.receive(wire(make_request("INVITE", branch="z9hG4bKother-path")), ALICE, now=0.1)
    assert sent_codes(endpoint) == [482]
    assert drain(endpoint) == []
    assert endpoint.stats.loops_detected == 1


def test_max_forwards_zero_gets_483_except_options() -> None:
    endpoint = new_endpoint()
    endpoint.receive(wire(make_request("INVITE", max_forwards=0)), ALICE, now=0.0)
    assert sent_codes(endpoint) == [483] and drain(endpoint) == []
    endpoint.receive(wire(make_request("OPTIONS", max_forwards=0, branch="z9hG4bKopt")), ALICE, now=0.0)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.request.method == "OPTIONS"


def test_rfc2543_request_without_branch_still_matches_retransmissions() -> None:
    endpoint = new_endpoint()
    invite = make_request("INVITE", branch="1234")
    endpoint.receive(wire(invite), ALICE, now=0.0)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    endpoint.receive(wire(invite), ALICE, now=0.5)
    assert drain(endpoint) == [] and endpoint.active_transactions == 1


# ------------------------------------------------------------------ transport duties


def test_received_and_rport_are_stamped_and_used_for_the_response() -> None:
    endpoint = new_endpoint()
    nat_source = TransportAddress("udp", "203.0.113.5", 40123)
    request = make_request("OPTIONS", via_host="10.0.0.7")  # rport is asked for by build_request
    endpoint.receive(wire(request), nat_source, now=0.0)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    via = top_via(event.request)
    assert via.parameters["received"] == "203.0.113.5" and via.parameters["rport"] == "40123"
    endpoint.respond(event.transaction, build_response(event.request, 200), now=0.0)
    [(data, destination)] = endpoint.datagrams_to_send()
    assert destination == TransportAddress("udp", "203.0.113.5", 40123)
    response = parse_message(data)
    assert isinstance(response, Response)
    assert top_via(response).parameters["rport"] == "40123"


def test_response_without_rport_goes_to_received_and_via_port() -> None:
    endpoint = new_endpoint()
    request = make_request("OPTIONS", via_host="10.0.0.7", via_port=5070)
    request.headers.setlist("Via", ["SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bKnorport"])
    endpoint.receive(wire(request), TransportAddress("udp", "203.0.113.5", 40123), now=0.0)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    endpoint.respond(event.transaction, build_response(event.request, 200), now=0.0)
    [(_data, destination)] = endpoint.datagrams_to_send()
    assert destination == TransportAddress("udp", "203.0.113.5", 5070)


def test_websocket_invalid_host_is_answered_over_its_connection() -> None:
    endpoint = new_endpoint()
    source = TransportAddress("ws", "198.51.100.9", 51000, "ws-42")
    request = make_request("REGISTER", via_host="df7jal23ls0d.invalid", transport="WS")
    endpoint.receive(wire(request), source, now=0.0)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    assert event.source == source
    endpoint.respond(event.transaction, build_response(event.request, 200), now=0.0)
    [(_data, destination)] = endpoint.datagrams_to_send()
    assert destination == source


def test_full_table_answers_503_statelessly() -> None:
    endpoint = new_endpoint(max_transactions=2)
    for n in range(3):
        endpoint.receive(wire(make_request("OPTIONS", branch=f"z9hG4bK{n}", cseq=n + 1)), ALICE, now=0.0)
    assert len(drain(endpoint)) == 2
    assert sent_codes(endpoint) == [503]
    assert endpoint.active_transactions == 2 and endpoint.stats.overload_rejections == 1


def test_transport_error_ends_the_client_transaction() -> None:
    endpoint = new_endpoint()
    destination = TransportAddress("tcp", "192.0.2.20", 5060)
    key = endpoint.send_request(make_request("OPTIONS", transport="TCP"), destination, now=0.0)
    endpoint.transport_error(destination, "connection refused", now=0.1)
    assert drain(endpoint) == [TransportError(key, destination, "connection refused")]
    assert endpoint.active_transactions == 0
    endpoint.transport_error(destination, "again", now=0.2)
    assert drain(endpoint) == [TransportError(None, destination, "again")]


def test_transport_error_ends_exactly_the_transactions_sending_there_and_forgets_them_after() -> None:
    endpoint = new_endpoint()
    dead = TransportAddress("tcp", "192.0.2.30", 5060)
    first = endpoint.send_request(make_request("OPTIONS", branch="z9hG4bKd1", transport="TCP"), dead, now=0.0)
    endpoint.send_request(make_request("OPTIONS", branch="z9hG4bKok", cseq=2), BOB, now=0.0)
    second = endpoint.send_request(make_request("INVITE", branch="z9hG4bKd2", transport="TCP"), dead, now=0.0)
    # A server transaction whose responses go back over a connection the peer opened.
    flow = TransportAddress("tcp", "192.0.2.40", 40000, connection_id="tcp-7")
    endpoint.receive(
        wire(make_request("OPTIONS", branch="z9hG4bKin", transport="TCP", cseq=3)), flow, now=0.0
    )
    [request_event] = drain(endpoint)
    endpoint.transport_error(dead, "connection refused", now=0.1)
    assert drain(endpoint) == [
        TransportError(first, dead, "connection refused"),
        TransportError(second, dead, "connection refused"),
    ]  # in the order they started; the transaction to BOB and the server one untouched
    assert endpoint.active_transactions == 2
    # The connection dropped: whatever sends over it (same connection id, any address) ends too.
    endpoint.transport_error(flow, "connection lost", now=0.2)
    assert [event.transaction for event in drain(endpoint)] == [request_event.transaction]  # type: ignore[attr-defined]
    assert endpoint.active_transactions == 1
    endpoint.receive(response_to(make_request("OPTIONS", branch="z9hG4bKok", cseq=2), 200), BOB, now=0.3)
    fire_timers_until(endpoint, 60.0)
    assert endpoint.active_transactions == 0
    assert endpoint.stats.transactions_terminated == 4
    # Nothing of them is kept: a later error to the same places finds no transaction.
    endpoint.transport_error(dead, "again", now=61.0)
    endpoint.transport_error(BOB, "again", now=61.0)
    drain(endpoint)
    assert endpoint._by_target == {} and endpoint._by_connection == {}


def test_ack_without_any_transaction_goes_up_and_is_counted_stray() -> None:
    endpoint = new_endpoint()
    endpoint.receive(wire(make_request("ACK", to_tag="x")), ALICE, now=0.0)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.transaction is None
    assert endpoint.stats.stray_acks == 1 and sent_codes(endpoint) == []


# ------------------------------------------------------------------ what a finished transaction keeps


def test_client_transactions_let_their_request_go_at_the_final_response_and_still_absorb() -> None:
    endpoint = new_endpoint()
    invite, options = make_request("INVITE"), make_request("OPTIONS", cseq=2)
    invite_key = endpoint.send_request(invite, BOB, now=0.0)
    options_key = endpoint.send_request(options, BOB, now=0.0)
    endpoint.datagrams_to_send()
    endpoint.receive(response_to(invite, 200), BOB, now=0.1)
    endpoint.receive(response_to(options, 200), BOB, now=0.1)
    assert len(drain(endpoint)) == 2
    for key in (invite_key, options_key):
        tx = endpoint.client_transaction(key)
        assert tx is not None and tx.state in (TransactionState.ACCEPTED, TransactionState.COMPLETED)
        with pytest.raises(LocalProtocolError, match="no longer holds its request"):
            tx.request  # noqa: B018 - the property is the thing tested
    # A retransmitted 2xx still goes up (RFC 6026 Accepted); a retransmitted OPTIONS 200 is absorbed.
    endpoint.receive(response_to(invite, 200), BOB, now=0.2)
    endpoint.receive(response_to(options, 200), BOB, now=0.2)
    [event] = drain(endpoint)
    assert isinstance(event, ResponseReceived) and event.transaction == invite_key
    assert sent_codes(endpoint) == []  # no request retransmitted from a released transaction
    fire_timers_until(endpoint, 40.0)
    assert endpoint.active_transactions == 0


def test_a_rejected_invite_still_acks_retransmitted_final_responses_after_letting_go() -> None:
    endpoint = new_endpoint()
    invite = make_request("INVITE")
    key = endpoint.send_request(invite, BOB, now=0.0)
    endpoint.datagrams_to_send()
    endpoint.receive(response_to(invite, 486), BOB, now=0.1)
    assert sent_codes(endpoint) == ["ACK"]
    endpoint.receive(response_to(invite, 486), BOB, now=0.3)
    assert sent_codes(endpoint) == ["ACK"]  # Completed: the same ACK again, from its bytes
    tx = endpoint.client_transaction(key)
    assert tx is not None and tx.state is TransactionState.COMPLETED
    with pytest.raises(LocalProtocolError):
        tx.request  # noqa: B018


def test_an_answered_invite_server_transaction_keeps_only_what_accepted_needs() -> None:
    endpoint = new_endpoint()
    invite, key = receive_invite(endpoint)
    endpoint.datagrams_to_send()
    endpoint.respond(key, build_response(invite, 200, to_tag="b1"), now=0.1)
    assert sent_codes(endpoint) == [200]
    tx = endpoint.server_transaction(key)
    assert tx is not None and tx.state is TransactionState.ACCEPTED
    assert tx.last_response is None
    with pytest.raises(LocalProtocolError):
        tx.request  # noqa: B018
    # The 2xx is still retransmitted until the ACK (from its bytes), and the ACK still matches.
    fire_timers_until(endpoint, 0.65)
    assert sent_codes(endpoint) == [200]
    ack = make_request("ACK", branch="z9hG4bKack1")
    ack.headers.set("To", f"{invite.headers['To']};tag=b1")
    endpoint.receive(wire(ack), ALICE, now=0.7)
    [event] = drain(endpoint)
    assert isinstance(event, RequestReceived) and event.request.method == "ACK"
    # A CANCEL crossing the 2xx gets 200 with the 2xx's To tag (RFC 3261 §9.2), not a crash.
    cancel = build_cancel(invite)
    endpoint.receive(wire(cancel), ALICE, now=0.8)
    [(data, _destination)] = endpoint.datagrams_to_send()
    reply = parse_message(data)
    assert isinstance(reply, Response) and reply.code == 200
    assert reply.headers["To"].endswith(";tag=b1")
    assert drain(endpoint) == []  # nothing to cancel any more


def test_a_rejected_invite_server_transaction_still_takes_its_ack() -> None:
    endpoint = new_endpoint()
    invite, key = receive_invite(endpoint)
    endpoint.datagrams_to_send()
    endpoint.respond(key, build_response(invite, 486, to_tag="b1"), now=0.1)
    assert sent_codes(endpoint) == [486]
    tx = endpoint.server_transaction(key)
    assert tx is not None and tx.state is TransactionState.COMPLETED and tx.last_response is None
    endpoint.receive(wire(invite), ALICE, now=0.2)  # retransmitted INVITE: the 486 again
    assert sent_codes(endpoint) == [486]
    ack = make_request("ACK")  # the same branch as the INVITE: the transaction's own ACK (§17.1.1.3)
    ack.headers.set("To", f"{invite.headers['To']};tag=b1")
    endpoint.receive(wire(ack), ALICE, now=0.3)
    assert tx.state is TransactionState.CONFIRMED
