"""Planner statistics for domain databases whose server runs without autovacuum.

Why: the adapters' statements are prepared once per pooled connection, and PostgreSQL settles on a
generic plan for each after a few executions, planned with the statistics it then has. Tables analyzed
while empty (a new install, or a `VACUUM (ANALYZE)` before the first calls) make a sequential scan look
free, and the generic plan keeps scanning as the tables grow: on a new machine whose PostgreSQL runs
without autovacuum, b2bua-cps measured 7,077 sequential scans of `call_legs` reading 214 M rows in a
2-minute step, PostgreSQL at 1.26 ms CPU per call against 0.71 with statistics taken on the grown tables.
Autovacuum re-analyzes a table once enough of it changed, and an ANALYZE invalidates the plans built on the
old statistics; where it is off, the node applies autovacuum's rule itself (`stale_tables` in upkeep.sql)
every `check_interval_seconds`. With autovacuum on it does nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import asyncpg
import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from storage.postgres.connect import connect
from storage.postgres.errors import DatabaseUnavailable
from storage.postgres.sql import queries_for

log = structlog.get_logger(__name__)

SQL = queries_for("upkeep")

# What a round survives (it is tried again a check later): the database away or refusing a statement.
UPKEEP_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    DatabaseUnavailable,
)


class UpkeepMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.analyzed = Counter(
            "uc_db_tables_analyzed",
            "Tables the node analyzed itself (its PostgreSQL runs without autovacuum), by domain database.",
            ["domain", "table"],
            registry=registry if registry is not None else REGISTRY,
        )

    @staticmethod
    @cache
    def default() -> UpkeepMetrics:
        return UpkeepMetrics(REGISTRY)


@dataclass(frozen=True)
class AnalyzedTable:
    table: str
    changed_rows: int  # rows inserted, updated or deleted since the previous ANALYZE
    counted_rows: int  # rows that previous ANALYZE counted
    seconds: float


async def analyze_stale_tables(conn: asyncpg.Connection) -> list[AnalyzedTable]:
    """ANALYZE every table of ``conn``'s database that autovacuum's rule calls stale; what was analyzed."""
    analyzed = []
    for row in await conn.fetch(SQL["stale_tables"]):
        started = time.monotonic()
        await conn.execute(row["statement"])
        analyzed.append(
            AnalyzedTable(
                row["table_name"],
                int(row["changed_rows"]),
                int(row["counted_rows"]),
                time.monotonic() - started,
            )
        )
    return analyzed


class StatisticsUpkeep:
    """Keeps one domain database's planner statistics where autovacuum does not (see the module text).

    Its one connection is its own (ANALYZE takes no lock that blocks the calls' writes), opened for a round
    and closed after, so a database that goes away costs a failed round, logged, and nothing else."""

    def __init__(
        self,
        domain: str,
        dsn: str,
        *,
        check_interval_seconds: float = 10.0,
        metrics: UpkeepMetrics | None = None,
    ) -> None:
        self.domain = domain
        self.dsn = dsn
        self.check_interval_seconds = check_interval_seconds
        self._metrics = metrics or UpkeepMetrics.default()
        self.autovacuum: bool | None = None  # read from the server at the first round

    async def round(self) -> list[AnalyzedTable]:
        """One check: nothing where autovacuum is on, else ANALYZE the stale tables (logged, counted)."""
        if self.autovacuum:
            return []
        conn = await connect(self.dsn)
        try:
            if self.autovacuum is None:
                self.autovacuum = bool(await conn.fetchval(SQL["autovacuum_on"]))
                if self.autovacuum:
                    log.info("table statistics left to autovacuum", domain=self.domain)
                    return []
                log.info(
                    "autovacuum is off: the node analyzes the tables it writes as they change",
                    domain=self.domain,
                    check_interval_s=self.check_interval_seconds,
                )
            analyzed = await analyze_stale_tables(conn)
        finally:
            await conn.close()
        for table in analyzed:
            self._metrics.analyzed.labels(self.domain, table.table).inc()
            log.info(
                "table analyzed",
                domain=self.domain,
                table=table.table,
                changed_rows=table.changed_rows,
                counted_rows=table.counted_rows,
                seconds=round(table.seconds, 3),
            )
        return analyzed

    async def run(self) -> None:
        """Check every ``check_interval_seconds`` until cancelled (or for good once autovacuum is on)."""
        while not self.autovacuum:
            try:
                await self.round()
            except UPKEEP_ERRORS as exc:
                log.warning(
                    "table statistics upkeep failed; trying again later",
                    domain=self.domain,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=self.check_interval_seconds,
                )
            if not self.autovacuum:
                await asyncio.sleep(self.check_interval_seconds)


async def keep_table_statistics(
    domain_dsns: Mapping[str, str], *, check_interval_seconds: float = 10.0
) -> None:
    """Run a :class:`StatisticsUpkeep` for each domain database until cancelled."""
    async with asyncio.TaskGroup() as group:
        for domain, dsn in domain_dsns.items():
            upkeep = StatisticsUpkeep(domain, dsn, check_interval_seconds=check_interval_seconds)
            group.create_task(upkeep.run(), name=f"table-statistics-{domain}")
