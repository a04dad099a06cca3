"""Call-control rules shared by the PostgreSQL call repository and its in-memory fake."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from storage.ports import (
    ENDED_BY,
    LEG_TRANSITIONS,
    CallLeg,
    CallSession,
    InvalidStateChange,
    NewCall,
    NewLeg,
)

_RESULT = re.compile(r"^[a-z_]{1,32}$")


def check_at(what: str, at: dt.datetime, not_before: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        raise ValueError(f"{what} time {at!r} has no time zone; pass an aware datetime")
    if at < not_before:
        raise ValueError(f"{what} at {at.isoformat()} is before {not_before.isoformat()}")
    return at


def check_sip_status(sip_status: int | None) -> None:
    if sip_status is not None and not 100 <= sip_status <= 699:
        raise ValueError(f"sip_status must be 100..699, got {sip_status}")


def check_can_add_leg(call: CallSession) -> None:
    if call.status == "ended":
        raise InvalidStateChange(f"call {call.call_id} has ended; no new legs")


def check_leg_transition(leg: CallLeg, to_state: str, reason: str | None) -> None:
    if to_state not in LEG_TRANSITIONS:
        raise ValueError(f"leg state must be one of {', '.join(LEG_TRANSITIONS)}, got {to_state!r}")
    if to_state not in LEG_TRANSITIONS[leg.status]:
        raise InvalidStateChange(f"leg {leg.leg_id} cannot go from {leg.status} to {to_state}")
    if reason is not None and len(reason) > 255:
        raise ValueError("reason is longer than 255 characters")


def check_routing_attempt(step: int, target: str, result: str, sip_status: int | None) -> None:
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if not target or len(target) > 2048:
        raise ValueError("target must be 1-2048 characters")
    if not _RESULT.match(result):
        raise ValueError(f"result must be lower_snake_case up to 32 characters, got {result!r}")
    check_sip_status(sip_status)


def check_answer(call: CallSession, leg: CallLeg | None, leg_id: object) -> None:
    if leg is None or leg.call_id != call.call_id:
        raise InvalidStateChange(f"leg {leg_id} is not a leg of call {call.call_id}")
    if call.status != "initiated":
        raise InvalidStateChange(f"call {call.call_id} is {call.status}; only an initiated call is answered")


def check_end(termination_cause: str, sip_status: int | None, ended_by: str | None) -> None:
    if not termination_cause or len(termination_cause) > 64:
        raise ValueError("termination_cause must be 1-64 characters")
    check_sip_status(sip_status)
    if ended_by is not None and ended_by not in ENDED_BY:
        raise ValueError(f"ended_by must be one of {', '.join(ENDED_BY)} or None, got {ended_by!r}")


def new_session(call: NewCall, call_id: uuid.UUID, node_id: str, started_at: dt.datetime) -> CallSession:
    """The row a started call becomes (status initiated), as the database stores it."""
    return CallSession(
        call_id=call_id,
        correlation_id=call.correlation_id,
        sip_call_id=call.sip_call_id,
        direction=call.direction,
        media=call.media,
        status="initiated",
        from_uri=call.from_uri,
        to_uri=call.to_uri,
        initiator_account_id=call.initiator_account_id,
        callee_account_id=call.callee_account_id,
        node_id=node_id,
        answered_leg_id=None,
        termination_cause=None,
        sip_status=None,
        ended_by=None,
        started_at=started_at,
        answered_at=None,
        ended_at=None,
    )


def new_leg(leg: NewLeg, leg_id: uuid.UUID, call_id: uuid.UUID, started_at: dt.datetime) -> CallLeg:
    """The row an added leg becomes (status initiated), as the database stores it."""
    return CallLeg(
        leg_id=leg_id,
        call_id=call_id,
        leg_type=leg.leg_type,
        direction=leg.direction,
        remote_address=leg.remote_address,
        device_id=leg.device_id,
        account_id=leg.account_id,
        sip_call_id=leg.sip_call_id,
        status="initiated",
        status_reason=None,
        started_at=started_at,
        ended_at=None,
    )


# The next states of a row, built field by field: dataclasses.replace walks the fields' metadata on every
# call, and the B2BUA changes ~8 rows a call.


def leg_moved(leg: CallLeg, to_state: str, reason: str | None, when: dt.datetime) -> CallLeg:
    """``leg`` in ``to_state`` (checked by :func:`check_leg_transition`); a terminal state ends it."""
    ended_at = when if to_state in ("terminated", "failed") else leg.ended_at
    return CallLeg(
        leg.leg_id,
        leg.call_id,
        leg.leg_type,
        leg.direction,
        leg.remote_address,
        leg.device_id,
        leg.account_id,
        leg.sip_call_id,
        to_state,
        reason,
        leg.started_at,
        ended_at,
    )


def call_answered(call: CallSession, leg_id: uuid.UUID, when: dt.datetime) -> CallSession:
    return _call_with(
        call, "answered", leg_id, call.termination_cause, call.sip_status, call.ended_by, when, call.ended_at
    )


def call_ended(
    call: CallSession, termination_cause: str, sip_status: int | None, ended_by: str | None, when: dt.datetime
) -> CallSession:
    return _call_with(
        call, "ended", call.answered_leg_id, termination_cause, sip_status, ended_by, call.answered_at, when
    )


def _call_with(
    call: CallSession,
    status: str,
    answered_leg_id: uuid.UUID | None,
    termination_cause: str | None,
    sip_status: int | None,
    ended_by: str | None,
    answered_at: dt.datetime | None,
    ended_at: dt.datetime | None,
) -> CallSession:
    return CallSession(
        call.call_id,
        call.correlation_id,
        call.sip_call_id,
        call.direction,
        call.media,
        status,
        call.from_uri,
        call.to_uri,
        call.initiator_account_id,
        call.callee_account_id,
        call.node_id,
        answered_leg_id,
        termination_cause,
        sip_status,
        ended_by,
        call.started_at,
        answered_at,
        ended_at,
    )
