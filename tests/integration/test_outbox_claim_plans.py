"""The relay's claim against real PostgreSQL: exactly the ordering rule, at a cost the planner cannot blow
up.

The rule (``claim_candidates`` and ``claim_ids`` in ``storage/kafka/sql/outbox.sql``, the choice in
``storage/kafka/relay.claimable``): a row holds the events of one transaction, of one or more keys.
Candidates are the first unsent rows that nobody leases and nobody locks, in id order, at most
``claim_rows`` of them and as many as the event budget ``batch_size`` reaches (the row reaching it taken
whole). A candidate is taken only if no earlier unsent row sharing a key with it stays behind (held by
someone else, or a candidate not taken itself). It is checked here against a model of the rule on random
outboxes.

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
from functools import cache
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from storage.kafka.metrics import RelayMetrics
from storage.kafka.publisher import KafkaPublisher, ProducerSettings
from storage.kafka.relay import SQL, ClaimedRow, OutboxRelay, RelayConfig
from tests.integration.test_outbox_helpers import KAFKA, require_services, temp_database

pytestmark = pytest.mark.integration

RELAY_ID = "claim-test-relay"
OTHER_RELAY = "other-relay"


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    require_services()
    async with temp_database() as database:
        yield database


def claim_config(dsn: str, batch_size: int, claim_rows: int) -> RelayConfig:
    return RelayConfig(
        domain="test",
        dsn=dsn,
        relay_id=RELAY_ID,
        batch_size=batch_size,
        claim_rows=claim_rows,
        lease_seconds=600,
    )


@contextlib.asynccontextmanager
async def claim_only_relay(dsn: str, batch_size: int, claim_rows: int = 200) -> AsyncIterator[OutboxRelay]:
    """A relay used only to claim (its publisher is never started)."""
    relay = OutboxRelay(
        claim_config(dsn, batch_size, claim_rows),
        KafkaPublisher(ProducerSettings(bootstrap_servers=KAFKA)),
        metrics=RelayMetrics(CollectorRegistry()),
    )
    try:
        yield relay
    finally:
        await relay.close()


@dataclass(frozen=True)
class Row:
    keys: tuple[str, ...]  # the key of each of its events, in order (a key may come back)
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
        events = rng.choice([1, 1, 2, 3, 5, 8])
        rows.append(
            Row(
                keys=tuple(rng.choice(keys) for _ in range(events)),
                sent=kind == "sent",
                leased_to_other=kind == "leased",
                lease_expired=kind == "expired",
                delayed=kind == "delayed",
                locked=kind == "locked",
            )
        )
    return rows


def expected_claim(rows: list[Row], ids: list[int], batch_size: int, claim_rows: int) -> list[int]:
    """The rule, written the plain way (recursively, where the relay sweeps once keeping blocked keys)."""
    unsent = {row_id: row for row_id, row in zip(ids, rows, strict=True) if not row.sent}
    free = [
        row_id
        for row_id, row in sorted(unsent.items())
        if not (row.leased_to_other or row.delayed or row.locked)  # expired leases are free again
    ][:claim_rows]
    candidates: set[int] = set()
    events = 0
    for row_id in free:  # the row that reaches the event budget is taken whole
        if events >= batch_size:
            break
        candidates.add(row_id)
        events += len(unsent[row_id].keys)

    @cache
    def taken(row_id: int) -> bool:
        # A candidate is taken when every earlier unsent row sharing a key with it is taken too.
        return row_id in candidates and all(
            taken(earlier)
            for earlier, row in unsent.items()
            if earlier < row_id and set(row.keys) & set(unsent[row_id].keys)
        )

    return sorted(row_id for row_id in unsent if taken(row_id))


def events_json(keys: tuple[str, ...]) -> str:
    """An ``events`` column holding one event per key of ``keys``, in order (empty envelopes)."""
    return json.dumps([[str(uuid.uuid4()), "calls", key, "call.leg.state_changed", {}] for key in keys])


async def store(conn: asyncpg.Connection, rows: list[Row]) -> list[int]:
    await conn.execute("TRUNCATE outbox")
    ids = []
    for row in rows:
        claimed_by = OTHER_RELAY if row.leased_to_other or row.lease_expired else None
        claimed_until = "-10 minutes" if row.lease_expired else "10 minutes"
        ids.append(
            await conn.fetchval(
                """INSERT INTO outbox (events, partition_keys, event_count, sent_at, claimed_by,
                                       claimed_until)
                   VALUES ($1::json, ARRAY(SELECT DISTINCT unnest($2::text[])), cardinality($2::text[]),
                           CASE WHEN $3 THEN now() END, $4, CASE WHEN $5 THEN now() + $6::text::interval END)
                   RETURNING id""",
                events_json(row.keys),
                list(row.keys),
                row.sent,
                claimed_by,
                row.leased_to_other or row.lease_expired or row.delayed,
                claimed_until,
            )
        )
    return ids


async def claim_stored(
    relay: OutboxRelay, setup: asyncpg.Connection, locker: asyncpg.Connection, rows: list[Row]
) -> tuple[list[int], list[ClaimedRow]]:
    """Store ``rows`` and claim, the rows marked ``locked`` locked meanwhile by another transaction;
    returns the stored ids and the claimed rows."""
    ids = await store(setup, rows)
    locked = [row_id for row_id, row in zip(ids, rows, strict=True) if row.locked]
    async with locker.transaction():
        await locker.execute("SELECT 1 FROM outbox WHERE id = ANY($1) FOR UPDATE", locked)
        claimed = await relay.claim()
    # Each claimed row comes whole, its events in their order.
    row_of = dict(zip(ids, rows, strict=True))
    assert [tuple(e.partition_key for e in row.events) for row in claimed] == [
        row_of[row.id].keys for row in claimed
    ]
    return ids, claimed


# Rows 1 to 14 of a fixed outbox, and what a claim takes of them: blocking passes on through rows left
# behind (3 -> 4 -> 5, 7 -> 8 -> 9), a row taken does not block (2 -> 6), sent rows never block (12 -> 13).
FIXED_OUTBOX = [
    Row(("a",), leased_to_other=True),  # 1
    Row(("b",)),  # 2: taken
    Row(("a", "c")),  # 3: a follows row 1
    Row(("c",)),  # 4: c follows row 3, left behind
    Row(("d", "c")),  # 5: likewise
    Row(("b", "e")),  # 6: taken, b's row 2 is
    Row(("e",), delayed=True),  # 7
    Row(("e", "f")),  # 8: e follows row 7
    Row(("f",)),  # 9: f follows row 8, left behind
    Row(("g", "g")),  # 10: taken
    Row(("h",), locked=True),  # 11
    Row(("i",), sent=True),  # 12
    Row(("i",)),  # 13: taken
    Row(("j", "h"), lease_expired=True),  # 14: h follows row 11
    Row(("k",), lease_expired=True),  # 15: taken, the lease ran out
]


@pytest.mark.parametrize(
    ("batch_size", "claim_rows", "taken"),
    [
        (1000, 200, [2, 6, 10, 13, 15]),
        (1000, 4, [2]),  # the first 4 free rows: 2 to 5
        (1000, 5, [2, 6]),
        (4, 200, [2]),  # rows 2 (1 event), 3 (2) and 4 (1) fill the budget: row 5 is beyond it
        (7, 200, [2, 6]),  # rows 2 to 5 hold 6 events: row 6 reaches the budget and is taken whole (8)
        (1, 1, [2]),
    ],
)
async def test_claim_passes_blocking_on_through_the_rows_left_behind(
    dsn: str, batch_size: int, claim_rows: int, taken: list[int]
) -> None:
    assert expected_claim(FIXED_OUTBOX, list(range(1, 16)), batch_size, claim_rows) == taken  # the model
    setup = await asyncpg.connect(dsn)
    locker = await asyncpg.connect(dsn)
    try:
        async with claim_only_relay(dsn, batch_size=batch_size, claim_rows=claim_rows) as relay:
            await setup.execute("ALTER SEQUENCE outbox_id_seq RESTART")
            ids, claimed = await claim_stored(relay, setup, locker, FIXED_OUTBOX)
    finally:
        await setup.close()
        await locker.close()
    assert ids == list(range(1, 16))
    assert [row.id for row in claimed] == taken


@pytest.mark.parametrize("seed", range(6))
async def test_claim_takes_exactly_the_rows_the_ordering_rule_allows(dsn: str, seed: int) -> None:
    rng = random.Random(seed)
    setup = await asyncpg.connect(dsn)
    locker = await asyncpg.connect(dsn)
    try:
        async with claim_only_relay(dsn, batch_size=1) as relay:
            for _ in range(25):
                batch_size = rng.choice([1, 3, 10, 1000])
                claim_rows = rng.choice([1, 3, 10, 200])
                relay.config = claim_config(dsn, batch_size, claim_rows)
                rows = random_outbox(rng)
                ids, claimed = await claim_stored(relay, setup, locker, rows)
                expected = expected_claim(rows, ids, batch_size, claim_rows)
                assert [row.id for row in claimed] == expected, (seed, batch_size, claim_rows, rows)
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
    relay's next run would use (a cached generic one, or a fresh custom one), which must not be
    JIT-compiled."""
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
    explanation = json.loads(explained)[0]
    # A claim turns nested loops off, and the "disabled" cost of one a plan must keep (a lateral split
    # of the rows' events, in a first form of claim_ids) had PostgreSQL JIT-compile it: 70-130 ms a
    # claim. The relay's sessions run with jit=off.
    assert "JIT" not in explanation, json.dumps(explanation["JIT"])
    return dict(explanation["Plan"])


