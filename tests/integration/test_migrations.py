"""The migration runner against a real PostgreSQL: schema, idempotence, checksums, broken files, errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from storage.events import DEFAULT_TOPICS, EventTopics, EventType, OutboxEntry, make_event, outbox_entry
from storage.events.examples import example_payload
from storage.kafka.metrics import RelayMetrics
from storage.kafka.outbox_writer import write_outbox
from storage.kafka.publisher import KafkaPublisher, ProducerSettings
from storage.kafka.relay import OutboxRelay, RelayConfig
from storage.postgres.connect import connect
from storage.postgres.errors import DatabaseUnavailable
from storage.postgres.migrate import MIGRATIONS_DIR, MigrationError, migrate, migration_status
from tests.contract.pg_fixtures import database_dsn
from tests.integration.test_outbox_helpers import KAFKA, consume, require_services, temp_topics

SERVER_DSN = os.environ.get("UC_EDGE_DB_DSN", "postgresql://uc_edge:uc_edge@127.0.0.1:5432/postgres")
DOMAINS = ("accounts", "calls", "cdr", "conferences")

EXPECTED_TABLES = {
    "accounts": {
        "accounts", "user_profiles", "user_devices", "feature_flags", "routing_rules", "policy_assignments",
        "sip_credentials", "outbox",
    },
    "calls": {
        "call_sessions", "call_legs", "call_routing", "call_queues", "queue_members", "policy_decision_audit",
        "call_quality", "outbox",
    },
    "cdr": {
        "cdr_records", "billing_plans", "account_billing", "object_index", "presigned_url_lease", "outbox",
        "billing_inbox",
    },
    "conferences": {
        "conferences", "conference_participants", "conference_sessions", "conference_recordings",
        "conference_attendance", "object_index", "presigned_url_lease", "outbox",
    },
}  # fmt: skip

# One row per writing transaction (0004_outbox_batches): its events as a JSON array, their distinct keys
# and their number; the columns 0004 added come last.
OUTBOX_COLUMNS = [
    ("id", "bigint", True),
    ("created_at", "timestamp with time zone", True),
    ("claimed_by", "text", False),
    ("claimed_until", "timestamp with time zone", False),
    ("attempts", "integer", True),
    ("last_error", "text", False),
    ("sent_at", "timestamp with time zone", False),
    ("events", "json", True),
    ("partition_keys", "text[]", True),
    ("event_count", "integer", True),
]
# The view listing the outbox's events one by one.
OUTBOX_EVENTS_COLUMNS = [
    ("outbox_id", "bigint"),
    ("position", "bigint"),
    ("event_id", "uuid"),
    ("topic", "text"),
    ("partition_key", "text"),
    ("event_type", "text"),
    ("envelope", "json"),
    ("created_at", "timestamp with time zone"),
    ("claimed_by", "text"),
    ("claimed_until", "timestamp with time zone"),
    ("attempts", "integer"),
    ("last_error", "text"),
    ("sent_at", "timestamp with time zone"),
]
# A relation's columns in order: (name, type as PostgreSQL prints it, NOT NULL).
COLUMNS = (
    "SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull FROM pg_attribute"
    " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
)


async def admin_execute(statement_query: str, *names: str) -> None:
    conn = await connect(SERVER_DSN)
    try:
        await conn.execute(await conn.fetchval(statement_query, *names))
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    await admin_execute("SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text)", name)


async def open_db(name: str) -> asyncpg.Connection:
    return await connect(SERVER_DSN, database=name)


@pytest.fixture
async def names() -> AsyncIterator[dict[str, str]]:
    """Unique database names per domain (``uc_test_…``), dropped afterwards whatever happened."""
    try:
        (await connect(SERVER_DSN, connect_timeout=3)).terminate()
    except DatabaseUnavailable as error:
        if os.environ.get("UC_EDGE_REQUIRE_SERVICES") == "1":
            pytest.fail(str(error))
        pytest.skip(str(error))
    run = uuid.uuid4().hex[:10]
    chosen = {domain: f"uc_test_{run}_{domain}" for domain in (*DOMAINS, "demo")}
    try:
        yield chosen
    finally:
        for name in chosen.values():
            await drop_database(name)


@pytest.fixture
def demo_dir(tmp_path: Path) -> Iterator[Path]:
    """A migrations directory with a small ``demo`` domain to break and change."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "0001_first.sql").write_text(
        "CREATE TABLE first (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
        " created_at timestamptz NOT NULL DEFAULT now());\n"
    )
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def domain_dbs(names: dict[str, str]) -> dict[str, str]:
    return {d: names[d] for d in DOMAINS}


