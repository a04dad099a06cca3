"""Hypothesis: random in-dialog requests and responses thrown at established sessions.

Nothing may escape but documented protocol errors (none for peer input), the state must stay a
valid :class:`InviteState`, every output must serialise and parse back, and the session's memory
(timers, remembered ACKs, pending requests) stays bounded.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.sip.invite import InviteSession, InviteState, SendAck, SendRequest, SendResponse
from signaling.sip.message import Request, Response, build_request, parse_message, serialize
from tests.unit.sip.test_invite import Network, bob_factory, connect, make_alice, offer_for

METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "UPDATE", "PRACK", "INFO", "OPTIONS", "REFER", "FOO", "REGISTER"]
SDP_BODY = bytes(offer_for("198.51.100.1", 30000))

bodies = st.sampled_from([b"", SDP_BODY, b"v=0\r\ngarbage\r\n", SDP_BODY.replace(b"RTP/AVP", b"TCP/MSRP")])
extra_headers = st.lists(
    st.sampled_from(
        [
            ("Session-Expires", "30"),
            ("Session-Expires", "1800;refresher=uas"),
            ("Session-Expires", "bogus"),
            ("Min-SE", "abc"),
            ("Require", "100rel"),
            ("Require", "nonsense"),
            ("RAck", "1 1 INVITE"),
            ("RAck", "x"),
            ("RSeq", "5"),
            ("Contact", "<sip:moved@198.51.100.7>"),
            ("Contact", "garbage<<"),
            ("Reason", 'SIP;cause=200;text="x"'),
        ]
    ),
    max_size=3,
)


@st.composite
def peer_requests(draw: st.DrawFn, session: InviteSession) -> Request:
    dialog = session.dialog
    assert dialog is not None
    method = draw(st.sampled_from(METHODS))
    known_tag = draw(st.booleans())
    request = build_request(
        method,
        "sip:x@192.0.2.1",
        from_uri=dialog.remote_header.split(";tag=")[0],
        to_uri=dialog.local_header.split(";tag=")[0],
        via_host="198.51.100.1",
        via_port=5060,
        from_tag=dialog.id.remote_tag,
        to_tag=dialog.id.local_tag if known_tag else "wrong",
        call_id=dialog.id.call_id,
        cseq=draw(st.integers(min_value=0, max_value=2**31)),
        contact="<sip:peer@198.51.100.1>",
        headers=draw(extra_headers),
        body=draw(bodies),
        content_type="application/sdp",
    )
    return request


@st.composite
def peer_responses(draw: st.DrawFn, session: InviteSession) -> Response:
    dialog = session.dialog
    assert dialog is not None
    code = draw(st.sampled_from([100, 180, 183, 200, 202, 302, 408, 422, 481, 487, 488, 491, 500, 603]))
    method = draw(st.sampled_from(["INVITE", "UPDATE", "BYE", "PRACK", "INFO", "CANCEL"]))
    cseq = draw(st.integers(min_value=0, max_value=20))
    phrase = "X"
    response = Response(code=code, phrase=phrase, body=draw(bodies))
    headers = response.headers
    headers.add("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKfuzz")
    headers.add("From", dialog.local_header)
    headers.add("To", dialog.remote_header if draw(st.booleans()) else "<sip:x@y>;tag=other")
    headers.add("Call-ID", dialog.id.call_id)
    headers.add("CSeq", f"{cseq} {method}")
    for name, value in draw(extra_headers):
        headers.add(name, value)
    if response.body:
        headers.add("Content-Type", "application/sdp")
    return response


def established() -> Network:
    from signaling.sip.session_timer import SessionTimerSettings

    timer = SessionTimerSettings(session_expires=300, min_se=90)
    net = Network(make_alice(session_timer=timer), bob_factory(session_timer=timer))
    connect(net)
    return net


def check_outputs(session: InviteSession) -> None:
    for out in session.messages_to_send():
        if isinstance(out, (SendRequest, SendAck)):
            parsed = parse_message(serialize(out.request))
        else:
            assert isinstance(out, SendResponse)
            parsed = parse_message(serialize(out.response))
        assert parsed is not None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_in_dialog_traffic_never_breaks_a_session(data: st.DataObject) -> None:
    net = established()
    for session in (net.alice, net.bob):
        session.messages_to_send()
        while session.next_event() is not None:
            pass
    now = 1.0
    for _ in range(data.draw(st.integers(min_value=1, max_value=12))):
        target = data.draw(st.sampled_from([net.alice, net.bob]))
        if target.dialog is None:
            continue
        if data.draw(st.booleans()):
            request = data.draw(peer_requests(target))
            target.receive_request(parse_message(serialize(request)), now, transaction="t")  # type: ignore[arg-type]
        else:
            response = data.draw(peer_responses(target))
            target.receive_response(parse_message(serialize(response)), now)  # type: ignore[arg-type]
        now += data.draw(st.floats(min_value=0.0, max_value=50.0))
        deadline = target.get_timer()
        if deadline is not None and deadline <= now:
            target.handle_timer(now)
        assert target.state in InviteState
        check_outputs(target)
        while target.next_event() is not None:
            pass
        assert len(target._timers) <= 8 and len(target._acks) <= 32 and len(target._client) <= 16
