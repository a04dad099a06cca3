"""The events each relational-domain write reports, built from the rows it wrote.

Pure functions shared by the PostgreSQL adapters and the in-memory fakes, so both emit identical envelopes.
Envelopes come from ``storage.events.make_event`` (validated against the JSON Schemas); ``to_outbox`` routes
them to a topic and partition key for the ``outbox`` table.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from storage.events import (
    DEFAULT_TOPICS,
    EventTopics,
    EventType,
    OutboxEntry,
    assemble_event,
    format_timestamp,
    make_event,
    outbox_entry,
)
from storage.ports import (
    Attendance,
    CallLeg,
    CallSession,
    CdrRecord,
    Conference,
    ConferenceRecording,
    ConferenceSession,
    Participant,
    QualityReport,
    RoutingAttempt,
)


def _id(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _ms(later: dt.datetime, earlier: dt.datetime) -> int:
    return max(0, round((later - earlier).total_seconds() * 1000))


def call_event(
    event_type: EventType,
    call: CallSession,
    payload: Mapping[str, Any],
    occurred_at: dt.datetime,
    node_id: str,
    *,
    check: bool = False,
) -> dict[str, Any]:
    """A call event. Built from rows the call repository checked (``NewCall``/``NewLeg`` and ``call_rules``
    hold every field to the schema's limits, the repository its node id), it is not checked against the
    schema again: ``tests/unit/test_call_events_by_construction.py`` validates what these builders make
    from any input the repository accepts. ``check=True`` for measured figures (quality reports), which no
    rule bounds; CDRs go through ``make_event`` too."""
    build = make_event if check else assemble_event
    return build(
        event_type,
        payload=payload,
        correlation_id=_text_of(call.correlation_id),
        node_id=node_id,
        call_id=_text_of(call.call_id),
        occurred_at=occurred_at,
    )


T = TypeVar("T")


class RecentTexts(Generic[T]):
    """``render(value)``, remembered for the last few values by identity (no hashing, no equality).

    A batch builds a call's dozen events one after another from rows that share the same UUID objects
    (call id, correlation id), and printing a UUID costs more than assembling the rest of the envelope's
    identity. A miss costs a scan of ``size`` entries. The cache keeps its values alive, so an identity
    cannot be taken by another object while its entry stands."""

    __slots__ = ("_entries", "_render", "_size")

    def __init__(self, render: Callable[[T], str], size: int = 4) -> None:
        self._render = render
        self._size = size
        self._entries: list[tuple[T, str]] = []

    def __call__(self, value: T) -> str:
        for known, text in self._entries:
            if known is value:
                return text
        text = self._render(value)
        self._entries.insert(0, (value, text))
        del self._entries[self._size :]
        return text


_text_of = RecentTexts[uuid.UUID](str)


def call_started(call: CallSession) -> dict[str, Any]:
    payload = {
        "direction": call.direction,
        "media": call.media,
        "from_uri": call.from_uri,
        "to_uri": call.to_uri,
        "initiator_account_id": _id(call.initiator_account_id),
        "callee_account_id": _id(call.callee_account_id),
    }
    return call_event(EventType.CALL_STARTED, call, payload, call.started_at, call.node_id)


def call_leg_created(call: CallSession, leg: CallLeg, node_id: str) -> dict[str, Any]:
    payload = {
        "leg_id": str(leg.leg_id),
        "leg_type": leg.leg_type,
        "direction": leg.direction,
        "remote_address": leg.remote_address,
        "device_id": _id(leg.device_id),
    }
    return call_event(EventType.CALL_LEG_CREATED, call, payload, leg.started_at, node_id)


def call_leg_state_changed(
    call: CallSession, leg: CallLeg, from_state: str, at: dt.datetime, node_id: str
) -> dict[str, Any]:
    payload = {
        "leg_id": str(leg.leg_id),
        "from_state": from_state,
        "to_state": leg.status,
        "reason": leg.status_reason,
    }
    return call_event(EventType.CALL_LEG_STATE_CHANGED, call, payload, at, node_id)


def call_routing_attempted(call: CallSession, attempt: RoutingAttempt, node_id: str) -> dict[str, Any]:
    payload = {
        "step": attempt.step,
        "target": attempt.target,
        "result": attempt.result,
        "sip_status": attempt.sip_status,
    }
    return call_event(EventType.CALL_ROUTING_ATTEMPTED, call, payload, attempt.attempted_at, node_id)


def call_answered(call: CallSession, node_id: str) -> dict[str, Any]:
    assert call.answered_at is not None
    payload = {
        "answered_leg_id": _id(call.answered_leg_id),
        "setup_ms": _ms(call.answered_at, call.started_at),
    }
    return call_event(EventType.CALL_ANSWERED, call, payload, call.answered_at, node_id)


def call_ended(call: CallSession, node_id: str) -> dict[str, Any]:
    assert call.ended_at is not None and call.termination_cause is not None
    payload = {
        "termination_cause": call.termination_cause,
        "sip_status": call.sip_status,
        "duration_ms": _ms(call.ended_at, call.started_at),
        "talk_ms": _ms(call.ended_at, call.answered_at) if call.answered_at else 0,
        "ended_by": call.ended_by,
    }
    return call_event(EventType.CALL_ENDED, call, payload, call.ended_at, node_id)


def call_quality_reported(
    call: CallSession, report: QualityReport, at: dt.datetime, node_id: str
) -> dict[str, Any]:
    payload = {
        "leg_id": str(report.leg_id),
        "interval_s": report.interval_seconds,
        "rtt_ms": report.rtt_ms,
        "jitter_ms": report.jitter_ms,
        "packet_loss_fraction": report.packet_loss_fraction,
        "packets_lost": report.packets_lost,
        "mos": report.mos,
    }
    # Measured values (NaN, out of range) are checked against the schema.
    return call_event(EventType.CALL_QUALITY_REPORTED, call, payload, at, node_id, check=True)


def cdr_created(cdr: CdrRecord, node_id: str, occurred_at: dt.datetime) -> dict[str, Any]:
    payload = {
        "cdr_id": str(cdr.cdr_id),
        "account_id": _id(cdr.account_id),
        "caller": cdr.caller,
        "callee": cdr.callee,
        "started_at": format_timestamp(cdr.started_at),
        "answered_at": format_timestamp(cdr.answered_at) if cdr.answered_at else None,
        "ended_at": format_timestamp(cdr.ended_at),
        "duration_seconds": cdr.duration_seconds,
        "billable_seconds": cdr.billable_seconds,
        "termination_cause": cdr.termination_cause,
        "cost": None if cdr.cost is None else format(cdr.cost, "f"),
        "currency": cdr.currency,
        "plan_id": _id(cdr.plan_id),
    }
    return make_event(
        EventType.CDR_CREATED,
        payload=payload,
        correlation_id=str(cdr.correlation_id),
        node_id=node_id,
        call_id=str(cdr.call_id),
        occurred_at=occurred_at,
    )


def conference_event(
    event_type: EventType,
    session: ConferenceSession,
    payload: Mapping[str, Any],
    occurred_at: dt.datetime,
    node_id: str,
) -> dict[str, Any]:
    return make_event(
        event_type,
        payload=payload,
        correlation_id=str(session.correlation_id),
        node_id=node_id,
        conf_session_id=str(session.conf_session_id),
        occurred_at=occurred_at,
    )


def conference_session_started(session: ConferenceSession, conference: Conference) -> dict[str, Any]:
    payload = {"conference_id": str(conference.conference_id), "access_model": conference.access_model}
    return conference_event(
        EventType.CONFERENCE_SESSION_STARTED, session, payload, session.started_at, session.node_id
    )


def conference_participant_joined(
    session: ConferenceSession, participant: Participant, attendance: Attendance, node_id: str
) -> dict[str, Any]:
    payload = {
        "conference_id": str(session.conference_id),
        "participant_id": str(participant.participant_id),
        "account_id": _id(participant.account_id),
        "external_ref": participant.external_ref,
        "call_id": _id(attendance.call_id),
        "role": participant.role,
    }
    return conference_event(
        EventType.CONFERENCE_PARTICIPANT_JOINED, session, payload, attendance.joined_at, node_id
    )


def conference_participant_left(
    session: ConferenceSession, attendance: Attendance, node_id: str
) -> dict[str, Any]:
    assert attendance.left_at is not None
    payload = {
        "conference_id": str(session.conference_id),
        "participant_id": str(attendance.participant_id),
        "duration_ms": _ms(attendance.left_at, attendance.joined_at),
        "reason": attendance.leave_reason,
    }
    return conference_event(
        EventType.CONFERENCE_PARTICIPANT_LEFT, session, payload, attendance.left_at, node_id
    )


def conference_session_ended(
    session: ConferenceSession, participant_count: int, node_id: str
) -> dict[str, Any]:
    assert session.ended_at is not None
    payload = {
        "conference_id": str(session.conference_id),
        "duration_ms": _ms(session.ended_at, session.started_at),
        "participant_count": participant_count,
        "reason": session.end_reason,
    }
    return conference_event(EventType.CONFERENCE_SESSION_ENDED, session, payload, session.ended_at, node_id)


def conference_recording_completed(
    session: ConferenceSession, recording: ConferenceRecording, node_id: str
) -> dict[str, Any]:
    assert recording.completed_at is not None
    payload = {
        "conference_id": str(session.conference_id),
        "recording_id": str(recording.recording_id),
        "storage_key": recording.storage_key,
        "duration_ms": recording.duration_ms,
        "size_bytes": recording.size_bytes,
        "content_type": recording.content_type,
    }
    return conference_event(
        EventType.CONFERENCE_RECORDING_COMPLETED, session, payload, recording.completed_at, node_id
    )


def to_outbox(envelope: Mapping[str, Any], topics: EventTopics = DEFAULT_TOPICS) -> OutboxEntry:
    return outbox_entry(envelope, topics)
