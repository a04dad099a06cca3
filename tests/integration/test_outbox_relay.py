"""The outbox relay against real PostgreSQL and Kafka (Tansu): order per key, several relays, outages.

An outbox row holds the events of one writing transaction (one ``insert_events`` call), so the tests write
several transactions whose rows carry events of several keys: claims lease whole rows, and a row sharing a
key with an earlier row left behind waits (the blocking passes on through the keys of every row left
behind). Counts of "unsent" are counts of events (``tests/integration/test_outbox_helpers.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
import structlog.testing
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
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
from storage.kafka.relay import SQL, ClaimedRow, OutboxRelay, RelayConfig, run_outbox_relays
from tests.integration.test_outbox_helpers import (
    KAFKA,
    SEQUENCE_OF_EVENT,
    closed_port,
    consume,
    event_for,
    insert_events,
    interleaved_call_events,
    new_key,
    outbox_count,
    outbox_events,
    outbox_row_count,
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

CALL_N = new_key()


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


def described(rows: Sequence[ClaimedRow]) -> list[tuple[int, list[tuple[str, int]]]]:
    """Claimed rows as ``(id, [(key, seq of the event), ...])``, events in their order in the row."""
    return [(r.id, [(e.partition_key, SEQUENCE_OF_EVENT[e.event_id]) for e in r.events]) for r in rows]


async def test_events_reach_kafka_in_order_per_key_with_headers_and_metrics(
    dsn: str, topics: EventTopics
) -> None:
    keys = await interleaved_call_events(dsn, topics, keys=20, per_key=25)
    assert await outbox_row_count(dsn) == 40  # rows of 13, 5, 31 and 1 events, most of several keys
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

    assert registry.get_sample_value("uc_outbox_published_total", {"domain": "test"}) == 500  # events
    assert relay.published_total == 500
    assert await relay.refresh_metrics() == (0, 0.0)
    assert await outbox_count(dsn) == 0  # by default a row is deleted once Kafka acknowledged it
    assert await outbox_row_count(dsn) == 0


async def test_a_retention_keeps_acknowledged_rows_marked_sent(dsn: str, topics: EventTopics) -> None:
    await interleaved_call_events(dsn, topics, keys=4, per_key=5)  # rows of 13, 5 and 2 events
    written = [event["event_id"] for event in await outbox_events(dsn)]
    relay = make_relay(dsn, "relay-history", sent_retention_seconds=3600)
    async with running(relay):
        await wait_until(unsent_is(dsn, 0), within=30)
    received = await consume(topics.call, expected=20)
    assert len(received) == 20
    kept = await outbox_events(dsn)
    # Younger than the retention: still there, as history, each row whole and its events in order.
    assert [event["event_id"] for event in kept] == written
    assert sorted(written) == sorted(m.value["event_id"] for m in received)
    assert await outbox_row_count(dsn) == 3
    assert all(event["sent_at"] is not None and event["claimed_by"] is None for event in kept)


async def test_notify_wakes_an_idle_relay_long_before_its_poll_interval(
    dsn: str, topics: EventTopics
) -> None:
    relay = make_relay(dsn, "relay-a", poll_interval_seconds=60)
    async with running(relay):
        await asyncio.sleep(0.5)  # let it drain nothing and go idle on LISTEN
        await insert_events(dsn, [event_for(EventType.CALL_STARTED, CALL_N, 0)], topics)
        await wait_until(unsent_is(dsn, 0), within=5)


async def test_claims_skip_rows_sharing_a_key_with_earlier_rows_left_behind(
    dsn: str, topics: EventTopics
) -> None:
    k, x, o, n, m = (new_key() for _ in range(5))
    state = EventType.CALL_LEG_STATE_CHANGED
    for row in (
        [(k, 0), (x, 0)],  # 1: leased by the holder
        [(o, 0), (o, 1)],  # 2: free
        [(k, 1), (o, 2)],  # 3: k follows row 1, so it waits, and holds o back from here on
        [(o, 3)],  # 4: behind row 3's o
        [(n, 0), (x, 1)],  # 5: x follows row 1
        [(m, 0), (m, 1)],  # 6: free
    ):
        await insert_events(dsn, [event_for(state, key, seq) for key, seq in row], topics)
    holder = make_relay(dsn, "relay-a", batch_size=1)  # the row that reaches the budget is taken whole
    other = make_relay(dsn, "relay-b", batch_size=10)
    try:
        assert described(await holder.claim()) == [(1, [(k, 0), (x, 0)])]
        assert described(await other.claim()) == [(2, [(o, 0), (o, 1)]), (6, [(m, 0), (m, 1)])]
        assert await other.claim() == []  # rows 3 to 5 wait, however often it asks
        # Kafka acknowledged rows 1, 2 and 6: the rows that waited are claimable, in order.
        await (await other._ensure_pool()).execute(SQL["delete_sent"], [1, 2, 6])
        assert described(await other.claim()) == [
            (3, [(k, 1), (o, 2)]),
            (4, [(o, 3)]),
            (5, [(n, 0), (x, 1)]),
        ]
    finally:
        await holder.close()
        await other.close()


async def test_expired_lease_is_reclaimed(dsn: str, topics: EventTopics) -> None:
    call_l, call_m = new_key(), new_key()
    await insert_events(
        dsn,
        [event_for(EventType.CALL_STARTED, call_l, 0), event_for(EventType.CALL_STARTED, call_m, 0)],
        topics,
    )
    crashed = make_relay(dsn, "relay-crashed", lease_seconds=0.5)
    survivor = make_relay(dsn, "relay-b", lease_seconds=0.5)
    try:
        assert described(await crashed.claim()) == [(1, [(call_l, 0), (call_m, 0)])]
        assert await survivor.claim() == []
        await asyncio.sleep(0.7)
        assert described(await survivor.claim()) == [(1, [(call_l, 0), (call_m, 0)])]
    finally:
        await crashed.close()
        await survivor.close()


async def test_two_relays_at_once_keep_order_and_publish_no_duplicates(dsn: str, topics: EventTopics) -> None:
    relay_a = make_relay(dsn, "relay-a", batch_size=25)
    relay_b = make_relay(dsn, "relay-b", batch_size=25)
    keys: list[str] = []
    async with running(relay_a, relay_b):
        # Writes keep arriving while both relays work. They run in parallel only across keys, and a relay
        # whose batch holds an event of every key blocks the other entirely: 50 keys a round, written in
        # rows of 7, 3 and 11 events, so a batch of 25 events (28: the row reaching it is taken whole)
        # leaves keys for the other relay to take.
        for _ in range(8):
            keys += await interleaved_call_events(dsn, topics, keys=50, per_key=5, row_sizes=(7, 3, 11))
        await wait_until(unsent_is(dsn, 0), within=60)
    received = await consume(topics.call, expected=2000)

    assert relay_a.published_total > 0 and relay_b.published_total > 0  # events, not rows
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


async def test_a_wake_up_drains_a_backlog_only_until_a_batch_comes_back_short(
    dsn: str, topics: EventTopics
) -> None:
    """Under steady commits a drain that waited for an empty claim never ended: the relay claimed every
    few milliseconds instead of once per linger. It stops at the first short batch; a plain drain()
    still goes on until nothing is claimable."""
    await interleaved_call_events(dsn, topics, keys=10, per_key=25, row_sizes=(10,))  # 25 rows of 10
    key = new_key()
    batches: list[int] = []

    async def commit_meanwhile(rows: Sequence[ClaimedRow]) -> None:
        batches.append(sum(len(row.events) for row in rows))
        if len(batches) <= 6:  # a node still writing: a row of 2 events per batch published
            pair = [event_for(EventType.CALL_LEG_STATE_CHANGED, key, 2 * len(batches) + n) for n in (0, 1)]
            await insert_events(dsn, pair, topics)

    relay = make_relay(dsn, "relay-a", batch_size=100, batches_in_flight=1)
    relay.after_publish = commit_meanwhile
    try:
        sent = await relay.drain(until_short=True)
        # 250 events: two full batches of 100, then 50 and the 4 committed meanwhile (short: stop).
        assert batches == [100, 100, 54] and sent == 254
        assert await unsent_count(dsn) == 2  # committed during the short batch: left to the next wake-up
        assert relay._wakeup.is_set()  # armed: it goes out a linger later

        assert await relay.drain() == 2 + 3 * 2  # until nothing is claimable: the rest, as they come
        assert batches[3:] == [2, 2, 2, 2] and await unsent_count(dsn) == 0
    finally:
        await relay.close()
        await relay.publisher.close()


async def test_crash_between_publish_and_mark_sent_redelivers_in_order(dsn: str, topics: EventTopics) -> None:
    keys = await interleaved_call_events(dsn, topics, keys=4, per_key=10, row_sizes=(6,))  # 6 x 6 + 4
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
    # A budget of 16 events takes rows of 6, 6 and 6: the row reaching the budget is taken whole.
    assert [len(row.events) for row in published_before_crash] == [6, 6, 6]
    assert await unsent_count(dsn) == 40  # published, never marked

    survivor = make_relay(dsn, "relay-b", lease_seconds=1.0)
    async with running(survivor):
        await wait_until(unsent_is(dsn, 0), within=30)
    received = await consume(topics.call, expected=58)
    assert len(received) == 58  # the 18 events of the crashed rows went out twice: at-least-once
    assert len({m.value["event_id"] for m in received}) == 40
    assert_in_order(sequences_by_key(received), keys, 10)


async def test_a_rejected_row_holds_back_only_its_own_key(dsn: str, topics: EventTopics) -> None:
    big, fine = new_key(), new_key()
    huge = event_for(EventType.CALL_ROUTING_ATTEMPTED, big, 0, target="sip:" + "x" * 2000)
    await insert_events(dsn, [huge], topics)
    await insert_events(
        dsn, [event_for(EventType.CALL_STARTED, fine, 0), event_for(EventType.CALL_ENDED, fine, 1)], topics
    )
    await insert_events(dsn, [event_for(EventType.CALL_ENDED, big, 1)], topics)
    registry = CollectorRegistry()
    relay = make_relay(dsn, "relay-a", registry=registry, max_request_size=1500)
    async with running(relay):
        await wait_until(unsent_is(dsn, 2), within=10)
        await asyncio.sleep(0.5)
    received = await consume(topics.call, expected=2, settle=0.5)
    assert sequences_by_key(received) == {fine: [0, 1]}  # big's second event did not overtake
    waiting = await outbox_events(dsn, unsent_only=True)
    assert [(e["outbox_id"], e["partition_key"], SEQUENCE_OF_EVENT[e["event_id"]]) for e in waiting] == [
        (1, big, 0),
        (3, big, 1),
    ]
    assert "MessageSizeTooLargeError" in waiting[0]["last_error"]
    assert "NotAttempted" in waiting[1]["last_error"]
    assert all(e["claimed_by"] is None for e in waiting)
    assert await still_waiting(dsn) == [1, 3]  # parked for rejected_retry_seconds, not spinning
    rejected = registry.get_sample_value(
        "uc_outbox_publish_failures_total", {"domain": "test", "reason": "MessageSizeTooLargeError"}
    )
    assert rejected == 1


async def still_waiting(dsn: str) -> list[int]:
    """Ids of the unsent rows nobody may claim yet (leased, or parked after a rejection)."""
    conn = await asyncpg.connect(dsn)
    try:
        records = await conn.fetch(
            "SELECT id FROM outbox WHERE sent_at IS NULL AND claimed_until > now() ORDER BY id"
        )
    finally:
        await conn.close()
    return [r["id"] for r in records]


async def outbox_rows(dsn: str) -> dict[int, tuple[list[str], int, bool]]:
    """Per row id: its sorted partition keys, its event count, and whether it is marked sent."""
    conn = await asyncpg.connect(dsn)
    try:
        records = await conn.fetch("SELECT id, partition_keys, event_count, sent_at FROM outbox ORDER BY id")
    finally:
        await conn.close()
    return {
        r["id"]: (sorted(r["partition_keys"]), r["event_count"], r["sent_at"] is not None) for r in records
    }


def by_row(events: Sequence[asyncpg.Record]) -> dict[int, list[tuple[str, int]]]:
    """``outbox_events`` records as ``{row id: [(key, seq), ...]}``, each row's events in order."""
    rows: dict[int, list[tuple[str, int]]] = {}
    for event in events:
        rows.setdefault(event["outbox_id"], []).append(
            (event["partition_key"], SEQUENCE_OF_EVENT[event["event_id"]])
        )
    return rows


