-- Conferences, participants, sessions, attendance and recordings (database uc_conferences). Columns come back
-- under the field names of the storage.ports conference dataclasses.

-- name: insert_conference
-- $1 name, $2 owner_account_id, $3 access_model, $4 tenant_id, $5 public_link_token_sha256,
-- $6 max_participants, $7 record_by_default
INSERT INTO conferences (name, owner_account_id, access_model, tenant_id, public_link_token_sha256,
                         max_participants, record_by_default)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING conference_id, name, owner_account_id, access_model, tenant_id, max_participants, record_by_default,
          status;

-- name: get_conference
SELECT conference_id, name, owner_account_id, access_model, tenant_id, max_participants, record_by_default,
       status
FROM conferences WHERE conference_id = $1;

-- name: lock_conference
SELECT conference_id, name, owner_account_id, access_model, tenant_id, max_participants, record_by_default,
       status
FROM conferences WHERE conference_id = $1
FOR UPDATE;

-- name: find_by_public_link
SELECT conference_id, name, owner_account_id, access_model, tenant_id, max_participants, record_by_default,
       status
FROM conferences WHERE public_link_token_sha256 = $1 AND status = 'active';

-- name: insert_participant
-- $1 conference_id, $2 kind, $3 account_id, $4 external_kind, $5 external_ref, $6 role, $7 display_name
INSERT INTO conference_participants (conference_id, kind, account_id, external_kind, external_ref, role,
                                     display_name)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING participant_id, conference_id, kind, account_id, external_kind, external_ref, role, display_name;

-- name: get_participant
SELECT participant_id, conference_id, kind, account_id, external_kind, external_ref, role, display_name
FROM conference_participants WHERE participant_id = $1;

-- name: list_participants
SELECT participant_id, conference_id, kind, account_id, external_kind, external_ref, role, display_name
FROM conference_participants WHERE conference_id = $1
ORDER BY created_at, participant_id;

-- name: insert_session
-- $1 conference_id, $2 correlation_id, $3 node_id, $4 started_at
INSERT INTO conference_sessions (conference_id, correlation_id, node_id, started_at)
VALUES ($1, $2, $3, $4)
RETURNING conf_session_id, conference_id, correlation_id, node_id, status, started_at, ended_at, end_reason;

-- name: active_session
SELECT conf_session_id, conference_id, correlation_id, node_id, status, started_at, ended_at, end_reason
FROM conference_sessions WHERE conference_id = $1 AND status = 'active';

-- name: lock_session
-- Serialises joins, leaves and the end of one session.
SELECT conf_session_id, conference_id, correlation_id, node_id, status, started_at, ended_at, end_reason
FROM conference_sessions WHERE conf_session_id = $1
FOR UPDATE;

-- name: end_session
-- $1 conf_session_id, $2 ended_at, $3 end_reason
UPDATE conference_sessions SET status = 'ended', ended_at = $2, end_reason = $3
WHERE conf_session_id = $1
RETURNING conf_session_id, conference_id, correlation_id, node_id, status, started_at, ended_at, end_reason;

-- name: count_present
SELECT count(*) FROM conference_attendance WHERE conf_session_id = $1 AND left_at IS NULL;

-- name: count_attendees
-- distinct participants who took part in the session
SELECT count(DISTINCT participant_id) FROM conference_attendance WHERE conf_session_id = $1;

-- name: insert_attendance
-- $1 conf_session_id, $2 participant_id, $3 call_id, $4 joined_at
INSERT INTO conference_attendance (conf_session_id, participant_id, call_id, joined_at)
VALUES ($1, $2, $3, $4)
RETURNING attendance_id, conf_session_id, participant_id, call_id, joined_at, left_at, leave_reason;

-- name: get_attendance
SELECT attendance_id, conf_session_id, participant_id, call_id, joined_at, left_at, leave_reason
FROM conference_attendance WHERE attendance_id = $1;

-- name: leave
-- $1 attendance_id, $2 left_at, $3 leave_reason
UPDATE conference_attendance SET left_at = $2, leave_reason = $3
WHERE attendance_id = $1 AND left_at IS NULL
RETURNING attendance_id, conf_session_id, participant_id, call_id, joined_at, left_at, leave_reason;

-- name: leave_all
-- $1 conf_session_id, $2 left_at, $3 leave_reason: everyone still present leaves (the session ends).
UPDATE conference_attendance SET left_at = $2, leave_reason = $3
WHERE conf_session_id = $1 AND left_at IS NULL
RETURNING attendance_id, conf_session_id, participant_id, call_id, joined_at, left_at, leave_reason;

-- name: list_attendance
SELECT attendance_id, conf_session_id, participant_id, call_id, joined_at, left_at, leave_reason
FROM conference_attendance WHERE conf_session_id = $1
ORDER BY joined_at, attendance_id;

-- name: insert_recording
-- $1 conf_session_id, $2 storage_key, $3 content_type, $4 started_at, $5 retention_until
INSERT INTO conference_recordings (conf_session_id, storage_key, content_type, started_at, retention_until)
VALUES ($1, $2, $3, $4, $5)
RETURNING recording_id, conf_session_id, storage_key, content_type, status, started_at, completed_at,
          duration_ms, size_bytes, retention_until;

-- name: lock_recording
SELECT recording_id, conf_session_id, storage_key, content_type, status, started_at, completed_at,
       duration_ms, size_bytes, retention_until
FROM conference_recordings WHERE recording_id = $1
FOR UPDATE;

-- name: get_recording
SELECT recording_id, conf_session_id, storage_key, content_type, status, started_at, completed_at,
       duration_ms, size_bytes, retention_until
FROM conference_recordings WHERE recording_id = $1;

-- name: complete_recording
-- $1 recording_id, $2 completed_at, $3 duration_ms, $4 size_bytes
UPDATE conference_recordings
SET status = 'completed', completed_at = $2, duration_ms = $3, size_bytes = $4
WHERE recording_id = $1
RETURNING recording_id, conf_session_id, storage_key, content_type, status, started_at, completed_at,
          duration_ms, size_bytes, retention_until;

-- name: get_session
SELECT conf_session_id, conference_id, correlation_id, node_id, status, started_at, ended_at, end_reason
FROM conference_sessions WHERE conf_session_id = $1;

-- name: is_present
-- $1 conf_session_id, $2 participant_id
SELECT EXISTS (
    SELECT 1 FROM conference_attendance WHERE conf_session_id = $1 AND participant_id = $2 AND left_at IS NULL
);
