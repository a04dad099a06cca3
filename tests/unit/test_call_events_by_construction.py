"""The call repository's events are valid by construction: whatever it accepts, what it emits validates.

``storage.postgres.domain_events.call_event`` builds the ``call.*`` events without checking them against
their schemas (a B2BUA call emits a dozen; the check cost more than the rest of building them). That is
sound only if every input the repository accepts already meets the schemas' limits: ``NewCall`` and
``NewLeg`` check theirs, ``call_rules`` the state changes, routing attempts and endings, the repository its
node id. Here generated call lives — values at and beyond every limit, in any order, at any time — go
through the in-memory repository (the same ``call_rules`` and ``domain_events`` as PostgreSQL's); an input
it refuses emits nothing, and every event it does emit must pass the full schema validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.events import EventValidationError, validate_event
from storage.memory.sql_domains import MemoryCallRepository
from storage.ports import (
    CALL_DIRECTIONS,
    CALL_MEDIA,
    ENDED_BY,
    LEG_DIRECTIONS,
    LEG_TRANSITIONS,
    LEG_TYPES,
    CallSession,
    ConflictError,
    NewCall,
    NewLeg,
    NotFoundError,
)

REFUSED = (ValueError, ConflictError, NotFoundError)


@contextlib.contextmanager
def refusal_allowed() -> Iterator[None]:
    """The repository may refuse an input; an event that fails its schema is never such a refusal (the
    in-memory outbox checks what it is given, and that must fail the test, not pass for a refusal)."""
    try:
        yield
    except EventValidationError:
        raise
    except REFUSED:
        pass


def mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid three times in four: a call must get through its start for the later writes to be tried."""
    return st.one_of(valid, valid, valid, invalid)


def text_around(limit: int) -> st.SearchStrategy[str]:
    """Text within ``limit`` (up to it exactly), or just beyond it (empty, one character too many)."""
    within = st.one_of(
        st.text(min_size=1, max_size=min(limit, 300)), st.sampled_from(["x" * limit, "é" * limit])
    )
    return mostly(within, st.sampled_from(["", "x" * (limit + 1), "é" * (limit + 1)]))


def one_of_or_bogus(allowed: tuple[str, ...]) -> st.SearchStrategy[str]:
    return mostly(st.sampled_from(allowed), st.sampled_from(["bogus", "", allowed[0].upper()]))


statuses = st.one_of(st.none(), st.integers(min_value=0, max_value=800))
offsets = st.floats(min_value=-5.0, max_value=1e6, allow_nan=False)

leg_changes = st.tuples(
    st.integers(min_value=0, max_value=2),  # which leg
    one_of_or_bogus(tuple(LEG_TRANSITIONS)),
    st.one_of(st.none(), text_around(255)),
    offsets,
)
attempts = st.tuples(
    st.integers(min_value=-1, max_value=4),
    text_around(2048),
    st.one_of(
        st.sampled_from(["answered", "busy", "no_answer", "Busy", "a" * 32, "a" * 33]), st.text(max_size=40)
    ),
    statuses,
    st.booleans(),  # for a leg
    offsets,
)


@st.composite
def call_lives(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "node_id": draw(text_around(255)),
        "start": draw(
            st.datetimes(
                min_value=dt.datetime(1971, 1, 1),
                max_value=dt.datetime(2100, 1, 1),
                timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-11, minutes=-30))]),
            )
        ),
        "direction": draw(one_of_or_bogus(CALL_DIRECTIONS)),
        "media": draw(one_of_or_bogus(CALL_MEDIA)),
        "from_uri": draw(text_around(2048)),
        "to_uri": draw(text_around(2048)),
        "accounts": draw(st.tuples(st.booleans(), st.booleans())),
        "legs": draw(
            st.lists(
                st.tuples(
                    one_of_or_bogus(LEG_TYPES), one_of_or_bogus(LEG_DIRECTIONS), text_around(255), offsets
                ),
                min_size=1,
                max_size=3,
            )
        ),
        "changes": draw(st.lists(leg_changes, max_size=6)),
        "attempts": draw(st.lists(attempts, max_size=3)),
        "answer": draw(st.one_of(st.none(), st.tuples(st.integers(min_value=0, max_value=2), offsets))),
        "end": draw(
            st.one_of(
                st.none(),
                st.tuples(text_around(64), statuses, st.sampled_from([*ENDED_BY, None, "bogus"]), offsets),
            )
        ),
    }


