"""Dialog layer (RFC 3261 §12): creation, route sets, loose/strict routing, CSeq, registry."""

from __future__ import annotations

import pytest

from signaling.sip.dialog import (
    Dialog,
    DialogId,
    DialogSet,
    DialogState,
    DialogTableFull,
    LocalAddress,
    is_loose_route,
)
from signaling.sip.errors import LocalProtocolError, RemoteProtocolError
from signaling.sip.message import Request, build_request, build_response, parse_message, serialize

HERE = LocalAddress("UDP", "192.0.2.10", 5060)


def invite(record_route: list[str] | None = None) -> Request:
    request = build_request(
        "INVITE",
        "sip:bob@example.com",
        from_uri="<sip:alice@example.com>",
        to_uri="<sip:bob@example.com>",
        via_host="192.0.2.10",
        via_port=5060,
        from_tag="atag",
        call_id="c1@test",
        cseq=10,
        contact="<sip:alice@192.0.2.10:5060>",
    )
    if record_route:
        request.headers.setlist("Record-Route", record_route)
    return request


def answered(request: Request, code: int = 200, record_route: list[str] | None = None) -> Dialog:
    response = build_response(
        request, code, to_tag="btag", headers=[("Contact", "<sip:bob@192.0.2.20:5062;transport=udp>")]
    )
    if record_route:
        response.headers.setlist("Record-Route", record_route)
    return Dialog.create_uac(request, response)


def test_uac_dialog_from_2xx_reverses_record_route() -> None:
    dialog = answered(invite(), record_route=["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"])
    assert dialog.id == DialogId("c1@test", "atag", "btag")
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert dialog.remote_target == "sip:bob@192.0.2.20:5062;transport=udp"
    assert dialog.local_cseq == 10 and dialog.remote_cseq is None and dialog.we_created


def test_uac_early_dialog_from_1xx_then_confirmed_recomputes_route_set() -> None:
    request = invite()
    ringing = build_response(
        request, 180, to_tag="btag", headers=[("Record-Route", "<sip:old.example.com;lr>")]
    )
    dialog = Dialog.create_uac(request, ringing)
    assert dialog.state is DialogState.EARLY and dialog.remote_target == "sip:bob@example.com"
    ok = build_response(request, 200, to_tag="btag", headers=[("Contact", "<sip:bob@192.0.2.30>")])
    ok.headers.setlist("Record-Route", ["<sip:new.example.com;lr>"])
    dialog.confirm(ok)
    assert dialog.terminated is False and dialog.state.value == "confirmed"
    assert dialog.route_set == ["<sip:new.example.com;lr>"]
    assert dialog.remote_target == "sip:bob@192.0.2.30"


def test_response_without_to_tag_creates_no_dialog() -> None:
    request = invite()
    response = build_response(request, 180)
    response.headers.set("To", "<sip:bob@example.com>")
    with pytest.raises(RemoteProtocolError):
        Dialog.create_uac(request, response)
    with pytest.raises(LocalProtocolError):
        Dialog.create_uac(request, build_response(request, 100))


def test_uas_dialog_keeps_record_route_order_and_remote_cseq() -> None:
    request = invite(["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"])
    response = build_response(request, 200, to_tag="mine")
    dialog = Dialog.create_uas(request, response, "<sip:bob@192.0.2.20>")
    assert dialog.id == DialogId("c1@test", "mine", "atag")
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert dialog.remote_target == "sip:alice@192.0.2.10:5060"
    assert dialog.remote_cseq == 10 and dialog.local_cseq is None and not dialog.we_created
    bye = dialog.create_request("BYE", HERE)
    assert bye.headers["CSeq"] == "1 BYE"
    assert bye.headers["From"] == "<sip:bob@example.com>;tag=mine"
    assert bye.headers["To"] == "<sip:alice@example.com>;tag=atag"


def test_uas_dialog_needs_a_contact() -> None:
    request = invite()
    request.headers.remove("Contact")
    with pytest.raises(RemoteProtocolError) as caught:
        Dialog.create_uas(request, build_response(request, 200, to_tag="mine"))
    assert caught.value.status_code == 400


