"""PolicyDecisionAudit contract (DB_CALLS): fake and PostgreSQL keep the same append-only record."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from storage.memory.sql_domains import MemoryPolicyDecisionAudit
from storage.ports import NewPolicyDecision, PolicyDecisionAudit
from storage.postgres.policy_audit import PgPolicyDecisionAudit
from tests.contract.pg_fixtures import START, StepClock, open_pool, pg_database, pg_templates  # noqa: F401

NODE = "edge-test-1"


@pytest.fixture(params=["memory", "postgres"])
async def audit(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> AsyncIterator[tuple[PolicyDecisionAudit, StepClock]]:
    clock = StepClock()
    if request.param == "memory":
        yield MemoryPolicyDecisionAudit(node_id=NODE, clock=clock), clock
        return
    pool = await open_pool(await pg_database("calls"))
    try:
        yield PgPolicyDecisionAudit(pool, node_id=NODE, clock=clock), clock
    finally:
        await pool.close()


def decision(**overrides: Any) -> NewPolicyDecision:
    fields: dict[str, Any] = {
        "subject": "account:alice",
        "action": "recording.read",
        "resource": "recordings/calls/c1/s1/audio.opus",
        "decision": "allow",
        "policy_bundle_version": "bundle-2025.03.01-7",
        "obligations": ({"type": "watermark", "text": "alice"}, {"type": "audit", "level": "high"}),
        "reason": "owner of the call",
    }
    fields.update(overrides)
    return NewPolicyDecision(**fields)


async def test_decisions_are_recorded_and_listed(audit: tuple[PolicyDecisionAudit, StepClock]) -> None:
    store, clock = audit
    call_id = uuid.uuid4()
    first = await store.record(
        decision(call_id=call_id, subject_account_id=uuid.uuid4(), correlation_id=uuid.uuid4())
    )
    assert first.decided_at == START and first.node_id == NODE
    assert first.obligations == ({"type": "watermark", "text": "alice"}, {"type": "audit", "level": "high"})
    clock.advance(1)
    denied = await store.record(decision(call_id=call_id, decision="deny", obligations=(), reason=None))
    clock.advance(1)
    unrelated = await store.record(decision(action="call.originate", resource="sip:bob@x"))

    assert await store.get(first.decision_id) == first
    assert await store.get(uuid.uuid4()) is None
    assert await store.list_for_call(call_id) == [first, denied]
    assert await store.list_since(START + dt.timedelta(seconds=1)) == [denied, unrelated]
    assert await store.list_since(START, limit=1) == [first]
    with pytest.raises(ValueError, match="limit"):
        await store.list_since(START, limit=0)


def test_bad_decisions_are_refused() -> None:
    with pytest.raises(ValueError, match="decision"):
        decision(decision="maybe")
    with pytest.raises(ValueError, match="policy_bundle_version"):
        decision(policy_bundle_version="")
    with pytest.raises(ValueError, match="obligations"):
        decision(obligations=("watermark",))


async def test_postgres_audit_rows_cannot_be_changed_or_deleted(
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> None:
    pool = await open_pool(await pg_database("calls"))
    try:
        recorded = await PgPolicyDecisionAudit(pool, node_id=NODE).record(decision())
        with pytest.raises(asyncpg.RestrictViolationError):
            await pool.execute("UPDATE policy_decision_audit SET decision = 'deny'")
        with pytest.raises(asyncpg.RestrictViolationError):
            await pool.execute(
                "DELETE FROM policy_decision_audit WHERE decision_id = $1", recorded.decision_id
            )
        assert await pool.fetchval("SELECT decision FROM policy_decision_audit") == "allow"
    finally:
        await pool.close()
