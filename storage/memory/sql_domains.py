"""In-memory fakes of the relational-domain ports (storage/ports.py, first section).

They follow the same rules as the PostgreSQL adapters (checked by the same contract tests) and keep the
events a real adapter would put in its ``outbox`` in ``self.outbox``, appended with the change they report.
Not thread-safe; meant for unit tests and the contract suite.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from storage.events import DEFAULT_TOPICS, EventTopics, OutboxEntry
from storage.ports import (
    AccountExists,
    Attendance,
    BillingPlan,
    CallLeg,
    CallSession,
    CdrRater,
    CdrRecord,
    Conference,
    ConferenceRecording,
    ConferenceSession,
    ConflictError,
    IndexedObject,
    InvalidStateChange,
    NewBillingPlan,
    NewCall,
    NewCdr,
    NewConference,
    NewLease,
    NewLeg,
    NewObject,
    NewParticipant,
    NewPolicyDecision,
    NotFoundError,
    Participant,
    PolicyDecisionRecord,
    QualityReport,
    RoutingAttempt,
    SipAccount,
    SipCredentials,
    UrlLease,
    check_node_id,
)
from storage.postgres import call_rules, conference_rules, domain_events, object_rules
from storage.postgres.credentials import (
    DEFAULT_SCRYPT_COST,
    ScryptCost,
    check_email,
    check_password,
    check_realm,
    check_username,
    digest_ha1,
    hash_password,
)
from storage.postgres.policy_audit import check_limit
from storage.postgres.rating import TariffRater


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---- accounts ----


@dataclass
class _AccountRow:
    account: SipAccount
    password_hash: str
    credentials: SipCredentials | None


class MemoryAccountStore:
    """``AccountRepository`` in memory."""

    def __init__(self, *, scrypt_cost: ScryptCost = DEFAULT_SCRYPT_COST) -> None:
        self._scrypt_cost = scrypt_cost
        self._rows: dict[uuid.UUID, _AccountRow] = {}

    async def add_sip_account(
        self, username: str, password: str, realm: str, *, email: str | None = None
    ) -> SipAccount:
        check_username(username)
        check_realm(realm)
        check_password(password)
        check_email(email)
        for row in self._rows.values():
            creds = row.credentials
            if creds is not None and (creds.username, creds.realm) == (username, realm):
                raise AccountExists(f"SIP user {username!r} already exists in realm {realm!r}")
            live = row.account.status != "deleted"
            if email is not None and live and (row.account.email or "").lower() == email.lower():
                raise AccountExists(f"e-mail address {email} is already used by another account")
        account = SipAccount(uuid.uuid4(), username, realm, "active", email, utc_now())
        credentials = SipCredentials(
            account.account_id,
            username,
            realm,
            digest_ha1("MD5", username, realm, password),
            digest_ha1("SHA-256", username, realm, password),
            digest_ha1("SHA-512-256", username, realm, password),
        )
        self._rows[account.account_id] = _AccountRow(
            account, hash_password(password, self._scrypt_cost), credentials
        )
        return account

    async def list_sip_accounts(self) -> list[SipAccount]:
        accounts = [r.account for r in self._rows.values() if r.credentials and r.account.status != "deleted"]
        return sorted(accounts, key=lambda a: (a.realm, a.username))

    async def remove_sip_account(self, username: str, realm: str) -> bool:
        for row in self._rows.values():
            creds = row.credentials
            if creds is not None and (creds.username, creds.realm) == (username, realm):
                row.credentials = None
                row.account = replace(row.account, status="deleted")
                return True
        return False

    async def lookup_credentials(self, username: str, realm: str) -> SipCredentials | None:
        for row in self._rows.values():
            creds = row.credentials
            if creds is not None and (creds.username, creds.realm) == (username, realm):
                return creds if row.account.status == "active" else None
        return None

    def password_hash(self, account_id: uuid.UUID) -> str:
        """The stored scrypt hash (tests check that no plain password is kept)."""
        return self._rows[account_id].password_hash


# ---- outbox ----


class MemoryOutbox:
    """The events a fake emitted, in emission order (what the domain's ``outbox`` table would hold)."""

    def __init__(self, topics: EventTopics = DEFAULT_TOPICS) -> None:
        self.topics = topics
        self.entries: list[OutboxEntry] = []

    def emit(self, *envelopes: Mapping[str, Any]) -> None:
        # Route every envelope before appending any, so a bad one leaves nothing half-emitted.
        routed = [domain_events.to_outbox(e, self.topics) for e in envelopes]
        self.entries.extend(routed)

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        return [entry.envelope for entry in self.entries]


class _EventedMemoryRepository:
    """The fakes' counterpart of ``storage.postgres.repository.EventedRepository``: node, clock, outbox."""

    def __init__(
        self,
        *,
        node_id: str,
        clock: Callable[[], dt.datetime] = utc_now,
        outbox: MemoryOutbox | None = None,
    ) -> None:
        check_node_id(node_id)
        self._node_id = node_id
        self._clock = clock
        self.outbox = outbox or MemoryOutbox()


# ---- calls ----

_ABSENT = object()  # no row under that key before the batch's write


class MemoryCallRepository(_EventedMemoryRepository):
    """``CallRepository`` in memory; events go to ``self.outbox``."""

    def __init__(
        self,
        *,
        node_id: str,
        clock: Callable[[], dt.datetime] = utc_now,
        outbox: MemoryOutbox | None = None,
    ) -> None:
        super().__init__(node_id=node_id, clock=clock, outbox=outbox)
        self._calls: dict[uuid.UUID, CallSession] = {}
        self._legs: dict[uuid.UUID, CallLeg] = {}
        self._attempts: list[RoutingAttempt] = []
        self._quality: list[tuple[uuid.UUID, QualityReport]] = []
        # While a batch runs: what each write replaced, so a failing batch can put it back.
        self._undo: list[tuple[dict[uuid.UUID, Any], uuid.UUID, Any]] | None = None

    @contextlib.asynccontextmanager
    async def batch(self, call_id: uuid.UUID | None = None) -> AsyncIterator[MemoryCallRepository]:
        """The writes inside the block all stay, or none does: when one raises, the rows and events of
        the block's earlier writes are taken back (as PostgreSQL rolls the transaction back). A batch
        inside a batch joins it."""
        if self._undo is not None:
            yield self
            return
        undo: list[tuple[dict[uuid.UUID, Any], uuid.UUID, Any]] = []
        marks = (len(self._attempts), len(self._quality), len(self.outbox.entries))
        self._undo = undo
        try:
            yield self
        except BaseException:
            for table, key, previous in reversed(undo):
                if previous is _ABSENT:
                    del table[key]
                else:
                    table[key] = previous
            del self._attempts[marks[0] :]
            del self._quality[marks[1] :]
            del self.outbox.entries[marks[2] :]
            raise
        finally:
            self._undo = None

    def _store(self, table: dict[uuid.UUID, Any], key: uuid.UUID, row: Any) -> None:
        if self._undo is not None:
            self._undo.append((table, key, table.get(key, _ABSENT)))
        table[key] = row

    def _call(self, call_id: uuid.UUID) -> CallSession:
        try:
            return self._calls[call_id]
        except KeyError:
            raise NotFoundError(f"no call {call_id}") from None

    async def preload(self, call_ids: Sequence[uuid.UUID]) -> None:
        """Nothing to read ahead: every row is already in memory."""

    async def start_call(self, call: NewCall) -> CallSession:
        started_at = call.started_at or self._clock()
        call_rules.check_at("start", started_at, started_at)
        call_id = call.call_id or uuid.uuid4()
        if call_id in self._calls:
            raise ConflictError(f"call {call_id} already exists")
        session = call_rules.new_session(call, call_id, self._node_id, started_at)
        self.outbox.emit(domain_events.call_started(session))
        self._store(self._calls, call_id, session)
        return session

    async def add_leg(self, call_id: uuid.UUID, leg: NewLeg) -> CallLeg:
        call = self._call(call_id)
        call_rules.check_can_add_leg(call)
        started_at = call_rules.check_at("leg start", leg.started_at or self._clock(), call.started_at)
        leg_id = leg.leg_id or uuid.uuid4()
        if leg_id in self._legs:
            raise ConflictError(f"leg {leg.leg_id} already exists")
        created = call_rules.new_leg(leg, leg_id, call_id, started_at)
        self.outbox.emit(domain_events.call_leg_created(call, created, self._node_id))
        self._store(self._legs, leg_id, created)
        return created

    async def change_leg_state(
        self, leg_id: uuid.UUID, to_state: str, *, reason: str | None = None, at: dt.datetime | None = None
    ) -> CallLeg:
        leg = self._legs.get(leg_id)
        if leg is None:
            raise NotFoundError(f"no leg {leg_id}")
        call = self._call(leg.call_id)
        call_rules.check_leg_transition(leg, to_state, reason)
        when = call_rules.check_at("leg state change", at or self._clock(), leg.started_at)
        changed = call_rules.leg_moved(leg, to_state, reason, when)
        self.outbox.emit(domain_events.call_leg_state_changed(call, changed, leg.status, when, self._node_id))
        self._store(self._legs, leg_id, changed)
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
        call = self._call(call_id)
        when = call_rules.check_at("routing attempt", at or self._clock(), call.started_at)
        if leg_id is not None and (leg_id not in self._legs or self._legs[leg_id].call_id != call_id):
            raise NotFoundError(f"leg {leg_id} is not a leg of call {call_id}")
        if any((a.call_id, a.step, a.target) == (call_id, step, target) for a in self._attempts):
            raise ConflictError(f"call {call_id} already has step {step} to {target}")
        attempt = RoutingAttempt(uuid.uuid4(), call_id, step, target, result, sip_status, leg_id, when)
        self.outbox.emit(domain_events.call_routing_attempted(call, attempt, self._node_id))
        self._attempts.append(attempt)
        return attempt

    async def answer_call(
        self, call_id: uuid.UUID, *, leg_id: uuid.UUID, at: dt.datetime | None = None
    ) -> CallSession:
        call = self._call(call_id)
        call_rules.check_answer(call, self._legs.get(leg_id), leg_id)
        when = call_rules.check_at("answer", at or self._clock(), call.started_at)
        answered = call_rules.call_answered(call, leg_id, when)
        self.outbox.emit(domain_events.call_answered(answered, self._node_id))
        self._store(self._calls, call_id, answered)
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
        call = self._call(call_id)
        if call.status == "ended":
            return call
        when = call_rules.check_at("end", at or self._clock(), call.answered_at or call.started_at)
        ended = call_rules.call_ended(call, termination_cause, sip_status, ended_by, when)
        self.outbox.emit(domain_events.call_ended(ended, self._node_id))
        self._store(self._calls, call_id, ended)
        return ended

    async def report_quality(self, call_id: uuid.UUID, report: QualityReport) -> None:
        call = self._call(call_id)
        leg = self._legs.get(report.leg_id)
        if leg is None or leg.call_id != call_id:
            raise NotFoundError(f"leg {report.leg_id} is not a leg of call {call_id}")
        when = report.reported_at or self._clock()
        self.outbox.emit(domain_events.call_quality_reported(call, report, when, self._node_id))
        self._quality.append((call_id, replace(report, reported_at=when)))

    async def get_call(self, call_id: uuid.UUID) -> CallSession | None:
        return self._calls.get(call_id)

    async def find_by_sip_call_id(self, sip_call_id: str) -> CallSession | None:
        matches = [c for c in self._calls.values() if c.sip_call_id == sip_call_id]
        return max(matches, key=lambda c: c.started_at, default=None)

    async def list_legs(self, call_id: uuid.UUID) -> list[CallLeg]:
        return sorted(
            (leg for leg in self._legs.values() if leg.call_id == call_id),
            key=lambda leg: (leg.started_at, leg.leg_id),
        )

    async def list_routing_attempts(self, call_id: uuid.UUID) -> list[RoutingAttempt]:
        return sorted(
            (a for a in self._attempts if a.call_id == call_id),
            key=lambda a: (a.step, a.attempted_at, a.attempt_id),
        )

    async def list_quality_reports(self, call_id: uuid.UUID) -> list[QualityReport]:
        return [report for owner, report in self._quality if owner == call_id]


# ---- CDRs ----


class MemoryCdrRepository(_EventedMemoryRepository):
    """``CdrRepository`` in memory; events go to ``self.outbox``. CDRs are never removed."""

    def __init__(
        self,
        *,
        node_id: str,
        rater: CdrRater | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        outbox: MemoryOutbox | None = None,
    ) -> None:
        super().__init__(node_id=node_id, clock=clock, outbox=outbox)
        self._rater = rater or TariffRater()
        self._plans: dict[uuid.UUID, BillingPlan] = {}
        self._billing: dict[uuid.UUID, tuple[uuid.UUID, Decimal, Decimal]] = {}  # plan, balance, credit
        self._cdrs: dict[uuid.UUID, CdrRecord] = {}

    async def create_plan(self, plan: NewBillingPlan) -> BillingPlan:
        if any(p.name == plan.name for p in self._plans.values()):
            raise ConflictError(f"a billing plan named {plan.name!r} exists")
        created = BillingPlan(
            uuid.uuid4(),
            plan.name,
            plan.currency,
            plan.per_minute_rate,
            plan.billing_increment_seconds,
            plan.minimum_charge,
            plan.tariff_model,
        )
        self._plans[created.plan_id] = created
        return created

    async def assign_plan(
        self, account_id: uuid.UUID, plan_id: uuid.UUID, *, credit_limit: Decimal = Decimal(0)
    ) -> None:
        if credit_limit < 0:
            raise ValueError("credit_limit must not be negative")
        if plan_id not in self._plans:
            raise NotFoundError(f"no billing plan {plan_id}")
        _, balance, _ = self._billing.get(account_id, (plan_id, Decimal(0), credit_limit))
        self._billing[account_id] = (plan_id, balance, credit_limit)

    async def plan_for_account(self, account_id: uuid.UUID) -> BillingPlan | None:
        billing = self._billing.get(account_id)
        return None if billing is None else self._plans[billing[0]]

    async def balance(self, account_id: uuid.UUID) -> Decimal | None:
        billing = self._billing.get(account_id)
        return None if billing is None else billing[1]

    async def record_cdr(self, cdr: NewCdr) -> CdrRecord:
        existing = await self.cdr_for_call(cdr.call_id)
        if existing is not None:
            return existing
        plan = None if cdr.account_id is None else await self.plan_for_account(cdr.account_id)
        rating = self._rater.rate(cdr, plan)
        record = CdrRecord(
            cdr_id=uuid.uuid4(),
            call_id=cdr.call_id,
            correlation_id=cdr.correlation_id,
            account_id=cdr.account_id,
            device_id=cdr.device_id,
            caller=cdr.caller,
            callee=cdr.callee,
            direction=cdr.direction,
            started_at=cdr.started_at,
            answered_at=cdr.answered_at,
            ended_at=cdr.ended_at,
            duration_seconds=rating.duration_seconds,
            billable_seconds=rating.billable_seconds,
            termination_cause=cdr.termination_cause,
            sip_status=cdr.sip_status,
            plan_id=plan.plan_id if plan else None,
            cost=rating.cost,
            currency=rating.currency,
        )
        self.outbox.emit(domain_events.cdr_created(record, self._node_id, self._clock()))
        self._cdrs[record.cdr_id] = record
        return record

    async def record_cdrs(self, cdrs: Sequence[NewCdr]) -> list[CdrRecord]:
        stored, emitted = dict(self._cdrs), len(self.outbox.entries)
        try:
            return [await self.record_cdr(cdr) for cdr in cdrs]
        except BaseException:  # all or none, as the PostgreSQL transaction
            self._cdrs = stored
            del self.outbox.entries[emitted:]
            raise

    async def get_cdr(self, cdr_id: uuid.UUID) -> CdrRecord | None:
        return self._cdrs.get(cdr_id)

    async def cdr_for_call(self, call_id: uuid.UUID) -> CdrRecord | None:
        return next((c for c in self._cdrs.values() if c.call_id == call_id), None)

    async def list_cdrs(self, account_id: uuid.UUID, *, limit: int = 100) -> list[CdrRecord]:
        if not 1 <= limit <= 1000:
            raise ValueError(f"limit must be 1..1000, got {limit}")
        mine = [c for c in self._cdrs.values() if c.account_id == account_id]
        mine.sort(key=lambda c: c.cdr_id)
        mine.sort(key=lambda c: c.started_at, reverse=True)
        return mine[:limit]


# ---- conferences ----


class MemoryConferenceRepository(_EventedMemoryRepository):
    """``ConferenceRepository`` in memory; events go to ``self.outbox``."""

    def __init__(
        self,
        *,
        node_id: str,
        clock: Callable[[], dt.datetime] = utc_now,
        outbox: MemoryOutbox | None = None,
    ) -> None:
        super().__init__(node_id=node_id, clock=clock, outbox=outbox)
        self._conferences: dict[uuid.UUID, tuple[Conference, str | None]] = {}  # with token digest
        self._participants: dict[uuid.UUID, Participant] = {}
        self._sessions: dict[uuid.UUID, ConferenceSession] = {}
        self._attendance: dict[uuid.UUID, Attendance] = {}
        self._recordings: dict[uuid.UUID, ConferenceRecording] = {}

    def _session(self, conf_session_id: uuid.UUID) -> ConferenceSession:
        try:
            return self._sessions[conf_session_id]
        except KeyError:
            raise NotFoundError(f"no conference session {conf_session_id}") from None

    async def create_conference(self, conference: NewConference) -> Conference:
        token = conference.public_link_token
        digest = conference_rules.token_digest(token) if token else None
        if digest is not None and any(d == digest for _, d in self._conferences.values()):
            raise ConflictError("that public-link token is already used by another conference")
        created = Conference(
            uuid.uuid4(),
            conference.name,
            conference.owner_account_id,
            conference.access_model,
            conference.tenant_id,
            conference.max_participants,
            conference.record_by_default,
            "active",
        )
        self._conferences[created.conference_id] = (created, digest)
        return created

    async def get_conference(self, conference_id: uuid.UUID) -> Conference | None:
        found = self._conferences.get(conference_id)
        return None if found is None else found[0]

    async def find_by_public_link(self, token: str) -> Conference | None:
        digest = conference_rules.token_digest(token)
        return next(
            (c for c, d in self._conferences.values() if d == digest and c.status == "active"),
            None,
        )

    async def add_participant(self, conference_id: uuid.UUID, participant: NewParticipant) -> Participant:
        if conference_id not in self._conferences:
            raise NotFoundError(f"no conference {conference_id}")
        for other in self._participants.values():
            same_account = participant.account_id is not None and other.account_id == participant.account_id
            same_external = participant.external_ref is not None and (
                other.external_kind,
                other.external_ref,
            ) == (
                participant.external_kind,
                participant.external_ref,
            )
            if other.conference_id == conference_id and (same_account or same_external):
                raise ConflictError(f"already a participant of conference {conference_id}")
        created = Participant(
            uuid.uuid4(),
            conference_id,
            participant.kind,
            participant.account_id,
            participant.external_kind,
            participant.external_ref,
            participant.role,
            participant.display_name,
        )
        self._participants[created.participant_id] = created
        return created

    async def list_participants(self, conference_id: uuid.UUID) -> list[Participant]:
        return [p for p in self._participants.values() if p.conference_id == conference_id]

    async def start_session(
        self, conference_id: uuid.UUID, *, correlation_id: uuid.UUID, at: dt.datetime | None = None
    ) -> ConferenceSession:
        when = at or self._clock()
        call_rules.check_at("session start", when, when)
        conference = await self.get_conference(conference_id)
        if conference is None:
            raise NotFoundError(f"no conference {conference_id}")
        if conference.status != "active":
            raise InvalidStateChange(f"conference {conference_id} is {conference.status}")
        if await self.active_session(conference_id) is not None:
            raise ConflictError(f"conference {conference_id} already runs a session")
        session = ConferenceSession(
            uuid.uuid4(), conference_id, correlation_id, self._node_id, "active", when, None, None
        )
        self.outbox.emit(domain_events.conference_session_started(session, conference))
        self._sessions[session.conf_session_id] = session
        return session

    async def active_session(self, conference_id: uuid.UUID) -> ConferenceSession | None:
        return next(
            (s for s in self._sessions.values() if s.conference_id == conference_id and s.status == "active"),
            None,
        )

    async def join(
        self,
        conf_session_id: uuid.UUID,
        participant_id: uuid.UUID,
        *,
        call_id: uuid.UUID | None = None,
        at: dt.datetime | None = None,
    ) -> Attendance:
        session = self._session(conf_session_id)
        if session.status != "active":
            raise InvalidStateChange(f"conference session {conf_session_id} has ended")
        participant = self._participants.get(participant_id)
        if participant is None or participant.conference_id != session.conference_id:
            raise NotFoundError(f"{participant_id} is not a participant of this conference")
        conference = self._conferences[session.conference_id][0]
        present = [
            a for a in self._attendance.values() if a.conf_session_id == conf_session_id and a.left_at is None
        ]
        if any(a.participant_id == participant_id for a in present):
            raise ConflictError(f"participant {participant_id} is already in the session")
        if len(present) >= conference.max_participants:
            raise ConflictError(f"conference is full ({conference.max_participants} participants)")
        when = call_rules.check_at("join", at or self._clock(), session.started_at)
        attendance = Attendance(uuid.uuid4(), conf_session_id, participant_id, call_id, when, None, None)
        self.outbox.emit(
            domain_events.conference_participant_joined(session, participant, attendance, self._node_id)
        )
        self._attendance[attendance.attendance_id] = attendance
        return attendance

    async def leave(
        self, attendance_id: uuid.UUID, *, reason: str | None = None, at: dt.datetime | None = None
    ) -> Attendance:
        conference_rules.check_reason(reason)
        current = self._attendance.get(attendance_id)
        if current is None:
            raise NotFoundError(f"no attendance {attendance_id}")
        if current.left_at is not None:
            return current
        when = call_rules.check_at("leave", at or self._clock(), current.joined_at)
        left = replace(current, left_at=when, leave_reason=reason)
        self.outbox.emit(
            domain_events.conference_participant_left(
                self._session(current.conf_session_id), left, self._node_id
            )
        )
        self._attendance[attendance_id] = left
        return left

    async def list_attendance(self, conf_session_id: uuid.UUID) -> list[Attendance]:
        return sorted(
            (a for a in self._attendance.values() if a.conf_session_id == conf_session_id),
            key=lambda a: (a.joined_at, a.attendance_id),
        )

    async def end_session(
        self, conf_session_id: uuid.UUID, *, reason: str | None = None, at: dt.datetime | None = None
    ) -> ConferenceSession:
        conference_rules.check_reason(reason)
        session = self._session(conf_session_id)
        if session.status == "ended":
            return session
        when = call_rules.check_at("session end", at or self._clock(), session.started_at)
        attendance = await self.list_attendance(conf_session_id)
        present = [a for a in attendance if a.left_at is None]
        if any(when < a.joined_at for a in present):
            raise ValueError("session end is before a participant joined")
        left = [replace(a, left_at=when, leave_reason="session_ended") for a in present]
        ended = replace(session, status="ended", ended_at=when, end_reason=reason)
        attendees = len({a.participant_id for a in attendance})
        self.outbox.emit(
            *(domain_events.conference_participant_left(ended, a, self._node_id) for a in left),
            domain_events.conference_session_ended(ended, attendees, self._node_id),
        )
        for a in left:
            self._attendance[a.attendance_id] = a
        self._sessions[conf_session_id] = ended
        return ended

    async def start_recording(
        self,
        conf_session_id: uuid.UUID,
        *,
        storage_key: str,
        retention_until: dt.datetime,
        content_type: str = "audio/ogg",
        at: dt.datetime | None = None,
    ) -> ConferenceRecording:
        conference_rules.check_storage_key(storage_key)
        when = at or self._clock()
        conference_rules.check_retention(retention_until, when)
        session = self._session(conf_session_id)
        if session.status != "active":
            raise InvalidStateChange(f"conference session {conf_session_id} has ended")
        if any(r.storage_key == storage_key for r in self._recordings.values()):
            raise ConflictError(f"a recording already uses {storage_key}")
        recording = ConferenceRecording(
            uuid.uuid4(),
            conf_session_id,
            storage_key,
            content_type,
            "recording",
            when,
            None,
            None,
            None,
            retention_until,
        )
        self._recordings[recording.recording_id] = recording
        return recording

    async def complete_recording(
        self, recording_id: uuid.UUID, *, duration_ms: int, size_bytes: int, at: dt.datetime | None = None
    ) -> ConferenceRecording:
        conference_rules.check_recording_numbers(duration_ms, size_bytes)
        recording = self._recordings.get(recording_id)
        if recording is None:
            raise NotFoundError(f"no recording {recording_id}")
        if recording.status != "recording":
            raise InvalidStateChange(f"recording {recording_id} is {recording.status}")
        when = call_rules.check_at("recording completion", at or self._clock(), recording.started_at)
        completed = replace(
            recording, status="completed", completed_at=when, duration_ms=duration_ms, size_bytes=size_bytes
        )
        session = self._session(recording.conf_session_id)
        self.outbox.emit(domain_events.conference_recording_completed(session, completed, self._node_id))
        self._recordings[recording_id] = completed
        return completed

    async def get_recording(self, recording_id: uuid.UUID) -> ConferenceRecording | None:
        return self._recordings.get(recording_id)


# ---- policy-decision audit ----


class MemoryPolicyDecisionAudit:
    """``PolicyDecisionAudit`` in memory (append-only)."""

    def __init__(self, *, node_id: str, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._node_id = node_id
        self._clock = clock
        self._records: list[PolicyDecisionRecord] = []

    async def record(self, decision: NewPolicyDecision) -> PolicyDecisionRecord:
        recorded = PolicyDecisionRecord(
            decision_id=uuid.uuid4(),
            subject=decision.subject,
            action=decision.action,
            resource=decision.resource,
            decision=decision.decision,
            policy_bundle_version=decision.policy_bundle_version,
            obligations=tuple(dict(o) for o in decision.obligations),
            reason=decision.reason,
            subject_account_id=decision.subject_account_id,
            call_id=decision.call_id,
            correlation_id=decision.correlation_id,
            decided_at=decision.decided_at or self._clock(),
            node_id=self._node_id,
        )
        self._records.append(recorded)
        return recorded

    async def get(self, decision_id: uuid.UUID) -> PolicyDecisionRecord | None:
        return next((r for r in self._records if r.decision_id == decision_id), None)

    async def list_for_call(self, call_id: uuid.UUID) -> list[PolicyDecisionRecord]:
        return sorted(
            (r for r in self._records if r.call_id == call_id), key=lambda r: (r.decided_at, r.decision_id)
        )

    async def list_since(self, since: dt.datetime, *, limit: int = 1000) -> list[PolicyDecisionRecord]:
        check_limit(limit)
        found = sorted(
            (r for r in self._records if r.decided_at >= since), key=lambda r: (r.decided_at, r.decision_id)
        )
        return found[:limit]


# ---- object index and pre-signed URL leases ----


class MemoryObjectIndex:
    """``ObjectIndex`` in memory."""

    def __init__(self, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._clock = clock
        self._objects: dict[uuid.UUID, IndexedObject] = {}
        self._order: dict[uuid.UUID, int] = {}

    async def register(self, obj: NewObject) -> IndexedObject:
        if await self.find(obj.bucket, obj.storage_key) is not None:
            raise ConflictError(f"{obj.bucket}/{obj.storage_key} is indexed already")
        indexed = IndexedObject(
            object_id=uuid.uuid4(),
            bucket=obj.bucket,
            storage_key=obj.storage_key,
            object_kind=obj.object_kind,
            content_type=obj.content_type,
            size_bytes=None,
            checksum_sha256=None,
            status="pending",
            owner_account_id=obj.owner_account_id,
            call_id=obj.call_id,
            conf_session_id=obj.conf_session_id,
            correlation_id=obj.correlation_id,
            access_policy_ref=obj.access_policy_ref,
            retention_until=obj.retention_until,
            deleted_at=None,
        )
        self._objects[indexed.object_id] = indexed
        self._order[indexed.object_id] = len(self._order)
        return indexed

    def _get(self, object_id: uuid.UUID) -> IndexedObject:
        try:
            return self._objects[object_id]
        except KeyError:
            raise NotFoundError(f"no indexed object {object_id}") from None

    async def mark_available(
        self, object_id: uuid.UUID, *, size_bytes: int, checksum_sha256: str | None = None
    ) -> IndexedObject:
        object_rules.check_available(size_bytes, checksum_sha256)
        current = self._get(object_id)
        object_rules.check_pending(current)
        changed = replace(
            current,
            status="available",
            size_bytes=size_bytes,
            checksum_sha256=checksum_sha256 or current.checksum_sha256,
        )
        self._objects[object_id] = changed
        return changed

    async def mark_failed(self, object_id: uuid.UUID) -> IndexedObject:
        current = self._get(object_id)
        object_rules.check_pending(current)
        self._objects[object_id] = replace(current, status="failed")
        return self._objects[object_id]

    async def mark_deleted(self, object_id: uuid.UUID, *, at: dt.datetime | None = None) -> IndexedObject:
        current = self._get(object_id)
        if current.status == "deleted":
            return current
        when = at or self._clock()
        object_rules.check_deletable(current, when)
        self._objects[object_id] = replace(current, status="deleted", deleted_at=when)
        return self._objects[object_id]

    async def get(self, object_id: uuid.UUID) -> IndexedObject | None:
        return self._objects.get(object_id)

    async def find(self, bucket: str, storage_key: str) -> IndexedObject | None:
        return next(
            (o for o in self._objects.values() if (o.bucket, o.storage_key) == (bucket, storage_key)), None
        )

    def _ordered(self, objects: list[IndexedObject]) -> list[IndexedObject]:
        return sorted(objects, key=lambda o: self._order[o.object_id])

    async def list_for_call(self, call_id: uuid.UUID) -> list[IndexedObject]:
        return self._ordered([o for o in self._objects.values() if o.call_id == call_id])

    async def list_for_conf_session(self, conf_session_id: uuid.UUID) -> list[IndexedObject]:
        return self._ordered([o for o in self._objects.values() if o.conf_session_id == conf_session_id])

    async def list_expired(self, now: dt.datetime, *, limit: int = 1000) -> list[IndexedObject]:
        check_limit(limit)
        expired = [o for o in self._objects.values() if o.status != "deleted" and o.retention_until <= now]
        return sorted(expired, key=lambda o: (o.retention_until, o.object_id))[:limit]


class MemoryUrlLeaseStore:
    """``PresignedUrlLeaseStore`` in memory, leasing from a ``MemoryObjectIndex``."""

    def __init__(self, index: MemoryObjectIndex, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._index = index
        self._clock = clock
        self._leases: list[UrlLease] = []

    async def issue(self, lease: NewLease) -> UrlLease:
        issued_at = lease.issued_at or self._clock()
        obj = await self._index.get(lease.object_id)
        object_rules.check_lease(lease, obj, issued_at)
        assert obj is not None
        issued = UrlLease(
            lease_id=uuid.uuid4(),
            object_id=lease.object_id,
            issued_to=lease.issued_to,
            issued_to_account_id=lease.issued_to_account_id,
            purpose=lease.purpose,
            decision_id=lease.decision_id,
            http_method=lease.http_method,
            url_sha256=object_rules.url_digest(lease.url) if lease.url else None,
            correlation_id=lease.correlation_id,
            issued_at=issued_at,
            expires_at=lease.expires_at,
            revoked_at=None,
            revoked_by=None,
            revoke_reason=None,
        )
        self._leases.append(issued)
        object_rules.log_issued(issued, obj)
        return issued

    async def revoke(
        self,
        lease_id: uuid.UUID,
        *,
        revoked_by: str,
        reason: str | None = None,
        at: dt.datetime | None = None,
    ) -> UrlLease:
        object_rules.check_revocation(revoked_by, reason)
        for position, lease in enumerate(self._leases):
            if lease.lease_id == lease_id:
                if lease.revoked_at is not None:
                    return lease
                revoked = replace(
                    lease, revoked_at=at or self._clock(), revoked_by=revoked_by, revoke_reason=reason
                )
                self._leases[position] = revoked
                object_rules.log_revoked(revoked)
                return revoked
        raise NotFoundError(f"no URL lease {lease_id}")

    async def get(self, lease_id: uuid.UUID) -> UrlLease | None:
        return next((lease for lease in self._leases if lease.lease_id == lease_id), None)

    async def find_by_url(self, url: str) -> UrlLease | None:
        digest = object_rules.url_digest(url)
        matches = [lease for lease in self._leases if lease.url_sha256 == digest]
        return max(matches, key=lambda lease: lease.issued_at, default=None)

    async def list_for_object(self, object_id: uuid.UUID) -> list[UrlLease]:
        return sorted(
            (lease for lease in self._leases if lease.object_id == object_id),
            key=lambda lease: (lease.issued_at, lease.lease_id),
        )
