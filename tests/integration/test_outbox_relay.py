"""The outbox relay against real PostgreSQL and Kafka (Tansu): order per key, several relays, outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
import structlog.testing
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from storage.events import EventTopics, EventType, validate_event
from storage.kafka.metrics import RelayMetrics
from storage.kafka.publisher import (
    KafkaPublisher,
    NotAttempted,
    OutboundMessage,
    ProducerSettings,
    PublisherUnavailable,
)
from storage.kafka.relay import ClaimedRow, OutboxRelay, RelayConfig, run_outbox_relays
from tests.integration.test_outbox_helpers import (
    KAFKA,
    closed_port,
    consume,
    event_for,
    insert_events,
    interleaved_call_events,
    new_key,
    outbox_count,
    require_services,
    sequences_by_key,
    temp_database,
    temp_topics,
    unsent_count,
    unsent_is,
    wait_until,
    without_redeliveries,
)

pytestmark = pytest.mark.integration

CALL_K, CALL_OTHER, CALL_L, CALL_N, CALL_BIG, CALL_FINE = (new_key() for _ in range(6))


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the relay handles it."""


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    require_services()
    async with temp_database() as database:
        yield database


@pytest.fixture
async def topics() -> AsyncIterator[EventTopics]:
    require_services()
    async with temp_topics() as names:
        yield names


def make_relay(
    dsn: str,
    relay_id: str,
    *,
    bootstrap: str = KAFKA,
    registry: CollectorRegistry | None = None,
    max_request_size: int = 1024 * 1024,
    **config: float,
) -> OutboxRelay:
    settings = {"poll_interval_seconds": 0.2, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.5}
    settings.update(config)
    return OutboxRelay(
        RelayConfig(domain="test", dsn=dsn, relay_id=relay_id, **settings),  # type: ignore[arg-type]
        KafkaPublisher(
            ProducerSettings(
                bootstrap_servers=bootstrap, request_timeout_ms=5000, max_request_size=max_request_size
            )
        ),
        metrics=RelayMetrics(registry or CollectorRegistry()),
    )


@contextlib.asynccontextmanager
async def running(*relays: OutboxRelay) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, SimulatedCrash):
                await task
        for relay in relays:
            await relay.publisher.close()


def assert_in_order(sequences: dict[str, list[int]], keys: Sequence[str], per_key: int) -> None:
    assert set(sequences) == set(keys)
    for key in keys:
        assert without_redeliveries(sequences[key]) == list(range(per_key)), key


async def test_rows_reach_kafka_in_order_per_key_with_headers_and_metrics(
    dsn: str, topics: EventTopics
) -> None:
    keys = await interleaved_call_events(dsn, topics, keys=20, per_key=25)
    registry = CollectorRegistry()
    relay = make_relay(dsn, "relay-a", registry=registry, batch_size=64)
    async with running(relay):
        await wait_until(unsent_is(dsn, 0), within=30)
    received = await consume(topics.call, expected=500)

    assert len(received) == 500  # no failure, so no redelivery either
    sequences = sequences_by_key(received)
    assert_in_order(sequences, keys, 25)
    assert all(seq == list(range(25)) for seq in sequences.values())
    for message in received:
        validate_event(message.value)
        assert message.key == message.value["call_id"]
        assert message.headers["event_type"] == b"call.leg.state_changed"
        assert message.headers["event_id"].decode() == message.value["event_id"]
    partitions_per_key: dict[str, set[int]] = {m.key: set() for m in received}
    for m in received:
        partitions_per_key[m.key].add(m.partition)
    assert all(len(p) == 1 for p in partitions_per_key.values())

    assert registry.get_sample_value("uc_outbox_published_total", {"domain": "test"}) == 500
    assert await relay.refresh_metrics() == (0, 0.0)
    assert await outbox_count(dsn) == 0  # by default a row is deleted once Kafka acknowledged it


async def test_a_retention_keeps_acknowledged_rows_marked_sent(dsn: str, topics: EventTopics) -> None:
    await interleaved_call_events(dsn, topics, keys=4, per_key=5)
    relay = make_relay(dsn, "relay-history", sent_retention_seconds=3600)
    async with running(relay):
        await wait_until(unsent_is(dsn, 0), within=30)
    assert len(await consume(topics.call, expected=20)) == 20
    conn = await asyncpg.connect(dsn)
    try:
        kept = await conn.fetch("SELECT sent_at, claimed_by FROM outbox")
    finally:
        await conn.close()
    assert len(kept) == 20  # younger than the retention: still there, as history
    assert all(row["sent_at"] is not None and row["claimed_by"] is None for row in kept)