def test_loose_routing_keeps_target_in_request_uri() -> None:
    dialog = answered(invite(), record_route=["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"])
    bye = dialog.create_request("BYE", HERE)
    assert str(bye.uri) == "sip:bob@192.0.2.20:5062;transport=udp"
    assert bye.headers.getlist("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert dialog.next_hop(bye).host == "p2.example.com"
    assert bye.headers["CSeq"] == "11 BYE"
    assert bye.headers.get("Contact") is None  # only target-refresh requests carry Contact
    reparsed = parse_message(serialize(bye))
    assert isinstance(reparsed, Request) and reparsed.method == "BYE"


def test_strict_routing_puts_the_first_route_in_the_request_uri() -> None:
    dialog = answered(invite(), record_route=["<sip:p1.example.com;lr>", "<sip:strict.example.com>"])
    request = dialog.create_request("INFO", HERE)
    # §12.2.1.1: strict router first → Request-URI = its URI, target appended to the Route set.
    assert str(request.uri) == "sip:strict.example.com"
    assert request.headers.getlist("Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:bob@192.0.2.20:5062;transport=udp>",
    ]
    assert dialog.next_hop(request).host == "strict.example.com"
    assert is_loose_route("<sip:p1.example.com;lr>") and not is_loose_route("<sip:strict.example.com>")


def test_in_dialog_cseq_increments_and_ack_reuses_invite_number() -> None:
    dialog = answered(invite())
    ack = dialog.create_ack(10, HERE)
    assert ack.headers["CSeq"] == "10 ACK" and dialog.local_cseq == 10
    reinvite = dialog.create_request("INVITE", HERE, headers=[("Contact", "x")])
    update = dialog.create_request("UPDATE", HERE)
    assert reinvite.headers["CSeq"] == "11 INVITE" and update.headers["CSeq"] == "12 UPDATE"
    for method in ("REFER", "NOTIFY", "INFO"):
        assert dialog.create_request(method, HERE).headers["CSeq"].endswith(method)
    with pytest.raises(LocalProtocolError, match="CANCEL"):
        dialog.create_request("CANCEL", HERE)
    with pytest.raises(LocalProtocolError, match="ACK"):
        dialog.create_request("ACK", HERE)


def uas_dialog() -> tuple[Request, Dialog]:
    request = invite()
    return request, Dialog.create_uas(request, build_response(request, 200, to_tag="mine"), "<sip:b@h>")


def peer_request(method: str, cseq: int, contact: str | None = None) -> Request:
    return build_request(
        method,
        "sip:bob@192.0.2.20",
        from_uri="<sip:alice@example.com>",
        to_uri="<sip:bob@example.com>",
        via_host="192.0.2.10",
        via_port=5060,
        from_tag="atag",
        to_tag="mine",
        call_id="c1@test",
        cseq=cseq,
        contact=contact,
    )


def test_lower_cseq_is_500_equal_or_higher_accepted() -> None:
    _request, dialog = uas_dialog()
    dialog.receive_request(peer_request("INFO", 11))
    assert dialog.remote_cseq == 11
    with pytest.raises(RemoteProtocolError) as caught:
        dialog.receive_request(peer_request("BYE", 9))
    assert caught.value.status_code == 500
    dialog.receive_request(peer_request("ACK", 10))  # ACK carries the INVITE's number: no check
    assert dialog.remote_cseq == 11


def test_target_refresh_by_reinvite_contact() -> None:
    _request, dialog = uas_dialog()
    dialog.receive_request(peer_request("INVITE", 12, contact="<sip:alice@198.51.100.9:5070>"))
    assert dialog.remote_target == "sip:alice@198.51.100.9:5070"
    dialog.receive_request(peer_request("INFO", 13, contact="<sip:elsewhere@198.51.100.1>"))
    assert dialog.remote_target == "sip:alice@198.51.100.9:5070"  # INFO is no target refresh


def test_request_for_another_dialog_is_481() -> None:
    _request, dialog = uas_dialog()
    other = peer_request("BYE", 20)
    other.headers.set("To", "<sip:bob@example.com>;tag=else")
    with pytest.raises(RemoteProtocolError) as caught:
        dialog.receive_request(other)
    assert caught.value.status_code == 481


def test_dialog_response_has_our_tag_contact_and_record_route() -> None:
    request = invite(["<sip:p1.example.com;lr>"])
    dialog = Dialog.create_uas(request, build_response(request, 180, to_tag="mine"), "<sip:bob@h>")
    response = dialog.create_response(request, 200)
    assert response.headers["To"].endswith(";tag=mine")
    assert response.headers["Contact"] == "<sip:bob@h>"
    assert response.headers["Record-Route"] == "<sip:p1.example.com;lr>"


def test_dialog_set_is_bounded_and_answers_481() -> None:
    dialogs = DialogSet(max_dialogs=2)
    _request, first = uas_dialog()
    dialogs.add(first)
    second = answered(invite())
    dialogs.add(second)
    with pytest.raises(DialogTableFull):
        request = invite()
        request.headers.set("Call-ID", "other@test")
        dialogs.add(answered(request))
    assert len(dialogs) == 2
    assert dialogs.find_for_request(peer_request("BYE", 11)) is first
    stray = peer_request("BYE", 11)
    stray.headers.set("Call-ID", "unknown@test")
    reply = dialogs.reject_unmatched(stray)
    assert reply is not None and reply.code == 481
    assert dialogs.reject_unmatched(peer_request("BYE", 11)) is None
    assert dialogs.reject_unmatched(invite()) is None  # no To tag: not in-dialog
    ack = peer_request("ACK", 11)
    ack.headers.set("Call-ID", "unknown@test")
    assert dialogs.reject_unmatched(ack) is None  # ACK is never answered
    first.terminate()
    assert dialogs.prune_terminated() == 1 and len(dialogs) == 1


def test_dialog_set_finds_early_forks_and_responses() -> None:
    request = invite()
    dialogs = DialogSet()
    for tag in ("f1", "f2"):
        ringing = build_response(request, 180, to_tag=tag, headers=[("Contact", f"<sip:{tag}@h>")])
        dialogs.add(Dialog.create_uac(request, ringing))
    early = dialogs.early_dialogs("c1@test", "atag")
    assert sorted(d.id.remote_tag for d in early) == ["f1", "f2"]
    response = build_response(request, 200, to_tag="f2")
    found = dialogs.find_for_response(response)
    assert found is not None and found.id.remote_tag == "f2"


def test_contact_uri_validation_is_cached_for_valid_uris_and_raises_each_time_for_invalid_ones() -> None:
    from signaling.sip.dialog import _check_uri, _contact_uri

    message = build_response(invite(), 200, to_tag="btag", headers=[("Contact", "<sip:bob@192.0.2.31>")])
    assert _contact_uri(message) == "sip:bob@192.0.2.31"
    hits = _check_uri.cache_info().hits
    assert _contact_uri(message) == "sip:bob@192.0.2.31"
    assert _check_uri.cache_info().hits == hits + 1
    bad = build_response(invite(), 200, to_tag="btag", headers=[("Contact", "<notauri>")])
    for _ in range(2):
        with pytest.raises(ValueError):
            _contact_uri(bad)
