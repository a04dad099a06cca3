"""The registrar's key scenarios against both LocationStores: the in-memory fake and real Redis (db 15).

The registrar passes ``now`` to ``lookup``/``save`` and the Redis scripts judge expiry by that ``now``,
so expiry is exercised by moving ``now`` forward, without sleeping. Redis keys live under the unique
prefix of ``hot_backend`` and are deleted after each test.
"""

from __future__ import annotations

import pytest

from signaling.registrar import Registrar, RegistrarConfig
from signaling.sip.digest import DigestAuthenticator
from storage.memory.hot import MemoryLocationStore
from storage.ports import LocationStore, TransportAddress
from storage.redis.location import RedisLocationStore
from tests.contract.conftest import HotBackend
from tests.unit.test_registrar import REALM, authorization, contact_lines, counter_bytes, lookup, register

AOR = "sip:alice@example.com"
NODE_ID = "edge-contract-1"
UDP = TransportAddress("udp", "192.0.2.10", 5060)


def make_store(backend: HotBackend, max_bindings: int = 32) -> LocationStore:
    if backend.kind == "memory":
        return MemoryLocationStore(backend.clock, max_bindings_per_aor=max_bindings)
    return RedisLocationStore(
        backend.require_redis(), prefix=backend.prefix, clock=backend.clock, max_bindings_per_aor=max_bindings
    )


@pytest.fixture
def store(hot_backend: HotBackend) -> LocationStore:
    return make_store(hot_backend)


@pytest.fixture
def t0(hot_backend: HotBackend) -> float:
    # Real time for Redis too, so the keys' whole-key TTLs stay in the near future.
    return hot_backend.clock()


def open_registrar(store: LocationStore, **config: object) -> Registrar:
    return Registrar(
        store,
        RegistrarConfig(realm=REALM, require_auth=False, **config),  # type: ignore[arg-type]
        node_id=NODE_ID,
    )


async def test_multiple_contacts_are_stored_and_listed(store: LocationStore, t0: float) -> None:
    registrar = open_registrar(store)
    request = register(
        contacts=["<sip:alice@192.0.2.10:5060>;expires=120", "<sip:alice@198.51.100.4:5070>;q=0.5"],
        expires=600,
    )
    result = await registrar.handle_register(request, source=UDP, now=t0)
    assert result.response.code == 200
    assert contact_lines(result.response) == [
        "<sip:alice@192.0.2.10:5060>;expires=120",
        "<sip:alice@198.51.100.4:5070>;expires=600;q=0.5",
    ]
    stored = await store.lookup(AOR, t0)
    assert [b.contact_uri for b in stored] == ["sip:alice@192.0.2.10:5060", "sip:alice@198.51.100.4:5070"]
    assert all(b.received == UDP and b.node_id == NODE_ID and b.updated_at == t0 for b in stored)
    assert stored == list(result.bindings)
    # A query (no Contact) reads them back from the store.
    query = await registrar.handle_register(register(contacts=[], cseq=2), source=UDP, now=t0 + 20)
    assert contact_lines(query.response) == [
        "<sip:alice@192.0.2.10:5060>;expires=100",
        "<sip:alice@198.51.100.4:5070>;expires=580;q=0.5",
    ]


async def test_refresh_replaces_the_binding_and_keeps_the_others(store: LocationStore, t0: float) -> None:
    registrar = open_registrar(store)
    await registrar.handle_register(
        register(contacts=["<sip:alice@phone.example.net:5060>"], expires=3600), source=UDP, now=t0
    )
    other = register(contacts=["<sip:alice@203.0.113.9>"], expires=300, call_id="other-device")
    await registrar.handle_register(other, source=UDP, now=t0 + 100)
    # The same contact with its host in another case is the same binding (RFC 3261 §19.1.4).
    refresh = register(contacts=["<sip:alice@Phone.Example.NET:5060>"], expires=1800, cseq=2)
    result = await registrar.handle_register(refresh, source=UDP, now=t0 + 200)
    assert result.response.code == 200
    assert sorted(contact_lines(result.response)) == [
        "<sip:alice@203.0.113.9>;expires=200",
        "<sip:alice@Phone.Example.NET:5060>;expires=1800",
    ]
    stored = {b.call_id: b for b in await store.lookup(AOR, t0 + 200)}
    assert len(stored) == 2  # replaced, not added
    refreshed = stored["call-1@192.0.2.10"]
    assert (
        refreshed.cseq == 2 and refreshed.expires_at == t0 + 200 + 1800 and refreshed.updated_at == t0 + 200
    )
    # The old CSeq of the same Call-ID is refused and changes nothing.
    stale = await registrar.handle_register(
        register(contacts=["<sip:alice@phone.example.net:5060>"], expires=0, cseq=2), source=UDP, now=t0 + 201
    )
    assert stale.response.code == 500
    assert len(await store.lookup(AOR, t0 + 201)) == 2