async def test_fresh_migrate_builds_every_table_and_rerun_is_a_no_op(names: dict[str, str]) -> None:
    report = await migrate(SERVER_DSN, domain_dbs(names))
    assert sorted(report.created_databases) == sorted(domain_dbs(names).values())
    assert all(report.applied[d] for d in DOMAINS)
    assert "created" in report.summary()

    for domain in DOMAINS:
        conn = await open_db(names[domain])
        try:
            tables = {
                r["table_name"]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            }
            assert EXPECTED_TABLES[domain] | {"schema_migrations"} <= tables, domain
            without_created_at = await conn.fetch(
                "SELECT t.table_name FROM information_schema.tables t WHERE t.table_schema = 'public'"
                " AND t.table_type = 'BASE TABLE'"
                " AND t.table_name NOT IN ('schema_migrations') AND NOT EXISTS (SELECT 1 FROM"
                " information_schema.columns c WHERE c.table_name = t.table_name"
                " AND c.column_name = 'created_at'"
                " AND c.data_type = 'timestamp with time zone' AND c.is_nullable = 'NO')"
            )
            assert [r["table_name"] for r in without_created_at] == [], domain
            assert [tuple(r) for r in await conn.fetch(COLUMNS, "outbox")] == OUTBOX_COLUMNS
            view = [(name, type_) for name, type_, _ in await conn.fetch(COLUMNS, "outbox_events")]
            assert view == OUTBOX_EVENTS_COLUMNS
            assert (
                await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'outbox_events'")
                == "v"
            )
            versions = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
            assert [r["version"] for r in versions][:2] == [1, 2]
        finally:
            await conn.close()

    again = await migrate(SERVER_DSN, domain_dbs(names))
    assert again.created_databases == [] and not any(again.applied.values()) and not again.changed
    status = await migration_status(SERVER_DSN, domain_dbs(names))
    assert status.up_to_date and status.pending == {d: [] for d in DOMAINS}


async def test_outbox_insert_notifies_the_domain(names: dict[str, str]) -> None:
    await migrate(SERVER_DSN, {"calls": names["calls"]})
    listener = await open_db(names["calls"])
    writer = await open_db(names["calls"])
    received: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener("uc_outbox", lambda *args: received.put_nowait(args[3]))

        def one_event() -> str:
            return json.dumps([[str(uuid.uuid4()), "call-events", "k", "call.started", {}]])

        await writer.execute(
            "INSERT INTO outbox (events, partition_keys, event_count)"
            " VALUES ($1::json, '{k}', 1), ($2::json, '{k}', 1)",
            one_event(),
            one_event(),
        )
        assert await asyncio.wait_for(received.get(), 5) == "calls"
        await asyncio.sleep(0.1)
        assert received.empty()  # one notification per statement, not per row
    finally:
        await listener.close()
        await writer.close()


# ---- outbox rows written before 0004_outbox_batches (one row per event) ----------------------------------

BATCHES_VERSION = 4  # 0004_outbox_batches: one outbox row per writing transaction
OLD_OUTBOX_INSERT = (
    "INSERT INTO outbox (event_id, topic, partition_key, event_type, envelope, created_at, claimed_by,"
    " claimed_until, attempts, last_error, sent_at)"
    " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11) RETURNING id"
)
OLD_ROW_STATE = (
    "SELECT id, created_at, claimed_by, claimed_until, attempts, last_error, sent_at FROM outbox ORDER BY id"
)
OLD_ROW_FIELDS = ("created_at", "claimed_by", "claimed_until", "attempts", "last_error", "sent_at")


