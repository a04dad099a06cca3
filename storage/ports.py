"""Storage ports: the only storage surface core code may depend on.

Each port is a ``typing.Protocol``. Every port has an in-memory fake under ``storage/memory/`` and a real
adapter (``storage/postgres``, ``storage/redis``, ``storage/s3``, ``storage/kafka``); both pass the same
contract tests in ``tests/contract/``.
"""

from __future__ import annotations

# --- relational domains (PostgreSQL) and the event outbox -------------------------------------------------
# (owned by the PostgreSQL/outbox work; add ports above the next marker)
# Ports of the four relational domains the edge owns (DB_ACCOUNTS, DB_CALLS, DB_CDR, DB_CONFERENCES).
# Adapters: storage/postgres/*.py (asyncpg, named SQL); fakes: storage/memory/sql_domains.py. Every write that
# reports an event puts its outbox row in the same transaction as the change (the fakes keep ``outbox``).
# Ids are UUIDs, timestamps timezone-aware datetimes, money ``Decimal``.
import datetime as _dt  # noqa: E402, RUF100
import uuid as _uuid  # noqa: E402, RUF100
from collections.abc import Sequence as _Sequence  # noqa: E402, RUF100
from contextlib import AbstractAsyncContextManager as _AbstractAsyncContextManager  # noqa: E402, RUF100
from dataclasses import dataclass as _dataclass  # noqa: E402, RUF100
from decimal import Decimal as _Decimal  # noqa: E402, RUF100
from typing import Any as _Any  # noqa: E402, RUF100
from typing import Protocol as _Protocol  # noqa: E402, RUF100


class NotFoundError(LookupError):
    """The call, leg, conference, session, object or lease named does not exist."""


class ConflictError(Exception):
    """The write contradicts what is stored (duplicate key, a state that forbids the change)."""


# ---- accounts and SIP credentials (DB_ACCOUNTS) ----


class AccountExists(ConflictError):
    """A SIP user with this username already exists in the realm (or the e-mail is in use)."""


@_dataclass(frozen=True, slots=True)
class SipAccount:
    account_id: _uuid.UUID
    username: str
    realm: str
    status: str  # "active" | "suspended" (deleted accounts are not listed)
    email: str | None
    created_at: _dt.datetime


@_dataclass(frozen=True, slots=True)
class SipCredentials:
    """What digest authentication needs: HA1 = H(username:realm:password) per algorithm, never a password."""

    account_id: _uuid.UUID
    username: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    ha1_sha512_256: str | None

    def ha1(self, algorithm: str) -> str | None:
        """HA1 for an RFC 7616 algorithm name (``MD5``, ``SHA-256``, ``SHA-512-256``, ``-sess`` too)."""
        name = algorithm.upper().removesuffix("-SESS")
        return {"MD5": self.ha1_md5, "SHA-256": self.ha1_sha256, "SHA-512-256": self.ha1_sha512_256}.get(name)


class CredentialStore(_Protocol):
    async def lookup_credentials(self, username: str, realm: str) -> SipCredentials | None:
        """The credentials of an active account, None when unknown, removed or suspended."""
        ...


class AccountRepository(CredentialStore, _Protocol):
    async def add_sip_account(
        self, username: str, password: str, realm: str, *, email: str | None = None
    ) -> SipAccount:
        """Create an account and its digest credentials; ``AccountExists`` when the user is taken,
        ``InvalidAccountInput`` (a ValueError) naming a bad username, realm, password or e-mail."""
        ...

    async def list_sip_accounts(self) -> list[SipAccount]:
        """Accounts not deleted, by realm then username."""
        ...

    async def remove_sip_account(self, username: str, realm: str) -> bool:
        """Delete the credentials and soft-delete the account; False when there was no such user."""
        ...


# ---- calls (DB_CALLS) ----

CALL_DIRECTIONS = ("inbound", "outbound", "internal")
CALL_MEDIA = ("audio", "video")
LEG_TYPES = ("pstn", "webrtc", "sip")
LEG_DIRECTIONS = ("inbound", "outbound")
ENDED_BY = ("caller", "callee", "system")

#: Allowed leg state changes (SIP dialog life cycle); a terminal state allows none.
LEG_TRANSITIONS: dict[str, frozenset[str]] = {
    "initiated": frozenset({"early", "confirmed", "terminated", "failed"}),
    "early": frozenset({"early", "confirmed", "terminated", "failed"}),
    "confirmed": frozenset({"terminated", "failed"}),
    "terminated": frozenset(),
    "failed": frozenset(),
}


class InvalidStateChange(ConflictError):
    """The change is not allowed from the current state (e.g. answering an ended call)."""


@_dataclass(frozen=True, slots=True)
class NewCall:
    correlation_id: _uuid.UUID
    direction: str
    from_uri: str
    to_uri: str
    media: str = "audio"
    call_id: _uuid.UUID | None = None  # generated when None
    sip_call_id: str | None = None
    initiator_account_id: _uuid.UUID | None = None
    callee_account_id: _uuid.UUID | None = None
    started_at: _dt.datetime | None = None  # now when None

    def __post_init__(self) -> None:
        _check_choice("direction", self.direction, CALL_DIRECTIONS)
        _check_choice("media", self.media, CALL_MEDIA)
        _check_text("from_uri", self.from_uri, 2048)
        _check_text("to_uri", self.to_uri, 2048)
        if self.sip_call_id is not None:
            _check_text("sip_call_id", self.sip_call_id, 255)


