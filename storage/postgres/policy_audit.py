"""Policy-decision audit on DB_CALLS: an append-only record of every runtime ABAC decision."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from storage.ports import NewPolicyDecision, PolicyDecisionRecord
from storage.postgres.sql import queries_for

_SQL = queries_for("policy_audit")
MAX_LIST = 10_000


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIST:
        raise ValueError(f"limit must be 1..{MAX_LIST}, got {limit}")


def _record(row: asyncpg.Record) -> PolicyDecisionRecord:
    fields: dict[str, Any] = dict(row)
    fields["obligations"] = tuple(json.loads(fields["obligations"]))
    return PolicyDecisionRecord(**fields)


class PgPolicyDecisionAudit:
    """``PolicyDecisionAudit`` on an asyncpg pool of the calls database."""

    def __init__(
        self, pool: asyncpg.Pool, *, node_id: str, clock: Callable[[], dt.datetime] = utc_now
    ) -> None:
        self._pool = pool
        self._node_id = node_id
        self._clock = clock

    async def record(self, decision: NewPolicyDecision) -> PolicyDecisionRecord:
        row = await self._pool.fetchrow(
            _SQL["insert_decision"],
            decision.subject,
            decision.action,
            decision.resource,
            decision.decision,
            decision.policy_bundle_version,
            json.dumps(list(decision.obligations)),
            decision.reason,
            decision.subject_account_id,
            decision.call_id,
            decision.correlation_id,
            decision.decided_at or self._clock(),
            self._node_id,
        )
        return _record(row)

    async def get(self, decision_id: uuid.UUID) -> PolicyDecisionRecord | None:
        row = await self._pool.fetchrow(_SQL["get_decision"], decision_id)
        return None if row is None else _record(row)

    async def list_for_call(self, call_id: uuid.UUID) -> list[PolicyDecisionRecord]:
        return [_record(row) for row in await self._pool.fetch(_SQL["list_for_call"], call_id)]

    async def list_since(self, since: dt.datetime, *, limit: int = 1000) -> list[PolicyDecisionRecord]:
        check_limit(limit)
        return [_record(row) for row in await self._pool.fetch(_SQL["list_since"], since, limit)]
