"""The outbox relay: publishes the rows of one domain database's ``outbox`` table to Kafka.

One relay task runs per domain database (``run_outbox_relays``); several nodes may run relays on the same
databases at once. A cycle claims a batch under a lease (``claimed_by``/``claimed_until``, with
``FOR UPDATE SKIP LOCKED``), publishes it pipelined with ``acks='all'``, and marks the acknowledged rows
sent. A relay that dies mid-batch leaves leased rows that any relay reclaims once the lease runs out; rows
published but not yet marked are then published again (at-least-once: consumers deduplicate by event id).

A row holds the events one writing transaction stored, in order (``events``, with their distinct
``partition_keys``): the relay claims, leases and deletes rows, and publishes each event as a message.

Order per key: the events of a key are published in row ``id`` order, and in their order within a row. The
claim skips any row sharing a key with an earlier unsent row outside the batch (see :func:`claimable`), so
two relays never hold events of one key at the same time; after a failed send only the acknowledged prefix
of each key counts as sent, and a row sent in part keeps the events still to publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
import orjson
import structlog
from aiokafka.errors import KafkaError

from storage.kafka.backoff import Backoff
from storage.kafka.metrics import RelayMetrics
from storage.kafka.publisher import (
    MESSAGE_REJECTIONS,
    KafkaPublisher,
    NotAttempted,
    OutboundMessage,
    ProducerSettings,
    PublisherUnavailable,
)
from storage.postgres.connect import connect, create_pool
from storage.postgres.errors import DatabaseUnavailable
from storage.postgres.sql import load_queries

log = structlog.get_logger(__name__)

SQL = load_queries(Path(__file__).resolve().parent / "sql" / "outbox.sql")
NOTIFY_CHANNEL = "uc_outbox"

# Session settings of the relay's pool, sent when each connection starts (no round trip, no SET to undo).
# PostgreSQL switches a prepared statement to a generic plan after five runs and keeps that plan until the
# table is analysed again; planned while the outbox was nearly empty, it scans the whole table (sent rows
# included) per claim or per marked row, seconds to minutes a batch on a full one. Planning each run
# instead costs well under a millisecond and follows the table's real size.
#
# JIT off: the claim turns nested loops off (sql/outbox.sql), which adds the planner's "disabled" cost to
# any plan that must still use one, and a cost that high makes PostgreSQL JIT-compile the query. A first
# claim_ids that split the rows' events with a lateral function scan (a nested loop by nature) spent
# 70-130 ms per claim of ~1,000 events compiling, where running it took ~10 ms. No relay statement is
# long enough for JIT to pay.
RELAY_SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan", "jit": "off"}

# Errors a relay cycle survives by backing off: the database or the broker is away or refused a request.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    KafkaError,
    PublisherUnavailable,
    DatabaseUnavailable,
)


# A batch whose publish (every message acknowledged) takes longer than this is logged.
SLOW_PUBLISH_SECONDS = 5.0


@dataclass(frozen=True)
class RelayConfig:
    domain: str
    dsn: str
    # Written to claimed_by: names the node and process holding a lease (unique per relay by default).
    relay_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )
    # Events a claim takes at most (whole rows: the row that reaches it is taken entire, so at least one),
    # from at most claim_rows rows (each the events of one transaction: one call's, or a group commit's).
    batch_size: int = 1000
    claim_rows: int = 200
    lease_seconds: float = 60.0
    poll_interval_seconds: float = 1.0
    backoff_initial_seconds: float = 0.2
    backoff_max_seconds: float = 30.0
    metrics_interval_seconds: float = 5.0
    # Sent rows are history only (Kafka holds the events; consumers deduplicate by event_id). 0 (the
    # default) deletes a row as soon as Kafka acknowledges it; more keeps it marked sent that long (the
    # purge deletes it later: a second write of every row, and at 300 calls/s an hour is ~14 M rows of
    # ~0.6 kB in the table every call inserts into); None keeps them forever.
    sent_retention_seconds: float | None = 0.0
    purge_interval_seconds: float = 60.0
    # Where the server runs without autovacuum, the relay vacuums its outbox itself this often: every row
    # is inserted, updated when claimed (and when marked sent, with a retention) and deleted, and the dead
    # versions left in the unsent-row indexes made claims take tens of seconds on a development machine
    # (autovacuum on: never).
    vacuum_interval_seconds: float = 600.0
    # One DELETE removes at most purge_chunk_rows (short locks, bounded WAL per statement); a purge round
    # repeats it until a chunk comes back short, up to purge_max_chunks, and then continues at the next
    # housekeeping instead of after the interval: it keeps up with any insert rate the table can take.
    purge_chunk_rows: int = 10_000
    purge_max_chunks: int = 100
    # Batches published concurrently by one relay (1: strictly one after another).
    batches_in_flight: int = 2
    # A row the broker refuses (e.g. too large) is retried this much later; only its key waits.
    rejected_retry_seconds: float = 60.0
    # After a NOTIFY wakes the relay it waits this long before claiming, so that the commits of the next
    # few tens of milliseconds share its claim, publish and mark (each cycle costs the same round trips
    # and CPU however few rows it carries: under load one cycle per linger instead of one per
    # commit; at 200 calls/s, ~2,600 events/s, a 50 ms linger gathers ~130 rows where 10 ms gathered ~26).
    # Adds at most this much to the commit -> Kafka latency, which nobody waits on: events are
    # asynchronous (billing, analytics and other consumers), never on a call's signalling path. 0 claims
    # at once.
    wake_linger_seconds: float = 0.05

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.claim_rows < 1:
            raise ValueError(f"claim_rows must be >= 1, got {self.claim_rows}")
        if self.batches_in_flight < 1:
            raise ValueError(f"batches_in_flight must be >= 1, got {self.batches_in_flight}")
        if self.wake_linger_seconds < 0:
            raise ValueError(f"wake_linger_seconds must be >= 0, got {self.wake_linger_seconds}")
        if self.poll_interval_seconds <= 0:
            raise ValueError(f"poll_interval_seconds must be > 0, got {self.poll_interval_seconds}")
        # The lease must outlive a publish attempt, or a slow relay's rows would be taken over mid-send.
        if self.lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {self.lease_seconds}")


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    event_id: str
    topic: str
    partition_key: str
    event_type: str
    envelope: str  # its JSON as the writer printed it (orjson, compact): published as is

    def message(self) -> OutboundMessage:
        return OutboundMessage(
            topic=self.topic,
            key=self.partition_key.encode(),
            value=self.envelope.encode(),
            headers=(("event_type", self.event_type.encode()), ("event_id", self.event_id.encode())),
        )


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    id: int
    events: tuple[OutboxEvent, ...]

    @property
    def partition_keys(self) -> set[str]:
        return {event.partition_key for event in self.events}


def events_json(events: Sequence[OutboxEvent]) -> str:
    """``events`` in the outbox's ``events`` form (what ``release_unsent`` writes back), envelopes as is."""
    return orjson.dumps(
        [(e.event_id, e.topic, e.partition_key, e.event_type, orjson.Fragment(e.envelope)) for e in events]
    ).decode()


