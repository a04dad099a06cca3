"""The REGISTER hot path's shortcuts give what the general code gives: the serialiser, the digest
parameter parser and challenge text, the timer FIFO, the stateless responder hook and the registrar's
parameter splitting. Each one is checked against the slower path it replaces."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipmessage import Headers

from signaling.registrar import _aor_of, _split_outside_quotes, _split_params
from signaling.sip.digest import (
    Challenge,
    Credentials,
    DigestAlgorithm,
    DigestAuthenticator,
    _parse_auth_params_general,
    parse_auth_params,
)
from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import RequestReceived
from signaling.sip.message import (
    Request,
    Response,
    build_request,
    build_response,
    parse_message,
    serialize,
)
from signaling.sip.routing import TransportAddress, response_destination, stamp_and_route, stamp_received
from signaling.sip.timers import TimerSettings
from tests.unit.sip.support import ALICE, BOB, drain, make_request, sent_codes, wire

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = b"0123456789abcdef0123456789abcdef"


# --------------------------------------------------------------------------- serialize


def _sipmessage_bytes(message: Request | Response) -> bytes:
    """sipmessage's own wire form, through its plain Headers class."""
    plain = Headers()
    for name, values in message.headers._list:
        for value in values:
            plain.add(name, value)
    plain.set("Content-Length", str(len(message.body)))
    if isinstance(message, Request):
        copy: Request | Response = Request(message.method, message.uri, message.body)
    else:
        copy = Response(message.code, message.phrase, message.body)
    copy.headers = plain
    return bytes(copy)


def test_serialize_matches_sipmessage_for_requests_and_responses() -> None:
    request = make_request("REGISTER")
    request.headers.add("Route", "<sip:p1.example.com;lr>")
    request.headers.add("Route", "<sip:p2.example.com;lr>")
    request.body = b"v=0\r\n"
    assert serialize(request) == _sipmessage_bytes(request)
    assert b"Content-Length: 5\r\n" in serialize(request)

    response = build_response(request, 401, headers=[("WWW-Authenticate", 'Digest realm="a"')] * 2)
    assert serialize(response) == _sipmessage_bytes(response)

    parsed = parse_message(wire(make_request("OPTIONS")))
    assert serialize(parsed) == _sipmessage_bytes(parsed)


def test_serialize_rewrites_a_wrong_content_length() -> None:
    request = make_request("MESSAGE")
    request.body = b"hello"
    request.headers.set("Content-Length", "99")
    assert b"Content-Length: 5\r\n" in serialize(request)
    assert request.headers.getlist("Content-Length") == ["5"]


# --------------------------------------------------------------------------- digest


_value_chars = string.ascii_letters + string.digits + ' ,;=:@/"\\\t-_.'
auth_texts = st.builds(
    lambda scheme, params, tail: scheme + " " + ",".join(params) + tail,
    st.sampled_from(["Digest", "digest", "Basic"]),
    st.lists(
        st.builds(
            lambda name, space, value: f"{name}{space}={space}{value}",
            st.sampled_from(["username", "realm", "nonce", "uri", "qop", "nc", "Response", "x-y", "a b", ""]),
            st.sampled_from(["", " ", "\t"]),
            st.one_of(
                st.text(alphabet=_value_chars, max_size=12),
                st.text(alphabet=_value_chars, max_size=12).map(lambda text: f'"{text}"'),
            ),
        ),
        max_size=6,
    ),
    st.sampled_from(["", " ", ",", ", ", " ,"]),
)


@FAST
@given(auth_texts)
def test_auth_param_fast_path_agrees_with_the_general_parser(text: str) -> None:
    try:
        expected: tuple[str, dict[str, str]] | None = _parse_auth_params_general(text.strip())
    except ValueError:
        expected = None
    try:
        got: tuple[str, dict[str, str]] | None = parse_auth_params(text)
    except ValueError:
        got = None
    assert got == expected


def test_common_authorization_parses_through_the_fast_path() -> None:
    text = (
        'Digest username="alice",realm="example.com",cnonce="6b8b4567",nc=00000001,qop=auth,'
        'uri="sip:example.com",nonce="abc",response="0123456789abcdef0123456789abcdef",algorithm=MD5'
    )
    credentials = Credentials.parse(text)
    assert (credentials.username, credentials.nc, credentials.algorithm) == ("alice", 1, DigestAlgorithm.MD5)


