"""ConferenceRepository contract: fake and PostgreSQL keep rooms, sessions and mixes alike."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from storage.events import validate_event
from storage.memory.sql_domains import MemoryConferenceRepository
from storage.ports import (
    ConferenceRepository,
    ConflictError,
    InvalidStateChange,
    NewConference,
    NewParticipant,
    NotFoundError,
)
from storage.postgres.conferences import PgConferenceRepository
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
TOKEN = "k3y-0f-the-publ1c-link"


@dataclass
class ConfBackend:
    kind: str
    repo: ConferenceRepository
    clock: StepClock
    pool: asyncpg.Pool | None
    fake: MemoryConferenceRepository | None

    async def events(self) -> list[dict[str, Any]]:
        return await outbox_events(self.fake.outbox if self.fake else self.pool)


@pytest.fixture(params=["memory", "postgres"])
async def confs(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> AsyncIterator[ConfBackend]:
    clock = StepClock()
    if request.param == "memory":
        fake = MemoryConferenceRepository(node_id=NODE, clock=clock)
        yield ConfBackend("memory", fake, clock, None, fake)
        return
    pool = await open_pool(await pg_database("conferences"))
    try:
        repo = PgConferenceRepository(pool, node_id=NODE, clock=clock)
        yield ConfBackend("postgres", repo, clock, pool, None)
    finally:
        await pool.close()


def room(**overrides: Any) -> NewConference:
    fields: dict[str, Any] = {
        "name": "weekly sync",
        "owner_account_id": uuid.uuid4(),
        "access_model": "public_link",
        "public_link_token": TOKEN,
        "max_participants": 3,
    }
    fields.update(overrides)
    return NewConference(**fields)


async def test_session_life_cycle_is_stored_and_reported(confs: ConfBackend) -> None:
    repo, clock = confs.repo, confs.clock
    conference = await repo.create_conference(room())
    assert await repo.find_by_public_link(TOKEN) == conference
    assert await repo.find_by_public_link("wrong-token-of-some-length") is None
    host = await repo.add_participant(
        conference.conference_id, NewParticipant("host", account_id=uuid.uuid4())
    )
    guest = await repo.add_participant(
        conference.conference_id, NewParticipant("listener", external_kind="phone", external_ref="+15550100")
    )
    assert [p.participant_id for p in await repo.list_participants(conference.conference_id)] == [
        host.participant_id,
        guest.participant_id,
    ]
    correlation = uuid.uuid4()
    session = await repo.start_session(conference.conference_id, correlation_id=correlation)
    assert await repo.active_session(conference.conference_id) == session
    call_id = uuid.uuid4()
    clock.advance(2)
    host_in = await repo.join(session.conf_session_id, host.participant_id, call_id=call_id)
    clock.advance(3)
    guest_in = await repo.join(session.conf_session_id, guest.participant_id)
    key = f"recordings/conferences/{session.conf_session_id}/mix.opus"
    recording = await repo.start_recording(
        session.conf_session_id, storage_key=key, retention_until=START + dt.timedelta(days=365)
    )
    clock.advance(40)
    left = await repo.leave(guest_in.attendance_id, reason="hung up")
    assert left.left_at == clock.now and left.leave_reason == "hung up"
    assert await repo.leave(guest_in.attendance_id, reason="again") == left
    clock.advance(15)
    done = await repo.complete_recording(recording.recording_id, duration_ms=58_000, size_bytes=480_000)
    assert done.status == "completed" and await repo.get_recording(recording.recording_id) == done
    clock.advance(5)
    ended = await repo.end_session(session.conf_session_id, reason="host ended")
    assert ended.status == "ended" and ended.ended_at == clock.now
    assert await repo.end_session(session.conf_session_id) == ended
    assert await repo.active_session(conference.conference_id) is None
    attendance = await repo.list_attendance(session.conf_session_id)
    assert [(a.attendance_id, a.leave_reason) for a in attendance] == [
        (host_in.attendance_id, "session_ended"),
        (guest_in.attendance_id, "hung up"),
    ]

    rows = await confs.events()
    assert [r["event_type"] for r in rows] == [
        "conference.session.started",
        "conference.participant.joined",
        "conference.participant.joined",
        "conference.participant.left",
        "conference.recording.completed",
        "conference.participant.left",
        "conference.session.ended",
    ]
    for row in rows:
        validate_event(row["envelope"])
        assert row["topic"] == "conf-events" and row["partition_key"] == str(session.conf_session_id)
        assert row["envelope"]["correlation_id"] == str(correlation)
    payloads = [r["envelope"]["payload"] for r in rows]
    assert payloads[0] == {"conference_id": str(conference.conference_id), "access_model": "public_link"}
    assert payloads[1]["call_id"] == str(call_id) and payloads[1]["role"] == "host"
    assert payloads[2]["external_ref"] == "+15550100" and payloads[2]["account_id"] is None
    assert payloads[3]["duration_ms"] == 40_000
    assert payloads[4]["storage_key"] == key and payloads[4]["size_bytes"] == 480_000
    assert payloads[5] == {
        "conference_id": str(conference.conference_id),
        "participant_id": str(host.participant_id),
        "duration_ms": 63_000,
        "reason": "session_ended",
    }
    assert payloads[6]["participant_count"] == 2 and payloads[6]["duration_ms"] == 65_000
    if confs.pool is not None:  # one outbox row per write that emitted: ending left the host, then ended
        assert await outbox_transactions(confs.pool) == [
            ["conference.session.started"],
            ["conference.participant.joined"],
            ["conference.participant.joined"],
            ["conference.participant.left"],
            ["conference.recording.completed"],
            ["conference.participant.left", "conference.session.ended"],
        ]


async def test_room_rules_are_enforced(confs: ConfBackend) -> None:
    repo = confs.repo
    conference = await repo.create_conference(room())
    with pytest.raises(ConflictError, match="token"):
        await repo.create_conference(room(name="copy"))
    members = [
        await repo.add_participant(conference.conference_id, NewParticipant(account_id=uuid.uuid4()))
        for _ in range(4)
    ]
    with pytest.raises(ConflictError, match="already a participant"):
        await repo.add_participant(conference.conference_id, NewParticipant(account_id=members[0].account_id))
    with pytest.raises(NotFoundError):
        await repo.add_participant(uuid.uuid4(), NewParticipant(account_id=uuid.uuid4()))

    session = await repo.start_session(conference.conference_id, correlation_id=uuid.uuid4())
    with pytest.raises(ConflictError, match="already runs"):
        await repo.start_session(conference.conference_id, correlation_id=uuid.uuid4())
    for member in members[:3]:
        await repo.join(session.conf_session_id, member.participant_id)
    with pytest.raises(ConflictError, match="full"):
        await repo.join(session.conf_session_id, members[3].participant_id)
    with pytest.raises(ConflictError, match="already in the session"):
        await repo.join(session.conf_session_id, members[0].participant_id)
    other = await repo.create_conference(room(access_model="invite_only", public_link_token=None))
    stranger = await repo.add_participant(other.conference_id, NewParticipant(account_id=uuid.uuid4()))
    with pytest.raises(NotFoundError):
        await repo.join(session.conf_session_id, stranger.participant_id)
    with pytest.raises(ValueError, match="storage_key"):
        await repo.start_recording(
            session.conf_session_id, storage_key="recordings/calls/x/y/audio.opus", retention_until=START
        )
    before = len(await confs.events())
    await repo.end_session(session.conf_session_id)
    assert [r["event_type"] for r in (await confs.events())[before:]] == [
        "conference.participant.left",
        "conference.participant.left",
        "conference.participant.left",
        "conference.session.ended",
    ]
    if confs.pool is not None:  # ending the session is one transaction: one outbox row, its events in order
        assert (await outbox_transactions(confs.pool))[-1] == [
            "conference.participant.left",
            "conference.participant.left",
            "conference.participant.left",
            "conference.session.ended",
        ]
    with pytest.raises(InvalidStateChange, match="ended"):
        await repo.join(session.conf_session_id, members[3].participant_id)
    # a new session of the same room may start once the previous one ended
    again = await repo.start_session(conference.conference_id, correlation_id=uuid.uuid4())
    assert again.conf_session_id != session.conf_session_id


def test_new_conference_and_participant_validation() -> None:
    with pytest.raises(ValueError, match="public_link"):
        room(public_link_token=None)
    with pytest.raises(ValueError, match="tenant_id"):
        room(access_model="org", public_link_token=None)
    with pytest.raises(ValueError, match="access_model"):
        room(access_model="everyone")
    with pytest.raises(ValueError, match="either internal"):
        NewParticipant(account_id=uuid.uuid4(), external_kind="email", external_ref="a@b")
    with pytest.raises(ValueError, match="either internal"):
        NewParticipant()
    with pytest.raises(ValueError, match="external_kind"):
        NewParticipant(external_kind="pigeon", external_ref="coo")


async def test_postgres_stores_only_the_token_digest(
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> None:
    pool = await open_pool(await pg_database("conferences"))
    try:
        await PgConferenceRepository(pool, node_id=NODE).create_conference(room())
        stored = await pool.fetchval("SELECT to_jsonb(c)::text FROM conferences c")
        assert TOKEN not in stored
    finally:
        await pool.close()
