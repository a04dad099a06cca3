"""outbox: events through the transactional outbox to Kafka (PostgreSQL → relay → Tansu/Kafka).

Four phases, each on a fresh ``uc_bench_…`` database (the calls domain's migrations) and a fresh
3-partition topic:

* ``cdr`` — ``PgCdrRepository.record_cdr`` by ``writers`` concurrent writers (rate with the account's
  plan, insert the CDR and its ``cdr.created`` outbox row in one transaction): CDR inserts/s.
* ``insert`` — events written with ``write_outbox`` in transactions of ``txn`` events (a row each): events/s.
* ``drain`` — a backlog of ``backlog`` events published by one relay: events/s from outbox row to Kafka
  acknowledgement (``acks=all``) and marked sent. Target ≥ 5,000 events/s.
* ``steady`` — writers commit ``rate`` events/s for ``duration`` s (``txn`` per transaction, keyed over
  1,000 calls) while the relay runs on LISTEN/NOTIFY and a consumer reads the topic: latency from commit
  to Kafka acknowledgement and to consumer receipt, p50/p99.

Writer, relay and consumer share one event loop (one core), so the figures are lower bounds for a relay
with a core of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import statistics
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from bench.framework import Suite, SuiteContext, SuiteResult, monotonic
from storage.events import EventTopics, EventType, make_event, outbox_entry
from storage.events.examples import example_payload
from storage.kafka.metrics import RelayMetrics
from storage.kafka.outbox_writer import write_outbox
from storage.kafka.publisher import KafkaPublisher, ProducerSettings
from storage.kafka.relay import ClaimedRow, OutboxRelay, RelayConfig
from storage.ports import NewBillingPlan, NewCdr
from storage.postgres.cdr import PgCdrRepository
from storage.postgres.connect import create_pool
from storage.postgres.migrate import migrate

TARGET_EVENTS_PER_SECOND = 5_000.0


@contextlib.asynccontextmanager
async def bench_database(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh ``uc_bench_…`` database migrated as the calls domain (outbox included), dropped after."""
    name = f"uc_bench_{uuid.uuid4().hex[:12]}"
    try:
        await migrate(admin_dsn, {"calls": name})
        yield admin_dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def bench_topics(bootstrap: str) -> AsyncIterator[EventTopics]:
    topics = EventTopics().with_prefix(f"bench-{uuid.uuid4().hex[:8]}-")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1) for t in topics.all()])
        yield topics
    finally:
        with contextlib.suppress(Exception):
            await admin.delete_topics(list(topics.all()))
        await admin.close()


def call_events(count: int, calls: int, rng: random.Random) -> list[dict[str, Any]]:
    payload = example_payload(EventType.CALL_LEG_STATE_CHANGED)
    keys = [str(uuid.uuid4()) for _ in range(calls)]
    return [
        make_event(
            EventType.CALL_LEG_STATE_CHANGED,
            payload=payload,
            call_id=rng.choice(keys),
            correlation_id=str(uuid.uuid4()),
            node_id="bench",
        )
        for _ in range(count)
    ]


@dataclass(frozen=True)
class RelayTuning:
    batch: int
    linger_ms: int
    in_flight: int


def make_relay(dsn: str, bootstrap: str, tuning: RelayTuning, after_publish: Any = None) -> OutboxRelay:
    config = RelayConfig(
        domain="bench",
        dsn=dsn,
        relay_id="bench-relay",
        batch_size=tuning.batch,
        batches_in_flight=tuning.in_flight,
        poll_interval_seconds=0.5,
    )
    return OutboxRelay(
        config,
        KafkaPublisher(ProducerSettings(bootstrap_servers=bootstrap, linger_ms=tuning.linger_ms)),
        metrics=RelayMetrics(CollectorRegistry()),
        after_publish=after_publish,
    )


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def phase_insert(ctx: SuiteContext, dsn: str, topics: EventTopics, count: int, txn: int) -> float:
    entries = [outbox_entry(e, topics) for e in call_events(count, 1000, random.Random(1))]
    task = ctx.task("insert: outbox events", total=count)
    conn = await asyncpg.connect(dsn)
    try:
        start = monotonic()
        for first in range(0, count, txn):
            async with conn.transaction():
                await write_outbox(conn, entries[first : first + txn])
            task.advance(min(txn, count - first))
        elapsed = monotonic() - start
    finally:
        await conn.close()
    return count / elapsed