async def calls_database_before_batches(
    name: str, tmp_path: Path, topics: EventTopics = DEFAULT_TOPICS
) -> tuple[list[OutboxEntry], list[asyncpg.Record]]:
    """A calls database migrated up to 0003 (the outbox of one row per event) holding the interleaved events
    of two calls: the first already sent, the second retried after an error, the third under an expired
    lease, the rest new. Returns the events in id order and the state of their rows."""
    older = tmp_path / "before_batches"
    (older / "calls").mkdir(parents=True)
    for path in (MIGRATIONS_DIR / "calls").glob("*.sql"):
        if int(path.name[:4]) < BATCHES_VERSION:
            shutil.copy(path, older / "calls" / path.name)
    report = await migrate(SERVER_DSN, {"calls": name}, migrations_dir=older)
    assert report.versions == {"calls": BATCHES_VERSION - 1}

    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    steps = [EventType.CALL_STARTED, EventType.CALL_LEG_CREATED, EventType.CALL_ENDED]
    # Not ASCII: the conversion keeps the text as stored.
    caller = {EventType.CALL_STARTED: {"from_uri": "sip:zoë@exämple.com"}}
    entries = [
        outbox_entry(
            make_event(
                step,
                payload=example_payload(step) | caller.get(step, {}),
                correlation_id=call,
                node_id="n1",
                call_id=call,
            ),
            topics,
        )
        for step in steps
        for call in (first, second)
    ]
    conn = await open_db(name)
    try:
        now = await conn.fetchval("SELECT now()")
        states = [
            ("relay-old", now - dt.timedelta(minutes=1), 1, None, now - dt.timedelta(minutes=1)),  # sent
            (None, None, 2, "KafkaTimeoutError: no answer", None),  # failed once, handed back
            ("relay-gone", now - dt.timedelta(seconds=10), 1, None, None),  # its relay died: lease expired
            *[(None, None, 0, None, None)] * (len(entries) - 3),
        ]
        for i, (entry, state) in enumerate(zip(entries, states, strict=True)):
            await conn.execute(
                OLD_OUTBOX_INSERT,
                uuid.UUID(entry.event_id),
                entry.topic,
                entry.partition_key,
                entry.event_type,
                json.dumps(entry.envelope),
                now - dt.timedelta(minutes=5) + dt.timedelta(seconds=i),
                *state,
            )
        before = list(await conn.fetch(OLD_ROW_STATE))
    finally:
        await conn.close()
    return entries, before


async def test_outbox_rows_from_before_batches_become_one_event_rows_in_the_same_order(
    names: dict[str, str], tmp_path: Path
) -> None:
    entries, before = await calls_database_before_batches(names["calls"], tmp_path)

    report = await migrate(SERVER_DSN, {"calls": names["calls"]})
    assert report.applied["calls"][0] == "0004_outbox_batches"
    conn = await open_db(names["calls"])
    try:
        # Same rows (ids, so publication order), same state, one event each.
        assert list(await conn.fetch(OLD_ROW_STATE)) == before
        rows = await conn.fetch(
            "SELECT id, event_count, partition_keys, events::text FROM outbox ORDER BY id"
        )
        assert [(r["event_count"], r["partition_keys"]) for r in rows] == [
            (1, [e.partition_key]) for e in entries
        ]
        for row, entry in zip(rows, entries, strict=True):
            [[event_id, topic, key, event_type, envelope]] = json.loads(row["events"])
            assert (event_id, topic, key, event_type) == (
                entry.event_id,
                entry.topic,
                entry.partition_key,
                entry.event_type,
            )
            assert envelope == entry.envelope

        # The view lists them one by one, with their row's state.
        events = await conn.fetch(
            "SELECT outbox_id, position, event_id, topic, partition_key, event_type,"
            " envelope::text AS envelope, envelope->>'event_id' AS envelope_event_id, created_at,"
            " claimed_by, claimed_until, attempts, last_error, sent_at"
            " FROM outbox_events ORDER BY outbox_id, position"
        )
        assert [(e["outbox_id"], e["position"]) for e in events] == [(r["id"], 1) for r in before]
        for event, entry, old in zip(events, entries, before, strict=True):
            assert (str(event["event_id"]), event["topic"], event["partition_key"], event["event_type"]) == (
                entry.event_id,
                entry.topic,
                entry.partition_key,
                entry.event_type,
            )
            assert json.loads(event["envelope"]) == entry.envelope
            assert event["envelope_event_id"] == entry.event_id
            assert all(event[field] == old[field] for field in OLD_ROW_FIELDS)
        assert '"sip:zoë@exämple.com"' in events[0]["envelope"]

        # A transaction writing after the migration: one row of its events, after the old ones.
        later = [
            outbox_entry(
                make_event(
                    EventType.CALL_LEG_CREATED,
                    payload=example_payload(EventType.CALL_LEG_CREATED),
                    correlation_id=entries[0].partition_key,
                    node_id="n1",
                    call_id=entries[0].partition_key,
                )
            )
            for _ in range(2)
        ]
        async with conn.transaction():
            await write_outbox(conn, later)
        last = await conn.fetchrow(
            "SELECT id, event_count, partition_keys FROM outbox ORDER BY id DESC LIMIT 1"
        )
        assert last["id"] > before[-1]["id"]
        assert (last["event_count"], last["partition_keys"]) == (2, [entries[0].partition_key])
        assert [
            str(r["event_id"])
            for r in await conn.fetch(
                "SELECT event_id FROM outbox_events WHERE outbox_id = $1 ORDER BY position", last["id"]
            )
        ] == [e.event_id for e in later]
    finally:
        await conn.close()


