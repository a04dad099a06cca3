"""CDR repository on DB_CDR: rate with the account's plan, store the CDR and its ``cdr.created`` together."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal

import asyncpg

from storage.events import DEFAULT_TOPICS, EventTopics, OutboxEntry, outbox_entry
from storage.ids import random_uuid4
from storage.kafka.outbox_writer import write_outbox
from storage.ports import (
    BillingPlan,
    CdrRater,
    CdrRecord,
    ConflictError,
    NewBillingPlan,
    NewCdr,
    NotFoundError,
)
from storage.postgres import domain_events
from storage.postgres.connect import transaction
from storage.postgres.rating import TariffRater
from storage.postgres.repository import EventedRepository, utc_now
from storage.postgres.sql import queries_for

_SQL = queries_for("cdr")
MAX_LIST = 1000


class PgCdrRepository(EventedRepository):
    """``CdrRepository`` on an asyncpg pool of the CDR database, writing as ``node_id``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        node_id: str,
        rater: CdrRater | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        topics: EventTopics = DEFAULT_TOPICS,
    ) -> None:
        super().__init__(pool, node_id=node_id, clock=clock, topics=topics)
        self._rater = rater or TariffRater()

    async def create_plan(self, plan: NewBillingPlan) -> BillingPlan:
        try:
            row = await self._pool.fetchrow(
                _SQL["insert_plan"],
                plan.name,
                plan.currency,
                plan.per_minute_rate,
                plan.billing_increment_seconds,
                plan.minimum_charge,
                plan.tariff_model,
            )
        except asyncpg.UniqueViolationError:
            raise ConflictError(f"a billing plan named {plan.name!r} exists") from None
        return BillingPlan(**row)

    async def assign_plan(
        self, account_id: uuid.UUID, plan_id: uuid.UUID, *, credit_limit: Decimal = Decimal(0)
    ) -> None:
        if credit_limit < 0:
            raise ValueError("credit_limit must not be negative")
        async with transaction(self._pool, "assigning a billing plan") as conn:
            if not await conn.fetchval(_SQL["plan_exists"], plan_id):
                raise NotFoundError(f"no billing plan {plan_id}")
            await conn.execute(_SQL["assign_plan"], account_id, plan_id, credit_limit)

    async def plan_for_account(self, account_id: uuid.UUID) -> BillingPlan | None:
        row = await self._pool.fetchrow(_SQL["plan_for_account"], account_id)
        return None if row is None else BillingPlan(**row)

    async def balance(self, account_id: uuid.UUID) -> Decimal | None:
        value = await self._pool.fetchval(_SQL["balance"], account_id)
        return None if value is None else Decimal(value)

    async def record_cdr(self, cdr: NewCdr) -> CdrRecord:
        async with transaction(self._pool, "recording a CDR") as conn:
            return (await self._record(conn, [cdr]))[0]

    async def record_cdrs(self, cdrs: Sequence[NewCdr]) -> list[CdrRecord]:
        if not cdrs:
            return []
        async with transaction(self._pool, "recording CDRs") as conn:
            return await self._record(conn, cdrs)

    async def _record(self, conn: asyncpg.Connection, cdrs: Sequence[NewCdr]) -> list[CdrRecord]:
        if len(cdrs) > 1:
            return await self._record_many(conn, cdrs)
        records: list[CdrRecord] = []
        events: list[OutboxEntry] = []
        for cdr in cdrs:
            plan = None
            if cdr.account_id is not None:
                row = await conn.fetchrow(_SQL["plan_for_account"], cdr.account_id)
                plan = None if row is None else BillingPlan(**row)
            rating = self._rater.rate(cdr, plan)
            row = await conn.fetchrow(
                _SQL["insert_cdr"],
                cdr.call_id,
                cdr.correlation_id,
                cdr.account_id,
                cdr.device_id,
                cdr.caller,
                cdr.callee,
                cdr.direction,
                cdr.started_at,
                cdr.answered_at,
                cdr.ended_at,
                rating.duration_seconds,
                rating.billable_seconds,
                cdr.termination_cause,
                cdr.sip_status,
                plan.plan_id if plan else None,
                plan.per_minute_rate if plan else None,
                plan.billing_increment_seconds if plan else None,
                plan.minimum_charge if plan else None,
                rating.cost,
                rating.currency,
                self._node_id,
            )
            if row is None:  # this call has its CDR already: a retry, not a second charge
                records.append(CdrRecord(**await conn.fetchrow(_SQL["cdr_for_call"], cdr.call_id)))
                continue
            record = CdrRecord(**row)
            records.append(record)
            event = domain_events.cdr_created(record, self._node_id, self._clock())  # validated by make_event
            events.append(outbox_entry(event, self._topics, validated=True))
        await write_outbox(conn, events)
        return records

    async def _record_many(self, conn: asyncpg.Connection, cdrs: Sequence[NewCdr]) -> list[CdrRecord]:
        """The CDRs of several calls in three round trips whatever their number: plans, inserts, read back."""
        accounts = list({cdr.account_id for cdr in cdrs if cdr.account_id is not None})
        plans: dict[uuid.UUID, BillingPlan] = {}
        for account_id in accounts:
            row = await conn.fetchrow(_SQL["plan_for_account"], account_id)
            if row is not None:
                plans[account_id] = BillingPlan(**row)
        ids: list[uuid.UUID] = []
        args: list[tuple[object, ...]] = []
        for cdr in cdrs:
            plan = plans.get(cdr.account_id) if cdr.account_id is not None else None
            rating = self._rater.rate(cdr, plan)
            cdr_id = random_uuid4()
            ids.append(cdr_id)
            args.append(
                (
                    cdr.call_id, cdr.correlation_id, cdr.account_id, cdr.device_id, cdr.caller, cdr.callee,
                    cdr.direction, cdr.started_at, cdr.answered_at, cdr.ended_at, rating.duration_seconds,
                    rating.billable_seconds, cdr.termination_cause, cdr.sip_status,
                    plan.plan_id if plan else None, plan.per_minute_rate if plan else None,
                    plan.billing_increment_seconds if plan else None, plan.minimum_charge if plan else None,
                    rating.cost, rating.currency, self._node_id, cdr_id,
                )
            )  # fmt: skip
        await conn.executemany(_SQL["insert_cdr_row"], args)
        stored = {
            row["call_id"]: CdrRecord(**row)
            for row in await conn.fetch(_SQL["cdrs_for_calls"], [cdr.call_id for cdr in cdrs])
        }
        records: list[CdrRecord] = []
        events: list[OutboxEntry] = []
        for cdr, cdr_id in zip(cdrs, ids, strict=True):
            record = stored[cdr.call_id]
            records.append(record)
            if record.cdr_id == cdr_id:  # ours: stored by this transaction (else a retry of a stored CDR)
                event = domain_events.cdr_created(record, self._node_id, self._clock())
                events.append(outbox_entry(event, self._topics, validated=True))
        await write_outbox(conn, events)
        return records

    async def get_cdr(self, cdr_id: uuid.UUID) -> CdrRecord | None:
        row = await self._pool.fetchrow(_SQL["get_cdr"], cdr_id)
        return None if row is None else CdrRecord(**row)

    async def cdr_for_call(self, call_id: uuid.UUID) -> CdrRecord | None:
        row = await self._pool.fetchrow(_SQL["cdr_for_call"], call_id)
        return None if row is None else CdrRecord(**row)

    async def list_cdrs(self, account_id: uuid.UUID, *, limit: int = 100) -> list[CdrRecord]:
        if not 1 <= limit <= MAX_LIST:
            raise ValueError(f"limit must be 1..{MAX_LIST}, got {limit}")
        return [CdrRecord(**row) for row in await self._pool.fetch(_SQL["list_cdrs"], account_id, limit)]
