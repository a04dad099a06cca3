"""Message layer: builders, header helpers, round trips, limits, and response routing (§18.2.2)."""

from __future__ import annotations

import os

import pytest
from sipmessage import Parameters, Via

from signaling.sip.message import (
    MessageParseError,
    ParseLimits,
    Request,
    Response,
    address_tag,
    build_ack_for_non_2xx,
    build_cancel,
    build_request,
    build_response,
    format_via,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    parse_with_keys,
    serialize,
    set_top_via,
    split_header_values,
    to_tag,
    top_via,
    vias,
)
from signaling.sip.routing import TransportAddress, response_destination, stamp_received
from tests.unit.sip.support import make_request


def test_identifiers_are_fresh_and_well_formed() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100 and all(b.startswith("z9hG4bK") and len(b) == 23 for b in branches)
    assert len({new_tag() for _ in range(100)}) == 100
    assert new_call_id("edge.example.com").endswith("@edge.example.com")


def test_identifiers_stay_fresh_across_refills_of_the_random_buffer() -> None:
    # 2,000 tags of 12 digits use the 8,192-digit buffer three times over.
    tags = [new_tag() for _ in range(2000)]
    assert len(set(tags)) == 2000
    assert all(len(tag) == 12 and set(tag) <= set("0123456789abcdef") for tag in tags)
    call_id = new_call_id()
    assert len(call_id) == 24 and "@" not in call_id


