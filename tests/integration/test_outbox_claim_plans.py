"""The relay's claim against real PostgreSQL: exactly the ordering rule, at a cost the planner cannot blow
up.

The rule (``claim_batch`` in ``storage/kafka/sql/outbox.sql``): candidates are the first unsent rows that
nobody leases and nobody locks, in id order; a candidate is skipped when an earlier unsent row of its key
is outside the batch. It is checked here against a model of the rule on random outboxes.

The cost: PostgreSQL switches a prepared statement to a generic plan after five runs and keeps it until
the table is analysed again. A relay that started on an empty outbox used to keep plans made for a one-
page table (nested loops over the candidates, scans of every row) and stalled for tens of seconds per
claim once the table filled; statistics taken when every row was sent did the same to the claim that
looked up each candidate's predecessor by key (30 s a claim with 60,000 rows waiting). These tests run the
statements exactly as the relay's connection would run them next and bound the rows the plan touches,
which a quadratic or whole-table plan exceeds by far.
"""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from storage.kafka.metrics import RelayMetrics
from storage.kafka.publisher import KafkaPublisher, ProducerSettings
from storage.kafka.relay import SQL, OutboxRelay, RelayConfig
from tests.integration.test_outbox_helpers import KAFKA, require_services, temp_database

pytestmark = pytest.mark.integration

RELAY_ID = "claim-test-relay"
OTHER_RELAY = "other-relay"


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    require_services()
    async with temp_database() as database:
        yield database


@contextlib.asynccontextmanager
async def claim_only_relay(dsn: str, batch_size: int) -> AsyncIterator[OutboxRelay]:
    """A relay used only to claim (its publisher is never started)."""
    relay = OutboxRelay(
        RelayConfig(domain="test", dsn=dsn, relay_id=RELAY_ID, batch_size=batch_size, lease_seconds=600),
        KafkaPublisher(ProducerSettings(bootstrap_servers=KAFKA)),
        metrics=RelayMetrics(CollectorRegistry()),
    )
    try:
        yield relay
    finally:
        await relay.close()


@dataclass(frozen=True)
class Row:
    key: str
    sent: bool = False
    leased_to_other: bool = False  # claimed by another relay, lease running
    lease_expired: bool = False  # claimed by another relay that died: claimable again
    delayed: bool = False  # rejected by Kafka, waits (claimed_by NULL, claimed_until ahead)
    locked: bool = False  # row-locked by another transaction during the claim


def random_outbox(rng: random.Random) -> list[Row]:
    keys = [f"key-{k}" for k in range(rng.randint(1, 12))]
    rows = []
    for _ in range(rng.randint(1, 80)):
        kind = rng.choices(
            ["unsent", "sent", "leased", "expired", "delayed", "locked"], weights=[10, 4, 2, 1, 1, 1]
        )[0]
        rows.append(
            Row(
                key=rng.choice(keys),
                sent=kind == "sent",
                leased_to_other=kind == "leased",
                lease_expired=kind == "expired",
                delayed=kind == "delayed",
                locked=kind == "locked",
            )
        )
    return rows


def expected_claim(rows: list[Row], ids: list[int], batch_size: int) -> list[int]:
    """The rule, written the plain way."""
    unsent = [(row_id, row) for row_id, row in zip(ids, rows, strict=True) if not row.sent]
    held = [
        row_id
        for row_id, row in unsent
        if not (row.leased_to_other or row.delayed or row.locked)  # expired leases are free again
    ][:batch_size]
    batch = set(held)
    by_id = dict(unsent)
    return [
        candidate
        for candidate in held
        if not any(
            other < candidate and other not in batch and row.key == by_id[candidate].key
            for other, row in unsent
        )
    ]


async def store(conn: asyncpg.Connection, rows: list[Row]) -> list[int]:
    await conn.execute("TRUNCATE outbox")
    ids = []
    for row in rows:
        claimed_by = OTHER_RELAY if row.leased_to_other or row.lease_expired else None
        claimed_until = "-10 minutes" if row.lease_expired else "10 minutes"
        ids.append(
            await conn.fetchval(
                """INSERT INTO outbox (event_id, topic, partition_key, event_type, envelope, sent_at,
                                       claimed_by, claimed_until)
                   VALUES ($1, 'calls', $2, 'call.leg.state_changed', '{}', CASE WHEN $3 THEN now() END, $4,
                           CASE WHEN $5 THEN now() + $6::text::interval END)
                   RETURNING id""",
                uuid.uuid4(),
                row.key,
                row.sent,
                claimed_by,
                row.leased_to_other or row.lease_expired or row.delayed,
                claimed_until,
            )
        )
    return ids


@pytest.mark.parametrize("seed", range(6))
async def test_claim_takes_exactly_the_rows_the_ordering_rule_allows(dsn: str, seed: int) -> None:
    rng = random.Random(seed)
    setup = await asyncpg.connect(dsn)
    locker = await asyncpg.connect(dsn)
    try:
        async with claim_only_relay(dsn, batch_size=1) as relay:
            for _ in range(25):
                batch_size = rng.choice([1, 3, 10, 1000])
                relay.config = RelayConfig(
                    domain="test", dsn=dsn, relay_id=RELAY_ID, batch_size=batch_size, lease_seconds=600
                )
                rows = random_outbox(rng)
                ids = await store(setup, rows)
                locked = [row_id for row_id, row in zip(ids, rows, strict=True) if row.locked]
                async with locker.transaction():
                    await locker.execute("SELECT 1 FROM outbox WHERE id = ANY($1) FOR UPDATE", locked)
                    claimed = [row.id for row in await relay.claim()]
                assert claimed == expected_claim(rows, ids, batch_size), (seed, rows)
    finally:
        await setup.close()
        await locker.close()


