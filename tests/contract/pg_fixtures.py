"""PostgreSQL fixtures for contract tests: migrated template databases and a fresh copy per test.

Each domain's migrations run once per test session into ``uc_test_tpl_<run>_<domain>``; every test that
asks for a domain database gets ``CREATE DATABASE uc_test_<id> TEMPLATE <that template>`` (tens of ms),
dropped after the test. Templates are dropped at the end of the session.

Use from a test module (pytest finds fixtures imported into the module). ``pg_database`` is a factory,
so a fixture parametrised over memory/postgres can depend on it without touching PostgreSQL for memory:

    from tests.contract.pg_fixtures import pg_database, pg_templates  # noqa: F401

    async def test_x(pg_database):
        dsn = await pg_database("accounts")

The server comes from ``UC_EDGE_DB_DSN`` (default ``postgresql://uc_edge:uc_edge@127.0.0.1:5432/postgres``).
When it does not answer the tests that need it are skipped, or failed with ``UC_EDGE_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from storage.memory.sql_domains import MemoryOutbox
from storage.postgres.connect import connect, server_address
from storage.postgres.errors import DatabaseUnavailable, MigrationError
from storage.postgres.migrate import migrate
from tests.contract.conftest import service_missing

PG_SERVER_DSN = os.environ.get("UC_EDGE_DB_DSN", "postgresql://uc_edge:uc_edge@127.0.0.1:5432/postgres")

# Identifiers are quoted by the server (format %I): CREATE/DROP DATABASE take no parameters.
_CREATE_FROM_TEMPLATE = "SELECT format('CREATE DATABASE %I TEMPLATE %I', $1::text, $2::text)"
_DROP = "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text)"


def database_dsn(server_dsn: str, database: str) -> str:
    """``server_dsn`` pointed at ``database`` (query string kept)."""
    parts = urlsplit(server_dsn)
    return urlunsplit(parts._replace(path="/" + database))


class PgTemplates:
    """Migrated template databases, one per domain, made on first use."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.run_id = uuid.uuid4().hex[:8]
        self._templates: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def template(self, domain: str) -> str:
        async with self._lock:
            if domain not in self._templates:
                name = f"uc_test_tpl_{self.run_id}_{domain}"
                self._templates[domain] = name
                try:
                    await migrate(self.server_dsn, {domain: name})
                except MigrationError as error:
                    del self._templates[domain]
                    raise DatabaseUnavailable(str(error)) from error
            return self._templates[domain]

    async def create_database(self, domain: str) -> str:
        """A new ``uc_test_…`` database copied from the domain's template; returns its name."""
        template = await self.template(domain)
        name = f"uc_test_{uuid.uuid4().hex[:16]}"
        await self._admin(_CREATE_FROM_TEMPLATE, name, template)
        return name

    async def drop_database(self, name: str) -> None:
        await self._admin(_DROP, name)

    async def drop_templates(self) -> None:
        for name in self._templates.values():
            await self.drop_database(name)
        self._templates.clear()

    async def _admin(self, statement_query: str, *names: str) -> None:
        conn = await connect(self.server_dsn)
        try:
            statement = await conn.fetchval(statement_query, *names)
            await conn.execute(statement)
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def pg_templates() -> AsyncIterator[PgTemplates]:
    """Lazy: nothing touches PostgreSQL until a test asks ``pg_database`` for a database."""
    templates = PgTemplates(PG_SERVER_DSN)
    try:
        yield templates
    finally:
        await templates.drop_templates()


@pytest.fixture
async def pg_database(pg_templates: PgTemplates) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """``await pg_database(domain)`` -> DSN of a fresh migrated database of that domain (dropped after)."""
    created: list[str] = []

    async def make(domain: str) -> str:
        try:
            name = await pg_templates.create_database(domain)
        except DatabaseUnavailable as error:
            service_missing(f"PostgreSQL at {server_address(PG_SERVER_DSN)}", error)
        created.append(name)
        return database_dsn(PG_SERVER_DSN, name)

    try:
        yield make
    finally:
        for name in created:
            await pg_templates.drop_database(name)


async def open_pool(dsn: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert pool is not None
    return pool


# ---- shared by the relational-domain contract tests: a settable clock and the outbox's events ----

START = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


class StepClock:
    """A settable clock of aware datetimes: repositories read it, tests move it."""

    def __init__(self, start: dt.datetime = START) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


async def outbox_events(source: MemoryOutbox | asyncpg.Pool) -> list[dict[str, Any]]:
    """Outbox events as dicts (topic, partition_key, event_type, envelope) in publication order.

    PostgreSQL: the ``outbox_events`` view, by outbox row (one per writing transaction) then position in
    the row; each envelope's ``event_id`` is checked against the event's own."""
    if isinstance(source, MemoryOutbox):
        return [
            {
                "topic": e.topic,
                "partition_key": e.partition_key,
                "event_type": e.event_type,
                "envelope": e.envelope,
            }
            for e in source.entries
        ]
    rows = await source.fetch(
        "SELECT topic, partition_key, event_type, envelope::text AS envelope, event_id"
        " FROM outbox_events ORDER BY outbox_id, position"
    )
    result = []
    for row in rows:
        envelope = json.loads(row["envelope"])
        assert envelope["event_id"] == str(row["event_id"])
        result.append(
            {
                "topic": row["topic"],
                "partition_key": row["partition_key"],
                "event_type": row["event_type"],
                "envelope": envelope,
            }
        )
    return result


async def outbox_transactions(source: asyncpg.Pool | asyncpg.Connection) -> list[list[str]]:
    """The event types of each outbox row (one row per writing transaction), rows in id order.

    Also checks that each row's ``event_count`` and ``partition_keys`` match the events it holds."""
    rows = await source.fetch(
        "SELECT o.event_count, o.partition_keys,"
        " array_agg(e.event_type ORDER BY e.position) AS event_types,"
        " array_agg(e.partition_key ORDER BY e.position) AS keys"
        " FROM outbox o JOIN outbox_events e ON e.outbox_id = o.id"
        " GROUP BY o.id ORDER BY o.id"
    )
    result = []
    for row in rows:
        assert row["event_count"] == len(row["event_types"])
        assert sorted(row["partition_keys"]) == sorted(set(row["keys"]))
        result.append(list(row["event_types"]))
    return result