async def write_partly_rejected_rows(dsn: str, topics: EventTopics, big: str, fine: str) -> dict[str, Any]:
    """Rows 1 to 3: ``[big 0 (too large for Kafka), fine 0, big 1, fine 1]``, ``[fine 2, big 2]``,
    ``[fine 3]``. Returns the huge event."""
    state = EventType.CALL_LEG_STATE_CHANGED
    huge = event_for(EventType.CALL_ROUTING_ATTEMPTED, big, 0, target="sip:" + "x" * 2000)
    await insert_events(
        dsn, [huge, event_for(state, fine, 0), event_for(state, big, 1), event_for(state, fine, 1)], topics
    )
    await insert_events(dsn, [event_for(state, fine, 2), event_for(state, big, 2)], topics)
    await insert_events(dsn, [event_for(state, fine, 3)], topics)
    return huge


async def test_a_row_kafka_accepts_in_part_keeps_only_the_events_still_to_publish(
    dsn: str, topics: EventTopics
) -> None:
    """One message of a row rejected: the row's other keys are published once and not held back, the row
    keeps only the rejected key's events (and only that key), and that key's later events wait."""
    big, fine, other, late = (new_key() for _ in range(4))
    huge = await write_partly_rejected_rows(dsn, topics, big, fine)
    registry = CollectorRegistry()
    relay = make_relay(dsn, "relay-a", registry=registry, max_request_size=1500)
    wholly_sent: list[list[int]] = []

    async def record(rows: Sequence[ClaimedRow]) -> None:
        wholly_sent.append([row.id for row in rows])

    relay.after_publish = record
    state = EventType.CALL_LEG_STATE_CHANGED
    try:
        # One batch takes the three rows: big 0 is rejected, big's later events are not attempted.
        assert await relay.relay_batch() == (4, 7)  # (events sent, events claimed)
        assert wholly_sent == [[3]]  # rows 1 and 2 were sent in part only
        assert by_row(await outbox_events(dsn)) == {1: [(big, 0), (big, 1)], 2: [(big, 2)]}
        # Rewritten: only big's key left, the events counted again; row 3 deleted (no sent history).
        assert await outbox_rows(dsn) == {1: ([big], 2, False), 2: ([big], 1, False)}
        waiting = await outbox_events(dsn, unsent_only=True)
        assert json.loads(waiting[0]["envelope"]) == huge  # kept as written
        assert "MessageSizeTooLargeError" in waiting[0]["last_error"]
        assert await still_waiting(dsn) == [1, 2]  # parked for rejected_retry_seconds
        unsent, _ = await relay.refresh_metrics()
        assert unsent == 3  # the backlog counts events

        # Later rows: fine's and other's own events pass the waiting rows (they hold only big's key);
        # big's next event waits, and so does the row behind it through its other key.
        await insert_events(dsn, [event_for(state, fine, 4), event_for(state, other, 0)], topics)  # 4
        await insert_events(dsn, [event_for(state, big, 3), event_for(state, other, 1)], topics)  # 5
        await insert_events(dsn, [event_for(state, other, 2)], topics)  # 6
        await insert_events(dsn, [event_for(state, late, 0)], topics)  # 7
        assert await relay.relay_batch() == (3, 3)
        assert wholly_sent[-1] == [4, 7]
        assert await relay.relay_batch() == (0, 0)  # rows 5 and 6 wait behind big's events
        assert by_row(await outbox_events(dsn)) == {
            1: [(big, 0), (big, 1)],
            2: [(big, 2)],
            5: [(big, 3), (other, 1)],
            6: [(other, 2)],
        }

        # Retried after the wait, big 0 is rejected again: the rows behind it go out but for big's events.
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE outbox SET claimed_until = now() WHERE claimed_until > now()")
        finally:
            await conn.close()
        assert await relay.relay_batch() == (2, 6)
        assert wholly_sent[-1] == [6]
        assert by_row(await outbox_events(dsn)) == {1: [(big, 0), (big, 1)], 2: [(big, 2)], 5: [(big, 3)]}
        assert await outbox_rows(dsn) == {1: ([big], 2, False), 2: ([big], 1, False), 5: ([big], 1, False)}
    finally:
        await relay.close()
        await relay.publisher.close()

    received = await consume(topics.call, expected=9, settle=0.5)
    assert len(received) == 9  # each published once
    assert sequences_by_key(received) == {fine: [0, 1, 2, 3, 4], other: [0, 1, 2], late: [0]}
    assert registry.get_sample_value("uc_outbox_published_total", {"domain": "test"}) == 9
    rejected = registry.get_sample_value(
        "uc_outbox_publish_failures_total", {"domain": "test", "reason": "MessageSizeTooLargeError"}
    )
    assert rejected == 2
    assert await unsent_count(dsn) == 4