@_dataclass(frozen=True, slots=True)
class CallSession:
    call_id: _uuid.UUID
    correlation_id: _uuid.UUID
    sip_call_id: str | None
    direction: str
    media: str
    status: str  # initiated | answered | ended
    from_uri: str
    to_uri: str
    initiator_account_id: _uuid.UUID | None
    callee_account_id: _uuid.UUID | None
    node_id: str
    answered_leg_id: _uuid.UUID | None
    termination_cause: str | None
    sip_status: int | None
    ended_by: str | None
    started_at: _dt.datetime
    answered_at: _dt.datetime | None
    ended_at: _dt.datetime | None


@_dataclass(frozen=True, slots=True)
class NewLeg:
    leg_type: str
    direction: str
    remote_address: str
    device_id: _uuid.UUID | None = None
    account_id: _uuid.UUID | None = None
    sip_call_id: str | None = None
    leg_id: _uuid.UUID | None = None
    started_at: _dt.datetime | None = None

    def __post_init__(self) -> None:
        _check_choice("leg_type", self.leg_type, LEG_TYPES)
        _check_choice("direction", self.direction, LEG_DIRECTIONS)
        _check_text("remote_address", self.remote_address, 255)


@_dataclass(frozen=True, slots=True)
class CallLeg:
    leg_id: _uuid.UUID
    call_id: _uuid.UUID
    leg_type: str
    direction: str
    remote_address: str
    device_id: _uuid.UUID | None
    account_id: _uuid.UUID | None
    sip_call_id: str | None
    status: str
    status_reason: str | None
    started_at: _dt.datetime
    ended_at: _dt.datetime | None


@_dataclass(frozen=True, slots=True)
class RoutingAttempt:
    attempt_id: _uuid.UUID
    call_id: _uuid.UUID
    step: int
    target: str
    result: str
    sip_status: int | None
    leg_id: _uuid.UUID | None
    attempted_at: _dt.datetime


@_dataclass(frozen=True, slots=True)
class QualityReport:
    leg_id: _uuid.UUID
    interval_seconds: float
    jitter_ms: float
    packet_loss_fraction: float
    packets_lost: int
    rtt_ms: float | None = None
    mos: float | None = None
    reported_at: _dt.datetime | None = None

    def __post_init__(self) -> None:
        if not self.interval_seconds > 0:
            raise ValueError(f"interval_seconds must be positive, got {self.interval_seconds!r}")
        if not 0 <= self.packet_loss_fraction <= 1:
            raise ValueError(f"packet_loss_fraction must be within [0, 1], got {self.packet_loss_fraction!r}")
        if self.jitter_ms < 0 or self.packets_lost < 0 or (self.rtt_ms is not None and self.rtt_ms < 0):
            raise ValueError("jitter_ms, packets_lost and rtt_ms must not be negative")
        if self.mos is not None and not 1 <= self.mos <= 5:
            raise ValueError(f"mos must be within [1, 5], got {self.mos!r}")


class CallWrites(_Protocol):
    """The writes of a :class:`CallRepository`; each emits its ``call.*`` event."""

    async def preload(self, call_ids: _Sequence[_uuid.UUID]) -> None:
        """A hint inside a batch: the stored calls these writes will touch, so an adapter can lock and
        read them all at once instead of call by call. Changes nothing; may do nothing."""
        ...

    async def start_call(self, call: NewCall) -> CallSession:
        """Insert the session (status initiated) + ``call.started``; ConflictError if call_id exists."""
        ...

    async def add_leg(self, call_id: _uuid.UUID, leg: NewLeg) -> CallLeg:
        """+ ``call.leg.created``; NotFoundError for an unknown call, InvalidStateChange once it ended."""
        ...

    async def change_leg_state(
        self, leg_id: _uuid.UUID, to_state: str, *, reason: str | None = None, at: _dt.datetime | None = None
    ) -> CallLeg:
        """Move a leg along ``LEG_TRANSITIONS`` + ``call.leg.state_changed``."""
        ...

    async def record_routing_attempt(
        self,
        call_id: _uuid.UUID,
        *,
        step: int,
        target: str,
        result: str,
        sip_status: int | None = None,
        leg_id: _uuid.UUID | None = None,
        at: _dt.datetime | None = None,
    ) -> RoutingAttempt:
        """+ ``call.routing.attempted``; ConflictError when (step, target) was already recorded."""
        ...

    async def answer_call(
        self, call_id: _uuid.UUID, *, leg_id: _uuid.UUID, at: _dt.datetime | None = None
    ) -> CallSession:
        """initiated -> answered by ``leg_id`` (a leg of this call) + ``call.answered``."""
        ...

    async def end_call(
        self,
        call_id: _uuid.UUID,
        *,
        termination_cause: str,
        sip_status: int | None = None,
        ended_by: str | None = None,
        at: _dt.datetime | None = None,
    ) -> CallSession:
        """-> ended + ``call.ended``. Ending an ended call returns it unchanged and emits nothing."""
        ...

    async def report_quality(self, call_id: _uuid.UUID, report: QualityReport) -> None:
        """Store one interval report of a leg of the call + ``call.quality.reported``."""
        ...


class CallRepository(CallWrites, _Protocol):
    """Sessions, legs, routing attempts and quality of calls; each write emits its ``call.*`` event."""

    def batch(self, call_id: _uuid.UUID | None = None) -> _AbstractAsyncContextManager[CallWrites]:
        """Several writes (of ``call_id``, when given) in one transaction::

            async with repo.batch(call_id) as writer:
                await writer.add_leg(call_id, leg)
                await writer.change_leg_state(leg_id, "early")

        Every write of the block stays, with its events in order, or none does: a write that fails raises
        out of the block (the same error as on its own) and the block's earlier writes are taken back.
        The B2BUA writes what a call queued while its previous writes were in flight this way."""
        ...

    async def get_call(self, call_id: _uuid.UUID) -> CallSession | None: ...

    async def find_by_sip_call_id(self, sip_call_id: str) -> CallSession | None:
        """The most recent call started with this SIP Call-ID."""
        ...

    async def list_legs(self, call_id: _uuid.UUID) -> list[CallLeg]: ...

    async def list_routing_attempts(self, call_id: _uuid.UUID) -> list[RoutingAttempt]: ...

    async def list_quality_reports(self, call_id: _uuid.UUID) -> list[QualityReport]: ...


