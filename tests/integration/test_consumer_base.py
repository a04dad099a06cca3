"""The consumer base against real Kafka (Tansu) and Redis: poison, duplicates, retries, commits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from storage.consumers.base import ConsumerMetrics, ConsumerSettings, EventConsumer, Outcome
from storage.events import EventTopics, EventType
from storage.redis.idempotency import RedisIdempotencyKeys
from tests.integration.test_outbox_helpers import (
    KAFKA,
    REDIS_URL,
    event_for,
    new_key,
    require_services,
    temp_topics,
    wait_until,
)

pytestmark = pytest.mark.integration

CALL_1, CALL_2, CALL_3, CALL_4 = (new_key() for _ in range(4))


class RecordingHandler:
    event_types = frozenset({"cdr.created", "call.ended"})
    transient_errors: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(self, failures_before_success: int = 0) -> None:
        self.handled: list[str] = []
        self.calls = 0
        self._failures_left = failures_before_success

    async def handle(self, event: dict[str, Any]) -> None:
        self.calls += 1
        if self._failures_left:
            self._failures_left -= 1
            raise ConnectionError("database away")
        self.handled.append(event["event_id"])


class InboxHandler(RecordingHandler):
    """Knows which events it applied, like the billing consumer's inbox."""

    async def already_applied(self, event: dict[str, Any]) -> bool:
        return event["event_id"] in self.handled


@pytest.fixture
async def topics() -> AsyncIterator[EventTopics]:
    require_services()
    async with temp_topics(partitions=2) as names:
        yield names


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    prefix = f"uc-test-{uuid.uuid4().hex[:8]}:"
    client.test_prefix = prefix  # type: ignore[attr-defined]
    yield client
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def make_consumer(
    topics: EventTopics, redis: Redis, handler: RecordingHandler, group: str, registry: CollectorRegistry
) -> EventConsumer:
    settings = ConsumerSettings(
        bootstrap_servers=KAFKA,
        group_id=group,
        topics=(topics.cdr,),
        retry_initial_seconds=0.05,
        retry_max_seconds=0.2,
        poll_timeout_ms=200,
    )
    keys = RedisIdempotencyKeys(redis, prefix=redis.test_prefix)  # type: ignore[attr-defined]
    return EventConsumer(settings, handler, keys, metrics=ConsumerMetrics(registry))


async def produce(topic: str, values: list[bytes], key: bytes = b"k") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def running(consumer: EventConsumer) -> AsyncIterator[None]:
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def encoded(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


async def test_poison_is_skipped_duplicates_dropped_and_offsets_committed(
    topics: EventTopics, redis: Redis
) -> None:
    good = [event_for(EventType.CDR_CREATED, CALL_1, i) for i in range(3)]
    invalid = event_for(EventType.CDR_CREATED, CALL_1, 9)
    invalid["payload"]["duration_seconds"] = -5
    other_type = event_for(EventType.CALL_STARTED, CALL_1, 10)
    await produce(
        topics.cdr,
        [
            encoded(good[0]),
            b"\xff not json",
            encoded(good[1]),
            encoded(invalid),
            encoded(good[0]),  # redelivered
            encoded(other_type),
            encoded(good[2]),
            b"",
        ],
    )
    group = f"g-{uuid.uuid4().hex[:8]}"
    registry = CollectorRegistry()
    handler = RecordingHandler()
    consumer = make_consumer(topics, redis, handler, group, registry)
    async with running(consumer):
        await wait_until(lambda: _at_least(consumer, 8), within=30)
        await asyncio.sleep(0.5)  # let the commit land
    assert handler.handled == [e["event_id"] for e in good]
    assert consumer.counts == {
        Outcome.PROCESSED: 3,
        Outcome.POISON: 3,
        Outcome.DUPLICATE: 1,
        Outcome.IGNORED: 1,
    }
    assert registry.get_sample_value("uc_consumer_events_total", {"group": group, "outcome": "poison"}) == 3

    # Same group, fresh idempotency namespace: only committed offsets keep it from re-handling.
    await redis.delete(*[k async for k in redis.scan_iter(match=redis.test_prefix + "*")])  # type: ignore[attr-defined]
    await produce(topics.cdr, [encoded(event_for(EventType.CDR_CREATED, CALL_2, 0))])
    again = RecordingHandler()
    resumed = make_consumer(topics, redis, again, group, CollectorRegistry())
    async with running(resumed):
        await wait_until(lambda: _at_least(resumed, 1), within=30)
        await asyncio.sleep(1.0)
    assert len(again.handled) == 1 and sum(resumed.counts.values()) == 1


async def _at_least(consumer: EventConsumer, n: int) -> bool:
    return sum(consumer.counts.values()) >= n


async def test_transient_handler_failures_are_retried_then_handled_once(
    topics: EventTopics, redis: Redis
) -> None:
    event = event_for(EventType.CALL_ENDED, CALL_3, 0)
    await produce(topics.cdr, [encoded(event)])
    registry = CollectorRegistry()
    handler = RecordingHandler(failures_before_success=3)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(topics, redis, handler, group, registry)
    async with running(consumer):
        await wait_until(lambda: _at_least(consumer, 1), within=30)
    assert handler.calls == 4 and handler.handled == [event["event_id"]]
    assert (
        registry.get_sample_value("uc_consumer_retries_total", {"group": group, "reason": "ConnectionError"})
        == 3
    )


async def test_claimed_but_unapplied_event_is_applied_by_an_authoritative_handler(
    topics: EventTopics, redis: Redis
) -> None:
    event = event_for(EventType.CDR_CREATED, CALL_4, 0)
    group = f"g-{uuid.uuid4().hex[:8]}"
    keys = RedisIdempotencyKeys(redis, prefix=redis.test_prefix)  # type: ignore[attr-defined]
    # A previous consumer claimed it, then died before its transaction committed.
    assert await keys.claim(f"{group}:{event['event_id']}", 60)
    await produce(topics.cdr, [encoded(event), encoded(event)])
    handler = InboxHandler()
    consumer = make_consumer(topics, redis, handler, group, CollectorRegistry())
    async with running(consumer):
        await wait_until(lambda: _at_least(consumer, 2), within=30)
    assert handler.handled == [event["event_id"]]
    assert consumer.counts[Outcome.PROCESSED] == 1 and consumer.counts[Outcome.DUPLICATE] == 1


@pytest.mark.parametrize("ttl_hours", [1, 23.9, 72.1, 24 * 30])
def test_idempotency_ttl_outside_24_to_72_hours_is_refused(ttl_hours: float) -> None:
    with pytest.raises(ValueError, match="outside the redelivery window"):
        ConsumerSettings(
            bootstrap_servers=KAFKA, group_id="g", topics=("t",), idempotency_ttl_seconds=ttl_hours * 3600
        )


@pytest.mark.parametrize("ttl_hours", [24, 48, 72])
def test_idempotency_ttl_inside_the_window_is_accepted(ttl_hours: float) -> None:
    settings = ConsumerSettings(
        bootstrap_servers=KAFKA, group_id="g", topics=("t",), idempotency_ttl_seconds=ttl_hours * 3600
    )
    assert settings.namespace == "g"
