"""The node answers a REGISTER without credentials statelessly (RFC 3261 §8.2.7), the rest statefully.

No sockets: the node's endpoint is fed bytes by hand and its output read back.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from edge.settings import Settings
from edge.sip_node import SipNode
from signaling.registrar import Registrar, RegistrarConfig
from signaling.sip.digest import DigestAlgorithm, ha1
from signaling.sip.events import RequestReceived
from signaling.sip.message import Request, Response, parse_message, to_tag
from signaling.sip.routing import TransportAddress
from storage.memory.hot import ManualClock, MemoryLocationStore

REALM = "example.com"
PHONE = TransportAddress("udp", "192.0.2.10", 5060)


async def _credentials(username: str, realm: str) -> Mapping[DigestAlgorithm, str] | None:
    return {DigestAlgorithm.MD5: ha1(username, realm, "secret")} if username == "alice" else None


def _node() -> SipNode:
    settings = Settings(
        node_id="edge-test",
        sip_realm=REALM,
        sip_domain=REALM,
        sip_digest_algorithms="MD5",
        digest_secret="0123456789abcdef0123456789abcdef",
    )
    node = SipNode(settings)
    node.registrar = Registrar(
        MemoryLocationStore(ManualClock(1_700_000_000.0)),
        RegistrarConfig(realm=REALM, domains=frozenset({REALM})),
        authenticator=node.authenticator,
        credentials=_credentials,
        flood=node.flood,
        node_id="edge-test",
    )
    node.endpoint.stateless_responder = node._challenge_statelessly  # what start() installs
    return node


def _register(branch: str = "z9hG4bKr1", *, to: str = f"sip:alice@{REALM}", extra: str = "") -> bytes:
    return (
        f"REGISTER sip:{REALM} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <{to}>;tag=abc\r\n"
        f"To: <{to}>\r\n"
        "Call-ID: reg-1@192.0.2.10\r\n"
        "CSeq: 1 REGISTER\r\n"
        "Contact: <sip:alice@192.0.2.10:5060>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _responses(node: SipNode) -> list[Response]:
    out = []
    for data, _destination in node.endpoint.datagrams_to_send():
        message = parse_message(data)
        assert isinstance(message, Response)
        out.append(message)
    return out


def test_register_without_credentials_is_challenged_without_a_transaction() -> None:
    node = _node()
    node.endpoint.receive(_register(), PHONE, 0.0)
    (challenge,) = _responses(node)
    assert challenge.code == 401 and challenge.headers.get("WWW-Authenticate", "").startswith("Digest ")
    assert node.endpoint.active_transactions == 0 and node.endpoint.next_event() is None
    # §8.2.7: the retransmission gets a response again, with the same To tag (a fresh nonce is fine).
    node.endpoint.receive(_register(), PHONE, 0.5)
    (again,) = _responses(node)
    assert again.code == 401 and to_tag(again) == to_tag(challenge) is not None
    # Another request gets another tag.
    node.endpoint.receive(_register("z9hG4bKr2"), PHONE, 1.0)
    (other,) = _responses(node)
    assert to_tag(other) != to_tag(challenge)


def test_refusals_are_stateless_too_and_counted() -> None:
    node = _node()
    node.endpoint.receive(_register(to="sip:alice@elsewhere.example"), PHONE, 0.0)
    (refusal,) = _responses(node)
    assert refusal.code == 404 and node.registrar_stats["rejections"] == 1


def test_register_with_credentials_and_other_methods_stay_stateful() -> None:
    node = _node()
    node.endpoint.receive(
        _register(extra='Authorization: Digest username="alice", realm="x"\r\n'), PHONE, 0.0
    )
    assert node.endpoint.active_transactions == 1
    event = node.endpoint.next_event()
    assert isinstance(event, RequestReceived) and event.transaction is not None
    options = _register("z9hG4bKo1").replace(b"REGISTER", b"OPTIONS")
    node.endpoint.receive(options, PHONE, 0.0)
    assert node.endpoint.active_transactions == 2


@pytest.mark.parametrize("registrar_ready", [True, False])
def test_a_source_the_flood_guard_answers_503_goes_the_stateful_way(registrar_ready: bool) -> None:
    node = _node()
    if not registrar_ready:
        node.registrar = None
    node.hub.rejected_sources.add((PHONE.host, PHONE.port))
    request = parse_message(_register())
    assert isinstance(request, Request)
    assert node._challenge_statelessly(request, PHONE) is None