async def test_notify_wakes_an_idle_relay_long_before_its_poll_interval(
    dsn: str, topics: EventTopics
) -> None:
    relay = make_relay(dsn, "relay-a", poll_interval_seconds=60)
    async with running(relay):
        await asyncio.sleep(0.5)  # let it drain nothing and go idle on LISTEN
        await insert_events(dsn, [event_for(EventType.CALL_STARTED, CALL_N, 0)], topics)
        await wait_until(unsent_is(dsn, 0), within=5)


async def test_claims_skip_keys_whose_earlier_rows_another_relay_holds(dsn: str, topics: EventTopics) -> None:
    await insert_events(
        dsn,
        [
            event_for(EventType.CALL_STARTED, CALL_K, 0),
            event_for(EventType.CALL_STARTED, CALL_OTHER, 0),
            event_for(EventType.CALL_ANSWERED, CALL_K, 1),
            event_for(EventType.CALL_ANSWERED, CALL_OTHER, 1),
        ],
        topics,
    )
    holder = make_relay(dsn, "relay-a", batch_size=1)
    other = make_relay(dsn, "relay-b", batch_size=10)
    try:
        held = await holder.claim()
        assert [(r.partition_key, r.id) for r in held] == [(CALL_K, 1)]
        taken = await other.claim()
        # call-k's second row must wait for the first; call-other is free.
        assert [(r.partition_key, r.id) for r in taken] == [(CALL_OTHER, 2), (CALL_OTHER, 4)]
        assert await other.claim() == []
    finally:
        await holder.close()
        await other.close()


async def test_expired_lease_is_reclaimed(dsn: str, topics: EventTopics) -> None:
    await insert_events(dsn, [event_for(EventType.CALL_STARTED, CALL_L, 0)], topics)
    crashed = make_relay(dsn, "relay-crashed", lease_seconds=0.5)
    survivor = make_relay(dsn, "relay-b", lease_seconds=0.5)
    try:
        assert len(await crashed.claim()) == 1
        assert await survivor.claim() == []
        await asyncio.sleep(0.7)
        reclaimed = await survivor.claim()
        assert [r.partition_key for r in reclaimed] == [CALL_L]
    finally:
        await crashed.close()
        await survivor.close()


async def test_two_relays_at_once_keep_order_and_publish_no_duplicates(dsn: str, topics: EventTopics) -> None:
    relay_a = make_relay(dsn, "relay-a", batch_size=25)
    relay_b = make_relay(dsn, "relay-b", batch_size=25)
    keys: list[str] = []
    async with running(relay_a, relay_b):
        # Writes keep arriving while both relays work. They run in parallel only across keys, and a relay
        # whose batch holds a row of every key blocks the other entirely: 50 keys a round, so a batch of
        # 25 leaves keys for the other relay to take.
        for _ in range(8):
            keys += await interleaved_call_events(dsn, topics, keys=50, per_key=5)
        await wait_until(unsent_is(dsn, 0), within=60)
    received = await consume(topics.call, expected=2000)

    assert relay_a.published_total > 0 and relay_b.published_total > 0
    assert relay_a.published_total + relay_b.published_total == 2000
    assert len(received) == 2000
    sequences = sequences_by_key(received)
    assert_in_order(sequences, keys, 5)
    assert all(seq == list(range(5)) for seq in sequences.values())


async def test_kafka_unreachable_loses_nothing_and_delivers_in_order_later(
    dsn: str, topics: EventTopics
) -> None:
    keys = await interleaved_call_events(dsn, topics, keys=10, per_key=30)
    registry = CollectorRegistry()
    down = make_relay(dsn, "relay-a", bootstrap=f"127.0.0.1:{closed_port()}", registry=registry)

    async def retried_twice() -> bool:  # it retried, with backoff (polled: a loaded machine is slower)
        failures = registry.get_sample_value(
            "uc_outbox_publish_failures_total", {"domain": "test", "reason": "PublisherUnavailable"}
        )
        return failures is not None and failures >= 2

    async with running(down):
        await wait_until(retried_twice, within=20)
    assert await unsent_count(dsn) == 300
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT min(attempts) AS a, count(*) FILTER (WHERE claimed_by IS NOT NULL) AS held,"
            " max(last_error) AS err FROM outbox"
        )
    finally:
        await conn.close()
    assert row["held"] == 0  # failed batches were released, not left leased
    assert row["a"] >= 1 and "cannot reach Kafka" in row["err"]

    up = make_relay(dsn, "relay-b")
    async with running(up):
        await wait_until(unsent_is(dsn, 0), within=30)
    received = await consume(topics.call, expected=300)
    assert len(received) == 300
    assert_in_order(sequences_by_key(received), keys, 30)


