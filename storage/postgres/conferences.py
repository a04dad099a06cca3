"""Conference repository on DB_CONFERENCES: session changes and their events commit together."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from storage.ports import (
    Attendance,
    Conference,
    ConferenceRecording,
    ConferenceSession,
    ConflictError,
    InvalidStateChange,
    NewConference,
    NewParticipant,
    NotFoundError,
    Participant,
)
from storage.postgres import call_rules, conference_rules, domain_events
from storage.postgres.connect import transaction
from storage.postgres.repository import EventedRepository
from storage.postgres.sql import queries_for

_SQL = queries_for("conferences")


class PgConferenceRepository(EventedRepository):
    """``ConferenceRepository`` on an asyncpg pool of the conferences database, writing as ``node_id``."""

    async def _locked_session(
        self, conn: asyncpg.Connection, conf_session_id: uuid.UUID
    ) -> ConferenceSession:
        row = await conn.fetchrow(_SQL["lock_session"], conf_session_id)
        if row is None:
            raise NotFoundError(f"no conference session {conf_session_id}")
        return ConferenceSession(**row)

    async def create_conference(self, conference: NewConference) -> Conference:
        token = conference.public_link_token
        try:
            row = await self._pool.fetchrow(
                _SQL["insert_conference"],
                conference.name,
                conference.owner_account_id,
                conference.access_model,
                conference.tenant_id,
                conference_rules.token_digest(token) if token else None,
                conference.max_participants,
                conference.record_by_default,
            )
        except asyncpg.UniqueViolationError:
            raise ConflictError("that public-link token is already used by another conference") from None
        return Conference(**row)

    async def get_conference(self, conference_id: uuid.UUID) -> Conference | None:
        row = await self._pool.fetchrow(_SQL["get_conference"], conference_id)
        return None if row is None else Conference(**row)

    async def find_by_public_link(self, token: str) -> Conference | None:
        row = await self._pool.fetchrow(_SQL["find_by_public_link"], conference_rules.token_digest(token))
        return None if row is None else Conference(**row)

    async def add_participant(self, conference_id: uuid.UUID, participant: NewParticipant) -> Participant:
        if await self.get_conference(conference_id) is None:
            raise NotFoundError(f"no conference {conference_id}")
        try:
            row = await self._pool.fetchrow(
                _SQL["insert_participant"],
                conference_id,
                participant.kind,
                participant.account_id,
                participant.external_kind,
                participant.external_ref,
                participant.role,
                participant.display_name,
            )
        except asyncpg.UniqueViolationError:
            raise ConflictError(f"already a participant of conference {conference_id}") from None
        except asyncpg.ForeignKeyViolationError:
            raise NotFoundError(f"no conference {conference_id}") from None
        return Participant(**row)

    async def list_participants(self, conference_id: uuid.UUID) -> list[Participant]:
        return [
            Participant(**row) for row in await self._pool.fetch(_SQL["list_participants"], conference_id)
        ]

    async def start_session(
        self, conference_id: uuid.UUID, *, correlation_id: uuid.UUID, at: dt.datetime | None = None
    ) -> ConferenceSession:
        when = at or self._clock()
        call_rules.check_at("session start", when, when)
        async with transaction(self._pool, "starting a conference session") as conn:
            row = await conn.fetchrow(_SQL["lock_conference"], conference_id)
            if row is None:
                raise NotFoundError(f"no conference {conference_id}")
            conference = Conference(**row)
            if conference.status != "active":
                raise InvalidStateChange(f"conference {conference_id} is {conference.status}")
            if await conn.fetchrow(_SQL["active_session"], conference_id) is not None:
                raise ConflictError(f"conference {conference_id} already runs a session")
            session = ConferenceSession(
                **await conn.fetchrow(
                    _SQL["insert_session"], conference_id, correlation_id, self._node_id, when
                )
            )
            await self._emit(conn, domain_events.conference_session_started(session, conference))
        return session

    async def active_session(self, conference_id: uuid.UUID) -> ConferenceSession | None:
        row = await self._pool.fetchrow(_SQL["active_session"], conference_id)
        return None if row is None else ConferenceSession(**row)

    async def join(
        self,
        conf_session_id: uuid.UUID,
        participant_id: uuid.UUID,
        *,
        call_id: uuid.UUID | None = None,
        at: dt.datetime | None = None,
    ) -> Attendance:
        async with transaction(self._pool, "joining a conference") as conn:
            session = await self._locked_session(conn, conf_session_id)
            if session.status != "active":
                raise InvalidStateChange(f"conference session {conf_session_id} has ended")
            row = await conn.fetchrow(_SQL["get_participant"], participant_id)
            if row is None or row["conference_id"] != session.conference_id:
                raise NotFoundError(f"{participant_id} is not a participant of this conference")
            participant = Participant(**row)
            conference = Conference(**await conn.fetchrow(_SQL["get_conference"], session.conference_id))
            if await conn.fetchval(_SQL["is_present"], conf_session_id, participant_id):
                raise ConflictError(f"participant {participant_id} is already in the session")
            if await conn.fetchval(_SQL["count_present"], conf_session_id) >= conference.max_participants:
                raise ConflictError(f"conference is full ({conference.max_participants} participants)")
            when = call_rules.check_at("join", at or self._clock(), session.started_at)
            try:
                attendance = Attendance(
                    **await conn.fetchrow(
                        _SQL["insert_attendance"], conf_session_id, participant_id, call_id, when
                    )
                )
            except asyncpg.UniqueViolationError:
                raise ConflictError(f"participant {participant_id} is already in the session") from None
            await self._emit(
                conn,
                domain_events.conference_participant_joined(session, participant, attendance, self._node_id),
            )
        return attendance

    async def leave(
        self, attendance_id: uuid.UUID, *, reason: str | None = None, at: dt.datetime | None = None
    ) -> Attendance:
        conference_rules.check_reason(reason)
        async with transaction(self._pool, "leaving a conference") as conn:
            row = await conn.fetchrow(_SQL["get_attendance"], attendance_id)
            if row is None:
                raise NotFoundError(f"no attendance {attendance_id}")
            session = await self._locked_session(conn, row["conf_session_id"])
            current = Attendance(**await conn.fetchrow(_SQL["get_attendance"], attendance_id))
            if current.left_at is not None:
                return current
            when = call_rules.check_at("leave", at or self._clock(), current.joined_at)
            left = Attendance(**await conn.fetchrow(_SQL["leave"], attendance_id, when, reason))
            await self._emit(conn, domain_events.conference_participant_left(session, left, self._node_id))
        return left

    async def list_attendance(self, conf_session_id: uuid.UUID) -> list[Attendance]:
        return [Attendance(**row) for row in await self._pool.fetch(_SQL["list_attendance"], conf_session_id)]

    async def end_session(
        self, conf_session_id: uuid.UUID, *, reason: str | None = None, at: dt.datetime | None = None
    ) -> ConferenceSession:
        conference_rules.check_reason(reason)
        async with transaction(self._pool, "ending a conference session") as conn:
            session = await self._locked_session(conn, conf_session_id)
            if session.status == "ended":
                return session
            when = call_rules.check_at("session end", at or self._clock(), session.started_at)
            present = [Attendance(**r) for r in await conn.fetch(_SQL["list_attendance"], conf_session_id)]
            if any(a.left_at is None and when < a.joined_at for a in present):
                raise ValueError("session end is before a participant joined")
            left = [
                Attendance(**r)
                for r in await conn.fetch(_SQL["leave_all"], conf_session_id, when, "session_ended")
            ]
            left.sort(key=lambda a: (a.joined_at, a.attendance_id))
            ended = ConferenceSession(
                **await conn.fetchrow(_SQL["end_session"], conf_session_id, when, reason)
            )
            attendees = await conn.fetchval(_SQL["count_attendees"], conf_session_id)
            await self._emit(
                conn,
                *(domain_events.conference_participant_left(ended, a, self._node_id) for a in left),
                domain_events.conference_session_ended(ended, attendees, self._node_id),
            )
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
        async with transaction(self._pool, "starting a recording") as conn:
            session = await self._locked_session(conn, conf_session_id)
            if session.status != "active":
                raise InvalidStateChange(f"conference session {conf_session_id} has ended")
            try:
                row = await conn.fetchrow(
                    _SQL["insert_recording"],
                    conf_session_id,
                    storage_key,
                    content_type,
                    when,
                    retention_until,
                )
            except asyncpg.UniqueViolationError:
                raise ConflictError(f"a recording already uses {storage_key}") from None
        return ConferenceRecording(**row)

    async def complete_recording(
        self, recording_id: uuid.UUID, *, duration_ms: int, size_bytes: int, at: dt.datetime | None = None
    ) -> ConferenceRecording:
        conference_rules.check_recording_numbers(duration_ms, size_bytes)
        async with transaction(self._pool, "completing a recording") as conn:
            row = await conn.fetchrow(_SQL["lock_recording"], recording_id)
            if row is None:
                raise NotFoundError(f"no recording {recording_id}")
            recording = ConferenceRecording(**row)
            if recording.status != "recording":
                raise InvalidStateChange(f"recording {recording_id} is {recording.status}")
            when = call_rules.check_at("recording completion", at or self._clock(), recording.started_at)
            completed = ConferenceRecording(
                **await conn.fetchrow(_SQL["complete_recording"], recording_id, when, duration_ms, size_bytes)
            )
            session = ConferenceSession(**await conn.fetchrow(_SQL["get_session"], recording.conf_session_id))
            await self._emit(
                conn, domain_events.conference_recording_completed(session, completed, self._node_id)
            )
        return completed

    async def get_recording(self, recording_id: uuid.UUID) -> ConferenceRecording | None:
        row = await self._pool.fetchrow(_SQL["get_recording"], recording_id)
        return None if row is None else ConferenceRecording(**row)