@pytest.mark.parametrize("stale", [False, True])
@pytest.mark.parametrize("proxy", [False, True])
def test_challenge_text_is_what_the_challenge_objects_write(stale: bool, proxy: bool) -> None:
    algorithms = (DigestAlgorithm.SHA_256, DigestAlgorithm.MD5)
    authenticator = DigestAuthenticator("example.com", SECRET, algorithms=algorithms, random_bytes=bytes)
    headers = authenticator.challenge_headers(1_700_000_000.0, stale=stale, proxy=proxy)
    nonce = authenticator.new_nonce(1_700_000_000.0)  # random_bytes=bytes: the same nonce every time
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    assert headers == [
        (
            name,
            Challenge("example.com", nonce, algorithm, ("auth",), authenticator.opaque, stale).header_value(),
        )
        for algorithm in algorithms
    ]
    assert authenticator.stats.challenges == 1


def test_challenge_text_for_a_realm_holding_the_marker_is_still_right() -> None:
    authenticator = DigestAuthenticator("odd\x00realm", SECRET, random_bytes=bytes)
    (_name, value), *_ = authenticator.challenge_headers(1.0)
    assert Challenge.parse(value).nonce == authenticator.new_nonce(1.0)


def test_nonce_round_trip_and_forgeries() -> None:
    authenticator = DigestAuthenticator("example.com", SECRET)
    nonce = authenticator.new_nonce(1_700_000_000.25)
    assert authenticator._nonce_issue_time(nonce) == 1_700_000_000.25
    tampered = ("B" if nonce[0] != "B" else "C") + nonce[1:]
    for bad in (tampered, nonce[:-1], nonce + "A", "é" * 43, "!" * 43, ""):
        assert authenticator._nonce_issue_time(bad) is None


# --------------------------------------------------------------------------- routing


def test_stamp_and_route_agrees_with_stamp_received_and_response_destination() -> None:
    sources = [
        TransportAddress("udp", "198.51.100.7", 5099),
        TransportAddress("udp", "192.0.2.10", 5060),
        TransportAddress("tcp", "198.51.100.7", 40000, "tcp-1"),
        TransportAddress("udp", "2001:db8::9", 5062),
    ]
    vias = [
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport",
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1",
        "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1;rport=7000",
        "SIP/2.0/TCP client.example.com:5060;branch=z9hG4bK1;maddr=239.1.1.1",
        "SIP/2.0/UDP [2001:db8::9]:5062;branch=z9hG4bK1;received=192.0.2.1",
    ]
    from signaling.sip.message import format_via, parse_via

    for via_text in vias:
        via = parse_via(via_text)
        for source in sources:
            stamped = stamp_received(via, source)
            text, destination = stamp_and_route(via, source)
            assert text == (None if stamped is via else format_via(stamped))
            assert destination == response_destination(stamped, source)


# --------------------------------------------------------------------------- endpoint


def _register(branch: str, *, cseq: int = 1, max_forwards: int = 70, to_tag: str | None = None) -> bytes:
    request = make_request("REGISTER", branch=branch, cseq=cseq, max_forwards=max_forwards, to_tag=to_tag)
    return wire(request)


def _challenge(request: Request, source: TransportAddress) -> Response | None:
    if request.method != "REGISTER" or request.headers.get("Authorization"):
        return None
    return build_response(request, 401, headers=[("WWW-Authenticate", 'Digest realm="x"')], to_tag="fixed")


def test_stateless_responder_answers_without_a_transaction() -> None:
    endpoint = SipEndpoint(stateless_responder=_challenge)
    endpoint.receive(_register("z9hG4bKs1"), ALICE, 0.0)
    assert sent_codes(endpoint) == [401]
    assert endpoint.active_transactions == 0 and drain(endpoint) == []
    assert endpoint.stats.stateless_responses_sent == 1 and endpoint.stats.transactions_created == 0
    assert endpoint.get_timer() is None
    # A retransmission is answered again (RFC 3261 §8.2.7), not absorbed.
    endpoint.receive(_register("z9hG4bKs1"), ALICE, 0.5)
    assert sent_codes(endpoint) == [401] and endpoint.stats.retransmissions_absorbed == 0