async def test_crash_between_publish_and_mark_sent_redelivers_in_order(dsn: str, topics: EventTopics) -> None:
    keys = await interleaved_call_events(dsn, topics, keys=4, per_key=10)
    published_before_crash: list[ClaimedRow] = []

    async def crash_before_marking(rows: Sequence[ClaimedRow]) -> None:
        published_before_crash.extend(rows)
        raise SimulatedCrash

    crashing = make_relay(dsn, "relay-a", lease_seconds=1.0, batch_size=16)
    crashing.after_publish = crash_before_marking
    task = asyncio.create_task(crashing.run())
    with pytest.raises(SimulatedCrash):
        await task
    await crashing.publisher.close()
    assert len(published_before_crash) == 16
    assert await unsent_count(dsn) == 40  # published, never marked

    survivor = make_relay(dsn, "relay-b", lease_seconds=1.0)
    async with running(survivor):
        await wait_until(unsent_is(dsn, 0), within=30)
    received = await consume(topics.call, expected=56)
    assert len(received) == 56  # the 16 crashed rows went out twice: at-least-once
    assert len({m.value["event_id"] for m in received}) == 40
    assert_in_order(sequences_by_key(received), keys, 10)


async def test_a_rejected_row_holds_back_only_its_own_key(dsn: str, topics: EventTopics) -> None:
    huge = event_for(EventType.CALL_ROUTING_ATTEMPTED, CALL_BIG, 0, target="sip:" + "x" * 2000)
    await insert_events(
        dsn,
        [
            huge,
            event_for(EventType.CALL_ENDED, CALL_BIG, 1),
            event_for(EventType.CALL_STARTED, CALL_FINE, 0),
            event_for(EventType.CALL_ENDED, CALL_FINE, 1),
        ],
        topics,
    )
    registry = CollectorRegistry()
    relay = make_relay(dsn, "relay-a", registry=registry, max_request_size=1500)
    async with running(relay):
        await wait_until(unsent_is(dsn, 2), within=10)
        await asyncio.sleep(0.5)
    received = await consume(topics.call, expected=2, settle=0.5)
    assert sequences_by_key(received) == {CALL_FINE: [0, 1]}  # call-big's second event did not overtake
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT partition_key, last_error, claimed_until > now() AS waiting FROM outbox"
            " WHERE sent_at IS NULL ORDER BY id"
        )
    finally:
        await conn.close()
    assert [r["partition_key"] for r in rows] == [CALL_BIG, CALL_BIG]
    assert "MessageSizeTooLargeError" in rows[0]["last_error"]
    assert all(r["waiting"] for r in rows)  # parked for rejected_retry_seconds, not spinning
    rejected = registry.get_sample_value(
        "uc_outbox_publish_failures_total", {"domain": "test", "reason": "MessageSizeTooLargeError"}
    )
    assert rejected == 1


async def test_one_relay_task_per_domain_database(topics: EventTopics) -> None:
    async with temp_database("calls") as calls_dsn, temp_database("conferences") as conf_dsn:
        call_keys = await interleaved_call_events(calls_dsn, topics, keys=3, per_key=5)
        session = new_key()
        await insert_events(
            conf_dsn,
            [event_for(EventType.CONFERENCE_SESSION_STARTED, session, 0)]
            + [event_for(EventType.CONFERENCE_PARTICIPANT_JOINED, session, i) for i in range(1, 4)],
            topics,
        )
        registry = CollectorRegistry()
        task = asyncio.create_task(
            run_outbox_relays(
                {"calls": calls_dsn, "conferences": conf_dsn},
                ProducerSettings(bootstrap_servers=KAFKA),
                relay_id="node-1",
                poll_interval_seconds=0.2,
                metrics=RelayMetrics(registry),
            )
        )
        try:
            await wait_until(unsent_is(calls_dsn, 0), within=30)
            await wait_until(unsent_is(conf_dsn, 0), within=30)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert_in_order(sequences_by_key(await consume(topics.call, expected=15)), call_keys, 5)
    assert sequences_by_key(await consume(topics.conf, expected=4)) == {session: [0, 1, 2, 3]}
    published = {
        domain: registry.get_sample_value("uc_outbox_published_total", {"domain": domain})
        for domain in ("calls", "conferences")
    }
    assert published == {"calls": 15, "conferences": 4}