class ClaimCandidate(NamedTuple):
    id: int
    partition_keys: Sequence[str]
    free: bool  # unsent, unleased and not locked: the claim may take it; else held by someone else


def claimable(rows: Sequence[ClaimCandidate]) -> list[int]:
    """The ids to lease among ``rows`` (the free candidates of a claim and the held rows below them).

    A free row is taken only if no earlier row it shares a key with stays behind: a held row, or a free
    row not taken (it may hold events of a key that a later row's events must follow). A row sent in part
    holds the unsent events of its keys, a rejected one waits, and the blocking passes on through the keys
    of every row left behind."""
    blocked: set[str] = set()
    taken: list[int] = []
    for row in sorted(rows, key=_by_id):
        if row.free and blocked.isdisjoint(row.partition_keys):
            taken.append(row.id)
        else:
            blocked.update(row.partition_keys)
    return taken


# Called with the published rows before they are marked sent (tests use it to simulate a crash there).
AfterPublishHook = Callable[[Sequence[ClaimedRow]], Awaitable[None]]


@dataclass(slots=True)
class Settlement:
    """What a batch's outcomes (one per event, in order) make of its rows."""

    sent: list[ClaimedRow] = field(default_factory=list)  # every event acknowledged, none behind a failure
    # (row, events acknowledged, events to publish again, their outcomes): a row not wholly sent
    unsent: list[tuple[ClaimedRow, list[OutboxEvent], list[OutboxEvent], list[BaseException | None]]] = field(
        default_factory=list
    )

    @property
    def events_sent(self) -> int:
        return sum(len(row.events) for row in self.sent) + sum(len(done) for _, done, _, _ in self.unsent)


