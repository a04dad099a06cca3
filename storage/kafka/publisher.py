"""A shared aiokafka producer for the outbox relays: started lazily, restarted after it fails.

A relay batch goes out as one record batch per partition (``create_batch``/``send_batch``), each message
placed by the producer's own partitioner, so keys keep their partitions and their order. One
``send()`` per message cost ~22 µs of CPU here (a coroutine, a future, a metadata check and a partition
lookup each), the record batches ~15 µs: with ~13 events a call, ~0.1 ms less of a B2BUA call's ~4.4 ms.
(One ``send_and_wait`` at a time ran at ~160 msg/s on Tansu.)
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
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

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


class _Batch:
    """One partition's record batch being filled: which messages it holds, then its delivery future."""

    __slots__ = ("batch", "error", "future", "members", "where")

    def __init__(self, where: tuple[str, int], batch: BatchBuilder) -> None:
        self.where = where
        self.batch = batch
        self.members: list[int] = []
        self.future: asyncio.Future[object] | None = None
        self.error: BaseException | None = None  # the producer refused the batch itself

    def add(self, index: int, message: OutboundMessage, headers: list[tuple[str, bytes]]) -> bool:
        """False when the batch is full (``message`` not added)."""
        if self.batch.append(key=message.key, value=message.value, timestamp=None, headers=headers) is None:
            return False
        self.members.append(index)
        return True

    async def send(self, producer: AIOKafkaProducer) -> _Batch:
        """Hand the batch to the producer. A broker out of reach raises (the caller stops there); any
        other refusal becomes the outcome of every message in it."""
        try:
            self.future = await producer.send_batch(self.batch, self.where[0], partition=self.where[1])
        except (KafkaError, OSError):
            raise
        except Exception as exc:
            self.error = exc
        return self

    async def outcome(self) -> BaseException | None:
        if self.future is None:
            return self.error
        try:
            await self.future
        except (KafkaError, OSError) as exc:
            return exc
        return None


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
        # The producer's partitioner: the batches place each key where a plain send() would.
        self._partitioner = MemoizedKeyPartitioner()

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
                    partitioner=self._partitioner,
                )
                try:
                    await producer.start()
                except (KafkaError, OSError) as exc:
                    await _stop_quietly(producer)
                    raise PublisherUnavailable(_start_failure(s, exc)) from exc
                self._producer = producer
            return self._producer

    async def send_in_order(self, messages: Sequence[OutboundMessage]) -> list[BaseException | None]:
        """Publish ``messages``; one outcome per message (``None`` = acknowledged).

        Messages go into one record batch per partition, in their order, and a full batch is handed to the
        producer before the next is started, so each key's messages reach its partition in order. A message
        the client rejects for itself (larger than ``max_request_size``, a bad topic name) fails its key:
        later messages of that key are not sent, so nothing overtakes it. A broker that cannot be reached
        stops the whole batch (each further send would only wait for the same timeout).
        """
        producer = await self._started()
        outcomes: list[BaseException | None] = [None] * len(messages)
        failed_keys: dict[bytes, BaseException] = {}
        filling: dict[tuple[str, int], _Batch] = {}
        handed: list[_Batch] = []
        partitions: dict[str, list[int]] = {}
        try:
            for index, message in enumerate(messages):
                if message.key in failed_keys:
                    outcomes[index] = NotAttempted(f"an earlier message of key {message.key!r} failed")
                    continue
                try:
                    topic = message.topic
                    known = partitions.get(topic)
                    if known is None:
                        known = partitions[topic] = sorted(await producer.partitions_for(topic))
                    headers = list(message.headers)
                    self._check_size(message, headers)
                    where = (topic, self._partitioner(message.key, known, known))
                    batch = filling.get(where)
                    if batch is not None and batch.add(index, message, headers):
                        continue
                    if batch is not None:  # full: it goes first, in order
                        handed.append(await batch.send(producer))
                        del filling[where]
                        refused = batch.error
                        if refused is not None:  # refused: the later messages of its keys wait too
                            failed_keys.update((messages[member].key, refused) for member in batch.members)
                            if message.key in failed_keys:
                                outcomes[index] = NotAttempted(
                                    f"an earlier message of key {message.key!r} failed"
                                )
                                continue
                    batch = _Batch(where, producer.create_batch())
                    if not batch.add(index, message, headers):
                        raise MessageSizeTooLargeError("the message is larger than a record batch holds")
                    filling[where] = batch
                except MESSAGE_REJECTIONS as exc:
                    failed_keys[message.key] = exc
                    outcomes[index] = exc
            for batch in filling.values():
                handed.append(await batch.send(producer))
        except (KafkaError, OSError) as exc:  # unreachable: what was not handed over fails with it
            sent = {index for batch in handed for index in batch.members}
            for index in range(len(messages)):
                if index not in sent and outcomes[index] is None:
                    outcomes[index] = exc
        for batch in handed:
            error = await batch.outcome()
            if error is not None:
                for index in batch.members:
                    outcomes[index] = error
        return outcomes

    def _check_size(self, message: OutboundMessage, headers: list[tuple[str, bytes]]) -> None:
        """What ``send()`` checks for itself: a message larger than a request can carry."""
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(message.key, message.value, headers)
        if size > self.settings.max_request_size:
            raise MessageSizeTooLargeError(
                f"the message is {size} bytes when serialized, "
                f"more than max_request_size ({self.settings.max_request_size})"
            )

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