async def live(life: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Run one call life through the repository; the events it emitted and whether the call started."""
    start: dt.datetime = life["start"]

    def at(offset: float) -> dt.datetime:
        return start + dt.timedelta(seconds=offset)

    repo: MemoryCallRepository | None = None
    call: CallSession | None = None
    with refusal_allowed():
        repo = MemoryCallRepository(node_id=life["node_id"], clock=lambda: start)
        call = await repo.start_call(
            NewCall(
                correlation_id=uuid.uuid4(),
                direction=life["direction"],
                from_uri=life["from_uri"],
                to_uri=life["to_uri"],
                media=life["media"],
                initiator_account_id=uuid.uuid4() if life["accounts"][0] else None,
                callee_account_id=uuid.uuid4() if life["accounts"][1] else None,
                started_at=start,
            )
        )
    if repo is None or call is None:
        return [], False
    legs: list[uuid.UUID] = []
    for leg_type, direction, address, offset in life["legs"]:
        with refusal_allowed():
            leg = await repo.add_leg(
                call.call_id,
                NewLeg(leg_type, direction, address, device_id=uuid.uuid4(), started_at=at(offset)),
            )
            legs.append(leg.leg_id)
    for index, to_state, reason, offset in life["changes"]:
        if legs:
            with refusal_allowed():
                await repo.change_leg_state(legs[index % len(legs)], to_state, reason=reason, at=at(offset))
    for step, target, result, status, with_leg, offset in life["attempts"]:
        with refusal_allowed():
            await repo.record_routing_attempt(
                call.call_id,
                step=step,
                target=target,
                result=result,
                sip_status=status,
                leg_id=legs[0] if with_leg and legs else None,
                at=at(offset),
            )
    if life["answer"] is not None and legs:
        index, offset = life["answer"]
        with refusal_allowed():
            await repo.answer_call(call.call_id, leg_id=legs[index % len(legs)], at=at(offset))
    if life["end"] is not None:
        cause, status, ended_by, offset = life["end"]
        with refusal_allowed():
            await repo.end_call(
                call.call_id, termination_cause=cause, sip_status=status, ended_by=ended_by, at=at(offset)
            )
    return repo.outbox.envelopes, True


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(call_lives())
def test_every_call_event_the_repository_emits_is_valid(life: dict[str, Any]) -> None:
    events, started = asyncio.run(live(life))
    assert started == bool(events)  # a started call has reported at least call.started; a refused one nothing
    for event in events:
        validate_event(event)  # the full schema check (jsonschema names the field on failure)


def life_at_the_limits() -> dict[str, Any]:
    """A call life with every limited value at its limit (and every event type the builders make)."""
    return {
        "node_id": "n" * 255,
        "start": dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC),
        "direction": "internal",
        "media": "video",
        "from_uri": "é" * 2048,
        "to_uri": "x" * 2048,
        "accounts": (True, False),
        "legs": [("pstn", "inbound", "a" * 255, 0.0), ("webrtc", "outbound", "b", 0.5)],
        "changes": [(1, "early", "r" * 255, 1.0), (1, "confirmed", "", 2.0)],
        "attempts": [(1, "t" * 2048, "a" * 32, 699, True, 2.0)],
        "answer": (1, 2.5),
        "end": ("c" * 64, 100, "system", 9.0),
    }


def test_the_limits_at_their_edges_emit_every_call_event_type() -> None:
    events, started = asyncio.run(live(life_at_the_limits()))
    assert started
    assert [e["type"] for e in events] == [
        "call.started",
        "call.leg.created",
        "call.leg.created",
        "call.leg.state_changed",
        "call.leg.state_changed",
        "call.routing.attempted",
        "call.answered",
        "call.ended",
    ]
    for event in events:
        validate_event(event)


def _beyond(life: dict[str, Any], field: str) -> None:
    one_more: dict[str, Callable[[], None]] = {
        "node_id": lambda: life.update(node_id="n" * 256),
        "from_uri": lambda: life.update(from_uri="é" * 2049),
        "to_uri": lambda: life.update(to_uri="x" * 2049),
        "remote_address": lambda: life["legs"].__setitem__(0, ("pstn", "inbound", "a" * 256, 0.0)),
        "reason": lambda: life["changes"].__setitem__(0, (1, "early", "r" * 256, 1.0)),
        "target": lambda: life["attempts"].__setitem__(0, (1, "t" * 2049, "a" * 32, 699, True, 2.0)),
        "result": lambda: life["attempts"].__setitem__(0, (1, "t", "a" * 33, 699, True, 2.0)),
        "routing sip_status": lambda: life["attempts"].__setitem__(0, (1, "t", "busy", 700, True, 2.0)),
        "termination_cause": lambda: life.update(end=("c" * 65, 100, "system", 9.0)),
        "end sip_status": lambda: life.update(end=("c", 99, "system", 9.0)),
    }
    one_more[field]()


@pytest.mark.parametrize(
    "field",
    [
        "node_id",
        "from_uri",
        "to_uri",
        "remote_address",
        "reason",
        "target",
        "result",
        "routing sip_status",
        "termination_cause",
        "end sip_status",
    ],
)
def test_one_past_a_limit_is_refused_where_it_enters(field: str) -> None:
    """Each limit the schemas set is enforced by the repository: one character (or unit) past it, the write
    is refused, and nothing invalid is emitted (the generated lives above may miss an exact edge)."""
    life = life_at_the_limits()
    _beyond(life, field)
    events, _ = asyncio.run(live(life))  # an invalid event raises EventValidationError out of live()
    assert len(events) < 8, "the value past the limit was accepted"
    for event in events:
        validate_event(event)