def settle(rows: Sequence[ClaimedRow], outcomes: Sequence[BaseException | None]) -> Settlement:
    """Sort the events into sent and to publish again: an event counts as sent only when it and every
    earlier event of its key in the batch were acknowledged (a later one that reached Kafka after an
    earlier one failed is published again after it: at-least-once, in order)."""
    if len(outcomes) != sum(len(row.events) for row in rows):
        raise ValueError(f"{len(outcomes)} outcomes for {sum(len(row.events) for row in rows)} events")
    failed_keys: set[str] = set()
    settlement = Settlement()
    position = 0
    for row in rows:
        done: list[OutboxEvent] = []
        again: list[OutboxEvent] = []
        why: list[BaseException | None] = []
        for event in row.events:
            outcome = outcomes[position]
            position += 1
            if outcome is None and event.partition_key not in failed_keys:
                done.append(event)
            else:
                failed_keys.add(event.partition_key)
                again.append(event)
                why.append(outcome)
        if again:
            settlement.unsent.append((row, done, again, why))
        else:
            settlement.sent.append(row)
    return settlement


class OutboxRelay:
    def __init__(
        self,
        config: RelayConfig,
        publisher: KafkaPublisher,
        *,
        metrics: RelayMetrics | None = None,
        after_publish: AfterPublishHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.publisher = publisher
        self._metrics = metrics or RelayMetrics.default()
        self.after_publish = after_publish
        self._backoff = Backoff(config.backoff_initial_seconds, config.backoff_max_seconds, rng)
        self._wakeup = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._listener: asyncpg.Connection | None = None
        self._next_metrics_at = 0.0
        self._next_purge_at = 0.0
        self._next_vacuum_at = 0.0
        self._autovacuum: bool | None = None  # read from the server at the first housekeeping
        self._vacuum_task: asyncio.Task[None] | None = None
        self._purge_task: asyncio.Task[int] | None = None
        self.published_total = 0

    @property
    def keeps_no_history(self) -> bool:
        """Acknowledged rows are deleted at once (``sent_retention_seconds == 0``), not marked sent."""
        return self.config.sent_retention_seconds == 0

    # --- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until cancelled; survives database and broker outages by backing off."""
        try:
            while True:
                try:
                    await self._ensure_connected()
                    await self._relay_wakeup()
                    await self._housekeeping()
                    self._backoff.reset()
                except TRANSIENT_ERRORS as exc:
                    delay = self._backoff.next_delay()
                    self._metrics.failures.labels(self.config.domain, type(exc).__name__).inc()
                    log.warning(
                        "outbox relay cycle failed; retrying",
                        domain=self.config.domain,
                        relay_id=self.config.relay_id,
                        error=f"{type(exc).__name__}: {exc}",
                        retry_in_s=round(delay, 3),
                        consecutive_failures=self._backoff.failures,
                    )
                    if isinstance(exc, KafkaError):
                        await self.publisher.reset()
                    await asyncio.sleep(delay)
                    continue
                await self._wait_for_work()
        finally:
            await self.close()

    async def _relay_wakeup(self) -> int:
        """One wake-up's work: a batch, or when the batch shows a backlog a drain until one comes back
        short.

        A short batch took all that was claimable. Rows committed since, and rows of keys that this batch
        held back, are left to the next wake-up (armed here, a ``wake_linger_seconds`` away) instead of
        being chased at once: under steady load chasing claims every few milliseconds, a handful of rows
        each, and every claim costs the same round trips and CPU however few rows it carries.
        """
        sent, claimed, full = await self._relay_batch()
        if claimed == 0:
            return 0
        if not full:
            self._wakeup.set()
            return sent
        return sent + await self.drain(until_short=True)

    async def drain(self, *, until_short: bool = False) -> int:
        """Relay batches until nothing is claimable; returns the number of events sent.

        Up to ``batches_in_flight`` batches are published at once (claiming and marking overlap the
        broker's acknowledgements). Order per key still holds: a batch holds rows of a key only when no
        other batch holds earlier ones, since those are leased and the claim skips keys behind a lease.

        ``until_short``: stop at the first batch that is not full (the backlog is gone) and leave the rest
        to the next wake-up. Draining until a claim finds nothing never ends under steady load (commits
        keep coming): py-spy on b2bua-cps at 450 calls/s found the relay draining all along, claiming as
        soon as a batch was acknowledged instead of once per ``wake_linger_seconds``. (Its CPU share stayed
        ~8 % either way: most of it is per event, not per claim; the database is spared the claims.)
        """
        # A failing worker asks the others to stop after their current batch instead of cancelling them:
        # a worker cancelled while its claim commits would leave rows leased to us that nobody releases,
        # holding that key back until the lease expires.
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(self._drain_one_by_one(stop, until_short))
            for _ in range(self.config.batches_in_flight)
        ]
        try:
            results = await asyncio.gather(*workers, return_exceptions=True)
        except asyncio.CancelledError:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(r for r in results if isinstance(r, int))

    async def _drain_one_by_one(self, stop: asyncio.Event, until_short: bool) -> int:
        total = 0
        try:
            while not stop.is_set():
                sent, claimed, full = await self._relay_batch()
                total += sent
                if claimed == 0:
                    break
                if until_short and not full:
                    stop.set()  # the other workers stop after their current batch
                    self._wakeup.set()  # what came meanwhile goes at the next wake-up, a linger away
                    break
        except BaseException:
            stop.set()
            raise
        return total

    async def relay_batch(self) -> tuple[int, int]:
        """Claim, publish and settle one batch: ``(events sent, events claimed)``.

        When the broker is unreachable the unsent rows are released and the error raised (the caller
        backs off). Events the broker rejects (too large…) wait ``rejected_retry_seconds`` in their row,
        blocking only the keys that row still holds, and the relay goes on with the other keys.
        """
        sent, claimed, _ = await self._relay_batch()
        return sent, claimed

    async def _relay_batch(self) -> tuple[int, int, bool]:
        """:meth:`relay_batch`, and whether the claim was full (more may be waiting)."""
        pool = await self._ensure_pool()
        rows, full = await self._claim_or_release(pool)
        if not rows:
            return 0, 0, full
        claimed = sum(len(row.events) for row in rows)
        sending_since = time.monotonic()
        try:
            outcomes = await self.publisher.send_in_order(
                [event.message() for row in rows for event in row.events]
            )
        except PublisherUnavailable as exc:
            # Shielded: a relay stopped while it hands the rows back still hands them all back.
            await asyncio.shield(self._release(pool, [(row, str(exc), None) for row in rows], retry_after=0))
            raise
        except asyncio.CancelledError:
            # Stopping mid-send: hand the rows back now rather than at lease expiry. Some may have reached
            # Kafka already; they are published again (at-least-once).
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await asyncio.shield(self._release(pool, [(row, None, None) for row in rows], retry_after=0))
            raise
        sending = time.monotonic() - sending_since
        if sending > SLOW_PUBLISH_SECONDS:
            # Events wait on the broker: operators grep this (and the lag gauge) to tell a slow Kafka
            # from a slow claim.
            log.warning(
                "outbox batch slow to publish",
                domain=self.config.domain,
                relay_id=self.config.relay_id,
                rows=len(rows),
                events=claimed,
                seconds=round(sending, 3),
                topics=sorted({event.topic for row in rows for event in row.events}),
            )
        settlement = settle(rows, outcomes)
        if self.after_publish is not None:
            await self.after_publish(settlement.sent)
        if settlement.sent:
            await pool.execute(
                SQL["delete_sent" if self.keeps_no_history else "mark_sent"],
                [row.id for row in settlement.sent],
            )
            # Counted before _handle_unsent, which raises after a broker error.
            self._count_published(sum(len(row.events) for row in settlement.sent))
        if settlement.unsent:
            await self._handle_unsent(pool, settlement)  # counts the parts sent once their rows are rewritten
        return settlement.events_sent, claimed, full

    def _count_published(self, events: int) -> None:
        if events:
            self._metrics.published.labels(self.config.domain).inc(events)
            self.published_total += events

    async def _claim_or_release(self, pool: asyncpg.Pool) -> tuple[list[ClaimedRow], bool]:
        """:meth:`claim`, finished even when the relay is stopped meanwhile: a claim cancelled while its
        COMMIT is on the wire may have leased the rows, and nobody would hand them back before the lease
        expires. Stopping waits for the claim and releases what it took."""
        claim = asyncio.ensure_future(self._claim(pool))
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                rows, _ = await claim
                if rows:
                    await self._release(pool, [(row, None, None) for row in rows], retry_after=0)
            raise

    async def _handle_unsent(self, pool: asyncpg.Pool, settlement: Settlement) -> None:
        """Hand back the rows not wholly sent, each keeping only the events still to publish.

        A broker error (not a rejection of the message itself) hands them back at once and is raised: the
        cycle backs off. Otherwise they were rejected (or not attempted behind a rejection of their key)
        and wait ``rejected_retry_seconds``."""
        errors = [outcome for *_, why in settlement.unsent for outcome in why if outcome is not None]
        broker_errors = [e for e in errors if not isinstance(e, (*MESSAGE_REJECTIONS, NotAttempted))]
        released: list[tuple[ClaimedRow, str | None, str | None]] = []
        for row, done, again, why in settlement.unsent:
            first = next((_describe(outcome) for outcome in why if outcome is not None), None)
            released.append((row, first, events_json(again) if done else None))
            if done and not self.keeps_no_history:
                # The sent part stays in the history as a row of its own; the row keeps the rest.
                await pool.execute(SQL["insert_sent_part"], events_json(done), row.id)
        parts_sent = sum(len(done) for _, done, _, _ in settlement.unsent)
        if broker_errors:
            await self._release(pool, released, retry_after=0)
            self._count_published(parts_sent)
            first_error = broker_errors[0]
            raise (
                first_error
                if isinstance(first_error, TRANSIENT_ERRORS)
                else KafkaError(_describe(first_error))
            )
        await self._release(pool, released, retry_after=self.config.rejected_retry_seconds)
        self._count_published(parts_sent)
        for row, _, again, why in settlement.unsent:
            for event, outcome in zip(again, why, strict=True):
                if isinstance(outcome, MESSAGE_REJECTIONS):
                    self._metrics.failures.labels(self.config.domain, type(outcome).__name__).inc()
                    log.error(
                        "outbox event rejected by Kafka; its key waits",
                        domain=self.config.domain,
                        outbox_id=row.id,
                        event_id=event.event_id,
                        event_type=event.event_type,
                        partition_key=event.partition_key,
                        error=_describe(outcome),
                        retry_in_s=self.config.rejected_retry_seconds,
                    )

    def wake(self) -> None:
        self._wakeup.set()

    async def close(self) -> None:
        """Close the database connections (the publisher may be shared: its owner closes it)."""
        for task in (self._vacuum_task, self._purge_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._vacuum_task = self._purge_task = None
        listener, self._listener = self._listener, None
        pool, self._pool = self._pool, None
        if listener is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await asyncio.wait_for(listener.close(), 5)
        if pool is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await asyncio.wait_for(pool.close(), 5)

    # --- database --------------------------------------------------------------------------------

    async def _ensure_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:  # concurrent batches must not each open (and leak) a pool
            if self._pool is None:
                self._pool = await create_pool(
                    with_server_settings(self.config.dsn, RELAY_SERVER_SETTINGS),
                    min_size=1,
                    max_size=1 + self.config.batches_in_flight,
                )
        return self._pool

    async def _ensure_connected(self) -> None:
        await self._ensure_pool()
        if self._listener is None or self._listener.is_closed():
            # LISTEN needs a connection of its own, held for the relay's life; polling covers its gaps.
            self._listener = await connect(self.config.dsn)
            await self._listener.add_listener(NOTIFY_CHANNEL, self._on_notify)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        # NOTIFY is per database, so any payload on this connection concerns this relay's domain.
        self._wakeup.set()

    async def claim(self, pool: asyncpg.Pool | None = None) -> list[ClaimedRow]:
        """Lease the next publishable rows (``claim_candidates`` in ``sql/outbox.sql``, then
        :func:`claimable`), in id order, their events in order."""
        rows, _ = await self._claim(pool or await self._ensure_pool())
        return rows

    async def _claim(self, pool: asyncpg.Pool) -> tuple[list[ClaimedRow], bool]:
        """:meth:`claim`, and whether it was full: the event budget reached, or cut short at
        ``claim_rows`` rows (many small ones), so more may be waiting."""
        config = self.config
        async with pool.acquire() as conn:
            # Four round trips (BEGIN with the claim lock, the candidates, the lease, COMMIT): the
            # transaction is opened by hand because conn.transaction() spends a round trip on BEGIN alone.
            try:
                await conn.execute(SQL["begin_serialized_claim"])
                found = await conn.fetch(SQL["claim_candidates"], config.claim_rows, config.batch_size)
                candidates = [ClaimCandidate(*record) for record in found]
                ids = claimable(candidates)
                cut_short = sum(c.free for c in candidates) >= config.claim_rows
                records = (
                    await conn.fetch(SQL["claim_ids"], config.relay_id, ids, config.lease_seconds)
                    if ids
                    else []
                )
            except BaseException:
                if conn.is_in_transaction():
                    with contextlib.suppress(*TRANSIENT_ERRORS):
                        await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
        rows = [
            ClaimedRow(
                row_id,
                tuple(
                    OutboxEvent(event_id, topic, key, event_type, orjson.dumps(envelope).decode())
                    for event_id, topic, key, event_type, envelope in orjson.loads(events)
                ),
            )
            for row_id, events in records
        ]
        rows.sort(key=_by_id)  # UPDATE ... RETURNING has no defined order
        full = cut_short or sum(len(row.events) for row in rows) >= config.batch_size
        return rows, full

    async def _release(
        self,
        pool: asyncpg.Pool,
        rows: Sequence[tuple[ClaimedRow, str | None, str | None]],
        *,
        retry_after: float,
    ) -> None:
        """Hand ``(row, error, events still to publish or None for all)`` back to any relay."""
        await pool.execute(
            SQL["release_unsent"],
            self.config.relay_id,
            [row.id for row, _, _ in rows],
            [error for _, error, _ in rows],
            retry_after,
            [events for _, _, events in rows],
        )

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        pool = await self._ensure_pool()
        if now >= self._next_metrics_at:
            self._next_metrics_at = now + self.config.metrics_interval_seconds
            await self.refresh_metrics()
        if (
            self.config.sent_retention_seconds is not None
            and not self.keeps_no_history
            and now >= self._next_purge_at
            and self._purge_task is None
        ):
            # In a task of its own, like the vacuum: a first round on a large outbox takes seconds, and
            # publishing goes on meanwhile (the purge deletes only sent rows, the claims read unsent ones).
            self._next_purge_at = now + self.config.purge_interval_seconds
            self._purge_task = asyncio.ensure_future(self.purge_sent())
            self._purge_task.add_done_callback(self._purge_done)
        if self._autovacuum is None:
            self._autovacuum = await pool.fetchval("SELECT current_setting('autovacuum') = 'on'")
        if not self._autovacuum and now >= self._next_vacuum_at and self._vacuum_task is None:
            self._next_vacuum_at = now + self.config.vacuum_interval_seconds
            self._vacuum_task = asyncio.ensure_future(self.vacuum_outbox())
            self._vacuum_task.add_done_callback(self._vacuum_done)

    async def vacuum_outbox(self) -> None:
        """``VACUUM (ANALYZE) outbox`` on a connection of its own (it cannot run in a transaction, and it
        takes seconds on a large outbox: the relay goes on meanwhile; it blocks no insert or claim)."""
        conn = await connect(self.config.dsn)
        try:
            await conn.execute("VACUUM (ANALYZE) outbox")
        finally:
            await conn.close()

    async def purge_sent(self) -> int:
        """Delete the sent rows older than the retention, chunk by chunk; returns how many went.

        A round stops at the first short chunk, or after ``purge_max_chunks`` chunks: then the next
        housekeeping goes on with the rest. (One chunk per interval, as before, removed 10,000 rows every
        10 minutes, ~17 a second: far behind a node writing a dozen events per call.)"""
        retention = self.config.sent_retention_seconds
        if retention is None or self.keeps_no_history:
            return 0
        pool = await self._ensure_pool()
        chunk = self.config.purge_chunk_rows
        started = time.monotonic()
        deleted = chunks = 0
        while chunks < self.config.purge_max_chunks:
            status = await pool.execute(SQL["purge_sent"], retention, chunk)
            gone = int(status.rsplit(" ", 1)[-1])  # "DELETE <rows>"
            deleted += gone
            chunks += 1
            if gone < chunk:
                break
        else:
            self._next_purge_at = 0.0  # more to delete: at the next housekeeping, not an interval away
        if deleted:
            self._metrics.purged.labels(self.config.domain).inc(deleted)
            log.info(
                "outbox sent rows purged",
                domain=self.config.domain,
                rows=deleted,
                chunks=chunks,
                seconds=round(time.monotonic() - started, 3),
                more=chunks >= self.config.purge_max_chunks,
            )
        return deleted

    def _purge_done(self, task: asyncio.Task[int]) -> None:
        self._purge_task = None
        if not task.cancelled() and task.exception() is not None:  # tried again an interval later
            log.warning(
                "outbox purge failed",
                domain=self.config.domain,
                relay_id=self.config.relay_id,
                error=f"{type(task.exception()).__name__}: {task.exception()}",
            )

    def _vacuum_done(self, task: asyncio.Task[None]) -> None:
        self._vacuum_task = None
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "outbox vacuum failed",
                domain=self.config.domain,
                relay_id=self.config.relay_id,
                error=f"{type(task.exception()).__name__}: {task.exception()}",
            )

    async def refresh_metrics(self) -> tuple[int, float]:
        """Update backlog and lag gauges; returns ``(unsent events, age of oldest unsent in s)``."""
        pool = await self._ensure_pool()
        record = await pool.fetchrow(SQL["backlog"])
        assert record is not None
        unsent, age = int(record["unsent"]), float(record["oldest_age_seconds"])
        self._metrics.backlog.labels(self.config.domain).set(unsent)
        self._metrics.lag_seconds.labels(self.config.domain).set(age)
        return unsent, age

    async def _wait_for_work(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), self.config.poll_interval_seconds)
        if self._wakeup.is_set() and self.config.wake_linger_seconds > 0:
            await asyncio.sleep(self.config.wake_linger_seconds)  # cleared after: later commits are claimed
        self._wakeup.clear()