def test_a_forked_child_draws_identifiers_of_its_own() -> None:
    new_tag()  # the parent's buffer holds digits a child could reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hand its next tag to the parent and leave at once
        os.write(write, new_tag().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child_tag = os.read(read, 64).decode()
    os.close(read)
    assert len(child_tag) == 12 and child_tag != new_tag()


def test_build_request_has_every_mandatory_header_and_round_trips() -> None:
    request = build_request(
        "INVITE",
        "sip:bob@example.com",
        from_uri='"Alice" <sip:alice@example.com>',
        to_uri="<sip:bob@example.com>",
        via_host="192.0.2.1",
        via_port=5070,
        via_transport="TCP",
        cseq=7,
        contact="<sip:alice@192.0.2.1:5070;transport=tcp>",
        headers=[("Supported", "timer"), ("Route", "<sip:p1;lr>"), ("Route", "<sip:p2;lr>")],
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    data = serialize(request)
    parsed = parse_message(data)
    assert isinstance(parsed, Request)
    assert parsed.method == "INVITE" and str(parsed.uri) == "sip:bob@example.com"
    assert parsed.max_forwards == 70
    assert parsed.cseq.sequence == 7 and parsed.cseq.method == "INVITE"
    assert parsed.content_length == 5 and parsed.body == b"v=0\r\n"
    assert parsed.headers.getlist("Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    via = top_via(parsed)
    assert via.transport == "TCP" and via.port == 5070 and "rport" in via.parameters
    assert via.parameters["branch"] and via.parameters["branch"].startswith("z9hG4bK")
    assert parsed.from_address.parameters["tag"]
    assert to_tag(parsed) is None
    assert serialize(parsed) == data


def test_build_response_copies_headers_and_adds_to_tag_except_for_100() -> None:
    request = make_request("INVITE")
    request.headers.add("Timestamp", "54")
    request.headers.add("Record-Route", "<sip:proxy.example.com;lr>")
    trying = build_response(request, 100)
    assert trying.phrase == "Trying" and to_tag(trying) is None
    assert trying.headers["Timestamp"] == "54"
    ringing = build_response(request, 180, to_tag="abc", copy_record_route=True)
    assert to_tag(ringing) == "abc"
    assert ringing.headers["Record-Route"] == "<sip:proxy.example.com;lr>"
    for name in ("Via", "From", "Call-ID", "CSeq"):
        assert ringing.headers.getlist(name) == request.headers.getlist(name)
    generated = build_response(request, 486)
    assert to_tag(generated) and generated.phrase == "Busy Here"
    in_dialog = make_request("BYE", to_tag="existing")
    assert to_tag(build_response(in_dialog, 200, to_tag="other")) == "existing"
    answer = build_response(request, 200, to_tag="t", body=b"v=0\r\n", content_type="application/sdp")
    reparsed = parse_message(serialize(answer))
    assert isinstance(reparsed, Response) and reparsed.body == b"v=0\r\n"
    assert reparsed.headers["Content-Type"] == "application/sdp"


def test_ack_and_cancel_follow_the_invite() -> None:
    invite = make_request("INVITE")
    invite.headers.add("Route", "<sip:p1;lr>")
    invite.headers.setlist("Via", [invite.headers["Via"] + ", SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKlower"])
    failure = build_response(invite, 404, to_tag="x1")
    ack = build_ack_for_non_2xx(invite, failure)
    assert ack.method == "ACK" and ack.uri == invite.uri
    assert len(vias(ack)) == 1 and top_via(ack).parameters["branch"] == top_via(invite).parameters["branch"]
    assert ack.headers["CSeq"] == "1 ACK" and to_tag(ack) == "x1"
    assert ack.headers["Route"] == "<sip:p1;lr>"
    cancel = build_cancel(invite)
    assert cancel.headers["CSeq"] == "1 CANCEL" and to_tag(cancel) is None
    assert top_via(cancel).parameters["branch"] == top_via(invite).parameters["branch"]


def test_split_header_values_respects_quotes_and_brackets() -> None:
    assert split_header_values('"Doe, John" <sip:j@x>;q=1, <sip:a@b,c>, sip:z@y') == [
        '"Doe, John" <sip:j@x>;q=1',
        "<sip:a@b,c>",
        "sip:z@y",
    ]
    assert split_header_values(" a , ,b ") == ["a", "b"]
    assert split_header_values("") == []


def test_address_tag_reads_header_parameters_only() -> None:
    assert address_tag("<sip:a@b;tag=uri-param>;tag=real") == "real"
    assert address_tag("<sip:a@b;tag=uri-param>") is None
    assert address_tag("sip:a@b ; TAG = 12x") == "12x"
    assert address_tag('"x" <sip:a@b>') is None


def test_set_top_via_keeps_the_others_and_writes_raw_parameters() -> None:
    request = make_request("OPTIONS")
    request.headers.setlist(
        "Via", ["SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"]
    )
    stamped = stamp_received(top_via(request), TransportAddress("udp", "2001:db8::7", 5060))
    set_top_via(request, stamped)
    assert [via.host for via in vias(request)] == ["a.example.com", "b"]
    assert "received=[2001:db8::7]" in request.headers["Via"]  # not percent-encoded
    assert format_via(Via("TLS", "h", 5061, Parameters(branch="z9hG4bKx", lr=None))) == (
        "SIP/2.0/TLS h:5061;branch=z9hG4bKx;lr"
    )


def test_stamp_received_follows_rfc3581() -> None:
    source = TransportAddress("udp", "203.0.113.9", 40000)
    same_host = Via("UDP", "203.0.113.9", 5060, Parameters(branch="z9hG4bK1"))
    assert stamp_received(same_host, source) is same_host
    other = stamp_received(Via("UDP", "10.0.0.1", 5060, Parameters(branch="z9hG4bK1")), source)
    assert other.parameters["received"] == "203.0.113.9" and "rport" not in other.parameters
    asked = stamp_received(Via("UDP", "203.0.113.9", 5060, Parameters(rport=None)), source)
    assert asked.parameters["rport"] == "40000" and asked.parameters["received"] == "203.0.113.9"


def test_response_destination_rules() -> None:
    udp = TransportAddress("udp", "203.0.113.9", 40000)
    via = Via("UDP", "10.0.0.1", 5070, Parameters(received="203.0.113.9"))
    assert response_destination(via, udp) == TransportAddress("udp", "203.0.113.9", 5070)
    via = Via("UDP", "10.0.0.1", None, Parameters(received="203.0.113.9", rport="40000"))
    assert response_destination(via, udp) == udp
    via = Via("UDP", "10.0.0.1", None, Parameters(maddr="239.1.1.1"))
    assert response_destination(via, udp) == TransportAddress("udp", "239.1.1.1", 5060)
    tls = TransportAddress("tls", "203.0.113.9", 50001, "tls-3")
    assert response_destination(Via("TLS", "x.invalid", None, Parameters()), tls) == tls
    assert response_destination(Via("TLS", "a.example", None, Parameters()), None) == TransportAddress(
        "tls", "a.example", 5061
    )
    with pytest.raises(ValueError):
        TransportAddress("sctp", "h", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TransportAddress("udp", "h", 70000)


def test_parse_with_keys_returns_the_transaction_keys() -> None:
    parsed = parse_with_keys(serialize(make_request("REGISTER", cseq=9)))
    assert parsed.cseq.sequence == 9 and parsed.cseq.method == "REGISTER"
    assert parsed.top_via.parameters["branch"] == "z9hG4bKtest1"


@pytest.mark.parametrize(
    ("mutation", "status"),
    [
        ((b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400),
        ((b"SIP/2.0\r\n", b"SIP/3.0\r\n"), 505),
        ((b"INVITE sip:bob@192.0.2.20", b"INVITE tel:+1-555"), None),
        ((b"INVITE sip:bob@192.0.2.20", b"INVITE im:bob@x"), 416),
        ((b"Max-Forwards: 70", b"Max-Forwards: seventy"), 400),
        ((b"Content-Length: 0", b"Content-Length: 0\r\nl: 1"), 400),
        ((b"Call-ID: call-1@test", b"Call-ID: a\r\nCall-ID: b"), 400),
        ((b"5060>\r\n", b"5060>\r\n  ;expires=60\r\n"), None),
        ((b"\r\nTo:", b"\r\n folded into From\r\nTo:"), 400),
    ],
)
def test_request_problems_and_their_answers(mutation: tuple[bytes, bytes], status: int | None) -> None:
    data = serialize(make_request("INVITE")).replace(*mutation)
    if status is None:
        parse_message(data)  # still acceptable
        return
    with pytest.raises(MessageParseError) as caught:
        parse_message(data)
    assert caught.value.status_code == status and caught.value.can_reply


def test_response_problems_are_dropped_not_answered() -> None:
    data = serialize(build_response(make_request("INVITE"), 200, to_tag="x")).replace(b"CSeq: 1", b"CSeq: x")
    with pytest.raises(MessageParseError) as caught:
        parse_message(data)
    assert caught.value.build_reply() is None


def test_limits_and_framing_errors_are_silent() -> None:
    data = serialize(make_request("OPTIONS"))
    for broken in (data[:-4], b"", b"\r\n\r\n", data.replace(b"Via:", b"Via\xff:")):
        with pytest.raises(MessageParseError) as caught:
            parse_message(broken)
        assert caught.value.build_reply() is None
    with pytest.raises(MessageParseError, match="exceeds"):
        parse_message(data, ParseLimits(max_message_size=100))
    assert isinstance(parse_message(b"\r\n\r\n" + data), Request)  # leading CRLFs are skipped


def test_ack_is_never_answered_even_when_broken() -> None:
    data = serialize(make_request("ACK")).replace(b"CSeq: 1 ACK", b"CSeq: 1 INVITE")
    with pytest.raises(MessageParseError) as caught:
        parse_message(data)
    assert caught.value.status_code == 400 and not caught.value.can_reply
