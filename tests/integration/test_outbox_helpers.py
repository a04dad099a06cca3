"""Helpers shared by the outbox, relay, consumer and billing integration tests (this module has no tests).

Each test gets databases named ``uc_test_…`` (dropped afterwards) holding the per-domain ``outbox`` table,
and Kafka topics with a unique prefix, so tests never see each other's rows or messages.

An outbox row holds the events of one writing transaction (``write_outbox``: one row per call, in order);
the ``outbox_events`` view lists them one by one. The counts here (``outbox_count``, ``unsent_count``,
``unsent_is``) count EVENTS, not rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from storage.events import EventTopics, EventType, make_event, outbox_entry
from storage.events.examples import example_payload
from storage.kafka.outbox_writer import write_outbox
from storage.postgres.migrate import migrate

PG_ADMIN_DSN = os.environ.get("UC_EDGE_TEST_PG_DSN", "postgresql://uc_edge:uc_edge@127.0.0.1:5432/postgres")
KAFKA = os.environ.get("UC_EDGE_TEST_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("UC_EDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Which event of a key a message is, by event id (events carry only UUIDs, so tests keep this aside).
SEQUENCE_OF_EVENT: dict[str, int] = {}


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def require_services(*services: tuple[str, int]) -> None:
    """Skip the test when a service does not listen on loopback, or fail it under
    ``UC_EDGE_REQUIRE_SERVICES=1`` (make test: CI runs the local stack). PostgreSQL, Kafka and Redis by
    default."""
    for name, port in services or (("PostgreSQL", 5432), ("Kafka (Tansu)", 9092), ("Redis", 6379)):
        if not port_open("127.0.0.1", port):
            message = f"{name} is not listening on 127.0.0.1:{port}; run `bash scripts/services up`"
            if os.environ.get("UC_EDGE_REQUIRE_SERVICES") == "1":
                pytest.fail(message)
            pytest.skip(message)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def temp_database(domain: str = "calls") -> AsyncIterator[str]:
    """A fresh ``uc_test_…`` database migrated as ``domain`` (its outbox included); yields its DSN."""
    name = f"uc_test_{uuid.uuid4().hex[:12]}"
    try:
        await migrate(PG_ADMIN_DSN, {domain: name})
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def temp_topics(partitions: int = 3) -> AsyncIterator[EventTopics]:
    """The three event topics under a unique prefix, created for the test and deleted afterwards."""
    topics = EventTopics().with_prefix(f"t{uuid.uuid4().hex[:10]}-")
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in topics.all()]
        )
        yield topics
    finally:
        with contextlib.suppress(Exception):
            await admin.delete_topics(list(topics.all()))
        await admin.close()


def new_key() -> str:
    return str(uuid.uuid4())


def event_for(event_type: EventType, key: str, seq: int, **payload_overrides: Any) -> dict[str, Any]:
    """A valid event keyed by ``key`` (a call or conference session id), remembered as its ``seq``-th."""
    conference = event_type.value.startswith("conference.")
    event = make_event(
        event_type,
        payload=example_payload(event_type) | payload_overrides,
        correlation_id=key,
        node_id="test-node",
        call_id=None if conference else key,
        conf_session_id=key if conference else None,
    )
    SEQUENCE_OF_EVENT[event["event_id"]] = seq
    return event


async def insert_events(dsn: str, envelopes: Sequence[dict[str, Any]], topics: EventTopics) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await write_outbox(conn, [outbox_entry(e, topics) for e in envelopes])
    finally:
        await conn.close()


# Events per transaction (outbox row) that interleaved_call_events writes, taken in turn: rows of many keys,
# of a few, of one event, and rows holding more events than there are keys (a key's events twice in a row),
# so that rows carry several keys and each key's events spread over many rows.
ROW_SIZES: tuple[int, ...] = (13, 5, 31, 1)


async def interleaved_call_events(
    dsn: str, topics: EventTopics, keys: int, per_key: int, *, row_sizes: Sequence[int] = ROW_SIZES
) -> list[str]:
    """``keys x per_key`` call events, interleaved across keys (every key's event 0, then every key's
    event 1, ...), written by consecutive transactions of ``row_sizes`` events in turn (one outbox row
    each: the last one may be shorter); returns the keys."""
    if not row_sizes or min(row_sizes) < 1:
        raise ValueError(f"row_sizes must be positive, got {row_sizes!r}")
    names = [new_key() for _ in range(keys)]
    envelopes = [event_for(EventType.CALL_LEG_STATE_CHANGED, k, seq) for seq in range(per_key) for k in names]
    start = turn = 0
    while start < len(envelopes):
        size = row_sizes[turn % len(row_sizes)]
        await insert_events(dsn, envelopes[start : start + size], topics)
        start, turn = start + size, turn + 1
    return names


@dataclass
class Received:
    key: str
    value: dict[str, Any]
    headers: dict[str, bytes]
    partition: int
    offset: int


async def consume(topic: str, expected: int, within: float = 30.0, settle: float = 1.0) -> list[Received]:
    """Read ``topic`` from the beginning until ``expected`` messages arrived and ``settle`` s passed
    without more (to catch duplicates), or ``within`` s passed."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=KAFKA, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    received: list[Received] = []
    deadline = time.monotonic() + within
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    received.append(
                        Received(
                            key=r.key.decode(),
                            value=json.loads(r.value),
                            headers={k: v for k, v in r.headers},
                            partition=r.partition,
                            offset=r.offset,
                        )
                    )
                    quiet_since = time.monotonic()
            if len(received) >= expected and time.monotonic() - quiet_since >= settle:
                break
    finally:
        await consumer.stop()
    return received