async def test_relay_waits_out_an_unreachable_database_without_crashing() -> None:
    require_services()
    registry = CollectorRegistry()
    missing = "postgresql://uc_edge:uc_edge@127.0.0.1:5432/uc_test_missing_" + new_key()[:8]
    relay = make_relay(missing, "relay-a", registry=registry)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(1.0)
    assert not task.done()  # still retrying
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    failures = registry.get_sample_value(
        "uc_outbox_publish_failures_total", {"domain": "test", "reason": "DatabaseUnavailable"}
    )
    assert failures is not None and failures >= 2


async def test_idempotent_producer_refused_by_the_broker_says_how_to_fix_it() -> None:
    # Tansu refuses InitProducerId; a real Kafka accepts it (then this test documents nothing wrong).
    require_services()
    publisher = KafkaPublisher(
        ProducerSettings(bootstrap_servers=KAFKA, enable_idempotence=True, request_timeout_ms=5000)
    )
    try:
        outcome = await publisher.send_in_order([OutboundMessage("call-events", b"k", b"{}", ())])
    except PublisherUnavailable as exc:
        assert "refused the idempotent producer" in str(exc) and "KAFKA_IDEMPOTENCE=false" in str(exc)
    else:
        assert outcome == [None]
    finally:
        await publisher.close()


async def test_a_publish_spanning_many_record_batches_keeps_each_keys_order(topics: EventTopics) -> None:
    """The publisher fills one record batch per partition and hands a full one over before starting the
    next: with batches of ~3 messages, 3 keys of 20 messages go out as dozens of batches, and every key's
    messages arrive in order, each acknowledged once. A message too large for a request fails alone, with
    only the later messages of its key held back."""
    publisher = KafkaPublisher(
        ProducerSettings(
            bootstrap_servers=KAFKA, request_timeout_ms=5000, max_batch_size=1024, max_request_size=4096
        )
    )
    keys = [new_key() for _ in range(3)]
    messages = [
        OutboundMessage(topics.call, key.encode(), json.dumps({"seq": seq, "pad": "x" * 200}).encode(), ())
        for seq in range(20)
        for key in keys
    ]
    big = len(messages)
    messages += [
        OutboundMessage(topics.call, keys[0].encode(), b"x" * 5000, ()),  # over max_request_size
        OutboundMessage(topics.call, keys[0].encode(), b"{}", ()),  # held back behind it
        OutboundMessage(topics.call, keys[1].encode(), json.dumps({"seq": 20}).encode(), ()),
    ]
    try:
        outcomes = await publisher.send_in_order(messages)
    finally:
        await publisher.close()
    assert outcomes[:big] == [None] * big
    assert isinstance(outcomes[big], MessageSizeTooLargeError)
    assert isinstance(outcomes[big + 1], NotAttempted)
    assert outcomes[big + 2] is None
    received = await consume(topics.call, expected=big + 1, settle=0.5)
    order: dict[str, list[int]] = {}
    for message in sorted(received, key=lambda m: (m.partition, m.offset)):
        order.setdefault(message.key, []).append(message.value["seq"])
    assert order == {keys[0]: list(range(20)), keys[1]: list(range(21)), keys[2]: list(range(20))}


