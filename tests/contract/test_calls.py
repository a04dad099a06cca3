"""CallRepository contract: the in-memory fake and PostgreSQL store the same and emit the same events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from storage.events import validate_event
from storage.memory.sql_domains import MemoryCallRepository
from storage.ports import (
    CallRepository,
    ConflictError,
    InvalidStateChange,
    NewCall,
    NewLeg,
    NotFoundError,
    QualityReport,
)
from storage.postgres.calls import PgCallRepository
from storage.postgres.errors import DatabaseUnavailable
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
class CallsBackend:
    kind: str
    repo: CallRepository
    clock: StepClock
    pool: asyncpg.Pool | None
    fake: MemoryCallRepository | None

    async def events(self) -> list[dict[str, Any]]:
        return await outbox_events(self.fake.outbox if self.fake else self.pool)


@pytest.fixture(params=["memory", "postgres"])
async def calls(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> AsyncIterator[CallsBackend]:
    clock = StepClock()
    if request.param == "memory":
        fake = MemoryCallRepository(node_id=NODE, clock=clock)
        yield CallsBackend("memory", fake, clock, None, fake)
        return
    pool = await open_pool(await pg_database("calls"))
    try:
        yield CallsBackend("postgres", PgCallRepository(pool, node_id=NODE, clock=clock), clock, pool, None)
    finally:
        await pool.close()


def new_call(**overrides: Any) -> NewCall:
    fields: dict[str, Any] = {
        "correlation_id": uuid.uuid4(),
        "direction": "inbound",
        "from_uri": "sip:alice@edge.example",
        "to_uri": "sip:bob@edge.example",
        "sip_call_id": "a84b4c76e66710@pc33.example",
        "initiator_account_id": uuid.uuid4(),
    }
    fields.update(overrides)
    return NewCall(**fields)


async def test_call_life_cycle_is_stored_and_reported_in_order(calls: CallsBackend) -> None:
    repo, clock = calls.repo, calls.clock
    call = await repo.start_call(new_call())
    assert call.status == "initiated" and call.node_id == NODE and call.started_at == START
    inbound = await repo.add_leg(call.call_id, NewLeg("webrtc", "inbound", "198.51.100.7:49170"))
    clock.advance(0.5)
    first = await repo.add_leg(call.call_id, NewLeg("sip", "outbound", "10.0.0.5:5060"))
    await repo.record_routing_attempt(
        call.call_id, step=1, target="sip:bob@10.0.0.5", result="busy", sip_status=486
    )
    clock.advance(0.5)
    second = await repo.add_leg(
        call.call_id, NewLeg("sip", "outbound", "10.0.0.6:5060", device_id=uuid.uuid4())
    )
    await repo.change_leg_state(second.leg_id, "early", reason="180 Ringing")
    clock.advance(1.34)
    await repo.change_leg_state(second.leg_id, "confirmed")
    await repo.record_routing_attempt(
        call.call_id,
        step=2,
        target="sip:bob@10.0.0.6",
        result="answered",
        sip_status=200,
        leg_id=second.leg_id,
    )
    answered = await repo.answer_call(call.call_id, leg_id=second.leg_id)
    assert answered.status == "answered" and answered.answered_leg_id == second.leg_id
    clock.advance(5)
    await repo.report_quality(
        call.call_id,
        QualityReport(second.leg_id, 5.0, jitter_ms=3.5, packet_loss_fraction=0.01, packets_lost=2, mos=4.2),
    )
    clock.advance(60)
    ended = await repo.end_call(
        call.call_id, termination_cause="normal_clearing", sip_status=200, ended_by="caller"
    )
    assert ended.status == "ended" and ended.ended_at == clock.now

    assert await repo.get_call(call.call_id) == ended
    assert [leg.leg_id for leg in await repo.list_legs(call.call_id)] == [
        inbound.leg_id,
        first.leg_id,
        second.leg_id,
    ]
    stored_second = (await repo.list_legs(call.call_id))[2]
    assert stored_second.status == "confirmed" and stored_second.status_reason is None
    attempts = await repo.list_routing_attempts(call.call_id)
    assert [(a.step, a.result, a.sip_status) for a in attempts] == [(1, "busy", 486), (2, "answered", 200)]
    [quality] = await repo.list_quality_reports(call.call_id)
    assert (
        quality.leg_id == second.leg_id
        and quality.mos == 4.2
        and quality.reported_at == START.replace(second=7, microsecond=340000)
    )

    rows = await calls.events()
    assert [r["event_type"] for r in rows] == [
        "call.started",
        "call.leg.created",
        "call.leg.created",
        "call.routing.attempted",
        "call.leg.created",
        "call.leg.state_changed",
        "call.leg.state_changed",
        "call.routing.attempted",
        "call.answered",
        "call.quality.reported",
        "call.ended",
    ]
    for row in rows:
        validate_event(row["envelope"])
        assert row["topic"] == "call-events" and row["partition_key"] == str(call.call_id)
        assert row["envelope"]["call_id"] == str(call.call_id)
        assert row["envelope"]["correlation_id"] == str(call.correlation_id)
        assert row["envelope"]["node_id"] == NODE
    by_type = {r["event_type"]: r["envelope"] for r in rows}
    assert by_type["call.started"]["payload"]["initiator_account_id"] == str(call.initiator_account_id)
    assert by_type["call.started"]["occurred_at"] == "2025-03-01T12:00:00Z"
    assert by_type["call.answered"]["payload"] == {"answered_leg_id": str(second.leg_id), "setup_ms": 2340}
    assert by_type["call.ended"]["payload"] == {
        "termination_cause": "normal_clearing",
        "sip_status": 200,
        "duration_ms": 67340,
        "talk_ms": 65000,
        "ended_by": "caller",
    }
    early = rows[5]["envelope"]["payload"]
    assert early == {
        "leg_id": str(second.leg_id),
        "from_state": "initiated",
        "to_state": "early",
        "reason": "180 Ringing",
    }
    assert len({r["envelope"]["event_id"] for r in rows}) == len(rows)
    if calls.pool is not None:  # each write its own transaction: one outbox row holding its one event
        assert await outbox_transactions(calls.pool) == [[r["event_type"]] for r in rows]


async def test_ending_twice_changes_nothing_and_emits_once(calls: CallsBackend) -> None:
    call = await calls.repo.start_call(new_call())
    calls.clock.advance(3)
    first = await calls.repo.end_call(call.call_id, termination_cause="cancelled", sip_status=487)
    calls.clock.advance(3)
    second = await calls.repo.end_call(call.call_id, termination_cause="other", ended_by="system")
    assert first == second and second.termination_cause == "cancelled" and second.answered_at is None
    ended = [r for r in await calls.events() if r["event_type"] == "call.ended"]
    assert len(ended) == 1 and ended[0]["envelope"]["payload"]["talk_ms"] == 0


async def test_invalid_changes_are_refused_and_emit_nothing(calls: CallsBackend) -> None:
    repo = calls.repo
    call = await repo.start_call(new_call())
    other = await repo.start_call(new_call(sip_call_id=None))
    leg = await repo.add_leg(call.call_id, NewLeg("sip", "outbound", "10.0.0.5:5060"))
    foreign = await repo.add_leg(other.call_id, NewLeg("pstn", "outbound", "+15550100"))
    await repo.change_leg_state(leg.leg_id, "confirmed")
    before = len(await calls.events())

    with pytest.raises(InvalidStateChange, match="confirmed to early"):
        await repo.change_leg_state(leg.leg_id, "early")
    with pytest.raises(ValueError, match="leg state"):
        await repo.change_leg_state(leg.leg_id, "ringing")
    with pytest.raises(NotFoundError):
        await repo.change_leg_state(uuid.uuid4(), "terminated")
    with pytest.raises(InvalidStateChange, match="not a leg of call"):
        await repo.answer_call(call.call_id, leg_id=foreign.leg_id)
    with pytest.raises(NotFoundError):
        await repo.add_leg(uuid.uuid4(), NewLeg("sip", "inbound", "x:1"))
    with pytest.raises(NotFoundError):
        await repo.record_routing_attempt(
            call.call_id, step=1, target="t", result="busy", leg_id=foreign.leg_id
        )
    with pytest.raises(ConflictError):
        await repo.start_call(new_call(call_id=call.call_id))
    with pytest.raises(ValueError, match="before"):
        await repo.end_call(call.call_id, termination_cause="x", at=START.replace(year=2024))
    with pytest.raises(ValueError, match="result"):
        await repo.record_routing_attempt(call.call_id, step=1, target="t", result="Not Valid")
    assert len(await calls.events()) == before

    await repo.record_routing_attempt(call.call_id, step=1, target="sip:bob@x", result="no_answer")
    with pytest.raises(ConflictError):
        await repo.record_routing_attempt(call.call_id, step=1, target="sip:bob@x", result="busy")
    await repo.answer_call(call.call_id, leg_id=leg.leg_id)
    with pytest.raises(InvalidStateChange, match="answered"):
        await repo.answer_call(call.call_id, leg_id=leg.leg_id)
    await repo.end_call(call.call_id, termination_cause="normal_clearing")
    with pytest.raises(InvalidStateChange, match="ended"):
        await repo.add_leg(call.call_id, NewLeg("sip", "inbound", "x:1"))
    assert [r["event_type"] for r in (await calls.events())[before:]] == [
        "call.routing.attempted",
        "call.answered",
        "call.ended",
    ]


async def test_lookup_by_sip_call_id_finds_the_latest(calls: CallsBackend) -> None:
    older = await calls.repo.start_call(new_call(sip_call_id="dup@host"))
    calls.clock.advance(10)
    newer = await calls.repo.start_call(new_call(sip_call_id="dup@host"))
    found = await calls.repo.find_by_sip_call_id("dup@host")
    assert found is not None and found.call_id == newer.call_id != older.call_id
    assert await calls.repo.find_by_sip_call_id("nope@host") is None
    assert await calls.repo.get_call(uuid.uuid4()) is None


async def test_new_call_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="direction"):
        new_call(direction="sideways")
    with pytest.raises(ValueError, match="from_uri"):
        new_call(from_uri="")
    with pytest.raises(ValueError, match="leg_type"):
        NewLeg("isdn", "inbound", "x")
    with pytest.raises(ValueError, match="packet_loss_fraction"):
        QualityReport(uuid.uuid4(), 5.0, jitter_ms=1, packet_loss_fraction=1.5, packets_lost=0)


async def test_postgres_change_and_event_commit_together(
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> None:
    """A failing outbox insert rolls the state change back: no call without its event, and vice versa."""
    pool = await open_pool(await pg_database("calls"))
    try:
        repo = PgCallRepository(pool, node_id=NODE, clock=StepClock())
        call = await repo.start_call(new_call())
        await pool.execute("ALTER TABLE outbox ADD CONSTRAINT refuse_new_events CHECK (false) NOT VALID")
        with pytest.raises(asyncpg.CheckViolationError):
            await repo.start_call(new_call(sip_call_id="lost@host"))
        with pytest.raises(asyncpg.CheckViolationError):
            await repo.end_call(call.call_id, termination_cause="normal_clearing")
        assert await pool.fetchval("SELECT count(*) FROM call_sessions") == 1
        assert (await repo.get_call(call.call_id)).status == "initiated"  # type: ignore[union-attr]
        assert await outbox_transactions(pool) == [["call.started"]]
    finally:
        await pool.close()


async def test_postgres_lost_connection_is_a_clear_error_and_writes_nothing(
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> None:
    """The server drops the session mid-transaction (as in a restart): a clear error, nothing half-written."""
    dsn = await pg_database("calls")
    pool = await open_pool(dsn)
    admin = await asyncpg.connect(dsn)
    try:
        repo = PgCallRepository(pool, node_id=NODE, clock=StepClock())
        call = await repo.start_call(new_call())
        # The session that inserts a leg is killed by the server while the insert runs.
        await admin.execute(
            "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$;"
            " CREATE TRIGGER die BEFORE INSERT ON call_legs FOR EACH ROW EXECUTE FUNCTION die();"
        )
        with pytest.raises(
            DatabaseUnavailable, match="lost the connection to PostgreSQL while adding a call leg"
        ):
            await repo.add_leg(call.call_id, NewLeg("sip", "outbound", "10.0.0.5:5060"))
        assert await admin.fetchval("SELECT count(*) FROM call_legs") == 0
        assert await outbox_transactions(admin) == [["call.started"]]
        await admin.execute("DROP TRIGGER die ON call_legs")
        leg = await repo.add_leg(
            call.call_id, NewLeg("sip", "outbound", "10.0.0.5:5060")
        )  # the pool reconnects
        assert await repo.list_legs(call.call_id) == [leg]
    finally:
        await admin.close()
        await pool.close()


async def test_a_batch_commits_every_write_and_its_events_in_order(calls: CallsBackend) -> None:
    """What the B2BUA does with the writes queued while earlier ones were in flight: one transaction."""
    repo, clock = calls.repo, calls.clock
    fresh = new_call(call_id=uuid.uuid4())
    callee_leg = uuid.uuid4()
    async with repo.batch(fresh.call_id) as writer:
        call = await writer.start_call(fresh)
        inbound = await writer.add_leg(call.call_id, NewLeg("sip", "inbound", "198.51.100.7:5060"))
        outbound = await writer.add_leg(
            call.call_id, NewLeg("sip", "outbound", "10.0.0.5:5060", leg_id=callee_leg)
        )
        clock.advance(0.2)
        await writer.change_leg_state(outbound.leg_id, "early", reason="180 Ringing")
        await writer.change_leg_state(inbound.leg_id, "early")
        clock.advance(1.0)
        await writer.change_leg_state(outbound.leg_id, "confirmed")
        await writer.record_routing_attempt(
            call.call_id,
            step=1,
            target="sip:bob@10.0.0.5",
            result="answered",
            sip_status=200,
            leg_id=outbound.leg_id,
        )
        answered = await writer.answer_call(call.call_id, leg_id=outbound.leg_id)
    assert answered.status == "answered" and answered.answered_leg_id == callee_leg
    assert await repo.get_call(call.call_id) == answered
    legs = await repo.list_legs(call.call_id)  # same start: listed in leg_id order
    assert {leg.leg_id: leg.status for leg in legs} == {inbound.leg_id: "early", callee_leg: "confirmed"}
    [attempt] = await repo.list_routing_attempts(call.call_id)
    assert attempt.result == "answered" and attempt.leg_id == callee_leg

    clock.advance(30)
    async with repo.batch(call.call_id) as writer:  # a later batch of the same call reads what is stored
        await writer.change_leg_state(inbound.leg_id, "terminated", reason="BYE")
        ended = await writer.end_call(call.call_id, termination_cause="normal_clearing", ended_by="caller")
    stored = {
        leg.leg_id: (leg.status, leg.status_reason, leg.ended_at)
        for leg in await repo.list_legs(call.call_id)
    }
    assert ended.status == "ended" and stored == {
        inbound.leg_id: ("terminated", "BYE", clock.now),
        callee_leg: ("confirmed", None, None),
    }

    rows = await calls.events()
    assert [r["event_type"] for r in rows] == [
        "call.started",
        "call.leg.created",
        "call.leg.created",
        "call.leg.state_changed",
        "call.leg.state_changed",
        "call.leg.state_changed",
        "call.routing.attempted",
        "call.answered",
        "call.leg.state_changed",
        "call.ended",
    ]
    for row in rows:
        validate_event(row["envelope"])
        assert row["partition_key"] == str(call.call_id)
    assert rows[7]["envelope"]["payload"]["setup_ms"] == 1200
    if calls.pool is not None:  # one outbox row per batch, holding its events in order
        types = [r["event_type"] for r in rows]
        assert await outbox_transactions(calls.pool) == [types[:8], types[8:]]


async def test_a_batch_whose_write_breaks_a_rule_keeps_nothing(calls: CallsBackend) -> None:
    repo = calls.repo
    call = await repo.start_call(new_call())
    leg = await repo.add_leg(call.call_id, NewLeg("sip", "outbound", "10.0.0.5:5060"))
    before = await calls.events()

    with pytest.raises(InvalidStateChange, match="confirmed to early"):
        async with repo.batch(call.call_id) as writer:
            await writer.add_leg(call.call_id, NewLeg("sip", "inbound", "198.51.100.7:5060"))
            await writer.change_leg_state(leg.leg_id, "confirmed")
            await writer.record_routing_attempt(call.call_id, step=1, target="sip:bob@x", result="answered")
            await writer.change_leg_state(leg.leg_id, "early")
    with pytest.raises(ConflictError):
        async with repo.batch() as writer:  # a new call and its leg, then a duplicate: none of it stays
            lost = await writer.start_call(new_call(sip_call_id="lost@host"))
            await writer.add_leg(lost.call_id, NewLeg("sip", "inbound", "198.51.100.7:5060"))
            await writer.start_call(new_call(call_id=call.call_id))

    assert [(stored.leg_id, stored.status) for stored in await repo.list_legs(call.call_id)] == [
        (leg.leg_id, "initiated")
    ]
    assert await repo.list_routing_attempts(call.call_id) == []
    assert await repo.get_call(lost.call_id) is None and await repo.list_legs(lost.call_id) == []
    assert await calls.events() == before
    # the repository goes on as if the failed batches never happened
    await repo.change_leg_state(leg.leg_id, "early")
    assert [r["event_type"] for r in await calls.events()][len(before) :] == ["call.leg.state_changed"]
    if calls.pool is not None:  # no outbox row of the failed batches, not even an empty one
        assert await outbox_transactions(calls.pool) == [
            ["call.started"],
            ["call.leg.created"],
            ["call.leg.state_changed"],
        ]


async def test_rows_a_batch_returns_are_the_rows_it_stores(calls: CallsBackend) -> None:
    """A whole call in one batch (as a short call under load is written): what each write returned is what
    a later read gives back, column for column — the writer builds rows instead of reading them back."""
    repo, clock = calls.repo, calls.clock
    async with repo.batch() as writer:
        call = await writer.start_call(new_call(sip_call_id="whole@host"))
        caller = await writer.add_leg(call.call_id, NewLeg("sip", "inbound", "198.51.100.7:5060"))
        callee = await writer.add_leg(call.call_id, NewLeg("sip", "outbound", "10.0.0.5:5060"))
        attempt = await writer.record_routing_attempt(
            call.call_id,
            step=1,
            target="sip:bob@10.0.0.5",
            result="answered",
            sip_status=200,
            leg_id=callee.leg_id,
        )
        clock.advance(0.5)
        await writer.change_leg_state(callee.leg_id, "confirmed")
        await writer.answer_call(call.call_id, leg_id=callee.leg_id)
        clock.advance(5)
        caller = await writer.change_leg_state(caller.leg_id, "terminated", reason="BYE")
        ended = await writer.end_call(call.call_id, termination_cause="normal_clearing", sip_status=200)
    assert await repo.get_call(call.call_id) == ended
    assert ended.status == "ended" and ended.answered_leg_id == callee.leg_id and ended.ended_at == clock.now
    stored_legs = {leg.leg_id: leg for leg in await repo.list_legs(call.call_id)}
    assert stored_legs[caller.leg_id] == caller and stored_legs[callee.leg_id].status == "confirmed"
    assert await repo.list_routing_attempts(call.call_id) == [attempt]
    if calls.pool is not None:  # the whole call's events in one outbox row, in order
        assert await outbox_transactions(calls.pool) == [
            [
                "call.started",
                "call.leg.created",
                "call.leg.created",
                "call.routing.attempted",
                "call.leg.state_changed",
                "call.answered",
                "call.leg.state_changed",
                "call.ended",
            ]
        ]

    before = await calls.events()
    with pytest.raises(ConflictError):  # the same routing step twice: nothing of the batch stays
        async with repo.batch(call.call_id) as writer:
            again = await writer.start_call(new_call(sip_call_id="again@host"))
            await writer.record_routing_attempt(again.call_id, step=1, target="t", result="busy")
            await writer.record_routing_attempt(again.call_id, step=1, target="t", result="busy")
    assert await repo.get_call(again.call_id) is None
    assert await calls.events() == before