async def phase_drain(
    ctx: SuiteContext, dsn: str, topics: EventTopics, bootstrap: str, count: int, tuning: RelayTuning
) -> tuple[float, list[tuple[float, float]]]:
    entries = [outbox_entry(e, topics) for e in call_events(count, 1000, random.Random(2))]
    conn = await asyncpg.connect(dsn)
    try:
        # Rows of 130 events: a group commit of ten calls' events (the B2BUA writes ~13 per call).
        for first in range(0, count, 130):
            async with conn.transaction():
                await write_outbox(conn, entries[first : first + 130])
    finally:
        await conn.close()
    task = ctx.task("drain: outbox → Kafka ack", total=count)
    relay = make_relay(dsn, bootstrap, tuning)
    series: list[tuple[float, float]] = []
    try:
        start = monotonic()
        draining = asyncio.create_task(relay.drain())
        last_t, last_n = start, 0
        while not draining.done():
            await asyncio.wait([draining], timeout=0.25)
            now = monotonic()
            series.append((now - start, (relay.published_total - last_n) / (now - last_t)))
            task.advance(relay.published_total - last_n)
            last_t, last_n = now, relay.published_total
        await draining
        elapsed = monotonic() - start
    finally:
        await relay.close()
        await relay.publisher.close()
    return relay.published_total / elapsed, series


async def phase_steady(
    ctx: SuiteContext,
    dsn: str,
    topics: EventTopics,
    bootstrap: str,
    rate: int,
    duration: float,
    txn: int,
    tuning: RelayTuning,
) -> tuple[list[float], list[float], int]:
    committed_at: dict[str, float] = {}
    ack_latency: list[float] = []
    e2e_latency: list[float] = []

    async def on_ack(rows: Sequence[ClaimedRow]) -> None:
        now = monotonic()
        ack_latency.extend(
            now - committed_at[event.event_id]
            for row in rows
            for event in row.events
            if event.event_id in committed_at
        )

    consumer = AIOKafkaConsumer(
        topics.call,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,  # the default 500 ms would dominate the receipt latency
    )
    await consumer.start()
    total = int(rate * duration)
    received = 0

    async def consume() -> None:
        nonlocal received
        while received < total:
            batch = await consumer.getmany(timeout_ms=200)
            now = monotonic()
            for records in batch.values():
                for record in records:
                    event_id = json.loads(record.value)["event_id"]
                    if event_id in committed_at:
                        e2e_latency.append(now - committed_at[event_id])
                    received += 1

    relay = make_relay(dsn, bootstrap, tuning, after_publish=on_ack)
    relay_task = asyncio.create_task(relay.run())
    consumer_task = asyncio.create_task(consume())
    task = ctx.task(f"steady: {rate} events/s", total=total)
    events = [outbox_entry(e, topics) for e in call_events(total, 1000, random.Random(3))]
    conn = await asyncpg.connect(dsn)
    try:
        await asyncio.sleep(1.0)  # relay listening, consumer assigned
        start = monotonic()
        for first in range(0, total, txn):
            due = start + first / rate
            delay = due - monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = events[first : first + txn]
            async with conn.transaction():
                await write_outbox(conn, chunk)
            now = monotonic()
            for entry in chunk:
                committed_at[str(entry.event_id)] = now
            task.advance(len(chunk))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(consumer_task), timeout=30)
    finally:
        await conn.close()
        for t in (relay_task, consumer_task):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await consumer.stop()
        await relay.publisher.close()
    return ack_latency, e2e_latency, received


async def phase_cdr(ctx: SuiteContext, admin_dsn: str, count: int, writers: int) -> float:
    """``record_cdr`` (rate with the account's plan, insert the CDR and its outbox row) by ``writers``."""
    name = f"uc_bench_{uuid.uuid4().hex[:12]}"
    try:
        await migrate(admin_dsn, {"cdr": name})
        pool = await create_pool(admin_dsn.rsplit("/", 1)[0] + "/" + name, min_size=writers, max_size=writers)
        try:
            repository = PgCdrRepository(pool, node_id="bench")
            plan = await repository.create_plan(
                NewBillingPlan(name="bench", currency="EUR", per_minute_rate=Decimal("0.02"))
            )
            accounts = [uuid.uuid4() for _ in range(100)]
            for account in accounts:
                await repository.assign_plan(account, plan.plan_id)
            start_of_call = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
            cdrs = [
                NewCdr(
                    call_id=uuid.uuid4(),
                    correlation_id=uuid.uuid4(),
                    caller="+15550100",
                    callee="+15550199",
                    direction="outbound",
                    started_at=start_of_call,
                    answered_at=start_of_call + dt.timedelta(seconds=3),
                    ended_at=start_of_call + dt.timedelta(seconds=3 + i % 600),
                    termination_cause="normal_clearing",
                    account_id=accounts[i % len(accounts)],
                )
                for i in range(count)
            ]
            task = ctx.task(f"cdr: record_cdr x {writers} writers", total=count)

            async def writer(share: list[NewCdr]) -> None:
                for cdr in share:
                    await repository.record_cdr(cdr)
                    task.advance()

            start = monotonic()
            async with asyncio.TaskGroup() as group:
                for w in range(writers):
                    group.create_task(writer(cdrs[w::writers]))
            return count / (monotonic() - start)
        finally:
            await pool.close()
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
        finally:
            await admin.close()


