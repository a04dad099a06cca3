"""CdrRepository + rater contract: fake and PostgreSQL rate, store and report CDRs the same way."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from storage.events import validate_event
from storage.memory.sql_domains import MemoryCdrRepository
from storage.ports import (
    BillingPlan,
    CdrRepository,
    ConflictError,
    NewBillingPlan,
    NewCdr,
    NotFoundError,
    Rating,
)
from storage.postgres.cdr import PgCdrRepository
from storage.postgres.rating import TariffRater
from tests.contract.pg_fixtures import (  # noqa: F401
    START,
    StepClock,
    open_pool,
    outbox_events,
    outbox_transactions,
    pg_database,
    pg_templates,
)

NODE = "edge-test-1"


@dataclass
class CdrBackend:
    kind: str
    repo: CdrRepository
    pool: asyncpg.Pool | None
    fake: MemoryCdrRepository | None

    async def events(self) -> list[dict[str, Any]]:
        return await outbox_events(self.fake.outbox if self.fake else self.pool)


@pytest.fixture(params=["memory", "postgres"])
async def cdrs(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> AsyncIterator[CdrBackend]:
    clock = StepClock(START + dt.timedelta(hours=1))
    if request.param == "memory":
        fake = MemoryCdrRepository(node_id=NODE, clock=clock)
        yield CdrBackend("memory", fake, None, fake)
        return
    pool = await open_pool(await pg_database("cdr"))
    try:
        yield CdrBackend("postgres", PgCdrRepository(pool, node_id=NODE, clock=clock), pool, None)
    finally:
        await pool.close()


def a_cdr(talk_seconds: float | None, *, ring_seconds: float = 4.2, **overrides: Any) -> NewCdr:
    answered = START + dt.timedelta(seconds=ring_seconds) if talk_seconds is not None else None
    ended = (answered or START) + dt.timedelta(seconds=talk_seconds or 0)
    fields: dict[str, Any] = {
        "call_id": uuid.uuid4(),
        "correlation_id": uuid.uuid4(),
        "caller": "+15550100",
        "callee": "+15550199",
        "direction": "outbound",
        "started_at": START,
        "answered_at": answered,
        "ended_at": ended,
        "termination_cause": "normal_clearing" if talk_seconds is not None else "no_answer",
        "sip_status": 200 if talk_seconds is not None else 480,
    }
    fields.update(overrides)
    return NewCdr(**fields)


def plan(**overrides: Any) -> NewBillingPlan:
    fields: dict[str, Any] = {
        "name": "standard",
        "currency": "EUR",
        "per_minute_rate": Decimal("0.12"),
        "billing_increment_seconds": 30,
        "minimum_charge": Decimal("0.05"),
    }
    fields.update(overrides)
    return NewBillingPlan(**fields)


async def test_cdr_is_rated_with_the_account_plan_and_reported(cdrs: CdrBackend) -> None:
    account = uuid.uuid4()
    standard = await cdrs.repo.create_plan(plan())
    await cdrs.repo.assign_plan(account, standard.plan_id, credit_limit=Decimal("10"))
    assert await cdrs.repo.plan_for_account(account) == standard
    assert await cdrs.repo.balance(account) == 0

    # 61.3 s of talk -> 62 s -> three 30-s increments = 90 s at 0.12/min = 0.18
    record = await cdrs.repo.record_cdr(a_cdr(61.3, account_id=account))
    assert record.duration_seconds == 66 and record.billable_seconds == 90
    assert record.cost == Decimal("0.18") and record.currency == "EUR" and record.plan_id == standard.plan_id
    assert await cdrs.repo.get_cdr(record.cdr_id) == record
    assert await cdrs.repo.cdr_for_call(record.call_id) == record

    [row] = await cdrs.events()
    validate_event(row["envelope"])
    assert row["topic"] == "cdr-events" and row["partition_key"] == str(record.call_id)
    payload = row["envelope"]["payload"]
    assert payload["cost"] == "0.180000" and payload["currency"] == "EUR"
    assert payload["account_id"] == str(account) and payload["cdr_id"] == str(record.cdr_id)
    assert payload["answered_at"] == "2025-03-01T12:00:04.200000Z"
    assert payload["billable_seconds"] == 90 and payload["plan_id"] == str(standard.plan_id)
    assert row["envelope"]["correlation_id"] == str(record.correlation_id)


async def test_minimum_charge_unanswered_and_free_calls(cdrs: CdrBackend) -> None:
    payer, free_rider = uuid.uuid4(), uuid.uuid4()
    standard = await cdrs.repo.create_plan(plan())
    free = await cdrs.repo.create_plan(plan(name="free", tariff_model="free", per_minute_rate=Decimal(0)))
    await cdrs.repo.assign_plan(payer, standard.plan_id)
    await cdrs.repo.assign_plan(free_rider, free.plan_id)

    short = await cdrs.repo.record_cdr(a_cdr(2, account_id=payer))  # 30 s -> 0.06 > minimum 0.05
    assert (short.billable_seconds, short.cost) == (30, Decimal("0.06"))
    cheap = await cdrs.repo.create_plan(plan(name="cheap", per_minute_rate=Decimal("0.01")))
    await cdrs.repo.assign_plan(payer, cheap.plan_id)
    tiny = await cdrs.repo.record_cdr(a_cdr(2, account_id=payer))  # 30 s at 0.01/min = 0.005 -> minimum 0.05
    assert tiny.cost == Decimal("0.05")
    unanswered = await cdrs.repo.record_cdr(
        a_cdr(None, account_id=payer, ended_at=START + dt.timedelta(seconds=20))
    )
    assert (unanswered.duration_seconds, unanswered.billable_seconds, unanswered.cost) == (20, 0, Decimal(0))
    gratis = await cdrs.repo.record_cdr(a_cdr(600, account_id=free_rider))
    assert (gratis.billable_seconds, gratis.cost, gratis.currency) == (600, Decimal(0), "EUR")
    for row in await cdrs.events():
        validate_event(row["envelope"])


async def test_call_without_plan_gets_a_cdr_without_cost(cdrs: CdrBackend) -> None:
    unbilled = await cdrs.repo.record_cdr(a_cdr(45.5, account_id=uuid.uuid4()))
    anonymous = await cdrs.repo.record_cdr(a_cdr(10))
    for record in (unbilled, anonymous):
        assert record.cost is None and record.currency is None and record.plan_id is None
    assert unbilled.billable_seconds == 46
    events = await cdrs.events()
    assert [e["envelope"]["payload"]["cost"] for e in events] == [None, None]
    for row in events:
        validate_event(row["envelope"])


async def test_one_cdr_per_call_and_a_retry_emits_nothing(cdrs: CdrBackend) -> None:
    cdr = a_cdr(30)
    first = await cdrs.repo.record_cdr(cdr)
    again = await cdrs.repo.record_cdr(cdr)
    assert again == first
    assert len(await cdrs.events()) == 1
    if cdrs.pool is not None:  # the retry wrote no outbox row, not even an empty one
        assert await outbox_transactions(cdrs.pool) == [["cdr.created"]]


async def test_listing_is_newest_first_and_bounded(cdrs: CdrBackend) -> None:
    account = uuid.uuid4()
    for minutes in (0, 5, 2):
        start = START + dt.timedelta(minutes=minutes)
        await cdrs.repo.record_cdr(
            a_cdr(
                10,
                account_id=account,
                started_at=start,
                answered_at=start,
                ended_at=start + dt.timedelta(seconds=10),
            )
        )
    listed = await cdrs.repo.list_cdrs(account)
    assert [c.started_at.minute for c in listed] == [5, 2, 0]
    assert len(await cdrs.repo.list_cdrs(account, limit=2)) == 2
    assert await cdrs.repo.list_cdrs(uuid.uuid4()) == []
    with pytest.raises(ValueError, match="limit"):
        await cdrs.repo.list_cdrs(account, limit=0)


async def test_plan_errors(cdrs: CdrBackend) -> None:
    await cdrs.repo.create_plan(plan())
    with pytest.raises(ConflictError, match="standard"):
        await cdrs.repo.create_plan(plan())
    with pytest.raises(NotFoundError):
        await cdrs.repo.assign_plan(uuid.uuid4(), uuid.uuid4())
    with pytest.raises(ValueError, match="currency"):
        plan(currency="euro")
    with pytest.raises(ValueError, match="billing_increment_seconds"):
        plan(billing_increment_seconds=0)
    with pytest.raises(ValueError, match="ended_at"):
        a_cdr(10, ended_at=START - dt.timedelta(seconds=1))


def test_rater_rounding_and_increments() -> None:
    rater = TariffRater()
    per_second = BillingPlan(uuid.uuid4(), "ps", "USD", Decimal("0.0333333"), 1, Decimal(0), "per_minute")
    rating = rater.rate(a_cdr(59.000001), per_second)
    assert rating.billable_seconds == 60 and rating.cost == Decimal("0.033333")
    rating = rater.rate(a_cdr(1), per_second)
    assert rating.cost == Decimal("0.000556")  # 0.0333333 / 60 = 0.00055555.. rounded half up
    per_minute = BillingPlan(uuid.uuid4(), "pm", "USD", Decimal("1"), 60, Decimal(0), "per_minute")
    assert rater.rate(a_cdr(60), per_minute).billable_seconds == 60
    assert rater.rate(a_cdr(60.01), per_minute).billable_seconds == 120


async def test_postgres_cdrs_cannot_be_deleted(
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> None:
    pool = await open_pool(await pg_database("cdr"))
    try:
        repo = PgCdrRepository(pool, node_id=NODE)
        record = await repo.record_cdr(a_cdr(12))
        with pytest.raises(asyncpg.RestrictViolationError):
            await pool.execute("DELETE FROM cdr_records WHERE cdr_id = $1", record.cdr_id)
        with pytest.raises(asyncpg.RestrictViolationError):
            await pool.execute("UPDATE cdr_records SET cost = 0 WHERE cdr_id = $1", record.cdr_id)
        assert await repo.get_cdr(record.cdr_id) == record
    finally:
        await pool.close()


class RefusingRater(TariffRater):
    """Rates like the tariff rater, but cannot rate a call from ``refused`` (a write that fails)."""

    def rate(self, cdr: NewCdr, plan: BillingPlan | None) -> Rating:
        if cdr.caller == "refused":
            raise ValueError("cannot rate this call")
        return super().rate(cdr, plan)


async def test_cdrs_recorded_together_are_all_kept_or_none(cdrs: CdrBackend) -> None:
    """What the B2BUA does with the CDRs of calls that end together: one transaction."""
    repo = cdrs.repo
    first, second = a_cdr(30), a_cdr(None)
    stored = await repo.record_cdr(first)
    records = await repo.record_cdrs([first, second])  # first again: returned as stored, not re-emitted
    assert records[0] == stored and records[1].call_id == second.call_id
    assert await repo.cdr_for_call(second.call_id) == records[1]
    events = await cdrs.events()
    assert [e["envelope"]["payload"]["cdr_id"] for e in events] == [
        str(stored.cdr_id),
        str(records[1].cdr_id),
    ]
    assert await repo.record_cdrs([]) == []

    strict: CdrRepository
    if cdrs.pool is not None:
        strict = PgCdrRepository(cdrs.pool, node_id=NODE, rater=RefusingRater())
    else:
        assert cdrs.fake is not None
        strict = MemoryCdrRepository(node_id=NODE, rater=RefusingRater(), outbox=cdrs.fake.outbox)
    third, refused = a_cdr(10), a_cdr(10, caller="refused")
    with pytest.raises(ValueError, match="cannot rate"):
        await strict.record_cdrs([third, refused])
    assert await strict.cdr_for_call(third.call_id) is None
    assert len(await cdrs.events()) == 2
    [kept] = await strict.record_cdrs([third])
    assert await strict.cdr_for_call(third.call_id) == kept
    if cdrs.pool is not None:  # one row per transaction that emitted: the replayed first emitted nothing
        assert await outbox_transactions(cdrs.pool) == [["cdr.created"], ["cdr.created"], ["cdr.created"]]


async def test_cdrs_recorded_together_are_rated_as_one_at_a_time(cdrs: CdrBackend) -> None:
    """A batch of CDRs (the calls of one group commit) gives each the record and event record_cdr gives."""
    account, other = uuid.uuid4(), uuid.uuid4()
    standard = await cdrs.repo.create_plan(plan())
    await cdrs.repo.assign_plan(account, standard.plan_id)
    batch = [a_cdr(61.3, account_id=account), a_cdr(None, account_id=other), a_cdr(61.3, account_id=account)]
    records = await cdrs.repo.record_cdrs(batch)
    assert [r.call_id for r in records] == [c.call_id for c in batch]
    assert records[0].cost == records[2].cost == Decimal("0.18") and records[0].plan_id == standard.plan_id
    assert records[1].plan_id is None
    for record in records:
        assert await cdrs.repo.cdr_for_call(record.call_id) == record
    rows = await cdrs.events()
    assert [row["envelope"]["payload"]["cdr_id"] for row in rows] == [str(r.cdr_id) for r in records]
    if cdrs.pool is not None:  # the batch's events in one outbox row, in the batch's order
        assert await outbox_transactions(cdrs.pool) == [["cdr.created"] * 3]
    # The same CDRs again (a retry after a lost commit acknowledgement): the stored ones, no new events.
    assert await cdrs.repo.record_cdrs(batch) == records
    assert len(await cdrs.events()) == 3
    if cdrs.pool is not None:
        assert await outbox_transactions(cdrs.pool) == [["cdr.created"] * 3]