async def test_the_relay_publishes_outbox_rows_from_before_batches_in_order(
    names: dict[str, str], tmp_path: Path
) -> None:
    require_services(("Kafka (Tansu)", int(KAFKA.rsplit(":", 1)[1])))
    async with temp_topics() as topics:
        entries, before = await calls_database_before_batches(names["calls"], tmp_path, topics)
        await migrate(SERVER_DSN, {"calls": names["calls"]})
        relay = OutboxRelay(
            RelayConfig(domain="calls", dsn=database_dsn(SERVER_DSN, names["calls"]), relay_id="relay-new"),
            KafkaPublisher(ProducerSettings(bootstrap_servers=KAFKA)),
            metrics=RelayMetrics(CollectorRegistry()),
        )
        try:
            sent = await relay.drain()
        finally:
            await relay.close()
            await relay.publisher.close()
        unsent = entries[1:]  # the first was sent before the migration: not published again
        assert sent == len(unsent)
        received = await consume(topics.call, expected=len(unsent), settle=0.5)

    assert sorted(m.value["event_id"] for m in received) == sorted(e.event_id for e in unsent)
    by_key: dict[str, list[str]] = {}
    for message in sorted(received, key=lambda m: (m.partition, m.offset)):
        by_key.setdefault(message.key, []).append(message.value["event_id"])
    expected: dict[str, list[str]] = {}
    for entry in unsent:
        expected.setdefault(entry.partition_key, []).append(entry.event_id)
    assert by_key == expected  # each call's events in their old id order
    envelopes = {e.event_id: e for e in unsent}
    for message in received:
        entry = envelopes[message.value["event_id"]]
        assert message.value == entry.envelope
        assert message.headers == {
            "event_type": entry.event_type.encode(),
            "event_id": entry.event_id.encode(),
        }
    conn = await open_db(names["calls"])
    try:  # the published rows are gone (no sent history by default); the one sent before stays
        assert [r["id"] for r in await conn.fetch("SELECT id FROM outbox")] == [before[0]["id"]]
    finally:
        await conn.close()


