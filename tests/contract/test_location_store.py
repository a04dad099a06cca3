"""LocationStore contract: the in-memory fake and the Redis adapter behave the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from storage.memory.hot import MemoryLocationStore
from storage.ports import (
    Binding,
    BindingLimitExceeded,
    ContactLimitExceeded,
    LocationStore,
    OutOfOrderRegister,
    TransportAddress,
)
from storage.redis.keys import KeySpace
from storage.redis.location import RedisLocationStore
from tests.contract.conftest import HotBackend

AOR = "sip:alice@example.com"
MAX_BINDINGS = 4


def make_store(backend: HotBackend, max_bindings: int = MAX_BINDINGS) -> LocationStore:
    if backend.kind == "memory":
        return MemoryLocationStore(backend.clock, max_bindings_per_aor=max_bindings)
    return RedisLocationStore(
        backend.require_redis(), prefix=backend.prefix, clock=backend.clock, max_bindings_per_aor=max_bindings
    )


@pytest.fixture
def store(hot_backend: HotBackend) -> LocationStore:
    return make_store(hot_backend)


def binding_factory(clock: Callable[[], float]) -> Callable[..., Binding]:
    def make(
        contact: str = "sip:alice@192.0.2.10:5060", expires_in: float = 3600.0, **fields: object
    ) -> Binding:
        now = clock()
        values: dict[str, object] = {
            "aor": AOR,
            "contact_uri": contact,
            "expires_at": now + expires_in,
            "call_id": "reg-1@192.0.2.10",
            "cseq": 1,
            "node_id": "edge-a",
            "updated_at": now,
        }
        values.update(fields)
        return Binding(**values)  # type: ignore[arg-type]

    return make


async def test_round_trips_every_field(store: LocationStore, hot_backend: HotBackend) -> None:
    binding = binding_factory(hot_backend.clock)(
        contact="sip:alice@198.51.100.7:55060;transport=tcp;ob",
        q=0.7,
        cseq=42,
        instance_id="<urn:uuid:00000000-0000-1000-8000-000a95a0e128>",
        reg_id=1,
        path=("<sip:edge-a.example.net;lr;ob>", "<sip:lb.example.net;lr>"),
        received=TransportAddress("tcp", "198.51.100.7", 55060, connection_id="conn-17"),
        user_agent="baresip 3.10",
    )
    await store.upsert(AOR, [binding])

    assert await store.list_bindings(AOR) == [binding]
    assert await store.count(AOR) == 1
    assert await store.list_aors() == [AOR]


async def test_rebinding_the_same_contact_replaces_it(store: LocationStore, hot_backend: HotBackend) -> None:
    make = binding_factory(hot_backend.clock)
    await store.upsert(AOR, [make(cseq=1, expires_in=600)])
    refreshed = make(cseq=2, expires_in=3600)
    await store.upsert(AOR, [refreshed])

    assert await store.list_bindings(AOR) == [refreshed]


async def test_outbound_flows_are_keyed_by_instance_and_reg_id(
    store: LocationStore, hot_backend: HotBackend
) -> None:
    make = binding_factory(hot_backend.clock)
    instance = "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"
    flow1 = make(contact="sip:a@192.0.2.1:5060;ob", instance_id=instance, reg_id=1)
    flow2 = make(contact="sip:a@192.0.2.1:5061;ob", instance_id=instance, reg_id=2)
    await store.upsert(AOR, [flow1, flow2])
    # The UA re-registers flow 1 from a new address (NAT rebinding): it replaces flow 1 only.
    flow1_moved = make(contact="sip:a@203.0.113.9:40000;ob", instance_id=instance, reg_id=1, cseq=2)
    await store.upsert(AOR, [flow1_moved])

    assert {b.contact_uri for b in await store.list_bindings(AOR)} == {
        "sip:a@203.0.113.9:40000;ob",
        "sip:a@192.0.2.1:5061;ob",
    }
    assert flow1.binding_id == flow1_moved.binding_id != flow2.binding_id


async def test_expired_bindings_vanish(store: LocationStore, hot_backend: HotBackend) -> None:
    make = binding_factory(hot_backend.clock)
    short = make(contact="sip:alice@192.0.2.10:5060", expires_in=0.4)
    long = make(contact="sip:alice@192.0.2.11:5060", expires_in=60)
    await store.upsert(AOR, [short, long])
    assert await store.count(AOR) == 2

    await hot_backend.advance(0.8)

    assert await store.list_bindings(AOR) == [long]
    assert await store.count(AOR) == 1
    assert await store.list_aors() == [AOR]
    assert await store.remove(AOR, short.binding_id) is False


async def test_an_aor_whose_bindings_all_expired_is_not_listed(
    store: LocationStore, hot_backend: HotBackend
) -> None:
    make = binding_factory(hot_backend.clock)
    await store.upsert(AOR, [make(expires_in=0.4)])
    await store.upsert("sip:bob@example.com", [make(expires_in=60, aor="sip:bob@example.com")])

    await hot_backend.advance(0.8)

    assert await store.list_aors() == ["sip:bob@example.com"]
    assert await store.list_bindings(AOR) == []
    assert await store.count(AOR) == 0


async def test_an_already_expired_binding_removes_its_twin(
    store: LocationStore, hot_backend: HotBackend
) -> None:
    """REGISTER with Expires: 0 for one contact."""
    make = binding_factory(hot_backend.clock)
    keep = make(contact="sip:alice@192.0.2.11:5060")
    await store.upsert(AOR, [make(), keep])

    await store.upsert(AOR, [make(expires_in=0)])

    assert await store.list_bindings(AOR) == [keep]


async def test_remove_and_remove_all(store: LocationStore, hot_backend: HotBackend) -> None:
    make = binding_factory(hot_backend.clock)
    first, second, third = (make(contact=f"sip:alice@192.0.2.{i}:5060") for i in (1, 2, 3))
    await store.upsert(AOR, [first, second, third])

    assert await store.remove(AOR, second.binding_id) is True
    assert await store.remove(AOR, second.binding_id) is False
    assert await store.count(AOR) == 2
    assert await store.remove_all(AOR) == 2
    assert await store.remove_all(AOR) == 0
    assert await store.list_bindings(AOR) == []
    assert await store.list_aors() == []


async def test_list_orders_by_q_then_most_recent(store: LocationStore, hot_backend: HotBackend) -> None:
    make = binding_factory(hot_backend.clock)
    now = hot_backend.clock()
    low = make(contact="sip:alice@192.0.2.1", q=0.1, updated_at=now)
    high_old = make(contact="sip:alice@192.0.2.2", q=0.9, updated_at=now - 10)
    high_new = make(contact="sip:alice@192.0.2.3", q=0.9, updated_at=now)
    await store.upsert(AOR, [low, high_old, high_new])

    assert await store.list_bindings(AOR) == [high_new, high_old, low]


async def test_binding_limit_is_all_or_nothing(store: LocationStore, hot_backend: HotBackend) -> None:
    make = binding_factory(hot_backend.clock)
    existing = [make(contact=f"sip:alice@192.0.2.{i}") for i in range(MAX_BINDINGS - 1)]
    await store.upsert(AOR, existing)

    with pytest.raises(BindingLimitExceeded):
        await store.upsert(
            AOR, [make(contact="sip:alice@203.0.113.1"), make(contact="sip:alice@203.0.113.2")]
        )
    assert await store.count(AOR) == MAX_BINDINGS - 1
    # Replacing one and removing one in the same batch stays within the limit.
    await store.upsert(
        AOR, [make(contact="sip:alice@192.0.2.0", cseq=9), make(contact="sip:alice@192.0.2.1", expires_in=0)]
    )
    assert await store.count(AOR) == MAX_BINDINGS - 2


async def test_concurrent_registrations_respect_the_limit(hot_backend: HotBackend) -> None:
    # Three nodes sharing one store (for the fake, the same object).
    shared = make_store(hot_backend)
    stores = [shared] * 3 if hot_backend.kind == "memory" else [make_store(hot_backend) for _ in range(3)]
    make = binding_factory(hot_backend.clock)

    async def register(i: int) -> bool:
        try:
            await stores[i % 3].upsert(AOR, [make(contact=f"sip:alice@192.0.2.{i}")])
        except BindingLimitExceeded:
            return False
        return True

    outcomes = await asyncio.gather(*(register(i) for i in range(20)))

    assert outcomes.count(True) == MAX_BINDINGS
    assert await stores[0].count(AOR) == MAX_BINDINGS


async def test_list_aors_is_sorted_and_limited(store: LocationStore, hot_backend: HotBackend) -> None:
    make = binding_factory(hot_backend.clock)
    for user in ("carol", "alice", "bob"):
        aor = f"sip:{user}@example.com"
        await store.upsert(aor, [make(aor=aor)])

    assert await store.list_aors() == [
        "sip:alice@example.com",
        "sip:bob@example.com",
        "sip:carol@example.com",
    ]
    assert await store.list_aors(limit=2) == ["sip:alice@example.com", "sip:bob@example.com"]


async def test_bad_input_is_refused(store: LocationStore, hot_backend: HotBackend) -> None:
    make = binding_factory(hot_backend.clock)
    with pytest.raises(ValueError, match="aor"):
        await store.list_bindings("")
    with pytest.raises(ValueError, match="given to upsert"):
        await store.upsert("sip:bob@example.com", [make()])
    with pytest.raises(ValueError, match="characters long"):
        await store.count("sip:" + "x" * 2000)
    with pytest.raises(ValueError, match="q must be"):
        make(q=1.5)
    with pytest.raises(ValueError, match="reg-id"):
        make(reg_id=1)
    with pytest.raises(ValueError, match="port"):
        TransportAddress("udp", "192.0.2.1", 70000)
    assert await store.list_aors() == []


async def test_redis_keys_carry_a_ttl_and_vanish(hot_backend: HotBackend) -> None:
    """Memory stays bounded: an AOR nobody touches again still disappears from Redis."""
    if hot_backend.kind != "redis":
        pytest.skip("Redis key layout only")
    redis = hot_backend.require_redis()
    store = make_store(hot_backend)
    keys = KeySpace(hot_backend.prefix)
    make = binding_factory(hot_backend.clock)
    await store.upsert(AOR, [make(expires_in=120)])

    for key in (keys.location_bindings(AOR), keys.location_expiries(AOR)):
        assert 120 <= await redis.ttl(key) <= 120 + 61
    assert await redis.zscore(keys.location_index(), AOR) is not None

    await store.remove_all(AOR)
    assert await redis.exists(keys.location_bindings(AOR), keys.location_expiries(AOR)) == 0
    assert await redis.zscore(keys.location_index(), AOR) is None


# ---- the registrar's view: caller-supplied now, one save per REGISTER ----


async def test_save_applies_removals_and_upserts_in_one_step(
    store: LocationStore, hot_backend: HotBackend
) -> None:
    make = binding_factory(hot_backend.clock)
    old = make(contact="sip:alice@192.0.2.1", binding_key="uri:sip:alice@192.0.2.1:;")
    kept = make(contact="sip:alice@192.0.2.2", binding_key="uri:sip:alice@192.0.2.2:;")
    now = hot_backend.clock()
    await store.save(AOR, [old, kept], [], now)
    # The same contact written differently (case) but keyed alike by the registrar replaces it.
    respelled = make(contact="sip:alice@192.0.2.1;TRANSPORT=udp", binding_key=old.binding_id, cseq=2)
    new = make(contact="sip:alice@192.0.2.3", binding_key="uri:sip:alice@192.0.2.3:;")

    await store.save(AOR, [respelled, new], [kept.binding_id, "uri:never-registered"], now)

    by_id = {b.binding_id: b for b in await store.lookup(AOR, now)}
    assert by_id == {respelled.binding_id: respelled, new.binding_id: new}


async def test_lookup_uses_the_callers_now(store: LocationStore, hot_backend: HotBackend) -> None:
    make = binding_factory(hot_backend.clock)
    now = hot_backend.clock()
    soon = make(contact="sip:alice@192.0.2.1", expires_at=now + 100)
    later = make(contact="sip:alice@192.0.2.2", expires_at=now + 300)
    await store.save(AOR, [soon, later], [], now)

    assert len(await store.lookup(AOR, now + 99)) == 2
    assert await store.lookup(AOR, now + 100) == [later]
    assert await store.lookup(AOR, now + 300) == []


async def test_save_enforces_the_limit_and_q_may_be_absent(
    store: LocationStore, hot_backend: HotBackend
) -> None:
    make = binding_factory(hot_backend.clock)
    now = hot_backend.clock()
    too_many = [make(contact=f"sip:alice@192.0.2.{i}") for i in range(MAX_BINDINGS + 1)]
    with pytest.raises(BindingLimitExceeded):
        await store.save(AOR, too_many, [], now)
    assert await store.lookup(AOR, now) == []

    no_q = make(contact="sip:alice@192.0.2.1", q=None)
    low_q = make(contact="sip:alice@192.0.2.2", q=0.5)
    await store.save(AOR, [low_q, no_q], [], now)
    listed = await store.lookup(AOR, now)
    assert listed == [no_q, low_q] and listed[0].q is None


# ---- apply_register: the registrar's one-step write (both adapters, and Redis over its pipelined path) --


@pytest.fixture(params=["pool", "pipelined"])
async def register_store(
    request: pytest.FixtureRequest, hot_backend: HotBackend
) -> AsyncIterator[LocationStore]:
    if hot_backend.kind == "memory":
        if request.param == "pipelined":
            pytest.skip("the pipelined connection is a Redis adapter feature")
        yield make_store(hot_backend)
        return
    store = RedisLocationStore(
        hot_backend.require_redis(),
        prefix=hot_backend.prefix,
        clock=hot_backend.clock,
        max_bindings_per_aor=MAX_BINDINGS,
        pipelined=request.param == "pipelined",
    )
    try:
        yield store
    finally:
        await store.aclose()


async def test_apply_register_writes_and_returns_every_live_binding(
    register_store: LocationStore, hot_backend: HotBackend
) -> None:
    make = binding_factory(hot_backend.clock)
    now = hot_backend.clock()
    other = make(contact="sip:alice@198.51.100.4:5070", call_id="other", q=0.5)
    await register_store.save(AOR, [other], [], now)
    mine = make(cseq=2)
    result = await register_store.apply_register(
        AOR, [mine], [], now, call_id=mine.call_id, cseq=2, max_bindings=10
    )
    assert result == [mine, other]
    assert await register_store.lookup(AOR, now) == [mine, other]
    # Removing one returns what is left.
    left = await register_store.apply_register(
        AOR, [], [mine.binding_id], now, call_id=mine.call_id, cseq=3, max_bindings=10
    )
    assert left == [other] == await register_store.lookup(AOR, now)


async def test_apply_register_refuses_an_old_cseq_and_writes_nothing(
    register_store: LocationStore, hot_backend: HotBackend
) -> None:
    make = binding_factory(hot_backend.clock)
    now = hot_backend.clock()
    first = make(cseq=5)
    await register_store.apply_register(AOR, [first], [], now, call_id=first.call_id, cseq=5, max_bindings=10)
    replay = make(cseq=5, expires_in=60)
    with pytest.raises(OutOfOrderRegister):
        await register_store.apply_register(
            AOR, [replay], [], now, call_id=first.call_id, cseq=5, max_bindings=10
        )
    with pytest.raises(OutOfOrderRegister):
        await register_store.apply_register(
            AOR, [], [], now, call_id=first.call_id, cseq=4, max_bindings=10, remove_all=True
        )
    assert await register_store.lookup(AOR, now) == [first]
    # Another Call-ID (a rebooted phone) may use any CSeq; remove_all drops everything.
    assert (
        await register_store.apply_register(
            AOR, [], [], now, call_id="rebooted", cseq=1, max_bindings=10, remove_all=True
        )
        == []
    )
    assert await register_store.lookup(AOR, now) == []
    assert await register_store.list_aors() == []


async def test_apply_register_checks_the_callers_limit_then_the_stores(
    register_store: LocationStore, hot_backend: HotBackend
) -> None:
    make = binding_factory(hot_backend.clock)
    now = hot_backend.clock()
    three = [make(contact=f"sip:alice@192.0.2.{i}") for i in range(1, 4)]
    with pytest.raises(ContactLimitExceeded):
        await register_store.apply_register(AOR, three, [], now, call_id="c", cseq=1, max_bindings=2)
    five = [make(contact=f"sip:alice@192.0.2.{i}") for i in range(1, MAX_BINDINGS + 2)]
    with pytest.raises(BindingLimitExceeded) as refused:
        await register_store.apply_register(AOR, five, [], now, call_id="c", cseq=1, max_bindings=10)
    assert not isinstance(refused.value, ContactLimitExceeded)
    assert await register_store.lookup(AOR, now) == []


async def test_pipelined_store_reconnects_after_the_connection_drops(hot_backend: HotBackend) -> None:
    if hot_backend.kind != "redis":
        pytest.skip("Redis adapter only")
    store = RedisLocationStore(
        hot_backend.require_redis(), prefix=hot_backend.prefix, clock=hot_backend.clock, pipelined=True
    )
    make = binding_factory(hot_backend.clock)
    try:
        now = hot_backend.clock()
        binding = make()
        results = await asyncio.gather(
            *(store.lookup(AOR, now) for _ in range(20)),
            store.apply_register(AOR, [binding], [], now, call_id="c", cseq=1, max_bindings=10),
        )
        assert results[-1] == [binding]
        # Redis drops the connection (a restart, a network blip): the next command connects again.
        # Only our own connection: other clients of this Redis must not notice the test.
        pipe = store._pipe
        assert pipe is not None and pipe._protocol is not None and pipe._protocol.transport is not None
        host, port = pipe._protocol.transport.get_extra_info("sockname")[:2]
        await hot_backend.require_redis().execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
        await asyncio.sleep(0.05)
        assert await store.lookup(AOR, now) == [binding]
    finally:
        await store.aclose()
    with pytest.raises(ConnectionError):
        await store.lookup(AOR, hot_backend.clock())