async def fill(conn: asyncpg.Connection, *, sent: int, unsent: int, keys: int, leased: int) -> None:
    """``sent`` sent rows then ``unsent`` unsent ones, of three events each: row ``g`` holds the keys
    ``g % keys`` (twice) and ``(g + keys / 2) % keys``, so the rows fall in ``keys / 2`` classes of a pair of
    keys each, in turn. The first ``leased`` unsent rows are leased by another relay, so the later rows of
    their classes are blocked. Rows are inserted as they end up (no updates, hence no dead rows for a VACUUM
    that autovacuum would run)."""
    await conn.execute(
        """INSERT INTO outbox (events, partition_keys, event_count, sent_at, claimed_by, claimed_until)
           SELECT json_build_array(
                      json_build_array(gen_random_uuid(), 'calls', k.a, 'call.leg.state_changed', '{}'::json),
                      json_build_array(gen_random_uuid(), 'calls', k.b, 'call.leg.state_changed', '{}'::json),
                      json_build_array(gen_random_uuid(), 'calls', k.a, 'call.leg.state_changed', '{}'::json)
                  ),
                  ARRAY[k.a, k.b], 3,
                  CASE WHEN g <= $3 THEN now() END,
                  CASE WHEN g > $3 AND g <= $3 + $4 THEN $5 END,
                  CASE WHEN g > $3 AND g <= $3 + $4 THEN now() + interval '10 minutes' END
           FROM generate_series(1, $1) g
           CROSS JOIN LATERAL (SELECT 'key-' || g % $2 AS a, 'key-' || (g + $2 / 2) % $2 AS b) k
           ORDER BY g""",
        sent + unsent,
        keys,
        sent,
        leased,
        OTHER_RELAY,
    )