async def test_a_retention_keeps_the_acknowledged_part_of_a_row_as_a_sent_row(
    dsn: str, topics: EventTopics
) -> None:
    big, fine = new_key(), new_key()
    huge = await write_partly_rejected_rows(dsn, topics, big, fine)
    written = {event["event_id"]: json.loads(event["envelope"]) for event in await outbox_events(dsn)}
    relay = make_relay(dsn, "relay-history", max_request_size=1500, sent_retention_seconds=3600)
    try:
        assert await relay.relay_batch() == (4, 7)
    finally:
        await relay.close()
        await relay.publisher.close()
    assert by_row(await outbox_events(dsn, unsent_only=True)) == {1: [(big, 0), (big, 1)], 2: [(big, 2)]}
    sent = await outbox_events(dsn)
    sent = [event for event in sent if event["sent_at"] is not None]
    # Row 3 was sent whole and is marked sent; the parts of rows 1 and 2 Kafka acknowledged are rows of
    # their own, marked sent, each part's events in their order.
    history = by_row(sent)
    assert history.pop(3) == [(fine, 3)]
    assert sorted(history.values()) == [[(fine, 0), (fine, 1)], [(fine, 2)]]
    assert all(row_id > 3 for row_id in history)
    rows = await outbox_rows(dsn)
    assert {row_id: rows[row_id] for row_id in history} == {
        row_id: ([fine], len(events), True) for row_id, events in history.items()
    }
    assert rows[1] == ([big], 2, False) and rows[2] == ([big], 1, False)
    assert all(event["claimed_by"] is None for event in sent)
    assert all(json.loads(event["envelope"]) == written[event["event_id"]] for event in sent)
    assert json.loads((await outbox_events(dsn, unsent_only=True))[0]["envelope"]) == huge
    assert await outbox_count(dsn) == 7 and await unsent_count(dsn) == 3
    received = await consume(topics.call, expected=4, settle=0.5)
    assert sequences_by_key(received) == {fine: [0, 1, 2, 3]}