# --- plans -------------------------------------------------------------------------------------------


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def rows_touched(plan: dict[str, Any]) -> int:
    """Rows all plan nodes produced or threw away, over all their loops (EXPLAIN shows them per loop)."""
    per_loop = ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Join Filter")
    return int(sum(sum(n.get(k, 0) for k in per_loop) * n.get("Actual Loops", 1) for n in plan_nodes(plan)))


async def explain_as_the_relay_would_run(
    relay: OutboxRelay, statement: str, literal_arguments: str, *, begin: str = "BEGIN"
) -> dict[str, Any]:
    """EXPLAIN ANALYZE the relay's own prepared ``statement`` on its connection, in a transaction opened by
    ``begin`` (the relay's own opening, settings included, for a claim) and rolled back: the plan the
    relay's next run would use (a cached generic one, or a fresh custom one)."""
    pool = await relay._ensure_pool()
    async with pool.acquire() as conn:
        name = await conn.fetchval("SELECT name FROM pg_prepared_statements WHERE statement = $1", statement)
        assert name is not None, "the relay has not prepared the statement on this connection"
        await conn.execute(begin)
        try:
            explained = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({literal_arguments})"
            )
        finally:
            await conn.execute("ROLLBACK")
    return dict(json.loads(explained)[0]["Plan"])


async def fill(conn: asyncpg.Connection, *, sent: int, unsent: int, keys: int, leased: int) -> None:
    """``sent`` sent rows then ``unsent`` unsent ones, keys taken in turn from ``keys``; the first ``leased``
    unsent rows leased by another relay, so the later rows of their keys are blocked. Rows are inserted as
    they end up (no updates, hence no dead rows for a VACUUM that autovacuum would run)."""
    await conn.execute(
        """INSERT INTO outbox (event_id, topic, partition_key, event_type, envelope, sent_at, claimed_by,
                               claimed_until)
           SELECT gen_random_uuid(), 'calls', 'key-' || g % $2, 'call.leg.state_changed', '{}',
                  CASE WHEN g <= $3 THEN now() END,
                  CASE WHEN g > $3 AND g <= $3 + $4 THEN $5 END,
                  CASE WHEN g > $3 AND g <= $3 + $4 THEN now() + interval '10 minutes' END
           FROM generate_series(1, $1) g
           ORDER BY g""",
        sent + unsent,
        keys,
        sent,
        leased,
        OTHER_RELAY,
    )


@pytest.mark.parametrize(
    "analysed_when", ["never", "nearly-empty", "all-sent"], ids=["never-analysed", "stale-stats", "all-sent"]
)
async def test_claim_and_mark_stay_linear_after_the_relay_started_on_an_empty_outbox(
    dsn: str, analysed_when: str
) -> None:
    batch_size, sent, unsent, keys, leased = 200, 20_000, 1_000, 100, 40
    async with claim_only_relay(dsn, batch_size=batch_size) as relay:
        pool = await relay._ensure_pool()
        if analysed_when == "nearly-empty":
            # Autovacuum's first ANALYZE came while the outbox held a few rows, all unsent: the planner
            # then takes every row for unsent and the table for tiny until the next ANALYZE.
            await pool.execute(
                """INSERT INTO outbox (event_id, topic, partition_key, event_type, envelope)
                   SELECT gen_random_uuid(), 'calls', 'early', 'call.leg.state_changed', '{}'
                   FROM generate_series(1, 20)"""
            )
            await pool.execute("ANALYZE outbox")
        elif analysed_when == "all-sent":
            # The last ANALYZE saw only sent rows (a quiet node): the planner takes the unsent rows for
            # none until the next one, however many a burst of calls adds (seen: 60,000, 30 s per claim).
            async with pool.acquire() as conn:
                await fill(conn, sent=5_000, unsent=0, keys=keys, leased=0)
            await pool.execute("ANALYZE outbox")
        # Enough runs on the (nearly) empty table for PostgreSQL to settle on a generic plan for each.
        for _ in range(8):
            await relay.claim()
            await pool.execute(SQL["mark_sent"], [1, 2])
        await pool.execute("DELETE FROM outbox")
        async with pool.acquire() as conn:
            await fill(conn, sent=sent, unsent=unsent, keys=keys, leased=leased)

        claim = await explain_as_the_relay_would_run(
            relay,
            SQL["claim_batch"],
            f"'{RELAY_ID}', {batch_size}, 600.0",
            begin=SQL["begin_serialized_claim"],
        )
        # What the claim may look at: the unsent rows (a plan may read them all to find the first ones), the
        # unsent rows below the last candidate once more, and a few steps per candidate. A plan joining
        # candidates with unsent rows by nested loops touches batch x (batch + leased) rows (48,000 here);
        # one scanning the table or its primary key, sent rows included, 21,000 per scan.
        assert rows_touched(claim) < 4 * (unsent + batch_size), json.dumps(claim, indent=1)
        assert claim["Actual Rows"] == 120  # the rows of the 60 keys nobody else holds

        claimable = await pool.fetch(
            "SELECT id FROM outbox WHERE sent_at IS NULL AND claimed_by IS NULL ORDER BY id LIMIT $1",
            batch_size,
        )
        ids = ",".join(str(row["id"]) for row in claimable)
        mark = await explain_as_the_relay_would_run(relay, SQL["mark_sent"], f"'{{{ids}}}'")
        assert rows_touched(mark) < 10 * batch_size, json.dumps(mark, indent=1)