def sequences_by_key(received: Sequence[Received]) -> dict[str, list[int]]:
    """Per key, the ``seq`` numbers of its events in arrival order."""
    by_key: dict[str, list[int]] = {}
    for message in sorted(received, key=lambda m: (m.partition, m.offset)):
        by_key.setdefault(message.key, []).append(SEQUENCE_OF_EVENT[message.value["event_id"]])
    return by_key


def without_redeliveries(sequence: list[int]) -> list[int]:
    """At-least-once may replay a suffix; what a deduplicating consumer sees is the first of each."""
    return list(dict.fromkeys(sequence))


async def unsent_count(dsn: str) -> int:
    """EVENTS waiting to be published (in rows not marked sent), not rows."""
    return await outbox_count(dsn, unsent_only=True)


async def outbox_count(dsn: str, *, unsent_only: bool = False) -> int:
    """EVENTS in the outbox (the sum of its rows' ``event_count``, not rows): the unsent ones, or all
    (sent rows stay only with a retention). See ``outbox_row_count`` for rows."""
    query = "SELECT coalesce(sum(event_count), 0) FROM outbox" + (
        " WHERE sent_at IS NULL" if unsent_only else ""
    )
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def outbox_row_count(dsn: str, *, unsent_only: bool = False) -> int:
    """ROWS in the outbox (one per writing transaction, or per acknowledged part kept as history)."""
    query = "SELECT count(*) FROM outbox" + (" WHERE sent_at IS NULL" if unsent_only else "")
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def outbox_events(dsn: str, *, unsent_only: bool = False) -> list[asyncpg.Record]:
    """The events of the ``outbox_events`` view (``event_id`` and ``envelope`` as text), in publication
    order: by row, then position in the row."""
    query = (
        "SELECT outbox_id, position, event_id::text AS event_id, topic, partition_key, event_type,"
        " envelope::text AS envelope, created_at, claimed_by, claimed_until, attempts, last_error, sent_at"
        " FROM outbox_events"
        + (" WHERE sent_at IS NULL" if unsent_only else "")
        + " ORDER BY outbox_id, position"
    )
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


def unsent_is(dsn: str, expected: int) -> Callable[[], Awaitable[bool]]:
    """A predicate for ``wait_until``: exactly ``expected`` EVENTS are unsent."""

    async def check() -> bool:
        return await unsent_count(dsn) == expected

    return check


async def wait_until(predicate: Callable[[], Awaitable[bool]], within: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)
