"""Shared base of the repositories whose every change commits together with the events reporting it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg

from storage.events import DEFAULT_TOPICS, EventTopics
from storage.kafka.outbox_writer import write_outbox
from storage.ports import check_node_id
from storage.postgres import domain_events


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class EventedRepository:
    """An asyncpg pool, the node the rows are written as, a clock, and the outbox the events go to."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        node_id: str,
        clock: Callable[[], dt.datetime] = utc_now,
        topics: EventTopics = DEFAULT_TOPICS,
    ) -> None:
        check_node_id(node_id)
        self._pool = pool
        self._node_id = node_id
        self._clock = clock
        self._topics = topics

    async def _emit(self, conn: asyncpg.Connection, *envelopes: Mapping[str, Any]) -> None:
        """Queue ``envelopes`` in the outbox inside ``conn``'s transaction, so they commit with the change."""
        await write_outbox(conn, [domain_events.to_outbox(e, self._topics) for e in envelopes])
