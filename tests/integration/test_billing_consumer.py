"""Billing end to end on the real stack: CDR events go outbox → relay → Kafka → billing consumer →
``account_billing``, and each CDR is charged exactly once even when the relay crashes between publishing
and marking sent (so Kafka carries duplicates) and when Redis forgets its idempotency keys."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from storage.consumers.base import ConsumerMetrics
from storage.consumers.billing import run_billing_consumer
from storage.events import EventTopics, EventType
from storage.kafka.metrics import RelayMetrics
from storage.kafka.publisher import KafkaPublisher, ProducerSettings
from storage.kafka.relay import ClaimedRow, OutboxRelay, RelayConfig
from storage.ports import NewBillingPlan, NewCdr
from storage.postgres.cdr import PgCdrRepository
from storage.postgres.connect import create_pool
from storage.postgres.errors import DatabaseUnavailable
from tests.integration.test_outbox_helpers import (
    KAFKA,
    REDIS_URL,
    consume,
    event_for,
    insert_events,
    new_key,
    require_services,
    temp_database,
    temp_topics,
    unsent_count,
    unsent_is,
    wait_until,
)

pytestmark = pytest.mark.integration

ACC_A, ACC_B, ACC_NOBODY = (new_key() for _ in range(3))


class SimulatedCrash(BaseException):
    pass


@pytest.fixture
async def cdr_dsn() -> AsyncIterator[str]:
    require_services()
    async with temp_database("cdr") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            plan = await conn.fetchval(
                "INSERT INTO billing_plans (name, currency, per_minute_rate) VALUES ('test', 'EUR', 0.02)"
                " RETURNING plan_id"
            )
            await conn.executemany(
                "INSERT INTO account_billing (account_id, plan_id, balance) VALUES ($1, $2, $3)",
                [(uuid.UUID(ACC_A), plan, Decimal("100")), (uuid.UUID(ACC_B), plan, Decimal("50"))],
            )
        finally:
            await conn.close()
        yield dsn


@pytest.fixture
async def topics() -> AsyncIterator[EventTopics]:
    require_services()
    async with temp_topics() as names:
        yield names


CDR_OF_CALL: dict[str, str] = {}


def cdr_event(call_id: str, account: str | None, cost: str | None) -> dict[str, Any]:
    charged = cost is not None
    CDR_OF_CALL[call_id] = new_key()
    return event_for(
        EventType.CDR_CREATED,
        call_id,
        0,
        cdr_id=CDR_OF_CALL[call_id],
        account_id=account,
        cost=cost,
        currency="EUR" if charged else None,
    )


async def balances(dsn: str) -> dict[str, Decimal]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT account_id, balance FROM account_billing")
        return {str(r["account_id"]): r["balance"] for r in rows}
    finally:
        await conn.close()


async def inbox(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT cdr_id, outcome FROM billing_inbox")
    finally:
        await conn.close()
    return {str(r["cdr_id"]): r["outcome"] for r in rows}


def relay(dsn: str, relay_id: str, **config: Any) -> OutboxRelay:
    return OutboxRelay(
        RelayConfig(domain="cdr", dsn=dsn, relay_id=relay_id, poll_interval_seconds=0.2, **config),
        KafkaPublisher(ProducerSettings(bootstrap_servers=KAFKA)),
        metrics=RelayMetrics(CollectorRegistry()),
    )


@contextlib.asynccontextmanager
async def running(coro: Any) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def billing(dsn: str, topics: EventTopics, group: str, prefix: str, registry: CollectorRegistry) -> Any:
    return run_billing_consumer(
        kafka_bootstrap=KAFKA,
        cdr_dsn=dsn,
        redis_url=REDIS_URL,
        topic=topics.cdr,
        group_id=group,
        redis_key_prefix=prefix,
        metrics=ConsumerMetrics(registry),
    )


def processed(registry: CollectorRegistry, group: str, outcome: str) -> float:
    return registry.get_sample_value("uc_consumer_events_total", {"group": group, "outcome": outcome}) or 0.0


async def test_relay_crash_after_publish_still_charges_each_cdr_once(
    cdr_dsn: str, topics: EventTopics
) -> None:
    costs = {new_key(): ((ACC_A, ACC_B)[i % 2], f"{i}.25") for i in range(12)}
    events = [cdr_event(call, account, cost) for call, (account, cost) in costs.items()]
    free_call, ghost_call = new_key(), new_key()
    events.append(cdr_event(free_call, ACC_A, None))  # no plan: a CDR without cost
    events.append(cdr_event(ghost_call, ACC_NOBODY, "9.99"))  # account without billing row
    await insert_events(cdr_dsn, events, topics)

    published: list[ClaimedRow] = []

    async def crash_before_marking(rows: Sequence[ClaimedRow]) -> None:
        published.extend(rows)
        raise SimulatedCrash

    crashing = relay(cdr_dsn, "relay-a", lease_seconds=1.0)
    crashing.after_publish = crash_before_marking
    with pytest.raises(SimulatedCrash):
        await crashing.run()
    await crashing.publisher.close()
    # One transaction wrote them all: one outbox row, its events published in order, none marked sent.
    assert [row.id for row in published] == [published[0].id]
    assert [e.event_id for row in published for e in row.events] == [e["event_id"] for e in events]
    assert await unsent_count(cdr_dsn) == len(events)

    survivor = relay(cdr_dsn, "relay-b", lease_seconds=1.0)
    async with running(survivor.run()):
        await wait_until(unsent_is(cdr_dsn, 0), within=30)
    await survivor.publisher.close()
    in_kafka = await consume(topics.cdr, expected=2 * len(events))
    assert len(in_kafka) == 2 * len(events)  # every CDR event is in Kafka twice

    group, prefix = f"billing-{uuid.uuid4().hex[:8]}", f"uc-test-{uuid.uuid4().hex[:8]}:"
    registry = CollectorRegistry()
    async with running(billing(cdr_dsn, topics, group, prefix, registry)):
        await wait_until(lambda: _seen(registry, group, 2 * len(events)), within=60)

    expected_a = Decimal("100") - sum(Decimal(c) for a, c in costs.values() if a == ACC_A)
    expected_b = Decimal("50") - sum(Decimal(c) for a, c in costs.values() if a == ACC_B)
    assert await balances(cdr_dsn) == {ACC_A: expected_a, ACC_B: expected_b}
    outcomes = await inbox(cdr_dsn)
    assert len(outcomes) == len(events)
    assert outcomes[CDR_OF_CALL[free_call]] == "no_cost"
    assert outcomes[CDR_OF_CALL[ghost_call]] == "no_billing_account"
    assert processed(registry, group, "processed") == len(events)
    assert processed(registry, group, "duplicate") == len(events)
    assert processed(registry, group, "poison") == 0  # every emitted event validated against its schema

    # Redis forgot everything and a new group replays the topic from the start: the inbox still holds.
    registry2 = CollectorRegistry()
    group2 = f"billing-{uuid.uuid4().hex[:8]}"
    async with running(billing(cdr_dsn, topics, group2, f"uc-test-{uuid.uuid4().hex[:8]}:", registry2)):
        await wait_until(lambda: _seen(registry2, group2, 2 * len(events)), within=60)
    assert await balances(cdr_dsn) == {ACC_A: expected_a, ACC_B: expected_b}
    assert len(await inbox(cdr_dsn)) == len(events)


async def test_bad_ttl_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="outside the redelivery window"):
        await run_billing_consumer(
            kafka_bootstrap="127.0.0.1:1",
            cdr_dsn="postgresql://nobody@127.0.0.1:1/none",
            redis_url="redis://127.0.0.1:1",
            idempotency_ttl_seconds=3600,
        )


async def _seen(registry: CollectorRegistry, group: str, n: int) -> bool:
    outcomes = ("processed", "duplicate", "poison", "ignored")
    return sum(processed(registry, group, o) for o in outcomes) >= n


async def test_missing_cdr_database_is_a_clear_error() -> None:
    require_services()
    with pytest.raises(DatabaseUnavailable, match=r"does not exist.*uc-edge migrate"):
        await run_billing_consumer(
            kafka_bootstrap=KAFKA,
            cdr_dsn="postgresql://uc_edge:uc_edge@127.0.0.1:5432/uc_test_missing_" + new_key()[:8],
            redis_url=REDIS_URL,
        )


async def test_cdrs_recorded_by_the_repository_are_charged_at_their_rated_cost(
    cdr_dsn: str, topics: EventTopics
) -> None:
    """The production path: PgCdrRepository rates and writes CDR + outbox row, the relay publishes,
    billing debits the account by exactly the rated cost."""
    pool = await create_pool(cdr_dsn, min_size=1, max_size=2)
    try:
        repository = PgCdrRepository(pool, node_id="edge-test", topics=topics)
        plan = await repository.create_plan(
            NewBillingPlan(name="per-minute", currency="EUR", per_minute_rate=Decimal("0.06"))
        )
        account = uuid.uuid4()
        await repository.assign_plan(account, plan.plan_id)
        start = dt.datetime(2025, 5, 1, 10, 0, tzinfo=dt.UTC)
        records = [
            await repository.record_cdr(
                NewCdr(
                    call_id=uuid.uuid4(),
                    correlation_id=uuid.uuid4(),
                    caller="+15550100",
                    callee="+15550199",
                    direction="outbound",
                    started_at=start,
                    answered_at=start + dt.timedelta(seconds=2),
                    ended_at=start + dt.timedelta(seconds=2 + talk),
                    termination_cause="normal_clearing",
                    account_id=account,
                )
            )
            for talk in (30, 61, 125)
        ]
        costs = [r.cost for r in records]
        assert all(c is not None and c > 0 for c in costs)
        before = await repository.balance(account)
        assert before is not None

        survivor = relay(cdr_dsn, "relay-a")
        async with running(survivor.run()):
            await wait_until(unsent_is(cdr_dsn, 0), within=30)
        await survivor.publisher.close()

        group, registry = f"billing-{uuid.uuid4().hex[:8]}", CollectorRegistry()
        async with running(billing(cdr_dsn, topics, group, f"uc-test-{uuid.uuid4().hex[:8]}:", registry)):
            await wait_until(lambda: _seen(registry, group, 3), within=60)
        assert await repository.balance(account) == before - sum(c for c in costs if c is not None)
        assert processed(registry, group, "poison") == 0
    finally:
        await pool.close()
