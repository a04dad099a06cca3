"""The node's own ANALYZE where PostgreSQL runs without autovacuum (storage/postgres/upkeep.py).

Against real PostgreSQL: a statement prepared while its table was empty keeps a generic plan that scans
the whole table once it has grown (what b2bua-cps measured on a new machine); one upkeep round analyzes
the table and the same prepared statement then uses the index. The server's own statement (`lock_calls`)
and tables are used, in a fresh database per test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
import structlog.testing
from prometheus_client import CollectorRegistry

from storage.postgres.sql import queries_for
from storage.postgres.upkeep import StatisticsUpkeep, UpkeepMetrics
from tests.integration.test_outbox_helpers import closed_port, require_services, temp_database

LOCK_CALLS = queries_for("calls")["lock_calls"]
GROWN_ROWS = 20_000


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    require_services(("PostgreSQL", 5432))
    async with temp_database("calls") as database:
        yield database


def scan_nodes(plan: object) -> set[str]:
    """The scan node types of an EXPLAIN (FORMAT JSON) plan, all levels."""
    found: set[str] = set()
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if str(node.get("Node Type", "")).endswith("Scan"):
                found.add(f"{node['Node Type']} on {node.get('Relation Name')}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


async def cached_plan(conn: asyncpg.Connection) -> set[str]:
    """The scans of the plan the session's prepared ``lock_calls`` runs with now (generic once cached)."""
    text = await conn.fetchval("EXPLAIN (FORMAT JSON) EXECUTE lock_calls_test(ARRAY[gen_random_uuid()])")
    return scan_nodes(json.loads(text))


async def grow_call_sessions(conn: asyncpg.Connection, rows: int) -> None:
    await conn.execute(
        """INSERT INTO call_sessions (correlation_id, direction, from_uri, to_uri, node_id)
           SELECT gen_random_uuid(), 'inbound', 'sip:a@example.com', 'sip:b@example.com', 'node-stats'
           FROM generate_series(1, $1)""",
        rows,
    )
    # Hand the row counts to the statistics collector now (else a backend may keep them up to 10 s).
    await conn.execute("SELECT pg_stat_force_next_flush()")


async def prepared_while_empty(dsn: str) -> asyncpg.Connection:
    """A session that analyzed the empty tables and ran lock_calls until PostgreSQL cached a generic plan."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("VACUUM (ANALYZE) call_sessions")
    await conn.execute(f"PREPARE lock_calls_test(uuid[]) AS {LOCK_CALLS}")
    for _ in range(8):  # a generic plan is weighed after the fifth execution
        await conn.execute("EXECUTE lock_calls_test(ARRAY[gen_random_uuid()])")
    return conn


def upkeep_for(dsn: str, *, autovacuum: bool) -> StatisticsUpkeep:
    upkeep = StatisticsUpkeep("calls", dsn, metrics=UpkeepMetrics(CollectorRegistry()))
    upkeep.autovacuum = autovacuum  # as the first round reads it from the server (this one runs either way)
    return upkeep


async def test_a_plan_cached_on_empty_tables_scans_them_whole_until_the_upkeep_analyzes(dsn: str) -> None:
    conn = await prepared_while_empty(dsn)
    try:
        await grow_call_sessions(conn, GROWN_ROWS)
        assert "Seq Scan on call_sessions" in await cached_plan(conn)  # the trap this upkeep is for

        upkeep = upkeep_for(dsn, autovacuum=False)
        analyzed = await upkeep.round()
        by_table = {table.table: table for table in analyzed}
        assert "call_sessions" in by_table
        assert by_table["call_sessions"].changed_rows >= GROWN_ROWS
        assert by_table["call_sessions"].counted_rows == 0  # analyzed while empty
        assert "outbox" not in by_table  # the relay looks after its own table

        scans = await cached_plan(conn)
        assert "Seq Scan on call_sessions" not in scans
        assert any(scan.endswith("on call_sessions") and "Index" in scan for scan in scans), scans
        reltuples = await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'call_sessions'")
        assert reltuples == pytest.approx(GROWN_ROWS, rel=0.05)

        # Fresh statistics: the next round leaves the table alone until 10 % of it (plus 50 rows) changes.
        assert "call_sessions" not in {table.table for table in await upkeep.round()}
        await grow_call_sessions(conn, GROWN_ROWS // 20)  # 5 %
        assert "call_sessions" not in {table.table for table in await upkeep.round()}
        await grow_call_sessions(conn, GROWN_ROWS // 10)  # 15 % in all
        assert "call_sessions" in {table.table for table in await upkeep.round()}
    finally:
        await conn.close()


async def test_with_autovacuum_on_the_upkeep_leaves_statistics_to_it(dsn: str) -> None:
    conn = await prepared_while_empty(dsn)
    try:
        await grow_call_sessions(conn, GROWN_ROWS)
        assert await upkeep_for(dsn, autovacuum=True).round() == []
        assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'call_sessions'") == 0
        assert "Seq Scan on call_sessions" in await cached_plan(conn)
    finally:
        await conn.close()


async def test_the_upkeep_reads_the_servers_autovacuum_setting(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        server_setting = await conn.fetchval("SELECT current_setting('autovacuum') = 'on'")
    finally:
        await conn.close()
    upkeep = StatisticsUpkeep("calls", dsn, metrics=UpkeepMetrics(CollectorRegistry()))
    await upkeep.round()
    assert upkeep.autovacuum is server_setting


async def test_an_unreachable_database_is_logged_and_tried_again_never_raised() -> None:
    dsn = f"postgresql://uc_edge:uc_edge@127.0.0.1:{closed_port()}/uc_calls"
    upkeep = StatisticsUpkeep(
        "calls", dsn, check_interval_seconds=0.05, metrics=UpkeepMetrics(CollectorRegistry())
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(upkeep.run())
        await asyncio.sleep(0.5)
        assert not task.done()  # still trying
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    failures = [entry for entry in logs if entry["event"].startswith("table statistics upkeep failed")]
    assert len(failures) >= 2
    assert "connection refused" in failures[0]["error"]
    assert upkeep.autovacuum is None  # never reached the server