async def test_unregister_one_then_all_with_star(store: LocationStore, t0: float) -> None:
    registrar = open_registrar(store)
    contacts = ["<sip:alice@192.0.2.10:5060>", "<sip:alice@198.51.100.4:5070>", "<sip:alice@203.0.113.9>"]
    await registrar.handle_register(register(contacts=contacts, expires=600), source=UDP, now=t0)
    one = await registrar.handle_register(
        register(contacts=["<sip:alice@198.51.100.4:5070>;expires=0"], cseq=2), source=UDP, now=t0 + 10
    )
    assert contact_lines(one.response) == [
        "<sip:alice@192.0.2.10:5060>;expires=590",
        "<sip:alice@203.0.113.9>;expires=590",
    ]
    assert sorted(b.contact_uri for b in await store.lookup(AOR, t0 + 10)) == [
        "sip:alice@192.0.2.10:5060",
        "sip:alice@203.0.113.9",
    ]
    everything = await registrar.handle_register(
        register(contacts=["*"], expires=0, cseq=3), source=UDP, now=t0 + 11
    )
    assert everything.response.code == 200 and contact_lines(everything.response) == []
    assert await store.lookup(AOR, t0 + 11) == []
    assert await store.list_aors() == []


async def test_bindings_expire_at_their_deadline(store: LocationStore, t0: float) -> None:
    registrar = open_registrar(store)
    await registrar.handle_register(
        register(contacts=["<sip:alice@192.0.2.10>;expires=120", "<sip:alice@192.0.2.11>;expires=600"]),
        source=UDP,
        now=t0,
    )
    before = await registrar.handle_register(register(contacts=[], cseq=2), source=UDP, now=t0 + 119)
    assert contact_lines(before.response) == [
        "<sip:alice@192.0.2.10>;expires=1",
        "<sip:alice@192.0.2.11>;expires=481",
    ]
    after = await registrar.handle_register(register(contacts=[], cseq=3), source=UDP, now=t0 + 121)
    assert contact_lines(after.response) == ["<sip:alice@192.0.2.11>;expires=479"]
    gone = await registrar.handle_register(register(contacts=[], cseq=4), source=UDP, now=t0 + 601)
    assert gone.response.code == 200 and contact_lines(gone.response) == []
    assert await store.lookup(AOR, t0 + 601) == []


async def test_digest_challenge_then_authorized(store: LocationStore, t0: float) -> None:
    authenticator = DigestAuthenticator(
        REALM,
        b"registrar-test-secret-0123456789",
        nonce_lifetime=300.0,
        random_bytes=counter_bytes(),  # type: ignore[arg-type]
    )
    registrar = Registrar(
        store,
        RegistrarConfig(realm=REALM, domains=frozenset({REALM})),
        authenticator=authenticator,
        credentials=lookup,
        node_id=NODE_ID,
    )
    challenged = await registrar.handle_register(register(), source=UDP, now=t0)
    assert challenged.response.code == 401
    assert await store.lookup(AOR, t0) == []
    authorized = await registrar.handle_register(
        register(cseq=2, extra=[authorization(challenged.response)]), source=UDP, now=t0 + 0.5
    )
    assert authorized.response.code == 200 and authorized.authenticated_user == "alice"
    (binding,) = await store.lookup(AOR, t0 + 1)
    assert binding.contact_uri == "sip:alice@192.0.2.10:5060" and binding.cseq == 2


async def test_websocket_flow_is_kept_and_replaced_by_instance_and_reg_id(
    store: LocationStore, t0: float
) -> None:
    registrar = open_registrar(store)
    instance = '+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'
    first_flow = TransportAddress("wss", "203.0.113.50", 53211, connection_id="ws-17")
    first = register(
        contacts=[f"<sip:k9q2x@df7jal23ls0d.invalid;transport=ws>;expires=600;+sip.ice;reg-id=1;{instance}"],
        extra=[("Supported", "path, outbound"), ("User-Agent", "SIP.js/0.21"), ("Path", "<sip:lb.test;lr>")],
    )
    result = await registrar.handle_register(first, source=first_flow, now=t0)
    assert result.response.code == 200 and result.response.headers.get("Require") == "outbound"
    (binding,) = await store.lookup(AOR, t0)
    assert binding.received == first_flow and binding.path == ("<sip:lb.test;lr>",)
    assert binding.instance_id == "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>" and binding.reg_id == 1
    assert binding.user_agent == "SIP.js/0.21" and binding.node_id == NODE_ID
    # The browser reconnects over a new WebSocket with a new contact: same instance + reg-id replaces it.
    second_flow = TransportAddress("wss", "203.0.113.50", 53999, connection_id="ws-42")
    second = register(
        contacts=[f"<sip:zz81@a8s7d6.invalid;transport=ws>;expires=600;reg-id=1;{instance}"], cseq=2
    )
    await registrar.handle_register(second, source=second_flow, now=t0 + 5)
    (binding,) = await store.lookup(AOR, t0 + 5)
    assert binding.contact_uri == "sip:zz81@a8s7d6.invalid;transport=ws" and binding.received == second_flow


async def test_store_binding_limit_is_403(hot_backend: HotBackend, t0: float) -> None:
    store = make_store(hot_backend, max_bindings=2)
    registrar = open_registrar(store, max_contacts_per_aor=10)
    contacts = [f"<sip:alice@192.0.2.{i}>" for i in range(1, 4)]
    result = await registrar.handle_register(register(contacts=contacts), source=UDP, now=t0)
    assert result.response.code == 403 and "location store refused" in result.reason
    assert await store.lookup(AOR, t0) == []