# ---- CDRs, tariffs and rating (DB_CDR) ----


@_dataclass(frozen=True, slots=True)
class NewBillingPlan:
    name: str
    currency: str
    per_minute_rate: _Decimal
    billing_increment_seconds: int = 60
    minimum_charge: _Decimal = _Decimal(0)
    tariff_model: str = "per_minute"  # or "free"

    def __post_init__(self) -> None:
        _check_text("name", self.name, 255)
        if len(self.currency) != 3 or not self.currency.isascii() or not self.currency.isupper():
            raise ValueError(f"currency must be an ISO 4217 code like EUR, got {self.currency!r}")
        if self.per_minute_rate < 0 or self.minimum_charge < 0:
            raise ValueError("per_minute_rate and minimum_charge must not be negative")
        if not 1 <= self.billing_increment_seconds <= 3600:
            raise ValueError(
                f"billing_increment_seconds must be 1..3600, not {self.billing_increment_seconds}"
            )
        _check_choice("tariff_model", self.tariff_model, ("per_minute", "free"))


@_dataclass(frozen=True, slots=True)
class BillingPlan:
    plan_id: _uuid.UUID
    name: str
    currency: str
    per_minute_rate: _Decimal
    billing_increment_seconds: int
    minimum_charge: _Decimal
    tariff_model: str


@_dataclass(frozen=True, slots=True)
class NewCdr:
    call_id: _uuid.UUID
    correlation_id: _uuid.UUID
    caller: str
    callee: str
    direction: str
    started_at: _dt.datetime
    ended_at: _dt.datetime
    termination_cause: str
    answered_at: _dt.datetime | None = None
    account_id: _uuid.UUID | None = None  # the account billed (the caller's)
    device_id: _uuid.UUID | None = None
    sip_status: int | None = None

    def __post_init__(self) -> None:
        _check_choice("direction", self.direction, CALL_DIRECTIONS)
        _check_text("caller", self.caller, 2048)
        _check_text("callee", self.callee, 2048)
        _check_text("termination_cause", self.termination_cause, 64)
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        if self.answered_at is not None and not self.started_at <= self.answered_at <= self.ended_at:
            raise ValueError("answered_at must lie between started_at and ended_at")


@_dataclass(frozen=True, slots=True)
class Rating:
    """The outcome of rating a call: cost is None when the account has no plan."""

    duration_seconds: int
    billable_seconds: int
    cost: _Decimal | None
    currency: str | None
    plan: BillingPlan | None


@_dataclass(frozen=True, slots=True)
class CdrRecord:
    cdr_id: _uuid.UUID
    call_id: _uuid.UUID
    correlation_id: _uuid.UUID
    account_id: _uuid.UUID | None
    device_id: _uuid.UUID | None
    caller: str
    callee: str
    direction: str
    started_at: _dt.datetime
    answered_at: _dt.datetime | None
    ended_at: _dt.datetime
    duration_seconds: int
    billable_seconds: int
    termination_cause: str
    sip_status: int | None
    plan_id: _uuid.UUID | None
    cost: _Decimal | None
    currency: str | None


class CdrRater(_Protocol):
    def rate(self, cdr: NewCdr, plan: BillingPlan | None) -> Rating: ...


class CdrRepository(_Protocol):
    """CDRs (never deleted), tariffs and account plans; ``record_cdr`` emits ``cdr.created``."""

    async def create_plan(self, plan: NewBillingPlan) -> BillingPlan:
        """ConflictError when a plan of that name exists."""
        ...

    async def assign_plan(
        self, account_id: _uuid.UUID, plan_id: _uuid.UUID, *, credit_limit: _Decimal = _Decimal(0)
    ) -> None:
        """Bill ``account_id`` with ``plan_id`` from now on (balance kept); NotFoundError for a bad plan."""
        ...

    async def plan_for_account(self, account_id: _uuid.UUID) -> BillingPlan | None: ...

    async def balance(self, account_id: _uuid.UUID) -> _Decimal | None: ...

    async def record_cdr(self, cdr: NewCdr) -> CdrRecord:
        """Rate the call with the account's plan (none: cost None) and store it + ``cdr.created``.

        One CDR per call: recording a call again returns the stored CDR and emits nothing.
        """
        ...

    async def record_cdrs(self, cdrs: _Sequence[NewCdr]) -> list[CdrRecord]:
        """``record_cdr`` of each, in order, in one transaction: all stored with their events, or (when
        one fails, which raises) none. The B2BUA writes the CDRs of calls ending together this way."""
        ...

    async def get_cdr(self, cdr_id: _uuid.UUID) -> CdrRecord | None: ...

    async def cdr_for_call(self, call_id: _uuid.UUID) -> CdrRecord | None: ...

    async def list_cdrs(self, account_id: _uuid.UUID, *, limit: int = 100) -> list[CdrRecord]:
        """Newest first."""
        ...


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def check_node_id(node_id: str) -> None:
    """A node id as events carry it (``node_id``: 1-255 characters); repositories check theirs once."""
    _check_text("node_id", node_id, 255)


