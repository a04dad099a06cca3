"""A shared aiokafka producer for the outbox relays: started lazily, restarted after it fails.

Sends are pipelined (``send()`` enqueues, the futures are awaited afterwards, in order): one
``send_and_wait`` at a time runs at ~160 msg/s on Tansu.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import murmur2

log = logging.getLogger(__name__)


class PublisherUnavailable(Exception):
    """The producer could not connect to the brokers."""


class NotAttempted(Exception):
    """A message left unsent because an earlier message of its key failed."""


# Failures that concern one message, not the broker: retrying the batch now would fail the same way.
MESSAGE_REJECTIONS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    InvalidTopicError,
    ValueError,
    TypeError,
)


class MemoizedKeyPartitioner:
    """aiokafka's ``DefaultPartitioner`` (the Java client's murmur2 placement) with the hash kept per key.

    aiokafka hashes in pure Python, ~20 µs per message, and every event of a call carries the same key
    (the call id), so each key is hashed once instead of ~13 times. Only the hash is kept: the partition is
    still taken from the partition list of each send, so a topic that grows partitions is handled as
    aiokafka does. The table is emptied when it reaches ``max_keys`` (live calls fit many times over; a
    flush costs one hash per key afterwards), which bounds its memory.
    """

    def __init__(self, max_keys: int = 8192) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.max_keys = max_keys
        self._positive_hash_by_key: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        positive_hash = self._positive_hash_by_key.get(key)
        if positive_hash is None:
            if len(self._positive_hash_by_key) >= self.max_keys:
                self._positive_hash_by_key.clear()
            positive_hash = murmur2(key) & 0x7FFFFFFF
            self._positive_hash_by_key[key] = positive_hash
        return all_partitions[positive_hash % len(all_partitions)]


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class ProducerSettings:
    bootstrap_servers: str
    # Off for Tansu (it fails idempotent producers at start); on for a real Kafka cluster.
    enable_idempotence: bool = False
    client_id: str = "uc-edge-outbox"
    linger_ms: int = 5
    max_batch_size: int = 256 * 1024
    max_request_size: int = 1024 * 1024
    compression_type: str | None = None
    request_timeout_ms: int = 15_000


class KafkaPublisher:
    def __init__(self, settings: ProducerSettings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                s = self.settings
                producer = AIOKafkaProducer(
                    bootstrap_servers=s.bootstrap_servers,
                    client_id=s.client_id,
                    acks="all",
                    enable_idempotence=s.enable_idempotence,
                    linger_ms=s.linger_ms,
                    max_batch_size=s.max_batch_size,
                    max_request_size=s.max_request_size,
                    compression_type=s.compression_type,
                    request_timeout_ms=s.request_timeout_ms,
                    # Same placement as aiokafka's default, so keys keep their partitions across versions.
                    partitioner=MemoizedKeyPartitioner(),
                )
                try:
                    await producer.start()
                except (KafkaError, OSError) as exc:
                    await _stop_quietly(producer)
                    raise PublisherUnavailable(_start_failure(s, exc)) from exc
                self._producer = producer
            return self._producer

    async def send_in_order(self, messages: Sequence[OutboundMessage]) -> list[BaseException | None]:
        """Publish ``messages`` pipelined; one outcome per message (``None`` = acknowledged).

        A message the broker or client rejects for itself (too large, bad topic name) fails its key: later
        messages of that key are not sent, so nothing overtakes it. A broker that cannot be reached stops
        the whole batch (each further send would only wait for the same timeout).
        """
        producer = await self._started()
        pending: list[asyncio.Future[object] | BaseException] = []
        failed_keys: dict[bytes, BaseException] = {}
        unreachable: BaseException | None = None
        for message in messages:
            if unreachable is not None:
                pending.append(unreachable)
                continue
            if message.key in failed_keys:
                pending.append(NotAttempted(f"an earlier message of key {message.key!r} failed"))
                continue
            try:
                pending.append(
                    await producer.send(
                        message.topic, value=message.value, key=message.key, headers=list(message.headers)
                    )
                )
            except MESSAGE_REJECTIONS as exc:
                failed_keys[message.key] = exc
                pending.append(exc)
            except (KafkaError, OSError) as exc:
                unreachable = exc
                pending.append(exc)
        outcomes: list[BaseException | None] = []
        for item in pending:
            if isinstance(item, BaseException):
                outcomes.append(item)
                continue
            try:
                await item
                outcomes.append(None)
            except (KafkaError, OSError) as exc:
                outcomes.append(exc)
        return outcomes

    async def reset(self) -> None:
        """Drop the producer (after errors); the next send starts a fresh one."""
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)

    async def close(self) -> None:
        await self.reset()


def _start_failure(settings: ProducerSettings, error: BaseException) -> str:
    reason = f"{type(error).__name__}: {error}"
    if settings.enable_idempotence and not isinstance(error, KafkaConnectionError | OSError):
        # Brokers without idempotent producers (Tansu) fail InitProducerId with an unhelpful error.
        return (
            f"Kafka at {settings.bootstrap_servers} refused the idempotent producer ({reason}); "
            "disable idempotence (UC_EDGE_KAFKA_IDEMPOTENCE=false) for brokers without it, such as Tansu"
        )
    return f"cannot reach Kafka at {settings.bootstrap_servers}: {reason}"


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await producer.stop()
    except (KafkaError, OSError) as exc:
        log.debug("stopping a failed Kafka producer raised %r", exc)