async def test_constraints_enforce_domain_rules(names: dict[str, str]) -> None:
    await migrate(SERVER_DSN, {"calls": names["calls"], "cdr": names["cdr"]})
    calls = await open_db(names["calls"])
    cdr = await open_db(names["cdr"])
    try:
        call_id = await calls.fetchval(
            "INSERT INTO call_sessions (correlation_id, direction, from_uri, to_uri, node_id)"
            " VALUES (gen_random_uuid(), 'inbound', 'sip:a@x', 'sip:b@x', 'n1') RETURNING call_id"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await calls.execute(
                "INSERT INTO call_legs (call_id, leg_type, direction, remote_address)"
                " VALUES ($1, 'isdn', 'inbound', 'x')",
                call_id,
            )
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await calls.execute(
                "INSERT INTO call_legs (call_id, leg_type, direction, remote_address)"
                " VALUES ($1, 'sip', 'inbound', 'x')",
                uuid.uuid4(),
            )
        cdr_id = await cdr.fetchval(
            "INSERT INTO cdr_records (call_id, correlation_id, caller, callee, direction, started_at,"
            " ended_at, duration_seconds, billable_seconds, termination_cause)"
            " VALUES (gen_random_uuid(), gen_random_uuid(), '1', '2', 'outbound', now(), now(), 0, 0,"
            " 'normal')"
            " RETURNING cdr_id"
        )
        with pytest.raises(asyncpg.RestrictViolationError, match="never changed or deleted"):
            await cdr.execute("DELETE FROM cdr_records WHERE cdr_id = $1", cdr_id)
        with pytest.raises(asyncpg.RestrictViolationError):
            await cdr.execute("TRUNCATE cdr_records")
        assert await cdr.fetchval("SELECT count(*) FROM cdr_records") == 1
        # object retention: an object cannot be marked deleted before its retention ends
        object_id = await cdr.fetchval(
            "INSERT INTO object_index (bucket, storage_key, object_kind, content_type, access_policy_ref,"
            " retention_until) VALUES ('recordings', 'recordings/calls/a/b/audio.opus', 'call_audio',"
            " 'audio/ogg', 'recordings.private', now() + interval '30 days') RETURNING object_id"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await cdr.execute(
                "UPDATE object_index SET status = 'deleted', deleted_at = now() WHERE object_id = $1",
                object_id,
            )
    finally:
        await calls.close()
        await cdr.close()


async def test_cross_domain_references_have_no_foreign_keys(names: dict[str, str]) -> None:
    await migrate(SERVER_DSN, domain_dbs(names))
    logical = ("account_id", "device_id", "correlation_id")
    for domain in DOMAINS:
        conn = await open_db(names[domain])
        try:
            fk_columns = await conn.fetch(
                "SELECT tc.table_name, kcu.column_name, ccu.table_name AS target"
                " FROM information_schema.table_constraints tc"
                " JOIN information_schema.key_column_usage kcu USING (constraint_name, table_schema)"
                " JOIN information_schema.constraint_column_usage ccu USING (constraint_name, table_schema)"
                " WHERE tc.constraint_type = 'FOREIGN KEY'"
            )
        finally:
            await conn.close()
        owned = EXPECTED_TABLES[domain]
        for row in fk_columns:
            assert row["target"] in owned, (domain, dict(row))
            if domain != "accounts":
                # accounts, devices and correlation ids live in other domains: logical links only
                assert not row["column_name"].endswith(logical), (domain, dict(row))
        if domain != "accounts":
            assert fk_columns, f"{domain} has foreign keys inside the domain"


async def test_changed_applied_migration_is_refused_with_both_checksums(
    names: dict[str, str], demo_dir: Path
) -> None:
    dbs = {"demo": names["demo"]}
    await migrate(SERVER_DSN, dbs, migrations_dir=demo_dir)
    edited = demo_dir / "demo" / "0001_first.sql"
    edited.write_text(edited.read_text() + "-- a harmless edit still changes the checksum\n")
    with pytest.raises(MigrationError) as caught:
        await migrate(SERVER_DSN, dbs, migrations_dir=demo_dir)
    message = str(caught.value)
    assert "0001_first.sql" in message and "changed after it was applied" in message
    assert message.count("checksum") >= 2 and "new migration" in message
    assert "\n" not in message
    status = await migration_status(SERVER_DSN, dbs, migrations_dir=demo_dir)
    assert status.domains["demo"].changed == ["0001_first"] and not status.up_to_date


async def test_broken_migration_names_file_and_error_and_keeps_previous_version(
    names: dict[str, str], demo_dir: Path
) -> None:
    dbs = {"demo": names["demo"]}
    await migrate(SERVER_DSN, dbs, migrations_dir=demo_dir)
    (demo_dir / "demo" / "0002_second.sql").write_text(
        "CREATE TABLE second (id int PRIMARY KEY);\n\nCREATE TABLE third (id int REFERENCES nowhere (id));\n"
    )
    with pytest.raises(MigrationError) as caught:
        await migrate(SERVER_DSN, dbs, migrations_dir=demo_dir)
    message = str(caught.value)
    assert "0002_second.sql" in message and 'relation "nowhere" does not exist' in message
    assert "stays at version 0001" in message and "\n" not in message

    conn = await open_db(names["demo"])
    try:
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 1
        assert await conn.fetchval("SELECT to_regclass('second')") is None  # the whole file rolled back
    finally:
        await conn.close()
    status = await migration_status(SERVER_DSN, dbs, migrations_dir=demo_dir)
    assert status.pending == {"demo": ["0002_second"]}

    (demo_dir / "demo" / "0002_second.sql").write_text("CREATE TABLE second (id int PRIMARY KEY);\n")
    report = await migrate(SERVER_DSN, dbs, migrations_dir=demo_dir)
    assert report.applied == {"demo": ["0002_second"]} and report.versions == {"demo": 2}


async def test_two_nodes_migrating_at_once_apply_each_file_once(names: dict[str, str]) -> None:
    dbs = domain_dbs(names)
    first, second = await asyncio.gather(migrate(SERVER_DSN, dbs), migrate(SERVER_DSN, dbs))
    for domain in DOMAINS:
        assert sorted(first.applied[domain] + second.applied[domain]) == sorted(
            m.stem for m in (MIGRATIONS_DIR / domain).glob("*.sql")
        )
    assert (await migration_status(SERVER_DSN, dbs)).up_to_date


async def test_misnamed_file_is_reported(names: dict[str, str], demo_dir: Path) -> None:
    (demo_dir / "demo" / "2-oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"2-oops\.sql.*NNNN_"):
        await migrate(SERVER_DSN, {"demo": names["demo"]}, migrations_dir=demo_dir)


async def test_unreachable_server_gives_one_line_with_the_fix() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MigrationError) as caught:
        await migrate(f"postgresql://uc_edge:uc_edge@127.0.0.1:{port}/postgres", {"calls": "uc_test_never"})
    assert str(caught.value) == (
        f"cannot reach PostgreSQL at 127.0.0.1:{port} (connection refused) — start it with "
        "`scripts/services up` or set UC_EDGE_DB_DSN"
    )
