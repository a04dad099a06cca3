"""Registrar (RFC 3261 §10.3) over the in-memory LocationStore fake, a fake clock and real digest auth."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.flood import FloodConfig, FloodGuard
from signaling.registrar import Registrar, RegistrarConfig, binding_key, parse_contacts
from signaling.sip.digest import Challenge, DigestAlgorithm, DigestAuthenticator, build_authorization, ha1
from signaling.sip.errors import LocalProtocolError
from signaling.sip.message import Request, Response, parse_message
from storage.memory.hot import ManualClock, MemoryLocationStore
from storage.ports import Binding, TransportAddress

REALM = "example.com"
T0 = 1_700_000_000.0
NODE_ID = "edge-test-1"
UDP_FLOW = TransportAddress("udp", "192.0.2.10", 5060)
PASSWORDS = {"alice": "wonderland", "bob": "builder"}


def register(
    *,
    contacts: Sequence[str] = ("<sip:alice@192.0.2.10:5060>",),
    expires: int | str | None = None,
    call_id: str = "call-1@192.0.2.10",
    cseq: int = 1,
    to: str = "sip:alice@example.com",
    request_uri: str = "sip:example.com",
    extra: Sequence[tuple[str, str]] = (),
) -> Request:
    lines = [
        f"REGISTER {request_uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-" + f"{cseq}-{call_id[:4]};rport",
        "Max-Forwards: 70",
        f"From: <{to}>;tag=fromtag",
        f"To: <{to}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {contact}" for contact in contacts),
        *([f"Expires: {expires}"] if expires is not None else []),
        *(f"{name}: {value}" for name, value in extra),
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def contact_lines(response: Response) -> list[str]:
    return [item for value in response.headers.getlist("Contact") for item in value.split(", ")]


async def lookup(username: str, realm: str) -> Mapping[DigestAlgorithm, str] | None:
    password = PASSWORDS.get(username)
    if password is None or realm != REALM:
        return None
    return {algorithm: ha1(username, realm, password, algorithm) for algorithm in DigestAlgorithm}


class RecordingLocationStore(MemoryLocationStore):
    """The in-memory fake, also recording every ``save`` so tests can assert that nothing was written."""

    def __init__(self, max_bindings_per_aor: int = 32) -> None:
        super().__init__(ManualClock(T0), max_bindings_per_aor=max_bindings_per_aor)
        self.saves: list[tuple[str, list[Binding], list[str]]] = []

    async def save(self, aor: str, upserts: Sequence[Binding], removals: Sequence[str], now: float) -> None:
        self.saves.append((aor, list(upserts), list(removals)))
        await super().save(aor, upserts, removals, now)


def open_registrar(store: MemoryLocationStore, **config: object) -> Registrar:
    return Registrar(
        store,
        RegistrarConfig(realm=REALM, require_auth=False, **config),  # type: ignore[arg-type]
        node_id=NODE_ID,
    )


@pytest.fixture
def store() -> RecordingLocationStore:
    return RecordingLocationStore()


# ---- bindings ---------------------------------------------------------------------------------


async def test_multiple_contacts_are_bound_and_listed_with_their_expiry(
    store: RecordingLocationStore,
) -> None:
    registrar = open_registrar(store)
    request = register(
        contacts=["<sip:alice@192.0.2.10:5060>;expires=120", "<sip:alice@198.51.100.4:5070>;q=0.5"],
        expires=600,
    )
    result = await registrar.handle_register(request, source=UDP_FLOW, now=T0)
    assert result.response.code == 200
    assert result.aor == "sip:alice@example.com"
    assert contact_lines(result.response) == [
        "<sip:alice@192.0.2.10:5060>;expires=120",
        "<sip:alice@198.51.100.4:5070>;expires=600;q=0.5",
    ]
    stored = await store.lookup("sip:alice@example.com", T0)
    assert {b.contact_uri for b in stored} == {"sip:alice@192.0.2.10:5060", "sip:alice@198.51.100.4:5070"}
    assert all(b.received == UDP_FLOW and b.call_id == "call-1@192.0.2.10" for b in stored)


async def test_refresh_reports_remaining_time_of_other_bindings(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store)
    await registrar.handle_register(register(expires=3600), source=UDP_FLOW, now=T0)
    second = register(contacts=["<sip:alice@203.0.113.9>"], expires=300, call_id="other-device")
    result = await registrar.handle_register(second, source=UDP_FLOW, now=T0 + 100)
    assert sorted(contact_lines(result.response)) == [
        "<sip:alice@192.0.2.10:5060>;expires=3500",
        "<sip:alice@203.0.113.9>;expires=300",
    ]


async def test_default_expires_and_max_expires_clamp(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store, default_expires=1800, max_expires=3600)
    result = await registrar.handle_register(register(), source=UDP_FLOW, now=T0)
    assert contact_lines(result.response) == ["<sip:alice@192.0.2.10:5060>;expires=1800"]
    result = await registrar.handle_register(register(cseq=2, expires=99999999999), source=UDP_FLOW, now=T0)
    assert contact_lines(result.response) == ["<sip:alice@192.0.2.10:5060>;expires=3600"]


async def test_bindings_expire(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store)
    await registrar.handle_register(register(expires=120), source=UDP_FLOW, now=T0)
    query = await registrar.handle_register(register(contacts=[], cseq=2), source=UDP_FLOW, now=T0 + 119)
    assert contact_lines(query.response) == ["<sip:alice@192.0.2.10:5060>;expires=1"]
    later = await registrar.handle_register(register(contacts=[], cseq=3), source=UDP_FLOW, now=T0 + 121)
    assert later.response.code == 200 and contact_lines(later.response) == []


async def test_interval_too_brief_is_423_with_min_expires_and_changes_nothing(
    store: RecordingLocationStore,
) -> None:
    registrar = open_registrar(store, min_expires=60)
    result = await registrar.handle_register(
        register(contacts=["<sip:alice@192.0.2.10>;expires=3600", "<sip:alice@192.0.2.11>;expires=30"]),
        source=UDP_FLOW,
        now=T0,
    )
    assert result.response.code == 423
    assert result.response.headers.get("Min-Expires") == "60"
    assert store.saves == []


async def test_unregister_one_contact_keeps_the_others(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store)
    both = ["<sip:alice@192.0.2.10:5060>", "<sip:alice@198.51.100.4:5070>"]
    await registrar.handle_register(register(contacts=both, expires=600), source=UDP_FLOW, now=T0)
    result = await registrar.handle_register(
        register(contacts=["<sip:alice@198.51.100.4:5070>;expires=0"], cseq=2), source=UDP_FLOW, now=T0 + 10
    )
    assert contact_lines(result.response) == ["<sip:alice@192.0.2.10:5060>;expires=590"]
    assert [b.contact_uri for b in await store.lookup("sip:alice@example.com", T0 + 10)] == [
        "sip:alice@192.0.2.10:5060"
    ]


async def test_unregister_all_with_star(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store)
    both = ["<sip:alice@192.0.2.10:5060>", "<sip:alice@198.51.100.4:5070>"]
    await registrar.handle_register(register(contacts=both, expires=600), source=UDP_FLOW, now=T0)
    result = await registrar.handle_register(
        register(contacts=["*"], expires=0, cseq=2), source=UDP_FLOW, now=T0 + 1
    )
    assert result.response.code == 200 and contact_lines(result.response) == []
    assert await store.lookup("sip:alice@example.com", T0 + 1) == []


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(["*"], None), (["*"], 60), (["*", "<sip:alice@192.0.2.10>"], 0), (["*, <sip:alice@192.0.2.10>"], 0)],
)
async def test_star_without_expires_zero_or_with_other_contacts_is_400(
    store: RecordingLocationStore, contacts: list[str], expires: int | None
) -> None:
    registrar = open_registrar(store)
    result = await registrar.handle_register(
        register(contacts=contacts, expires=expires), source=UDP_FLOW, now=T0
    )
    assert result.response.code == 400


async def test_same_call_id_with_old_cseq_is_refused(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store)
    await registrar.handle_register(register(cseq=5, expires=600), source=UDP_FLOW, now=T0)
    for cseq in (5, 4):
        stale = await registrar.handle_register(register(cseq=cseq, expires=0), source=UDP_FLOW, now=T0 + 1)
        assert stale.response.code == 500
    star = await registrar.handle_register(
        register(contacts=["*"], expires=0, cseq=3), source=UDP_FLOW, now=T0
    )
    assert star.response.code == 500
    assert len(await store.lookup("sip:alice@example.com", T0 + 1)) == 1
    # A new Call-ID (phone rebooted) may use any CSeq.
    rebooted = await registrar.handle_register(
        register(cseq=1, call_id="new-call-id", expires=0), source=UDP_FLOW, now=T0 + 2
    )
    assert rebooted.response.code == 200
    assert await store.lookup("sip:alice@example.com", T0 + 2) == []


async def test_too_many_contacts_is_refused(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store, max_contacts_per_aor=2)
    contacts = [f"<sip:alice@192.0.2.{i}>" for i in range(1, 4)]
    result = await registrar.handle_register(register(contacts=contacts), source=UDP_FLOW, now=T0)
    assert result.response.code == 403 and store.saves == []


async def test_store_binding_limit_is_403_with_a_reason_and_keeps_the_old_bindings() -> None:
    store = RecordingLocationStore(max_bindings_per_aor=2)
    registrar = open_registrar(store, max_contacts_per_aor=10)
    await registrar.handle_register(register(contacts=["<sip:alice@192.0.2.1>"]), source=UDP_FLOW, now=T0)
    contacts = ["<sip:alice@192.0.2.2>", "<sip:alice@192.0.2.3>"]
    result = await registrar.handle_register(register(contacts=contacts, cseq=2), source=UDP_FLOW, now=T0)
    assert result.response.code == 403
    assert "location store refused" in result.reason and "limit 2" in result.reason
    assert [b.contact_uri for b in await store.lookup("sip:alice@example.com", T0)] == ["sip:alice@192.0.2.1"]


def test_node_id_is_required_and_not_empty(store: RecordingLocationStore) -> None:
    with pytest.raises(ValueError, match="node_id"):
        Registrar(store, RegistrarConfig(realm=REALM, require_auth=False), node_id="")


async def test_stored_bindings_carry_node_time_and_the_registrars_key(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store)
    await registrar.handle_register(
        register(contacts=["<sip:alice@Host.Example.com:5060;transport=TCP>"], expires=600),
        source=UDP_FLOW,
        now=T0,
    )
    (binding,) = await store.lookup("sip:alice@example.com", T0)
    assert binding.node_id == NODE_ID and binding.updated_at == T0 and binding.expires_at == T0 + 600
    assert binding.binding_id == binding_key("sip:alice@host.example.com:5060;transport=tcp", None, None)
    # The same contact spelt differently is the same binding for the store too (loose comparison).
    await registrar.handle_register(
        register(contacts=["<sip:alice@host.example.com:5060;transport=tcp>"], expires=900, cseq=2),
        source=UDP_FLOW,
        now=T0 + 10,
    )
    (binding,) = await store.lookup("sip:alice@example.com", T0 + 10)
    assert binding.contact_uri == "sip:alice@host.example.com:5060;transport=tcp"
    assert binding.expires_at == T0 + 910 and binding.updated_at == T0 + 10


async def test_reg_id_without_instance_follows_rfc3261_rules(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store)
    result = await registrar.handle_register(
        register(contacts=["<sip:alice@192.0.2.10>;reg-id=1"]), source=UDP_FLOW, now=T0
    )
    assert result.response.code == 200 and result.response.headers.get("Require") is None
    assert contact_lines(result.response) == ["<sip:alice@192.0.2.10>;expires=3600"]
    (binding,) = await store.lookup("sip:alice@example.com", T0)
    assert binding.reg_id is None and binding.instance_id is None


async def test_oversized_contact_or_aor_is_refused_not_crashed(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store)
    long_contact = await registrar.handle_register(
        register(contacts=[f"<sip:alice@192.0.2.10;x={'a' * 1100}>"]), source=UDP_FLOW, now=T0
    )
    assert long_contact.response.code == 400 and "contact_uri" in long_contact.reason
    long_aor = await registrar.handle_register(
        register(to=f"sip:{'a' * 1100}@example.com"), source=UDP_FLOW, now=T0
    )
    assert long_aor.response.code == 404 and "address of record" in long_aor.reason
    assert store.saves == []


async def test_outbound_instance_reg_id_replaces_binding_and_keeps_the_websocket_flow(
    store: RecordingLocationStore,
) -> None:
    registrar = open_registrar(store)
    ws_flow = TransportAddress("wss", "203.0.113.50", 53211, connection_id="ws-17")
    instance = '+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'
    first = register(
        contacts=[f"<sip:k9q2x@df7jal23ls0d.invalid;transport=ws>;expires=600;+sip.ice;reg-id=1;{instance}"],
        extra=[("Supported", "path, outbound"), ("User-Agent", "SIP.js/0.21")],
    )
    result = await registrar.handle_register(first, source=ws_flow, now=T0)
    assert result.response.code == 200
    assert result.response.headers.get("Require") == "outbound"
    (line,) = contact_lines(result.response)
    assert line.startswith("<sip:k9q2x@df7jal23ls0d.invalid;transport=ws>;expires=600")
    assert 'sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"' in line and "reg-id=1" in line
    (binding,) = await store.lookup("sip:alice@example.com", T0)
    assert binding.received == ws_flow and binding.reg_id == 1 and binding.user_agent == "SIP.js/0.21"
    assert binding.instance_id == "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"
    # Reconnected over a new WebSocket with a new contact: same instance + reg-id replaces the binding.
    second = register(
        contacts=[f"<sip:zz81@a8s7d6.invalid;transport=ws>;expires=600;reg-id=1;{instance}"], cseq=2
    )
    new_flow = TransportAddress("wss", "203.0.113.50", 53999, connection_id="ws-42")
    await registrar.handle_register(second, source=new_flow, now=T0 + 5)
    (binding,) = await store.lookup("sip:alice@example.com", T0 + 5)
    assert binding.contact_uri == "sip:zz81@a8s7d6.invalid;transport=ws" and binding.received == new_flow


async def test_path_is_stored_in_order_and_echoed(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store)
    request = register(extra=[("Path", "<sip:edge1.example.com;lr>"), ("Path", "<sip:edge2.example.com;lr>")])
    result = await registrar.handle_register(request, source=UDP_FLOW, now=T0)
    assert result.response.headers.getlist("Path") == [
        "<sip:edge1.example.com;lr>",
        "<sip:edge2.example.com;lr>",
    ]
    (binding,) = await store.lookup("sip:alice@example.com", T0)
    assert binding.path == ("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>")


async def test_unknown_required_extension_is_420(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store)
    result = await registrar.handle_register(
        register(extra=[("Require", "path, foo")]), source=UDP_FLOW, now=T0
    )
    assert result.response.code == 420 and result.response.headers.get("Unsupported") == "foo"


async def test_foreign_domain_is_404(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store, domains=frozenset({"example.com"}))
    result = await registrar.handle_register(
        register(to="sip:alice@elsewhere.test", request_uri="sip:elsewhere.test"), source=UDP_FLOW, now=T0
    )
    assert result.response.code == 404


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        (["<sip:alice@192.0.2.10>;expires=soon"], None),
        (["<sip:alice@192.0.2.10>;q=7"], None),
        (["<http://example.com>"], None),
        (["<sip:alice@192.0.2.10"], None),
        (["<sip:alice@192.0.2.10>"], "tomorrow"),
    ],
)
async def test_malformed_contacts_or_expires_are_400(
    store: RecordingLocationStore, contacts: list[str], expires: str | None
) -> None:
    registrar = open_registrar(store)
    result = await registrar.handle_register(
        register(contacts=contacts, expires=expires), source=UDP_FLOW, now=T0
    )
    assert result.response.code == 400


def test_parse_contacts_handles_display_names_quotes_and_commas() -> None:
    contacts = parse_contacts(
        [
            '"Alice, A." <sip:alice@192.0.2.10;transport=tcp>;+sip.instance="<urn:uuid:1;2>";expires=60, '
            "sip:alice@192.0.2.11;q=0.7"
        ]
    )
    assert contacts is not None
    first, second = contacts
    assert first.display_name == "Alice, A." and first.uri == "sip:alice@192.0.2.10;transport=tcp"
    assert first.params == {"+sip.instance": "<urn:uuid:1;2>", "expires": "60"}
    assert second.uri == "sip:alice@192.0.2.11" and second.params == {"q": "0.7"}
    assert parse_contacts(["*"]) is None


# ---- digest authentication ----------------------------------------------------------------------


def counter_bytes() -> object:
    counter = itertools.count()
    return lambda size: next(counter).to_bytes(size, "big")


def auth_registrar(store: RecordingLocationStore, flood: FloodGuard | None = None) -> Registrar:
    authenticator = DigestAuthenticator(
        REALM,
        b"registrar-test-secret-0123456789",
        nonce_lifetime=300.0,
        random_bytes=counter_bytes(),  # type: ignore[arg-type]
    )
    config = RegistrarConfig(realm=REALM, domains=frozenset({REALM}))
    return Registrar(
        store, config, authenticator=authenticator, credentials=lookup, flood=flood, node_id=NODE_ID
    )


def authorization(
    response: Response,
    *,
    user: str = "alice",
    password: str = "wonderland",
    nc: int = 1,
    uri: str = "sip:example.com",
) -> tuple[str, str]:
    challenge = Challenge.parse(response.headers.getlist("WWW-Authenticate")[0])
    credentials = build_authorization(
        challenge, username=user, method="REGISTER", uri=uri, cnonce="0a4f113b", nc=nc, password=password
    )
    return ("Authorization", credentials.header_value())


async def test_challenge_then_authorized(store: RecordingLocationStore) -> None:
    registrar = auth_registrar(store)
    first = await registrar.handle_register(register(), source=UDP_FLOW, now=T0)
    assert first.response.code == 401
    challenges = first.response.headers.getlist("WWW-Authenticate")
    assert len(challenges) == 2 and "SHA-256" in challenges[0] and "MD5" in challenges[1]
    assert store.saves == []
    second = await registrar.handle_register(
        register(cseq=2, extra=[authorization(first.response)]), source=UDP_FLOW, now=T0 + 0.1
    )
    assert second.response.code == 200 and second.authenticated_user == "alice"
    assert len(await store.lookup("sip:alice@example.com", T0 + 1)) == 1


async def test_md5_only_phone_is_authorized_too(store: RecordingLocationStore) -> None:
    registrar = auth_registrar(store)
    first = await registrar.handle_register(register(), source=UDP_FLOW, now=T0)
    md5 = Challenge.parse(first.response.headers.getlist("WWW-Authenticate")[1])
    assert md5.algorithm is DigestAlgorithm.MD5
    credentials = build_authorization(
        md5, username="alice", method="REGISTER", uri="sip:example.com", cnonce="x", password="wonderland"
    )
    second = await registrar.handle_register(
        register(cseq=2, extra=[("Authorization", credentials.header_value())]), source=UDP_FLOW, now=T0
    )
    assert second.response.code == 200


async def test_wrong_password_is_challenged_again_without_stale(store: RecordingLocationStore) -> None:
    registrar = auth_registrar(store)
    first = await registrar.handle_register(register(), source=UDP_FLOW, now=T0)
    again = await registrar.handle_register(
        register(cseq=2, extra=[authorization(first.response, password="guess")]), source=UDP_FLOW, now=T0
    )
    assert again.response.code == 401
    assert all("stale" not in value for value in again.response.headers.getlist("WWW-Authenticate"))
    unknown = await registrar.handle_register(
        register(cseq=3, to="sip:mallory@example.com", extra=[authorization(first.response, user="mallory")]),
        source=UDP_FLOW,
        now=T0,
    )
    assert unknown.response.code == 401
    assert store.saves == []


async def test_stale_nonce_gets_stale_true_and_the_fresh_nonce_works(store: RecordingLocationStore) -> None:
    registrar = auth_registrar(store)
    first = await registrar.handle_register(register(), source=UDP_FLOW, now=T0)
    late = T0 + 301
    stale = await registrar.handle_register(
        register(cseq=2, extra=[authorization(first.response)]), source=UDP_FLOW, now=late
    )
    assert stale.response.code == 401
    assert all("stale=true" in value for value in stale.response.headers.getlist("WWW-Authenticate"))
    fresh = await registrar.handle_register(
        register(cseq=3, extra=[authorization(stale.response)]), source=UDP_FLOW, now=late
    )
    assert fresh.response.code == 200


async def test_replayed_nonce_count_is_rechallenged(store: RecordingLocationStore) -> None:
    registrar = auth_registrar(store)
    first = await registrar.handle_register(register(), source=UDP_FLOW, now=T0)
    header = authorization(first.response, nc=1)
    ok = await registrar.handle_register(register(cseq=2, extra=[header]), source=UDP_FLOW, now=T0 + 1)
    assert ok.response.code == 200
    # An eavesdropper replays the same Authorization on a new REGISTER (new CSeq, same nc).
    replay = await registrar.handle_register(
        register(cseq=3, contacts=["<sip:alice@203.0.113.66>"], extra=[header]), source=UDP_FLOW, now=T0 + 2
    )
    assert replay.response.code == 401
    assert "stale=true" in replay.response.headers.getlist("WWW-Authenticate")[0]
    assert [b.contact_uri for b in await store.lookup("sip:alice@example.com", T0 + 2)] == [
        "sip:alice@192.0.2.10:5060"
    ]
    # The phone itself continues with nc=2 on the same nonce.
    next_nc = await registrar.handle_register(
        register(cseq=4, extra=[authorization(first.response, nc=2)]), source=UDP_FLOW, now=T0 + 3
    )
    assert next_nc.response.code == 200


async def test_authenticated_user_registering_someone_elses_aor_is_403(store: RecordingLocationStore) -> None:
    registrar = auth_registrar(store)
    first = await registrar.handle_register(register(to="sip:bob@example.com"), source=UDP_FLOW, now=T0)
    result = await registrar.handle_register(
        register(cseq=2, to="sip:bob@example.com", extra=[authorization(first.response)]),
        source=UDP_FLOW,
        now=T0,
    )
    assert result.response.code == 403
    assert store.saves == []


async def test_digest_uri_not_matching_request_uri_is_400(store: RecordingLocationStore) -> None:
    registrar = auth_registrar(store)
    first = await registrar.handle_register(register(), source=UDP_FLOW, now=T0)
    result = await registrar.handle_register(
        register(cseq=2, extra=[authorization(first.response, uri="sip:other.example.com")]),
        source=UDP_FLOW,
        now=T0,
    )
    assert result.response.code == 400


async def test_garbage_authorization_is_400(store: RecordingLocationStore) -> None:
    registrar = auth_registrar(store)
    result = await registrar.handle_register(
        register(extra=[("Authorization", 'Digest username="alice", realm="example.com"')]),
        source=UDP_FLOW,
        now=T0,
    )
    assert result.response.code == 400


async def test_password_guessing_is_cut_off(store: RecordingLocationStore) -> None:
    flood = FloodGuard(FloodConfig(max_auth_failures_per_user=3, auth_ban_time=600.0))
    registrar = auth_registrar(store, flood)
    challenge = await registrar.handle_register(register(), source=UDP_FLOW, now=T0)
    codes = []
    for attempt in range(5):
        result = await registrar.handle_register(
            register(
                cseq=2 + attempt,
                extra=[authorization(challenge.response, password=f"guess{attempt}", nc=attempt + 1)],
            ),
            source=UDP_FLOW,
            now=T0 + attempt,
        )
        codes.append(result.response.code)
    assert codes == [401, 401, 401, 401, 403]
    # Even the right password is refused while the user is blocked.
    right = await registrar.handle_register(
        register(cseq=10, extra=[authorization(challenge.response, nc=10)]), source=UDP_FLOW, now=T0 + 10
    )
    assert right.response.code == 403
    assert flood.stats.auth_failures == 4


# ---- hostile input ------------------------------------------------------------------------------

_HEADER_TEXT = st.lists(
    st.sampled_from([*'<>;=,"*: @.\\abcsip0123456789+-', "expires", "q", "reg-id", "Digest ", "sip:"]),
    max_size=40,
).map("".join)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contact=_HEADER_TEXT, expires=_HEADER_TEXT, auth=_HEADER_TEXT)
async def test_hostile_headers_always_get_a_response(contact: str, expires: str, auth: str) -> None:
    registrar = auth_registrar(RecordingLocationStore())
    extra = [("Authorization", auth)] if auth.strip() else []
    try:
        request = register(
            contacts=[contact] if contact.strip() else [], expires=expires or None, extra=extra
        )
    except ValueError:
        return  # the message layer refused it before the registrar saw it
    result = await registrar.handle_register(request, source=UDP_FLOW, now=T0)
    assert result.response.code in {200, 400, 401, 403, 404, 420, 423, 500}


async def test_non_register_is_a_caller_bug(store: RecordingLocationStore) -> None:
    options = parse_message(
        b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    assert isinstance(options, Request)
    with pytest.raises(LocalProtocolError):
        await open_registrar(store).handle_register(options, source=UDP_FLOW, now=T0)


# ---- the synchronous answers (no task, no store) and overload ---------------------------------------


async def test_unauthenticated_register_is_answered_synchronously_as_handle_register_would(
    store: RecordingLocationStore,
) -> None:
    early_registrar, full_registrar = auth_registrar(store), auth_registrar(store)
    for request in (
        register(),
        register(request_uri="sip:elsewhere.test"),
        register(to="sip:bob@other.test"),
    ):
        early = early_registrar.answer_unauthenticated(request, source=UDP_FLOW, now=T0)
        full = await full_registrar.handle_register(request, source=UDP_FLOW, now=T0)
        assert early is not None
        assert (early.response.code, early.reason) == (full.response.code, full.reason)
        assert early.response.headers.getlist("WWW-Authenticate") == full.response.headers.getlist(
            "WWW-Authenticate"
        )
    assert early.response.code == 404  # the last one: To in a domain not served here
    assert store.saves == []
    # With credentials (or without auth) the caller must go through handle_register.
    challenge = early_registrar.answer_unauthenticated(register(), source=UDP_FLOW, now=T0)
    assert challenge is not None and challenge.response.code == 401
    authorized = register(cseq=2, extra=[authorization(challenge.response)])
    assert early_registrar.answer_unauthenticated(authorized, source=UDP_FLOW, now=T0) is None
    assert open_registrar(store).answer_unauthenticated(register(), source=UDP_FLOW, now=T0) is None


async def test_a_full_backlog_is_refused_with_503_and_retry_after(store: RecordingLocationStore) -> None:
    registrar = open_registrar(store, max_pending=1)
    assert registrar.pending == 0 and not registrar.overloaded
    gate = asyncio.Event()
    original_save = store.save

    async def slow_save(*args: Any) -> None:
        await gate.wait()
        await original_save(*args)

    store.save = slow_save  # type: ignore[method-assign]
    first = asyncio.ensure_future(registrar.handle_register(register(), source=UDP_FLOW, now=T0))
    await asyncio.sleep(0)
    assert registrar.pending == 1 and registrar.overloaded
    refused = registrar.overload_answer(register(call_id="another"))
    assert refused.response.code == 503 and refused.response.headers.get("Retry-After") == "5"
    assert registrar.overload_rejections == 1
    gate.set()
    assert (await first).response.code == 200
    assert registrar.pending == 0 and not registrar.overloaded
