"""Write events into a domain database's outbox, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncpg
import orjson

from storage.events import OutboxEntry
from storage.postgres.sql import load_queries

SQL = load_queries(Path(__file__).resolve().parent / "sql" / "outbox.sql")


async def write_outbox(conn: asyncpg.Connection, entries: Sequence[OutboxEntry]) -> None:
    """Insert ``entries`` in order (their ``id`` order is their publication order per key).

    Call it on the connection of the transaction that makes the change the events report, so the events
    exist exactly when the change does.
    """
    if not entries:
        return
    await conn.execute(
        SQL["insert_events"],
        [e.event_id for e in entries],
        [e.topic for e in entries],
        [e.partition_key for e in entries],
        [e.event_type for e in entries],
        [_compact_json(e.envelope) for e in entries],
    )


def _compact_json(envelope: object) -> str:
    """The envelope as compact JSON text (UTF-8 as is, not \\u-escaped; PostgreSQL parses it into jsonb, so
    the relay publishes jsonb's own rendering either way). orjson: ~0.4 µs an event where the standard
    library's C encoder took ~4.4 µs, a dozen times per B2BUA call."""
    return orjson.dumps(envelope).decode()