def _check_text(name: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{name} must be a string of 1-{limit} characters, got {value!r:.80}")


# ---- conferences (DB_CONFERENCES) ----

ACCESS_MODELS = ("invite_only", "org", "public_link")
PARTICIPANT_ROLES = ("host", "speaker", "listener")
EXTERNAL_KINDS = ("email", "phone", "guest")


@_dataclass(frozen=True, slots=True)
class NewConference:
    name: str
    owner_account_id: _uuid.UUID
    access_model: str
    tenant_id: _uuid.UUID | None = None  # required by the "org" model
    public_link_token: str | None = None  # required by "public_link"; only its SHA-256 is stored
    max_participants: int = 50
    record_by_default: bool = False

    def __post_init__(self) -> None:
        _check_text("name", self.name, 255)
        _check_choice("access_model", self.access_model, ACCESS_MODELS)
        if (self.access_model == "public_link") != (self.public_link_token is not None):
            raise ValueError("a public_link token is required by, and only by, the public_link access model")
        if self.public_link_token is not None and len(self.public_link_token) < 16:
            raise ValueError("public_link token must be at least 16 characters")
        if self.access_model == "org" and self.tenant_id is None:
            raise ValueError("the org access model needs tenant_id")
        if not 1 <= self.max_participants <= 1000:
            raise ValueError(f"max_participants must be 1..1000, got {self.max_participants}")


@_dataclass(frozen=True, slots=True)
class Conference:
    conference_id: _uuid.UUID
    name: str
    owner_account_id: _uuid.UUID
    access_model: str
    tenant_id: _uuid.UUID | None
    max_participants: int
    record_by_default: bool
    status: str  # active | archived


@_dataclass(frozen=True, slots=True)
class NewParticipant:
    """Internal (``account_id``) or external (``external_kind`` + ``external_ref``) participant."""

    role: str = "speaker"
    account_id: _uuid.UUID | None = None
    external_kind: str | None = None
    external_ref: str | None = None
    display_name: str | None = None

    def __post_init__(self) -> None:
        _check_choice("role", self.role, PARTICIPANT_ROLES)
        external = self.external_ref is not None or self.external_kind is not None
        if (self.account_id is None) == (not external):
            raise ValueError("a participant is either internal (account_id) or external (external_kind/ref)")
        if external:
            _check_choice("external_kind", self.external_kind or "", EXTERNAL_KINDS)
            _check_text("external_ref", self.external_ref or "", 320)
        if self.display_name is not None and len(self.display_name) > 255:
            raise ValueError("display_name is longer than 255 characters")

    @property
    def kind(self) -> str:
        return "internal" if self.account_id is not None else "external"


@_dataclass(frozen=True, slots=True)
class Participant:
    participant_id: _uuid.UUID
    conference_id: _uuid.UUID
    kind: str
    account_id: _uuid.UUID | None
    external_kind: str | None
    external_ref: str | None
    role: str
    display_name: str | None


@_dataclass(frozen=True, slots=True)
class ConferenceSession:
    conf_session_id: _uuid.UUID
    conference_id: _uuid.UUID
    correlation_id: _uuid.UUID
    node_id: str
    status: str  # active | ended
    started_at: _dt.datetime
    ended_at: _dt.datetime | None
    end_reason: str | None


@_dataclass(frozen=True, slots=True)
class Attendance:
    attendance_id: _uuid.UUID
    conf_session_id: _uuid.UUID
    participant_id: _uuid.UUID
    call_id: _uuid.UUID | None
    joined_at: _dt.datetime
    left_at: _dt.datetime | None
    leave_reason: str | None


@_dataclass(frozen=True, slots=True)
class ConferenceRecording:
    recording_id: _uuid.UUID
    conf_session_id: _uuid.UUID
    storage_key: str  # recordings/conferences/{conf_session_id}/mix.opus
    content_type: str
    status: str  # recording | completed | failed
    started_at: _dt.datetime
    completed_at: _dt.datetime | None
    duration_ms: int | None
    size_bytes: int | None
    retention_until: _dt.datetime


class ConferenceRepository(_Protocol):
    """Rooms, participants, sessions, attendance and mixes; session writes emit ``conference.*`` events."""

    async def create_conference(self, conference: NewConference) -> Conference: ...

    async def get_conference(self, conference_id: _uuid.UUID) -> Conference | None: ...

    async def find_by_public_link(self, token: str) -> Conference | None: ...

    async def add_participant(self, conference_id: _uuid.UUID, participant: NewParticipant) -> Participant:
        """ConflictError when that account / external reference is already a participant."""
        ...

    async def list_participants(self, conference_id: _uuid.UUID) -> list[Participant]: ...

    async def start_session(
        self, conference_id: _uuid.UUID, *, correlation_id: _uuid.UUID, at: _dt.datetime | None = None
    ) -> ConferenceSession:
        """+ ``conference.session.started``; ConflictError while another session of the room is active."""
        ...

    async def active_session(self, conference_id: _uuid.UUID) -> ConferenceSession | None: ...

    async def join(
        self,
        conf_session_id: _uuid.UUID,
        participant_id: _uuid.UUID,
        *,
        call_id: _uuid.UUID | None = None,
        at: _dt.datetime | None = None,
    ) -> Attendance:
        """+ ``conference.participant.joined``; ConflictError when present already or the room is full."""
        ...

    async def leave(
        self, attendance_id: _uuid.UUID, *, reason: str | None = None, at: _dt.datetime | None = None
    ) -> Attendance:
        """+ ``conference.participant.left``; leaving twice returns the attendance and emits nothing."""
        ...

    async def list_attendance(self, conf_session_id: _uuid.UUID) -> list[Attendance]: ...

    async def end_session(
        self, conf_session_id: _uuid.UUID, *, reason: str | None = None, at: _dt.datetime | None = None
    ) -> ConferenceSession:
        """Everyone still present leaves (their ``left`` events), then ``conference.session.ended``.

        Ending an ended session returns it and emits nothing.
        """
        ...

    async def start_recording(
        self,
        conf_session_id: _uuid.UUID,
        *,
        storage_key: str,
        retention_until: _dt.datetime,
        content_type: str = "audio/ogg",
        at: _dt.datetime | None = None,
    ) -> ConferenceRecording: ...

    async def complete_recording(
        self, recording_id: _uuid.UUID, *, duration_ms: int, size_bytes: int, at: _dt.datetime | None = None
    ) -> ConferenceRecording:
        """+ ``conference.recording.completed``."""
        ...

    async def get_recording(self, recording_id: _uuid.UUID) -> ConferenceRecording | None: ...


# ---- policy-decision audit (DB_CALLS) ----

POLICY_DECISIONS = ("allow", "deny")


@_dataclass(frozen=True, slots=True)
class NewPolicyDecision:
    """One runtime ABAC decision: who wanted to do what to which resource, the answer, the bundle."""

    subject: str
    action: str
    resource: str
    decision: str  # allow | deny
    policy_bundle_version: str
    obligations: tuple[dict[str, _Any], ...] = ()
    reason: str | None = None
    subject_account_id: _uuid.UUID | None = None
    call_id: _uuid.UUID | None = None
    correlation_id: _uuid.UUID | None = None
    decided_at: _dt.datetime | None = None

    def __post_init__(self) -> None:
        _check_text("subject", self.subject, 255)
        _check_text("action", self.action, 128)
        _check_text("resource", self.resource, 2048)
        _check_choice("decision", self.decision, POLICY_DECISIONS)
        _check_text("policy_bundle_version", self.policy_bundle_version, 128)
        if self.reason is not None and len(self.reason) > 1024:
            raise ValueError("reason is longer than 1024 characters")
        if not all(isinstance(item, dict) for item in self.obligations):
            raise ValueError("obligations must be JSON objects")


@_dataclass(frozen=True, slots=True)
class PolicyDecisionRecord:
    decision_id: _uuid.UUID
    subject: str
    action: str
    resource: str
    decision: str
    policy_bundle_version: str
    obligations: tuple[dict[str, _Any], ...]
    reason: str | None
    subject_account_id: _uuid.UUID | None
    call_id: _uuid.UUID | None
    correlation_id: _uuid.UUID | None
    decided_at: _dt.datetime
    node_id: str


class PolicyDecisionAudit(_Protocol):
    """Append-only log of ABAC decisions (never changed nor deleted)."""

    async def record(self, decision: NewPolicyDecision) -> PolicyDecisionRecord: ...

    async def get(self, decision_id: _uuid.UUID) -> PolicyDecisionRecord | None: ...

    async def list_for_call(self, call_id: _uuid.UUID) -> list[PolicyDecisionRecord]:
        """Oldest first."""
        ...

    async def list_since(self, since: _dt.datetime, *, limit: int = 1000) -> list[PolicyDecisionRecord]:
        """Decisions at or after ``since``, oldest first, at most ``limit`` (1..10000)."""
        ...


# ---- object index and pre-signed URL leases (DB_CDR for call recordings, DB_CONFERENCES for mixes) ----

OBJECT_KINDS = ("call_audio", "call_video", "transcript", "conference_mix")
#: S3 SigV4 caps a pre-signed URL's life at 7 days.
MAX_LEASE_SECONDS = 7 * 24 * 3600


class RetentionViolation(ConflictError):
    """An object would be deleted before its ``retention_until``."""


@_dataclass(frozen=True, slots=True)
class NewObject:
    bucket: str
    storage_key: str
    object_kind: str
    content_type: str
    access_policy_ref: str  # the access class the PDP evaluates before a URL is issued
    retention_until: _dt.datetime
    owner_account_id: _uuid.UUID | None = None
    call_id: _uuid.UUID | None = None
    conf_session_id: _uuid.UUID | None = None
    correlation_id: _uuid.UUID | None = None

    def __post_init__(self) -> None:
        if not 3 <= len(self.bucket) <= 63:
            raise ValueError(f"bucket name must be 3-63 characters, got {self.bucket!r}")
        _check_text("storage_key", self.storage_key, 1024)
        _check_choice("object_kind", self.object_kind, OBJECT_KINDS)
        _check_text("content_type", self.content_type, 255)
        _check_text("access_policy_ref", self.access_policy_ref, 255)
        if self.retention_until.tzinfo is None:
            raise ValueError("retention_until has no time zone; pass an aware datetime")


@_dataclass(frozen=True, slots=True)
class IndexedObject:
    object_id: _uuid.UUID
    bucket: str
    storage_key: str
    object_kind: str
    content_type: str
    size_bytes: int | None
    checksum_sha256: str | None
    status: str  # pending | available | failed | deleted
    owner_account_id: _uuid.UUID | None
    call_id: _uuid.UUID | None
    conf_session_id: _uuid.UUID | None
    correlation_id: _uuid.UUID | None
    access_policy_ref: str
    retention_until: _dt.datetime
    deleted_at: _dt.datetime | None


class ObjectIndex(_Protocol):
    async def register(self, obj: NewObject) -> IndexedObject:
        """Index an object being written (status pending); ConflictError when the key is indexed already."""
        ...

    async def mark_available(
        self, object_id: _uuid.UUID, *, size_bytes: int, checksum_sha256: str | None = None
    ) -> IndexedObject:
        """The upload completed; InvalidStateChange unless the object is pending."""
        ...

    async def mark_failed(self, object_id: _uuid.UUID) -> IndexedObject: ...

    async def mark_deleted(self, object_id: _uuid.UUID, *, at: _dt.datetime | None = None) -> IndexedObject:
        """RetentionViolation before ``retention_until``; deleting twice returns the deleted object."""
        ...

    async def get(self, object_id: _uuid.UUID) -> IndexedObject | None: ...

    async def find(self, bucket: str, storage_key: str) -> IndexedObject | None: ...

    async def list_for_call(self, call_id: _uuid.UUID) -> list[IndexedObject]: ...

    async def list_for_conf_session(self, conf_session_id: _uuid.UUID) -> list[IndexedObject]: ...

    async def list_expired(self, now: _dt.datetime, *, limit: int = 1000) -> list[IndexedObject]:
        """Objects not deleted whose retention ended by ``now``, oldest retention first."""
        ...


@_dataclass(frozen=True, slots=True)
class NewLease:
    object_id: _uuid.UUID
    issued_to: str  # the principal (account id, service name)
    purpose: str  # why it was asked for
    expires_at: _dt.datetime
    issued_to_account_id: _uuid.UUID | None = None
    decision_id: _uuid.UUID | None = None  # the policy decision that allowed it
    http_method: str = "GET"
    url: str | None = None  # only its SHA-256 is stored
    correlation_id: _uuid.UUID | None = None
    issued_at: _dt.datetime | None = None

    def __post_init__(self) -> None:
        _check_text("issued_to", self.issued_to, 255)
        _check_text("purpose", self.purpose, 255)
        _check_choice("http_method", self.http_method, ("GET", "PUT"))
        if self.expires_at.tzinfo is None:
            raise ValueError("expires_at has no time zone; pass an aware datetime")


@_dataclass(frozen=True, slots=True)
class UrlLease:
    lease_id: _uuid.UUID
    object_id: _uuid.UUID
    issued_to: str
    issued_to_account_id: _uuid.UUID | None
    purpose: str
    decision_id: _uuid.UUID | None
    http_method: str
    url_sha256: str | None
    correlation_id: _uuid.UUID | None
    issued_at: _dt.datetime
    expires_at: _dt.datetime
    revoked_at: _dt.datetime | None
    revoked_by: str | None
    revoke_reason: str | None

    def is_active(self, now: _dt.datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


class PresignedUrlLeaseStore(_Protocol):
    """Every pre-signed URL issued for an indexed object: who, when, why, until when, revocation."""

    async def issue(self, lease: NewLease) -> UrlLease:
        """NotFoundError for an unknown object, InvalidStateChange unless it is available, ValueError for
        an expiry not after the issue time or beyond ``MAX_LEASE_SECONDS``."""
        ...

    async def revoke(
        self,
        lease_id: _uuid.UUID,
        *,
        revoked_by: str,
        reason: str | None = None,
        at: _dt.datetime | None = None,
    ) -> UrlLease:
        """Revoking twice keeps the first revocation."""
        ...

    async def get(self, lease_id: _uuid.UUID) -> UrlLease | None: ...

    async def find_by_url(self, url: str) -> UrlLease | None: ...

    async def list_for_object(self, object_id: _uuid.UUID) -> list[UrlLease]:
        """Oldest first."""
        ...


@_dataclass(frozen=True, slots=True)
class RoutingRule:
    """One row of ``routing_rules`` as call control reads it (only ``always`` conditions apply here)."""

    action: str  # ring_devices | forward | reject | voicemail | queue
    target: str | None = None
    condition_type: str = "always"
    priority: int = 100


# --- hot path (Redis) and blob store (S3) -----------------------------------------------------------------
# (owned by the Redis/S3 work; add ports below this marker)

#: Longest accepted key part (AOR, call id, node id, routing target, limiter/idempotency key).
MAX_HOT_KEY_LENGTH = 1024

# These imports sit inside this section so that it can be edited without touching the one above.
import math  # noqa: E402, RUF100
from collections.abc import Mapping, Sequence  # noqa: E402, RUF100
from dataclasses import dataclass, field  # noqa: E402, RUF100
from typing import Any, Protocol  # noqa: E402, RUF100

#: The idempotency window the data model asks for (redelivery window of at-least-once consumers).
IDEMPOTENCY_TTL_MIN_SECONDS = 24 * 3600
IDEMPOTENCY_TTL_MAX_SECONDS = 72 * 3600

JsonObject = dict[str, Any]


def check_hot_key(kind: str, value: str) -> str:
    """Reject empty, oversized or non-string key parts with a message naming the offender."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")
    if len(value) > MAX_HOT_KEY_LENGTH:
        raise ValueError(f"{kind} is {len(value)} characters long, the limit is {MAX_HOT_KEY_LENGTH}")
    return value


def check_ttl(ttl_seconds: float) -> float:
    """A TTL must be a finite number of seconds above one millisecond (Redis' resolution)."""
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int | float):
        raise ValueError(f"TTL must be a number of seconds, got {ttl_seconds!r}")
    if not math.isfinite(ttl_seconds) or ttl_seconds < 0.001:
        raise ValueError(f"TTL must be finite and at least 0.001 s, got {ttl_seconds!r}")
    return float(ttl_seconds)


def check_idempotency_ttl(
    ttl_seconds: float,
    minimum: float = IDEMPOTENCY_TTL_MIN_SECONDS,
    maximum: float = IDEMPOTENCY_TTL_MAX_SECONDS,
) -> float:
    """Callers (consumers, API handlers) check their configured TTL against the 24-72 h window here.

    ``IdempotencyKeys.claim`` itself accepts any positive TTL so contract tests can use short ones.
    """
    check_ttl(ttl_seconds)
    if not minimum <= ttl_seconds <= maximum:
        raise ValueError(
            f"idempotency TTL {ttl_seconds} s is outside the redelivery window [{minimum}, {maximum}] s"
        )
    return float(ttl_seconds)


# ---- location store (registrar bindings) ----


class BindingLimitExceeded(Exception):
    """An AOR would hold more bindings than the store allows (the registrar answers 403/503)."""


class ContactLimitExceeded(BindingLimitExceeded):
    """An AOR would hold more bindings than the caller's own limit (``apply_register(max_bindings=)``)."""


class OutOfOrderRegister(Exception):
    """A REGISTER would change a binding made with the same Call-ID and a CSeq not below its own
    (RFC 3261 §10.3 step 7): nothing was written (the registrar answers 500)."""


@dataclass(frozen=True, slots=True)
class TransportAddress:
    """Where a REGISTER came from; ``connection_id`` names the flow of a connection-oriented transport."""

    transport: str  # "udp", "tcp", "tls", "ws", "wss"
    host: str
    port: int
    connection_id: str | None = None

    def __post_init__(self) -> None:
        if not self.transport or not self.host:
            raise ValueError("transport address needs a transport and a host")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact of an address-of-record (RFC 3261 §10, RFC 5626 flows).

    ``expires_at`` and ``updated_at`` are epoch seconds. Two bindings are the same binding when their
    ``binding_id`` matches: the caller's ``binding_key`` when it computed one (the registrar compares
    contact URIs loosely, RFC 3261 §19.1.4), else the (instance-id, reg-id) pair of an RFC 5626 outbound
    registration, else the contact URI as written. ``q`` is None when the contact carried none (sorted
    as 1.0).
    """

    aor: str
    contact_uri: str
    expires_at: float
    q: float | None = None
    call_id: str = ""
    cseq: int = 0
    instance_id: str | None = None
    reg_id: int | None = None
    path: tuple[str, ...] = ()
    received: TransportAddress | None = None
    user_agent: str | None = None
    node_id: str = ""
    updated_at: float = 0.0
    binding_key: str | None = None

    def __post_init__(self) -> None:
        check_hot_key("aor", self.aor)
        check_hot_key("contact_uri", self.contact_uri)
        if not math.isfinite(self.expires_at):
            raise ValueError(f"expires_at must be finite, got {self.expires_at!r}")
        if self.q is not None and not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be within [0, 1], got {self.q!r}")
        if self.cseq < 0:
            raise ValueError(f"cseq must not be negative, got {self.cseq}")
        if self.reg_id is not None and self.instance_id is None:
            raise ValueError("reg-id without +sip.instance (RFC 5626 §4.2)")

    @property
    def binding_id(self) -> str:
        if self.binding_key is not None:
            return self.binding_key
        if self.instance_id is not None and self.reg_id is not None:
            return f"outbound:{self.instance_id}:{self.reg_id}"
        return f"contact:{self.contact_uri}"

    def to_json(self) -> JsonObject:
        received = None
        if self.received is not None:
            received = {
                "transport": self.received.transport,
                "host": self.received.host,
                "port": self.received.port,
                "connection_id": self.received.connection_id,
            }
        return {
            "aor": self.aor,
            "contact_uri": self.contact_uri,
            "expires_at": self.expires_at,
            "q": self.q,
            "call_id": self.call_id,
            "cseq": self.cseq,
            "instance_id": self.instance_id,
            "reg_id": self.reg_id,
            "path": list(self.path),
            "received": received,
            "user_agent": self.user_agent,
            "node_id": self.node_id,
            "updated_at": self.updated_at,
            "binding_key": self.binding_key,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Binding:
        received = data.get("received")
        return cls(
            aor=data["aor"],
            contact_uri=data["contact_uri"],
            expires_at=float(data["expires_at"]),
            q=None if data.get("q") is None else float(data["q"]),
            call_id=data.get("call_id", ""),
            cseq=int(data.get("cseq", 0)),
            instance_id=data.get("instance_id"),
            reg_id=data.get("reg_id"),
            path=tuple(data.get("path", ())),
            received=TransportAddress(**received) if received else None,
            user_agent=data.get("user_agent"),
            node_id=data.get("node_id", ""),
            updated_at=float(data.get("updated_at", 0.0)),
            binding_key=data.get("binding_key"),
        )


class LocationStore(Protocol):
    """Registrar bindings per AOR. Expired bindings (``expires_at <= now``) are never returned.

    ``lookup``/``save`` take ``now`` from the caller (the registrar never reads a clock); the other
    methods read the store's own clock (injected into fakes and adapters).
    """

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        """Bindings unexpired at ``now``, in ``list_bindings`` order."""
        ...

    async def save(self, aor: str, upserts: Sequence[Binding], removals: Sequence[str], now: float) -> None:
        """One atomic step: drop the ``removals`` binding ids, then insert or replace ``upserts``.

        An upsert already expired at ``now`` removes its twin. Raises ``BindingLimitExceeded`` (nothing
        written) when the AOR would exceed the store's binding limit.
        """
        ...

    async def apply_register(
        self,
        aor: str,
        upserts: Sequence[Binding],
        removals: Sequence[str],
        now: float,
        *,
        call_id: str,
        cseq: int,
        max_bindings: int,
        remove_all: bool = False,
    ) -> list[Binding]:
        """A REGISTER's whole store work in one atomic step (one round trip): ``save`` guarded by the
        registrar's checks, returning the AOR's unexpired bindings afterwards (``list_bindings`` order).

        ``remove_all`` drops every binding (``Contact: *``), else ``removals`` then ``upserts`` apply as in
        ``save``. Nothing is written when a binding to be replaced or removed carries ``call_id`` with a
        CSeq not below ``cseq`` (``OutOfOrderRegister``), when more than ``max_bindings`` would remain
        (``ContactLimitExceeded``) or more than the store allows (``BindingLimitExceeded``), checked in
        that order.
        """
        ...

    async def upsert(self, aor: str, bindings: Sequence[Binding]) -> None:
        """``save(aor, bindings, [], now=clock())``."""
        ...

    async def remove(self, aor: str, binding_id: str) -> bool: ...

    async def remove_all(self, aor: str) -> int: ...

    async def list_bindings(self, aor: str) -> list[Binding]:
        """Unexpired bindings, highest q first, then most recently updated."""
        ...

    async def count(self, aor: str) -> int: ...

    async def list_aors(self, limit: int = 1000) -> list[str]:
        """AORs with at least one unexpired binding, sorted, at most ``limit``."""
        ...


# ---- active-call cache (session_cache), routing cache ----


@dataclass(frozen=True, slots=True)
class CachedCall:
    call_id: str
    node_id: str
    state: JsonObject
    updated_at: float


class ActiveCallCache(Protocol):
    async def set(self, call_id: str, state: Mapping[str, Any], *, node_id: str, ttl_seconds: float) -> None:
        """Store the call's JSON-able state, owned by ``node_id``, for ``ttl_seconds``."""
        ...

    async def get(self, call_id: str) -> CachedCall | None: ...

    async def delete(self, call_id: str) -> bool: ...

    async def list_by_node(self, node_id: str) -> list[str]:
        """Call ids (sorted) still cached for ``node_id`` - what a survivor cleans up when the node dies."""
        ...

    async def set_heartbeat(self, node_id: str, ttl_seconds: float) -> None: ...

    async def get_heartbeat(self, node_id: str) -> float | None:
        """Epoch seconds of the node's last heartbeat, or None when it expired (node presumed dead)."""
        ...


class RoutingCache(Protocol):
    async def get(self, target: str) -> JsonObject | None: ...

    async def put(self, target: str, result: Mapping[str, Any], ttl_seconds: float) -> None: ...

    async def invalidate(self, target: str) -> bool: ...


# ---- rate limiter, idempotency keys ----


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    remaining: int  # requests still allowed in the current window after this one
    retry_after_seconds: float  # 0 when allowed; else until the oldest counted request leaves the window

    def __bool__(self) -> bool:
        return self.allowed


class RateLimiter(Protocol):
    async def allow(self, key: str, limit: int, window_seconds: float) -> RateDecision:
        """Sliding window: allowed when fewer than ``limit`` requests were allowed in the last window.

        Refused requests are not counted. Atomic under concurrent callers.
        """
        ...

    async def reset(self, key: str) -> None: ...


class IdempotencyKeys(Protocol):
    async def claim(self, key: str, ttl_seconds: float) -> bool:
        """True only for the first claim of ``key`` within its TTL (see ``check_idempotency_ttl``)."""
        ...

    async def release(self, key: str) -> bool:
        """Forget a claim (processing failed, let a redelivery retry). True if it was held."""
        ...

    async def is_claimed(self, key: str) -> bool: ...


# ---- blob store (S3) ----


class BlobStoreError(Exception):
    """Base of every blob-store failure; ``code`` carries the S3 error code when there was one."""

    def __init__(self, message: str, *, code: str = "", key: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.key = key


class NotFound(BlobStoreError):
    """No such key or bucket."""


class NoSuchUpload(BlobStoreError):
    """The multipart upload id is unknown: never created, completed or aborted."""


class EntityTooSmall(BlobStoreError):
    """A non-final part of a multipart upload is below the 5 MiB minimum."""


class InvalidPart(BlobStoreError):
    """A completed part list names a part that was not uploaded, or with a wrong ETag, or out of order."""


class AccessDenied(BlobStoreError):
    """Credentials refused or not allowed to do this."""


class Unavailable(BlobStoreError):
    """The store cannot be reached or answered 5xx; the operation may be retried."""


#: S3's minimum size of every part but the last, and its part-number range.
MIN_MULTIPART_PART_SIZE = 5 * 1024 * 1024
MAX_MULTIPART_PARTS = 10000


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    content_type: str
    last_modified: float
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UploadedPart:
    part_number: int
    etag: str


@dataclass(frozen=True, slots=True)
class MultipartUploadInfo:
    key: str
    upload_id: str
    initiated: float | None


@dataclass(frozen=True, slots=True)
class LifecycleRule:
    """A bucket lifecycle rule as far as the edge uses them (abort stale multipart uploads, expire)."""

    rule_id: str
    prefix: str = ""
    abort_incomplete_multipart_days: int | None = None
    expiration_days: int | None = None
    enabled: bool = True


class BlobStore(Protocol):
    """One bucket of an S3-compatible store. Keys follow DATA_MODEL.md (``recordings/calls/...``)."""

    @property
    def bucket(self) -> str: ...

    async def ensure_bucket(self) -> None: ...

    async def put_object(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Store a small object in one request; returns its ETag (without quotes)."""
        ...

    async def head_object(self, key: str) -> ObjectInfo: ...

    async def get_object(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        """Whole object or the inclusive ``(first, last)`` byte range, bounded by the store's read limit."""
        ...

    async def delete_object(self, key: str) -> None: ...

    async def create_multipart_upload(
        self,
        key: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str: ...

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> UploadedPart: ...

    async def complete_multipart_upload(self, key: str, upload_id: str, parts: Sequence[UploadedPart]) -> str:
        """Assemble the parts (ascending part numbers); raises EntityTooSmall / InvalidPart / NoSuchUpload."""
        ...

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Drop the upload and its parts; aborting an unknown or already aborted upload is not an error."""
        ...

    async def list_multipart_uploads(self, prefix: str = "") -> list[MultipartUploadInfo]: ...

    async def presign_get(self, key: str, expires_in_seconds: int) -> str:
        """A URL that lets its holder GET ``key`` until it expires (1 s .. 7 days)."""
        ...

    async def put_lifecycle_rules(self, rules: Sequence[LifecycleRule]) -> None:
        """Replace the bucket's lifecycle configuration with ``rules``."""
        ...

    async def get_lifecycle_rules(self) -> list[LifecycleRule]: ...