def test_stateless_responder_declining_leaves_the_stateful_path() -> None:
    endpoint = SipEndpoint(stateless_responder=lambda request, source: None)
    endpoint.receive(_register("z9hG4bKs2"), ALICE, 0.0)
    events = drain(endpoint)
    assert len(events) == 1 and isinstance(events[0], RequestReceived) and events[0].transaction is not None
    assert endpoint.active_transactions == 1


def test_stateless_responder_is_not_asked_for_invite_hop_limit_or_merged_requests() -> None:
    asked: list[str] = []

    def responder(request: Request, source: TransportAddress) -> Response | None:
        asked.append(request.method)
        return None

    endpoint = SipEndpoint(stateless_responder=responder)
    endpoint.receive(wire(make_request("INVITE", branch="z9hG4bKi1")), ALICE, 0.0)
    endpoint.receive(_register("z9hG4bKm0", max_forwards=0), ALICE, 0.0)
    assert sent_codes(endpoint) == [100, 483] and asked == []
    endpoint.receive(_register("z9hG4bKm1", cseq=7), ALICE, 0.0)  # asked, declined: a live transaction
    assert asked == ["REGISTER"]
    endpoint.receive(_register("z9hG4bKm2", cseq=7), BOB, 0.0)  # merged with it (§8.2.2.2): 482
    assert asked == ["REGISTER"] and 482 in sent_codes(endpoint)


def test_timers_from_the_fifo_and_the_heap_fire_in_deadline_order() -> None:
    timers = TimerSettings(t1=0.5)
    endpoint = SipEndpoint(timers=timers)
    # Server transactions answered at once sit in Timer J (32 s, the FIFO); client ones retransmit on
    # Timer E (0.5 s, earlier than the FIFO's tail: the heap).
    for index in range(3):
        endpoint.receive(
            wire(make_request("OPTIONS", branch=f"z9hG4bKj{index}", call_id=f"c{index}")), ALICE, float(index)
        )
        event = drain(endpoint)[0]
        assert isinstance(event, RequestReceived) and event.transaction is not None
        endpoint.respond(event.transaction, build_response(event.request, 200), float(index))
    client = build_request(
        "OPTIONS",
        "sip:bob@192.0.2.20",
        from_uri="<sip:a@x>",
        to_uri="<sip:b@x>",
        via_host="192.0.2.1",
        via_port=5060,
    )
    endpoint.send_request(client, BOB, 3.0)
    endpoint.datagrams_to_send()
    assert endpoint.get_timer() == 3.5  # Timer E, from the heap, before the FIFO's 32.0
    endpoint.handle_timer(3.5)
    assert sent_codes(endpoint) == ["OPTIONS"]
    assert endpoint.get_timer() == 4.5
    endpoint.handle_timer(32.0)  # E retransmissions up to 32 s and the first Timer J
    assert endpoint.active_transactions == 3  # J of the first server transaction ended it
    endpoint.handle_timer(34.0)  # the other two J timers (33, 34); the client's F (35) still runs
    assert endpoint.active_transactions == 1
    endpoint.handle_timer(35.0)
    assert endpoint.active_transactions == 0 and endpoint.get_timer() is None


# --------------------------------------------------------------------------- registrar


@FAST
@given(st.text(alphabet=string.ascii_letters + ";= \t+<>:.-", max_size=30))
def test_split_params_fast_path_cuts_like_the_quote_aware_loop(text: str) -> None:
    assert _split_outside_quotes(text) == text.split(";")


def test_split_params_keeps_quoted_semicolons() -> None:
    assert _split_params(';+sip.instance="<urn:a;b>";reg-id=1;Q=0.5;lr') == {
        "+sip.instance": "<urn:a;b>",
        "reg-id": "1",
        "q": "0.5",
        "lr": None,
    }


@pytest.mark.parametrize("bad", [";", "; ;x", "junk;x=1"])
def test_split_params_refuses_what_it_refused_before(bad: str) -> None:
    with pytest.raises(ValueError):
        _split_params(bad)


def test_aor_of_is_cached_but_errors_are_not() -> None:
    first = _aor_of("<sip:alice@Example.COM>")
    assert first == ("sip:alice@example.com", "alice", "example.com")
    assert _aor_of("<sip:alice@Example.COM>") is first
    for _ in range(2):
        with pytest.raises(ValueError):
            _aor_of("<tel:+123>")
