"""Write events into a domain database's outbox, inside the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import asyncpg

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
    await conn.executemany(
        SQL["insert_event"],
        [(e.event_id, e.topic, e.partition_key, e.event_type, _compact_json(e.envelope)) for e in entries],
    )


# json.dumps with any non-default option builds a new JSONEncoder per call; one, made once, writes the same
# text. No check for circular references: a valid envelope is a tree (its schema types every nested value).
_COMPACT_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def _compact_json(envelope: object) -> str:
    return _COMPACT_ENCODER.encode(envelope)
