"""A reusable Kafka consumer for uc-edge events: validate, deduplicate, handle, then commit.

Delivery is at-least-once, so every event may arrive more than once (a relay republishing after a crash,
a consumer restarting before its commit). The consumer claims ``<namespace>:<event_id>`` in the
idempotency-key store (Redis ``idempotency_keys``, TTL 24-72 h) before handling an event and skips events
already claimed. Offsets are committed only after the handler returned, so a crash replays rather than
loses. A handler whose effects must never be lost keeps its own record (an inbox table) and exposes
``already_applied``: a claimed-but-unapplied event (the process died between claim and commit) is then
handled on redelivery instead of skipped.

Poison messages (not JSON, not a valid event) are logged and committed past, never retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from storage.events import EventValidationError, parse_event
from storage.kafka.backoff import Backoff
from storage.ports import IdempotencyKeys, check_idempotency_ttl

log = structlog.get_logger(__name__)

# Failures of the idempotency store that a retry can outlive.
STORE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
)


class EventHandler(Protocol):
    """What a consumer does with each new, valid event of the types it names."""

    event_types: frozenset[str]
    # Exceptions of ``handle`` that mean "try again later" (database away…); anything else is a bug and
    # stops the consumer rather than skipping or spinning on the event.
    transient_errors: tuple[type[BaseException], ...]

    async def handle(self, event: dict[str, Any]) -> None: ...


@runtime_checkable
class AuthoritativeHandler(Protocol):
    """A handler that records applied events itself and can say whether one was applied."""

    async def already_applied(self, event: dict[str, Any]) -> bool: ...


class Outcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    POISON = "poison"
    IGNORED = "ignored"


@dataclass(frozen=True)
class ConsumerSettings:
    bootstrap_servers: str
    group_id: str
    topics: tuple[str, ...]
    client_id: str = "uc-edge-consumer"
    # Must cover the redelivery window: 24-72 h (checked).
    idempotency_ttl_seconds: float = 48 * 3600.0
    # Prefix of the idempotency keys; defaults to the group id so two groups never share claims.
    idempotency_namespace: str | None = None
    max_records: int = 500
    poll_timeout_ms: int = 1000
    retry_initial_seconds: float = 0.2
    retry_max_seconds: float = 30.0

    def __post_init__(self) -> None:
        check_idempotency_ttl(self.idempotency_ttl_seconds)
        if not self.topics:
            raise ValueError("a consumer needs at least one topic")
        if self.max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {self.max_records}")

    @property
    def namespace(self) -> str:
        return self.idempotency_namespace or self.group_id


@dataclass
class ConsumerMetrics:
    registry: CollectorRegistry = field(default=REGISTRY)

    def __post_init__(self) -> None:
        self.events = Counter(
            "uc_consumer_events",
            "Events seen by a consumer, by outcome (processed, duplicate, poison, ignored).",
            ["group", "outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "uc_consumer_retries",
            "Handler or store failures retried with backoff.",
            ["group", "reason"],
            registry=self.registry,
        )


class EventConsumer:
    def __init__(
        self,
        settings: ConsumerSettings,
        handler: EventHandler,
        idempotency: IdempotencyKeys,
        *,
        metrics: ConsumerMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._handler = handler
        self._keys = idempotency
        self._metrics = metrics or _default_metrics()
        self._rng = rng or random.Random()
        self.counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    # --- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until cancelled; a broker outage is waited out with backoff."""
        backoff = Backoff(self.settings.retry_initial_seconds, self.settings.retry_max_seconds, self._rng)
        while True:
            consumer = self._make_kafka_consumer()
            try:
                await consumer.start()
            except (KafkaError, OSError) as exc:
                await _stop_quietly(consumer)
                delay = backoff.next_delay()
                log.warning(
                    "consumer cannot reach Kafka; retrying",
                    group=self.settings.group_id,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            try:
                await self._consume(consumer)
            finally:
                await _stop_quietly(consumer)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(
                timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_records
            )
            if not batch:
                continue
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for partition, records in batch.items():
                for record in records:
                    await self.process(record)
                offsets[partition] = OffsetAndMetadata(records[-1].offset + 1, "")
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:
                # A rebalance took the partitions: their new owner replays from the last commit and the
                # idempotency keys drop what this consumer already handled.
                log.warning("offset commit failed", group=self.settings.group_id, error=repr(exc))

    def _make_kafka_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            *s.topics,
            bootstrap_servers=s.bootstrap_servers,
            group_id=s.group_id,
            client_id=s.client_id,
            enable_auto_commit=False,
            # Tansu's end offsets are unreliable, and a new group must not miss what was published before
            # it first joined: always start from the beginning and let deduplication absorb replays.
            auto_offset_reset="earliest",
        )

    # --- one record ------------------------------------------------------------------------------

    async def process(self, record: ConsumerRecord[Any, Any]) -> Outcome:
        """Validate, deduplicate and handle one record; returns what happened to it."""
        outcome = await self._process(record)
        self.counts[outcome] += 1
        self._metrics.events.labels(self.settings.group_id, outcome.value).inc()
        return outcome

    async def _process(self, record: ConsumerRecord[Any, Any]) -> Outcome:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            event = parse_event(record.value if record.value is not None else b"")
        except EventValidationError as exc:
            log.error("poison message skipped", group=self.settings.group_id, error=str(exc), **where)
            return Outcome.POISON
        if event["type"] not in self._handler.event_types:
            return Outcome.IGNORED
        key = f"{self.settings.namespace}:{event['event_id']}"
        first_time = await self._retrying("idempotency store", STORE_ERRORS, self._claim, key)
        if not first_time and not await self._claimed_but_unapplied(event):
            return Outcome.DUPLICATE
        try:
            await self._retrying("handler", self._handler.transient_errors, self._handler.handle, event)
        except asyncio.CancelledError:
            # Stopped mid-event: forget the claim so the redelivery is handled, not skipped.
            with contextlib.suppress(*STORE_ERRORS):
                await asyncio.shield(self._keys.release(key))
            raise
        return Outcome.PROCESSED

    async def _claim(self, key: str) -> bool:
        return await self._keys.claim(key, self.settings.idempotency_ttl_seconds)

    async def _claimed_but_unapplied(self, event: dict[str, Any]) -> bool:
        if not isinstance(self._handler, AuthoritativeHandler):
            return False
        applied = await self._retrying(
            "handler", self._handler.transient_errors, self._handler.already_applied, event
        )
        if not applied:
            log.warning(
                "event claimed but never applied (a consumer died mid-event); applying it now",
                group=self.settings.group_id,
                event_id=event["event_id"],
            )
        return not applied

    async def _retrying(
        self, what: str, transient: Iterable[type[BaseException]], func: Any, arg: Any
    ) -> Any:
        """``await func(arg)``, retried with jittered backoff while it raises one of ``transient``."""
        transient_errors = tuple(transient)
        backoff = Backoff(self.settings.retry_initial_seconds, self.settings.retry_max_seconds, self._rng)
        while True:
            try:
                return await func(arg)
            except transient_errors as exc:
                delay = backoff.next_delay()
                self._metrics.retries.labels(self.settings.group_id, type(exc).__name__).inc()
                log.warning(
                    f"{what} failed; retrying",
                    group=self.settings.group_id,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 3),
                    attempt=backoff.failures,
                )
                await asyncio.sleep(delay)


_metrics_singleton: ConsumerMetrics | None = None


def _default_metrics() -> ConsumerMetrics:
    global _metrics_singleton
    if _metrics_singleton is None:
        _metrics_singleton = ConsumerMetrics()
    return _metrics_singleton


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    with contextlib.suppress(KafkaError, OSError):
        await consumer.stop()
