"""Call repository on DB_CALLS: each change and the ``call.*`` event reporting it commit together.

One write is one transaction. :meth:`PgCallRepository.batch` runs several writes of one call in a single
transaction (the call's rows read once under its lock, the events written with one ``executemany``), so a
B2BUA can coalesce the writes queued while the previous ones were in flight::

    async with repo.batch(call_id) as writer:      # BEGIN … COMMIT; all or nothing
        await writer.add_leg(call_id, leg)
        await writer.change_leg_state(leg_id, "early", at=when)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg

from storage.events import outbox_entry
from storage.ids import random_uuid4
from storage.kafka.outbox_writer import write_outbox
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


class CallWriter:
    """The writes of :class:`PgCallRepository` on one connection inside one transaction.

    A call is locked (``FOR UPDATE``) the first time a write needs it and its legs are read once. Writes
    change the cached rows — built here exactly as the INSERT/UPDATE would leave them, so later writes of
    the batch check their rules without reading again — and :meth:`flush` sends them before the commit:
    new calls, new legs, routing attempts, changed calls, changed legs, each kind as one ``executemany``
    (one round trip for all the calls of a group commit) holding each row's final state. So a rule the
    database enforces (a duplicate key, a check) fails at the flush, which aborts the batch as before.
    Events are queued and written before the commit, in order.
    """

    def __init__(self, repo: PgCallRepository, conn: asyncpg.Connection, call_id: uuid.UUID | None) -> None:
        self._repo = repo
        self._conn = conn
        self._hint = call_id  # the call whose legs the batch changes (saves a lookup per leg)
        self._calls: dict[uuid.UUID, CallSession] = {}
        self._legs: dict[uuid.UUID, CallLeg] = {}
        self._legs_loaded: set[uuid.UUID] = set()
        self._unsaved: dict[uuid.UUID, CallLeg] = {}  # stored legs whose new state flush() writes
        self._new_calls: dict[uuid.UUID, CallSession] = {}  # calls flush() inserts (in their final state)
        self._changed_calls: dict[uuid.UUID, CallSession] = {}  # stored calls flush() updates
        self._new_legs: dict[uuid.UUID, CallLeg] = {}  # legs flush() inserts (in their final state)
        self._new_attempts: list[RoutingAttempt] = []
        self.events: list[Mapping[str, Any]] = []

    async def _call(self, call_id: uuid.UUID) -> CallSession:
        call = self._calls.get(call_id)
        if call is None:
            row = await self._conn.fetchrow(_SQL["lock_call"], call_id)
            if row is None:
                raise NotFoundError(f"no call {call_id}")
            call = self._calls[call_id] = CallSession(**row)
        return call

    async def preload(self, call_ids: Sequence[uuid.UUID]) -> None:
        """Lock and read the stored calls among ``call_ids`` and their legs: two round trips for the calls
        of a group commit instead of two per call (a call's teardown batch reads its call and legs).
        Calls not stored yet (started by this batch) are skipped; calls already read are not read again."""
        wanted = [call_id for call_id in dict.fromkeys(call_ids) if call_id not in self._legs_loaded]
        if len(wanted) < 2:
            return  # one call: _call/_load_legs read it when a write needs it (nothing read for nothing)
        found: list[uuid.UUID] = []
        for row in await self._conn.fetch(_SQL["lock_calls"], wanted):
            call = CallSession(**row)
            self._calls.setdefault(call.call_id, call)
            found.append(call.call_id)
        if found:
            for row in await self._conn.fetch(_SQL["list_legs_of_calls"], found):
                leg = CallLeg(**row)
                self._legs.setdefault(leg.leg_id, leg)
            self._legs_loaded.update(found)

    async def _load_legs(self, call_id: uuid.UUID) -> None:
        """Every leg of the (locked) call into the cache; rows written by this batch stay as written."""
        if call_id in self._legs_loaded:
            return
        await self._call(call_id)
        for row in await self._conn.fetch(_SQL["list_legs"], call_id):
            leg = CallLeg(**row)
            self._legs.setdefault(leg.leg_id, leg)
        self._legs_loaded.add(call_id)

    async def _leg(self, leg_id: uuid.UUID, call_id: uuid.UUID | None = None) -> CallLeg | None:
        """The leg read under its call's lock (None when it does not exist, or is not ``call_id``'s)."""
        leg = self._legs.get(leg_id)
        if leg is None:
            owner = call_id or self._hint
            if owner is not None and owner not in self._legs_loaded:
                with contextlib.suppress(NotFoundError):
                    await self._load_legs(owner)
                leg = self._legs.get(leg_id)
            if leg is None and call_id is None:
                # A leg of a call this batch has not touched yet (batches of several calls): lock its
                # call and read the legs in two round trips, not three.
                row = await self._conn.fetchrow(_SQL["lock_call_of_leg"], leg_id)
                if row is not None:
                    call = CallSession(**row)
                    self._calls.setdefault(call.call_id, call)
                    await self._load_legs(call.call_id)
                    leg = self._legs.get(leg_id)
        if leg is not None and call_id is not None and leg.call_id != call_id:
            return None
        return leg

    async def start_call(self, call: NewCall) -> CallSession:
        repo = self._repo
        started_at = _utc(call.started_at or repo._clock())
        call_rules.check_at("start", started_at, started_at)
        call_id = call.call_id or random_uuid4()
        if call_id in self._calls:
            raise ConflictError(f"call {call_id} already exists")
        session = call_rules.new_session(call, call_id, repo._node_id, started_at)
        # Inserted by flush(): a call_id already stored fails there (ConflictError) and the batch with it.
        self._calls[call_id] = self._new_calls[call_id] = session
        self._legs_loaded.add(call_id)
        self.events.append(domain_events.call_started(session))
        return session

    async def add_leg(self, call_id: uuid.UUID, leg: NewLeg) -> CallLeg:
        call = await self._call(call_id)
        call_rules.check_can_add_leg(call)
        started_at = call_rules.check_at(
            "leg start", _utc(leg.started_at or self._repo._clock()), call.started_at
        )
        leg_id = leg.leg_id or random_uuid4()
        if leg_id in self._legs:
            raise ConflictError(f"leg {leg_id} already exists")
        created = call_rules.new_leg(leg, leg_id, call_id, started_at)
        self._legs[leg_id] = self._new_legs[leg_id] = created
        self.events.append(domain_events.call_leg_created(call, created, self._repo._node_id))
        return created

    async def change_leg_state(
        self, leg_id: uuid.UUID, to_state: str, *, reason: str | None = None, at: dt.datetime | None = None
    ) -> CallLeg:
        leg = await self._leg(leg_id)
        if leg is None:
            raise NotFoundError(f"no leg {leg_id}")
        call = await self._call(leg.call_id)
        call_rules.check_leg_transition(leg, to_state, reason)
        when = call_rules.check_at("leg state change", _utc(at or self._repo._clock()), leg.started_at)
        # The row is written by flush(), once per leg however many changes the batch makes (a B2BUA
        # moves both legs initiated -> early -> confirmed in one batch); the event of each is kept.
        changed = call_rules.leg_moved(leg, to_state, reason, when)
        self._legs[leg_id] = changed
        if leg_id in self._new_legs:
            self._new_legs[leg_id] = changed
        else:
            self._unsaved[leg_id] = changed
        self.events.append(
            domain_events.call_leg_state_changed(call, changed, leg.status, when, self._repo._node_id)
        )
        return changed

    async def flush(self) -> None:
        """Write what the batch changed, each kind of row in one round trip, parents before children."""
        conn = self._conn
        try:
            if self._new_calls:
                calls, self._new_calls = list(self._new_calls.values()), {}
                await conn.executemany(_SQL["insert_call_row"], [_call_row(call) for call in calls])
            if self._new_legs:
                legs, self._new_legs = list(self._new_legs.values()), {}
                await conn.executemany(_SQL["insert_leg_row"], [_leg_row(leg) for leg in legs])
            if self._new_attempts:
                attempts, self._new_attempts = self._new_attempts, []
                await conn.executemany(_SQL["insert_routing_row"], [_attempt_row(a) for a in attempts])
        except asyncpg.UniqueViolationError as error:
            raise ConflictError(_conflict(error)) from None
        if self._changed_calls:
            changed, self._changed_calls = list(self._changed_calls.values()), {}
            await conn.executemany(
                _SQL["update_call_row"],
                [
                    (c.call_id, c.status, c.answered_leg_id, c.termination_cause, c.sip_status, c.ended_by,
                     c.answered_at, c.ended_at)
                    for c in changed
                ],
            )  # fmt: skip
        if self._unsaved:
            legs, self._unsaved = list(self._unsaved.values()), {}
            await conn.executemany(
                _SQL["update_leg_state"],
                [(leg.leg_id, leg.status, leg.status_reason, leg.ended_at) for leg in legs],
            )

    def _changed(self, call: CallSession) -> None:
        self._calls[call.call_id] = call
        if call.call_id in self._new_calls:
            self._new_calls[call.call_id] = call
        else:
            self._changed_calls[call.call_id] = call

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
        call = await self._call(call_id)
        when = call_rules.check_at("routing attempt", _utc(at or self._repo._clock()), call.started_at)
        if leg_id is not None and await self._leg(leg_id, call_id) is None:
            raise NotFoundError(f"leg {leg_id} is not a leg of call {call_id}")
        # Inserted by flush(): a step already stored for this target fails there (ConflictError).
        attempt = RoutingAttempt(random_uuid4(), call_id, step, target, result, sip_status, leg_id, when)
        self._new_attempts.append(attempt)
        self.events.append(domain_events.call_routing_attempted(call, attempt, self._repo._node_id))
        return attempt

    async def answer_call(
        self, call_id: uuid.UUID, *, leg_id: uuid.UUID, at: dt.datetime | None = None
    ) -> CallSession:
        call = await self._call(call_id)
        call_rules.check_answer(call, await self._leg(leg_id, call_id), leg_id)
        when = call_rules.check_at("answer", _utc(at or self._repo._clock()), call.started_at)
        answered = call_rules.call_answered(call, leg_id, when)
        self._changed(answered)
        self.events.append(domain_events.call_answered(answered, self._repo._node_id))
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
        call = await self._call(call_id)
        if call.status == "ended":
            return call
        when = call_rules.check_at(
            "end", _utc(at or self._repo._clock()), call.answered_at or call.started_at
        )
        ended = call_rules.call_ended(call, termination_cause, sip_status, ended_by, when)
        self._changed(ended)
        self.events.append(domain_events.call_ended(ended, self._repo._node_id))
        return ended

    async def report_quality(self, call_id: uuid.UUID, report: QualityReport) -> None:
        call = await self._call(call_id)
        await self.flush()  # the call and leg this row references may be waiting for the flush
        if await self._leg(report.leg_id, call_id) is None:
            raise NotFoundError(f"leg {report.leg_id} is not a leg of call {call_id}")
        when = report.reported_at or self._repo._clock()
        await self._conn.execute(
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
        self.events.append(domain_events.call_quality_reported(call, report, when, self._repo._node_id))


def _utc(when: dt.datetime) -> dt.datetime:
    """``when`` as PostgreSQL hands a timestamptz back (UTC); a naive time is left for check_at to refuse."""
    return when if when.tzinfo is None or when.tzinfo is dt.UTC else when.astimezone(dt.UTC)


def _call_row(c: CallSession) -> tuple[Any, ...]:
    return (
        c.call_id, c.correlation_id, c.sip_call_id, c.direction, c.media, c.status, c.from_uri, c.to_uri,
        c.initiator_account_id, c.callee_account_id, c.node_id, c.answered_leg_id, c.termination_cause,
        c.sip_status, c.ended_by, c.started_at, c.answered_at, c.ended_at,
    )  # fmt: skip


def _leg_row(leg: CallLeg) -> tuple[Any, ...]:
    return (
        leg.leg_id, leg.call_id, leg.leg_type, leg.direction, leg.remote_address, leg.device_id,
        leg.account_id, leg.sip_call_id, leg.status, leg.status_reason, leg.started_at, leg.ended_at,
    )  # fmt: skip


def _attempt_row(a: RoutingAttempt) -> tuple[Any, ...]:
    return (a.attempt_id, a.call_id, a.step, a.target, a.result, a.sip_status, a.leg_id, a.attempted_at)


def _conflict(error: asyncpg.UniqueViolationError) -> str:
    constraint = getattr(error, "constraint_name", None) or ""
    if constraint == "call_routing_step_target":
        return f"a call already has this routing step and target ({error.detail or error})"
    if constraint.startswith("call_legs"):
        return f"leg already exists ({error.detail or error})"
    return f"call already exists ({error.detail or error})"


class PgCallRepository(EventedRepository):
    """``CallRepository`` on an asyncpg pool of the calls database, writing as ``node_id``."""

    @contextlib.asynccontextmanager
    async def batch(
        self, call_id: uuid.UUID | None = None, what: str = "writing a call"
    ) -> AsyncIterator[CallWriter]:
        """Several writes (of ``call_id``, when given) in one transaction: all of them commit, with their
        events in order, or none. A write whose rule fails raises at once and nothing of the batch is kept
        (the caller may retry the others one by one)."""
        async with transaction(self._pool, what) as conn:
            writer = CallWriter(self, conn, call_id)
            yield writer
            await writer.flush()
            # Envelopes straight from domain_events (valid by construction or validated): not checked again.
            entries = [outbox_entry(event, self._topics, validated=True) for event in writer.events]
            await write_outbox(conn, entries)

    async def preload(self, call_ids: Sequence[uuid.UUID]) -> None:
        """Outside a batch each write is its own transaction: nothing is held to read ahead into."""

    async def start_call(self, call: NewCall) -> CallSession:
        async with self.batch(call.call_id, "starting a call") as writer:
            return await writer.start_call(call)

    async def add_leg(self, call_id: uuid.UUID, leg: NewLeg) -> CallLeg:
        async with self.batch(call_id, "adding a call leg") as writer:
            return await writer.add_leg(call_id, leg)

    async def change_leg_state(
        self, leg_id: uuid.UUID, to_state: str, *, reason: str | None = None, at: dt.datetime | None = None
    ) -> CallLeg:
        async with self.batch(None, "changing a leg's state") as writer:
            return await writer.change_leg_state(leg_id, to_state, reason=reason, at=at)

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
        async with self.batch(call_id, "recording a routing attempt") as writer:
            return await writer.record_routing_attempt(
                call_id, step=step, target=target, result=result, sip_status=sip_status, leg_id=leg_id, at=at
            )

    async def answer_call(
        self, call_id: uuid.UUID, *, leg_id: uuid.UUID, at: dt.datetime | None = None
    ) -> CallSession:
        async with self.batch(call_id, "answering a call") as writer:
            return await writer.answer_call(call_id, leg_id=leg_id, at=at)

    async def end_call(
        self,
        call_id: uuid.UUID,
        *,
        termination_cause: str,
        sip_status: int | None = None,
        ended_by: str | None = None,
        at: dt.datetime | None = None,
    ) -> CallSession:
        async with self.batch(call_id, "ending a call") as writer:
            return await writer.end_call(
                call_id, termination_cause=termination_cause, sip_status=sip_status, ended_by=ended_by, at=at
            )

    async def report_quality(self, call_id: uuid.UUID, report: QualityReport) -> None:
        async with self.batch(call_id, "storing a quality report") as writer:
            await writer.report_quality(call_id, report)

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