_by_id = operator.attrgetter("id")  # claim candidates and claimed rows


def with_server_settings(dsn: str, settings: Mapping[str, str]) -> str:
    """``dsn`` with ``settings`` added as query parameters (asyncpg sends unknown ones as server settings).

    A setting the DSN already names is left as the DSN has it; the rest of the DSN is kept byte for byte."""
    named = {name for name, _ in parse_qsl(urlsplit(dsn).query, keep_blank_values=True)}
    added = urlencode([(name, value) for name, value in settings.items() if name not in named])
    if not added:
        return dsn
    return f"{dsn}{'&' if '?' in dsn else '?'}{added}"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


async def run_outbox_relays(
    domain_dsns: Mapping[str, str],
    producer: ProducerSettings,
    *,
    relay_id: str,
    batch_size: int = 1000,
    lease_seconds: float = 60.0,
    poll_interval_seconds: float = 1.0,
    sent_retention_seconds: float | None = RelayConfig.sent_retention_seconds,
    metrics: RelayMetrics | None = None,
) -> None:
    """Run one relay per domain database (``{"calls": dsn, "cdr": dsn, ...}``) until cancelled."""
    if not domain_dsns:
        raise ValueError("run_outbox_relays needs at least one domain database")
    publisher = KafkaPublisher(producer)
    relays = [
        OutboxRelay(
            RelayConfig(
                domain=domain,
                dsn=dsn,
                relay_id=f"{relay_id}-{domain}",
                batch_size=batch_size,
                lease_seconds=lease_seconds,
                poll_interval_seconds=poll_interval_seconds,
                sent_retention_seconds=sent_retention_seconds,
            ),
            publisher,
            metrics=metrics,
        )
        for domain, dsn in domain_dsns.items()
    ]
    try:
        async with asyncio.TaskGroup() as group:
            for relay in relays:
                group.create_task(relay.run(), name=f"outbox-relay-{relay.config.domain}")
    finally:
        await publisher.close()