async def test_a_record_batch_the_producer_refuses_holds_back_the_rest_of_its_keys(
    topics: EventTopics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the producer refuses a full batch itself (not the broker: ``send_batch`` raising), its messages
    fail with that error and the later messages of their keys are not sent, so none overtakes them."""
    publisher = KafkaPublisher(
        ProducerSettings(
            bootstrap_servers=KAFKA, request_timeout_ms=5000, max_batch_size=1024, max_request_size=4096
        )
    )
    producer = await publisher._started()
    real_send_batch = producer.send_batch
    calls = 0

    async def refuse_the_first(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("refused for the test")
        return await real_send_batch(*args, **kwargs)

    monkeypatch.setattr(producer, "send_batch", refuse_the_first)
    key = new_key().encode()
    messages = [
        OutboundMessage(topics.call, key, json.dumps({"seq": seq, "pad": "x" * 200}).encode(), ())
        for seq in range(10)
    ]
    try:
        outcomes = await publisher.send_in_order(messages)
    finally:
        await publisher.close()
    refused = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, ValueError)]
    assert refused and refused == list(range(len(refused)))  # the first batch, whole
    assert all(isinstance(outcome, NotAttempted) for outcome in outcomes[len(refused) :])
    assert await consume(topics.call, expected=0, within=2.0, settle=0.5) == []


async def last_vacuum(dsn: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'outbox'")
    finally:
        await conn.close()


@pytest.mark.parametrize("autovacuum", [False, True])
async def test_the_relay_vacuums_its_outbox_only_where_autovacuum_is_off(
    dsn: str, topics: EventTopics, autovacuum: bool
) -> None:
    await interleaved_call_events(dsn, topics, keys=2, per_key=2)
    relay = make_relay(dsn, "relay-v")
    relay._autovacuum = autovacuum  # the server's setting, as the first housekeeping reads it
    try:
        await relay._housekeeping()
        if autovacuum:
            assert relay._vacuum_task is None
        else:
            assert relay._vacuum_task is not None
            await asyncio.wait_for(asyncio.shield(relay._vacuum_task), 30)

            async def vacuumed() -> bool:
                return await last_vacuum(dsn) is not None

            await wait_until(vacuumed, within=10)
    finally:
        await relay.close()
        await relay.publisher.close()


async def test_a_batch_slow_to_publish_is_logged_with_its_topics(
    dsn: str, topics: EventTopics, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage.kafka import relay as relay_module

    await interleaved_call_events(dsn, topics, keys=2, per_key=2)
    monkeypatch.setattr(relay_module, "SLOW_PUBLISH_SECONDS", 0.0)  # every batch counts as slow
    relay = make_relay(dsn, "relay-slow")
    try:
        with structlog.testing.capture_logs() as logs:
            sent, claimed = await relay.relay_batch()
    finally:
        await relay.close()
        await relay.publisher.close()
    assert (sent, claimed) == (4, 4)
    (slow,) = [entry for entry in logs if entry["event"] == "outbox batch slow to publish"]
    assert slow["rows"] == 4 and slow["topics"] == [topics.call] and slow["seconds"] >= 0


async def test_the_purge_deletes_every_expired_sent_row_in_bounded_chunks(
    dsn: str, topics: EventTopics
) -> None:
    """Rows sent before the retention go, however many there are (a round stops after purge_max_chunks and
    the next housekeeping goes on); rows sent since and unsent rows stay. One chunk per interval, as
    before, fell far behind any real insert rate."""
    await interleaved_call_events(dsn, topics, keys=5, per_key=5)  # 25 rows, ids in insert order
    conn = await asyncpg.connect(dsn)
    try:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM outbox ORDER BY id")]
        expired, recent = ids[:20], ids[20:22]  # the last 3 stay unsent
        await conn.execute(
            "UPDATE outbox SET sent_at = now() - interval '2 hours' WHERE id = ANY($1)", expired
        )
        await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1)", recent)
    finally:
        await conn.close()
    registry = CollectorRegistry()
    relay = make_relay(
        dsn,
        "relay-purge",
        registry=registry,
        sent_retention_seconds=3600,
        purge_chunk_rows=3,
        purge_max_chunks=4,
    )
    relay._autovacuum = True  # no vacuum task in this test
    try:
        with structlog.testing.capture_logs() as logs:
            assert await relay.purge_sent() == 12  # 4 full chunks: the round stops, more is left
            assert relay._next_purge_at == 0.0  # so the next housekeeping goes on at once
            await relay._housekeeping()
            assert relay._purge_task is not None
            assert await asyncio.wait_for(asyncio.shield(relay._purge_task), 30) == 8  # 3 + 3 + 2 (short)
            assert relay._next_purge_at > 0.0  # done: the next round is an interval away
    finally:
        await relay.close()
        await relay.publisher.close()
    conn = await asyncpg.connect(dsn)
    try:
        left = [r["id"] for r in await conn.fetch("SELECT id FROM outbox ORDER BY id")]
    finally:
        await conn.close()
    assert left == ids[20:]
    assert registry.get_sample_value("uc_outbox_purged_total", {"domain": "test"}) == 20
    purged = [entry for entry in logs if entry["event"] == "outbox sent rows purged"]
    assert [(p["rows"], p["more"]) for p in purged] == [(12, True), (8, False)]