async def run(ctx: SuiteContext) -> SuiteResult:
    admin_dsn = ctx.param("dsn", "postgresql://uc_edge:uc_edge@127.0.0.1:5432/postgres")
    bootstrap = ctx.param("kafka", "127.0.0.1:9092")
    backlog = ctx.param("backlog", 5_000 if ctx.quick else 50_000)
    inserts = ctx.param("inserts", 5_000 if ctx.quick else 50_000)
    rate = ctx.param("rate", 1000 if ctx.quick else 2000)
    duration = ctx.param("duration", 3.0 if ctx.quick else 15.0)
    txn = ctx.param("txn", 10)
    tuning = RelayTuning(
        batch=ctx.param("batch", 1000), linger_ms=ctx.param("linger", 0), in_flight=ctx.param("in_flight", 2)
    )

    cdr_count = ctx.param("cdrs", 1000 if ctx.quick else 10_000)
    cdr_writers = ctx.param("writers", 8)
    result = SuiteResult(
        units={
            "cdr_insert_rate": "CDRs/s",
            "outbox_insert_rate": "events/s",
            "relay_rate": "events/s",
            "relay rate over time": "events/s",
            "ack_latency_p50": "ms",
            "ack_latency_p99": "ms",
            "e2e_latency_p50": "ms",
            "e2e_latency_p99": "ms",
        },
        targets={"relay_rate": TARGET_EVENTS_PER_SECOND},
        lower_is_better={"ack_latency_p50", "ack_latency_p99", "e2e_latency_p50", "e2e_latency_p99"},
    )
    cdr_rate = await phase_cdr(ctx, admin_dsn, cdr_count, cdr_writers)
    ctx.log(f"cdr: {cdr_rate:,.0f} CDRs/s recorded (rated, with their outbox rows) by {cdr_writers} writers")
    async with bench_database(admin_dsn) as dsn, bench_topics(bootstrap) as topics:
        insert_rate = await phase_insert(ctx, dsn, topics, inserts, txn * 10)
        ctx.log(f"insert: {insert_rate:,.0f} outbox events/s, {txn * 10} to a transaction (one row each)")
    async with bench_database(admin_dsn) as dsn, bench_topics(bootstrap) as topics:
        relay_rate, series = await phase_drain(ctx, dsn, topics, bootstrap, backlog, tuning)
        ctx.log(
            f"drain: {relay_rate:,.0f} events/s outbox → Kafka ack"
            f" (batch {tuning.batch} x {tuning.in_flight} in flight)"
        )
    async with bench_database(admin_dsn) as dsn, bench_topics(bootstrap) as topics:
        acks, e2e, received = await phase_steady(ctx, dsn, topics, bootstrap, rate, duration, txn, tuning)
        ctx.log(f"steady: {received} of {int(rate * duration)} events received at {rate}/s")

    result.figures["cdr_insert_rate"] = cdr_rate
    result.figures["outbox_insert_rate"] = insert_rate
    result.figures["relay_rate"] = relay_rate
    result.series["relay rate over time"] = series
    if acks and e2e:
        result.figures["ack_latency_p50"] = percentile(acks, 0.5) * 1000
        result.figures["ack_latency_p99"] = percentile(acks, 0.99) * 1000
        result.figures["e2e_latency_p50"] = percentile(e2e, 0.5) * 1000
        result.figures["e2e_latency_p99"] = percentile(e2e, 0.99) * 1000
        result.notes.append(
            f"steady latency: {len(e2e)} events, mean e2e {statistics.fmean(e2e) * 1000:.1f} ms"
        )
    result.notes.append(
        f"backlog {backlog}, batch {tuning.batch} x {tuning.in_flight} in flight,"
        f" linger {tuning.linger_ms} ms,"
        f" steady {rate} events/s for {duration} s"
        f" in transactions of {txn};"
        " writer, relay and consumer share one event loop; Kafka API: the local broker at " + bootstrap
    )
    return result


SUITE = Suite(
    name="outbox",
    description="outbox → Kafka: insert rate, relay events/s to ack, commit→ack/receipt latency",
    run=run,
    params={
        "dsn": "PostgreSQL admin DSN (default postgresql://uc_edge:uc_edge@127.0.0.1:5432/postgres)",
        "kafka": "Kafka bootstrap servers (default 127.0.0.1:9092)",
        "backlog": "events the relay drains (default 50000, quick 5000)",
        "inserts": "events inserted in the insert phase (default 50000, quick 5000)",
        "batch": "relay claim batch size (default 1000)",
        "rate": "steady-phase events/s (default 2000, quick 1000)",
        "duration": "steady-phase seconds (default 15, quick 3)",
        "txn": "events per writer transaction in the steady phase (default 10)",
        "linger": "producer linger_ms (default 0: batches form while a send is in flight)",
        "in_flight": "relay batches published at once (default 2)",
        "cdrs": "CDRs recorded in the CDR phase (default 10000, quick 1000)",
        "writers": "concurrent CDR writers (default 8)",
    },
    packages=("aiokafka", "asyncpg"),
)