async def insert_one(pool: asyncpg.Pool, key: str) -> None:
    await pool.execute(
        "INSERT INTO outbox (events, partition_keys, event_count) VALUES ($1::json, ARRAY[$2], 1)",
        events_json((key,)),
        key,
    )


@pytest.mark.parametrize(
    "analysed_when", ["never", "nearly-empty", "all-sent"], ids=["never-analysed", "stale-stats", "all-sent"]
)
async def test_claim_and_mark_stay_linear_after_the_relay_started_on_an_empty_outbox(
    dsn: str, analysed_when: str
) -> None:
    # Rows of 3 events: a claim takes 200 rows (claim_rows), 600 events (the budget) reaching exactly as far.
    claim_rows, batch_size, sent, unsent, keys, leased = 200, 600, 20_000, 1_000, 100, 40
    async with claim_only_relay(dsn, batch_size=batch_size, claim_rows=claim_rows) as relay:
        pool = await relay._ensure_pool()
        if analysed_when == "nearly-empty":
            # Autovacuum's first ANALYZE came while the outbox held a few rows, all unsent: the planner
            # then takes every row for unsent and the table for tiny until the next ANALYZE.
            for _ in range(20):
                await insert_one(pool, "early")
            await pool.execute("ANALYZE outbox")
        elif analysed_when == "all-sent":
            # The last ANALYZE saw only sent rows (a quiet node): the planner takes the unsent rows for
            # none until the next one, however many a burst of calls adds (seen: 60,000, 30 s per claim).
            async with pool.acquire() as conn:
                await fill(conn, sent=5_000, unsent=0, keys=keys, leased=0)
            await pool.execute("ANALYZE outbox")
        # Enough runs on the (nearly) empty table for PostgreSQL to settle on a generic plan for each
        # statement (a row each time, so that the lease, claim_ids, runs too).
        for _ in range(8):
            await insert_one(pool, "warm-up")
            claimed = await relay.claim()
            assert claimed
            await pool.execute(SQL["mark_sent"], [row.id for row in claimed])
            await pool.execute(SQL["delete_sent"], [])
        await pool.execute("DELETE FROM outbox")
        async with pool.acquire() as conn:
            await fill(conn, sent=sent, unsent=unsent, keys=keys, leased=leased)

        candidates = await explain_as_the_relay_would_run(
            relay,
            SQL["claim_candidates"],
            f"{claim_rows}, {batch_size}",
            begin=SQL["begin_serialized_claim"],
        )
        # What the claim may look at: the unsent rows (a plan may read them all to find the first ones: an
        # index and a heap pass), the unsent rows below the last candidate once more, and a few steps per
        # candidate (locked, numbered by events, the candidates, their last id, the hash of the locked
        # ones: ~5,000 rows when the table was never analysed, ~2,800 otherwise). A plan joining
        # candidates with unsent rows by nested loops touches candidates x (candidates + leased) rows
        # (48,000 here; 58,000 measured with hash and merge joins off); one scanning the table or its
        # primary key, sent rows included, 21,000 per scan.
        assert rows_touched(candidates) < 5 * (unsent + claim_rows), json.dumps(candidates, indent=1)
        assert candidates["Actual Rows"] == claim_rows + leased  # the free candidates and the held rows

        # The leased rows hold 40 of the 50 classes of keys: of the 200 candidates, the 4 rows of each of
        # the other 10 classes are claimable, and no other.
        half = keys // 2
        free_classes = set(range(half)) - {g % half for g in range(sent + 1, sent + leased + 1)}
        free_keys = {f"key-{c + offset}" for c in free_classes for offset in (0, half)}
        assert len(free_keys) == 20
        ids = ",".join(str(row["id"]) for row in await claimable_rows(pool, claim_rows))
        lease = await explain_as_the_relay_would_run(
            relay, SQL["claim_ids"], f"'{RELAY_ID}', '{{{ids}}}', 600.0", begin=SQL["begin_serialized_claim"]
        )
        assert rows_touched(lease) < 10 * claim_rows * 3, json.dumps(lease, indent=1)

        claimed = await relay.claim()
        assert len(claimed) == 40 and all(row.partition_keys <= free_keys for row in claimed)
        assert all(len(row.events) == 3 for row in claimed)

        marked = ",".join(str(row["id"]) for row in await claimable_rows(pool, claim_rows))
        for statement in ("mark_sent", "delete_sent"):
            plan = await explain_as_the_relay_would_run(relay, SQL[statement], f"'{{{marked}}}'")
            assert rows_touched(plan) < 10 * claim_rows, json.dumps(plan, indent=1)


async def claimable_rows(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    """The first ``limit`` unsent rows nobody holds."""
    return list(
        await pool.fetch(
            "SELECT id FROM outbox WHERE sent_at IS NULL AND claimed_by IS NULL ORDER BY id LIMIT $1", limit
        )
    )
