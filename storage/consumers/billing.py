"""The billing consumer: charges each ``cdr.created`` event's cost to ``account_billing`` exactly once.

``uc-edge consume billing`` runs :func:`run_billing_consumer`. Exactly-once on the database side comes
from ``billing_inbox`` (uc_cdr): the event id is inserted in the same statement that debits the balance,
so a redelivered event finds its inbox row and charges nothing. Redis idempotency keys (the consumer base)
spare the database most redeliveries; the inbox stays the authority.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from storage.consumers.base import ConsumerMetrics, ConsumerSettings, EventConsumer
from storage.events import EventType
from storage.ports import IdempotencyKeys
from storage.postgres.connect import create_pool
from storage.postgres.sql import load_queries

log = structlog.get_logger(__name__)

SQL = load_queries(Path(__file__).resolve().parent / "sql" / "billing.sql")

DEFAULT_GROUP_ID = "uc-edge-billing"
DEFAULT_TOPIC = "cdr-events"

DATABASE_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
)


class BillingHandler:
    """Applies ``cdr.created`` costs to balances; the inbox makes every event count once."""

    event_types = frozenset({EventType.CDR_CREATED.value})
    transient_errors = DATABASE_TRANSIENT_ERRORS

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def handle(self, event: dict[str, Any]) -> None:
        payload = event["payload"]
        event_id = uuid.UUID(event["event_id"])
        amount = Decimal(payload["cost"]) if payload["cost"] is not None else None
        async with self._pool.acquire() as conn, conn.transaction():
            result = await conn.fetchrow(
                SQL["apply_cdr_charge"],
                event_id,
                uuid.UUID(payload["cdr_id"]),
                uuid.UUID(payload["account_id"]) if payload["account_id"] is not None else None,
                amount,
                payload["currency"],
            )
            assert result is not None
            if not result["recorded"]:
                log.info("cdr already charged", event_id=str(event_id), cdr_id=payload["cdr_id"])
                return
            if amount is not None and result["balance_after"] is None:
                await conn.execute(SQL["mark_no_billing_account"], event_id)
                log.warning(
                    "cdr names an account without billing; not charged",
                    event_id=str(event_id),
                    cdr_id=payload["cdr_id"],
                    account_id=payload["account_id"],
                    amount=str(amount),
                )

    async def already_applied(self, event: dict[str, Any]) -> bool:
        return bool(await self._pool.fetchval(SQL["inbox_has_event"], uuid.UUID(event["event_id"])))


async def run_billing_consumer(
    *,
    kafka_bootstrap: str,
    cdr_dsn: str,
    redis_url: str,
    topic: str = DEFAULT_TOPIC,
    group_id: str = DEFAULT_GROUP_ID,
    idempotency_ttl_seconds: float = 48 * 3600.0,
    redis_key_prefix: str = "uc:",
    idempotency: IdempotencyKeys | None = None,
    metrics: ConsumerMetrics | None = None,
) -> None:
    """``uc-edge consume billing``: consume ``topic`` until cancelled (Ctrl-C / SIGTERM → cancel).

    The settings are checked before anything connects (a TTL outside 24-72 h is a ``ValueError``); an
    unreachable or missing uc_cdr database is a ``storage.postgres.errors.DatabaseUnavailable``. Once
    running, database, Redis and broker outages are waited out with backoff.
    """
    settings = ConsumerSettings(
        bootstrap_servers=kafka_bootstrap,
        group_id=group_id,
        topics=(topic,),
        client_id=f"{group_id}-consumer",
        idempotency_ttl_seconds=idempotency_ttl_seconds,
    )
    pool = await create_pool(cdr_dsn, min_size=1, max_size=4)  # DatabaseUnavailable says why not
    redis_client = None
    try:
        if idempotency is None:
            from storage.redis.client import connect
            from storage.redis.idempotency import RedisIdempotencyKeys

            redis_client = connect(redis_url)
            idempotency = RedisIdempotencyKeys(redis_client, prefix=redis_key_prefix)
        consumer = EventConsumer(settings, BillingHandler(pool), idempotency, metrics=metrics)
        log.info("billing consumer started", topic=topic, group=group_id)
        await consumer.run()
    finally:
        if redis_client is not None:
            with contextlib.suppress(OSError):
                await redis_client.aclose()
        with contextlib.suppress(OSError, asyncpg.InterfaceError):
            await asyncio.wait_for(pool.close(), 5)
