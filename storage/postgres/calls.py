"""Call repository on DB_CALLS: each change and the ``call.*`` event reporting it commit together."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from storage.ports import (
    CallLeg,
    CallSession,
    ConflictError,
    NewCall,
    NewLeg,
    NotFoundError,
    QualityReport,
    RoutingAttempt,
)
from storage.postgres import call_rules, domain_events
from storage.postgres.connect import transaction
from storage.postgres.repository import EventedRepository
from storage.postgres.sql import queries_for

_SQL = queries_for("calls")


class PgCallRepository(EventedRepository):
    """``CallRepository`` on an asyncpg pool of the calls database, writing as ``node_id``."""

    async def _locked_call(self, conn: asyncpg.Connection, call_id: uuid.UUID) -> CallSession:
        row = await conn.fetchrow(_SQL["lock_call"], call_id)
        if row is None:
            raise NotFoundError(f"no call {call_id}")
        return CallSession(**row)

    async def start_call(self, call: NewCall) -> CallSession:
        started_at = call.started_at or self._clock()
        call_rules.check_at("start", started_at, started_at)
        async with transaction(self._pool, "starting a call") as conn:
            try:
                row = await conn.fetchrow(
                    _SQL["insert_call"],
                    call.call_id or uuid.uuid4(),
                    call.correlation_id,
                    call.sip_call_id,
                    call.direction,
                    call.media,
                    call.from_uri,
                    call.to_uri,
                    call.initiator_account_id,
                    call.callee_account_id,
                    self._node_id,
                    started_at,
                )
            except asyncpg.UniqueViolationError:
                raise ConflictError(f"call {call.call_id} already exists") from None
            session = CallSession(**row)
            await self._emit(conn, domain_events.call_started(session))
        return session

    async def add_leg(self, call_id: uuid.UUID, leg: NewLeg) -> CallLeg:
        async with transaction(self._pool, "adding a call leg") as conn:
            call = await self._locked_call(conn, call_id)
            call_rules.check_can_add_leg(call)
            started_at = call_rules.check_at("leg start", leg.started_at or self._clock(), call.started_at)
            try:
                row = await conn.fetchrow(
                    _SQL["insert_leg"],
                    leg.leg_id or uuid.uuid4(),
                    call_id,
                    leg.leg_type,
                    leg.direction,
                    leg.remote_address,
                    leg.device_id,
                    leg.account_id,
                    leg.sip_call_id,
                    started_at,
                )
            except asyncpg.UniqueViolationError:
                raise ConflictError(f"leg {leg.leg_id} already exists") from None
            created = CallLeg(**row)
            await self._emit(conn, domain_events.call_leg_created(call, created, self._node_id))
        return created

    async def change_leg_state(
        self, leg_id: uuid.UUID, to_state: str, *, reason: str | None = None, at: dt.datetime | None = None
    ) -> CallLeg:
        async with transaction(self._pool, "changing a leg's state") as conn:
            leg_row = await conn.fetchrow(_SQL["get_leg"], leg_id)
            if leg_row is None:
                raise NotFoundError(f"no leg {leg_id}")
            call = await self._locked_call(conn, leg_row["call_id"])
            leg = CallLeg(**await conn.fetchrow(_SQL["get_leg"], leg_id))  # re-read under the call lock
            call_rules.check_leg_transition(leg, to_state, reason)
            when = call_rules.check_at("leg state change", at or self._clock(), leg.started_at)
            changed = CallLeg(**await conn.fetchrow(_SQL["update_leg_state"], leg_id, to_state, reason, when))
            await self._emit(
                conn, domain_events.call_leg_state_changed(call, changed, leg.status, when, self._node_id)
            )
        return changed

    async def record_routing_attempt(
        self,
        call_id: uuid.UUID,
        *,
        step: int,
        target: str,
        result: str,
        sip_status: int | None = None,
        leg_id: uuid.UUID | None = None,
        at: dt.datetime | None = None,
    ) -> RoutingAttempt:
        call_rules.check_routing_attempt(step, target, result, sip_status)
        async with transaction(self._pool, "recording a routing attempt") as conn:
            call = await self._locked_call(conn, call_id)
            when = call_rules.check_at("routing attempt", at or self._clock(), call.started_at)
            if leg_id is not None:
                leg = await conn.fetchrow(_SQL["get_leg"], leg_id)
                if leg is None or leg["call_id"] != call_id:
                    raise NotFoundError(f"leg {leg_id} is not a leg of call {call_id}")
            try:
                row = await conn.fetchrow(
                    _SQL["insert_routing_attempt"], call_id, step, target, result, sip_status, leg_id, when
                )
            except asyncpg.UniqueViolationError:
                raise ConflictError(f"call {call_id} already has step {step} to {target}") from None
            attempt = RoutingAttempt(**row)
            await self._emit(conn, domain_events.call_routing_attempted(call, attempt, self._node_id))
        return attempt

    async def answer_call(
        self, call_id: uuid.UUID, *, leg_id: uuid.UUID, at: dt.datetime | None = None
    ) -> CallSession:
        async with transaction(self._pool, "answering a call") as conn:
            call = await self._locked_call(conn, call_id)
            leg_row = await conn.fetchrow(_SQL["get_leg"], leg_id)
            call_rules.check_answer(call, CallLeg(**leg_row) if leg_row else None, leg_id)
            when = call_rules.check_at("answer", at or self._clock(), call.started_at)
            answered = CallSession(**await conn.fetchrow(_SQL["answer_call"], call_id, when, leg_id))
            await self._emit(conn, domain_events.call_answered(answered, self._node_id))
        return answered

    async def end_call(
        self,
        call_id: uuid.UUID,
        *,
        termination_cause: str,
        sip_status: int | None = None,
        ended_by: str | None = None,
        at: dt.datetime | None = None,
    ) -> CallSession:
        call_rules.check_end(termination_cause, sip_status, ended_by)
        async with transaction(self._pool, "ending a call") as conn:
            call = await self._locked_call(conn, call_id)
            if call.status == "ended":
                return call
            when = call_rules.check_at("end", at or self._clock(), call.answered_at or call.started_at)
            ended = CallSession(
                **await conn.fetchrow(
                    _SQL["end_call"], call_id, when, termination_cause, sip_status, ended_by
                )
            )
            await self._emit(conn, domain_events.call_ended(ended, self._node_id))
        return ended

    async def report_quality(self, call_id: uuid.UUID, report: QualityReport) -> None:
        async with transaction(self._pool, "storing a quality report") as conn:
            call = await self._locked_call(conn, call_id)
            leg = await conn.fetchrow(_SQL["get_leg"], report.leg_id)
            if leg is None or leg["call_id"] != call_id:
                raise NotFoundError(f"leg {report.leg_id} is not a leg of call {call_id}")
            when = report.reported_at or self._clock()
            await conn.execute(
                _SQL["insert_quality"],
                call_id,
                report.leg_id,
                report.interval_seconds,
                report.rtt_ms,
                report.jitter_ms,
                report.packet_loss_fraction,
                report.packets_lost,
                report.mos,
                when,
            )
            await self._emit(conn, domain_events.call_quality_reported(call, report, when, self._node_id))

    async def get_call(self, call_id: uuid.UUID) -> CallSession | None:
        row = await self._pool.fetchrow(_SQL["get_call"], call_id)
        return None if row is None else CallSession(**row)

    async def find_by_sip_call_id(self, sip_call_id: str) -> CallSession | None:
        row = await self._pool.fetchrow(_SQL["find_by_sip_call_id"], sip_call_id)
        return None if row is None else CallSession(**row)

    async def list_legs(self, call_id: uuid.UUID) -> list[CallLeg]:
        return [CallLeg(**row) for row in await self._pool.fetch(_SQL["list_legs"], call_id)]

    async def list_routing_attempts(self, call_id: uuid.UUID) -> list[RoutingAttempt]:
        return [
            RoutingAttempt(**row) for row in await self._pool.fetch(_SQL["list_routing_attempts"], call_id)
        ]

    async def list_quality_reports(self, call_id: uuid.UUID) -> list[QualityReport]:
        return [QualityReport(**row) for row in await self._pool.fetch(_SQL["list_quality"], call_id)]