async def test_a_broker_error_mid_batch_keeps_the_acknowledged_events_and_retries_the_rest_at_once(
    dsn: str, topics: EventTopics
) -> None:
    """The broker fails one key's messages (not a rejection of the messages): the events acknowledged
    before count as published and leave their rows, the rest is handed back at once and the error raised;
    the next batch publishes it, each event once and in order."""
    a, b, c = new_key(), new_key(), new_key()
    state = EventType.CALL_LEG_STATE_CHANGED
    await insert_events(dsn, [event_for(state, a, 0), event_for(state, b, 0), event_for(state, a, 1)], topics)
    await insert_events(dsn, [event_for(state, b, 1), event_for(state, c, 0)], topics)
    await insert_events(dsn, [event_for(state, c, 1)], topics)
    registry = CollectorRegistry()
    relay = make_relay(dsn, "relay-a", registry=registry)
    real_send = relay.publisher.send_in_order

    async def b_times_out(messages: Sequence[OutboundMessage]) -> list[BaseException | None]:
        # b's messages are not sent: the broker timed out on them (as for a partition whose leader is away)
        others = [m for m in messages if m.key != b.encode()]
        outcomes = iter(await real_send(others))
        return [KafkaTimeoutError() if m.key == b.encode() else next(outcomes) for m in messages]

    relay.publisher.send_in_order = b_times_out  # type: ignore[method-assign]
    try:
        with pytest.raises(KafkaTimeoutError):
            await relay.relay_batch()
        assert by_row(await outbox_events(dsn)) == {1: [(b, 0)], 2: [(b, 1)]}
        assert await still_waiting(dsn) == []  # handed back at once, not parked
        assert all("KafkaTimeoutError" in e["last_error"] for e in await outbox_events(dsn))
        assert relay.published_total == 4  # a 0 and 1, c 0 and 1
        relay.publisher.send_in_order = real_send  # type: ignore[method-assign]
        assert await relay.relay_batch() == (2, 2)
    finally:
        await relay.close()
        await relay.publisher.close()
    assert await outbox_count(dsn) == 0
    received = await consume(topics.call, expected=6, settle=0.5)
    assert len(received) == 6
    assert sequences_by_key(received) == {a: [0, 1], b: [0, 1], c: [0, 1]}
    assert relay.published_total == 6
    assert registry.get_sample_value("uc_outbox_published_total", {"domain": "test"}) == 6


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

    await interleaved_call_events(dsn, topics, keys=2, per_key=2, row_sizes=(3,))  # rows of 3 and 1
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
    assert slow["rows"] == 2 and slow["events"] == 4
    assert slow["topics"] == [topics.call] and slow["seconds"] >= 0


async def test_the_purge_deletes_every_expired_sent_row_in_bounded_chunks(
    dsn: str, topics: EventTopics
) -> None:
    """Rows sent before the retention go, however many there are (a round stops after purge_max_chunks and
    the next housekeeping goes on); rows sent since and unsent rows stay. One chunk per interval, as
    before, fell far behind any real insert rate."""
    await interleaved_call_events(dsn, topics, keys=5, per_key=15, row_sizes=(3,))  # 25 rows of 3 events
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
    assert await outbox_count(dsn) == 15  # the rows' events: the purge deletes rows whole
    assert registry.get_sample_value("uc_outbox_purged_total", {"domain": "test"}) == 20  # rows
    purged = [entry for entry in logs if entry["event"] == "outbox sent rows purged"]
    assert [(p["rows"], p["more"]) for p in purged] == [(12, True), (8, False)]
