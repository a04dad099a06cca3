"""RFC 4475 torture messages: valid ones parse, invalid ones get their answer or are dropped."""

from __future__ import annotations

import pytest

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import RequestReceived
from signaling.sip.message import MessageParseError, Request, Response, parse_message, vias
from signaling.sip.routing import TransportAddress
from tests.unit.sip.torture import expectations, load_message

CASES = sorted(expectations().items())
SOURCE_HOST = "192.0.2.200"


@pytest.mark.parametrize(("name", "entry"), CASES, ids=[name for name, _ in CASES])
def test_parser_verdict(name: str, entry: dict[str, str]) -> None:
    data = load_message(name)
    expect = entry["expect"]
    if expect == "valid":
        message = parse_message(data)
        assert isinstance(message, Request | Response)
        return
    with pytest.raises(MessageParseError) as caught:
        parse_message(data)
    error = caught.value
    if expect == "drop":
        assert error.build_reply() is None
    else:
        assert error.status_code == int(expect), error.reason
        reply = error.build_reply()
        assert reply is not None
        assert reply.code == int(expect)


@pytest.mark.parametrize(("name", "entry"), CASES, ids=[name for name, _ in CASES])
def test_endpoint_answers_or_drops(name: str, entry: dict[str, str]) -> None:
    endpoint = SipEndpoint(local_addresses={"udp": ("192.0.2.1", 5060)})
    source = TransportAddress("udp", SOURCE_HOST, 5099)
    endpoint.receive(load_message(name), source, now=0.0)
    sent = endpoint.datagrams_to_send()
    expect = entry["expect"]
    if expect in ("400", "416", "505"):
        assert len(sent) == 1
        # The answer copies the broken headers verbatim, so only its status line is checked.
        assert sent[0][0].startswith(f"SIP/2.0 {expect} ".encode())
        assert sent[0][1] == TransportAddress("udp", SOURCE_HOST, 5099) or sent[0][1].host == SOURCE_HOST
        assert endpoint.stats.parse_errors == 1
        assert endpoint.active_transactions == 0
    elif expect == "drop":
        assert sent == []
        assert endpoint.active_transactions == 0
    else:
        event = endpoint.next_event()
        message = parse_message(load_message(name))
        if isinstance(message, Response):
            assert event is None  # no client transaction sent it: stray, discarded
            assert endpoint.stats.stray_responses == 1
        else:
            assert isinstance(event, RequestReceived)
            assert event.request.method == message.method


def test_wsinv_unfolds_and_reads_every_field() -> None:
    message = parse_message(load_message("wsinv"))
    assert isinstance(message, Request)
    assert message.method == "INVITE"
    assert message.headers["To"] == "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"
    assert message.cseq.sequence == 9 and message.cseq.method == "INVITE"
    assert message.max_forwards == 68
    assert [via.host for via in vias(message)] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert message.headers["NewFangledHeader"] == "newfangled value continued newfangled value"
    assert len(message.body) == 150
    assert message.contact[0].parameters["q"] == "0.33"


def test_dblreq_discards_trailing_octets() -> None:
    message = parse_message(load_message("dblreq"))
    assert isinstance(message, Request)
    assert message.method == "REGISTER"
    assert message.body == b""


def test_longreq_keeps_all_vias_in_order() -> None:
    message = parse_message(load_message("longreq"))
    hosts = [via.host for via in vias(message)]
    assert hosts[0] == "sip33.example.com"
    assert hosts[-1] == "host.example.com"
    assert len(hosts) == 34


def test_insuf_answer_carries_what_was_there() -> None:
    with pytest.raises(MessageParseError) as caught:
        parse_message(load_message("insuf"))
    reply = caught.value.build_reply()
    assert reply is not None and reply.code == 400
    assert reply.headers["CSeq"] == "193942 INVITE"
    assert reply.headers.get("Call-ID") is None


def test_regbadct_contact_is_left_for_the_registrar_to_reject() -> None:
    message = parse_message(load_message("regbadct"))
    with pytest.raises(ValueError):
        _ = message.contact
