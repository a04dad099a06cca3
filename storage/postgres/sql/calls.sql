-- Call sessions, legs, routing attempts and quality reports (database uc_calls). Columns are returned
-- under the field names of storage.ports.CallSession / CallLeg / RoutingAttempt / QualityReport.

-- name: get_call
SELECT call_id, correlation_id, sip_call_id, direction, call_type AS media, status, from_uri, to_uri,
       initiator_account_id, callee_account_id, node_id, answered_leg_id, termination_cause, sip_status,
       ended_by, started_at, answered_at, ended_at
FROM call_sessions WHERE call_id = $1;

-- name: lock_call
-- Serialises writes to one call (legs, answer, end) within the caller's transaction.
SELECT call_id, correlation_id, sip_call_id, direction, call_type AS media, status, from_uri, to_uri,
       initiator_account_id, callee_account_id, node_id, answered_leg_id, termination_cause, sip_status,
       ended_by, started_at, answered_at, ended_at
FROM call_sessions WHERE call_id = $1
FOR UPDATE;

-- name: lock_call_of_leg
-- The call of leg $1, locked as lock_call does (no row: no such leg).
SELECT call_id, correlation_id, sip_call_id, direction, call_type AS media, status, from_uri, to_uri,
       initiator_account_id, callee_account_id, node_id, answered_leg_id, termination_cause, sip_status,
       ended_by, started_at, answered_at, ended_at
FROM call_sessions WHERE call_id = (SELECT call_id FROM call_legs WHERE leg_id = $1)
FOR UPDATE;

-- name: find_by_sip_call_id
SELECT call_id, correlation_id, sip_call_id, direction, call_type AS media, status, from_uri, to_uri,
       initiator_account_id, callee_account_id, node_id, answered_leg_id, termination_cause, sip_status,
       ended_by, started_at, answered_at, ended_at
FROM call_sessions WHERE sip_call_id = $1
ORDER BY started_at DESC
LIMIT 1;

-- name: get_leg
SELECT leg_id, call_id, leg_type, direction, remote_address, device_id, account_id, sip_call_id, status,
       status_reason, started_at, ended_at
FROM call_legs WHERE leg_id = $1;

-- name: update_leg_state
-- $1 leg_id, $2 status, $3 reason, $4 when (becomes ended_at for a terminal state)
UPDATE call_legs
SET status = $2,
    status_reason = $3,
    ended_at = CASE WHEN $2 IN ('terminated', 'failed') THEN $4 ELSE ended_at END
WHERE leg_id = $1
RETURNING leg_id, call_id, leg_type, direction, remote_address, device_id, account_id, sip_call_id, status,
          status_reason, started_at, ended_at;

-- name: list_legs
SELECT leg_id, call_id, leg_type, direction, remote_address, device_id, account_id, sip_call_id, status,
       status_reason, started_at, ended_at
FROM call_legs WHERE call_id = $1
ORDER BY started_at, leg_id;

-- name: list_routing_attempts
SELECT attempt_id, call_id, step, target, result, sip_status, leg_id, attempted_at
FROM call_routing WHERE call_id = $1
ORDER BY step, attempted_at, attempt_id;

-- name: insert_quality
-- $1 call_id, $2 leg_id, $3 interval_seconds, $4 rtt_ms, $5 jitter_ms, $6 packet_loss_fraction,
-- $7 packets_lost, $8 mos, $9 reported_at
INSERT INTO call_quality (call_id, leg_id, interval_seconds, rtt_ms, jitter_ms, packet_loss_fraction,
                          packets_lost, mos, reported_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: list_quality
SELECT leg_id, interval_seconds, jitter_ms, packet_loss_fraction, packets_lost, rtt_ms, mos, reported_at
FROM call_quality WHERE call_id = $1
ORDER BY reported_at, report_id;

-- The statements below write rows whose every column the caller already knows (CallWriter keeps them and
-- builds what RETURNING would give), so a transaction sends each kind for all its calls in one
-- executemany round trip instead of one round trip per row.

-- name: insert_call_row
-- $1 call_id, $2 correlation_id, $3 sip_call_id, $4 direction, $5 media, $6 status, $7 from_uri, $8 to_uri,
-- $9 initiator_account_id, $10 callee_account_id, $11 node_id, $12 answered_leg_id, $13 termination_cause,
-- $14 sip_status, $15 ended_by, $16 started_at, $17 answered_at, $18 ended_at
INSERT INTO call_sessions (call_id, correlation_id, sip_call_id, direction, call_type, status, from_uri, to_uri,
                           initiator_account_id, callee_account_id, node_id, answered_leg_id, termination_cause,
                           sip_status, ended_by, started_at, answered_at, ended_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18);

-- name: update_call_row
-- $1 call_id, then the columns a call's life changes: $2 status, $3 answered_leg_id, $4 termination_cause,
-- $5 sip_status, $6 ended_by, $7 answered_at, $8 ended_at
UPDATE call_sessions
SET status = $2, answered_leg_id = $3, termination_cause = $4, sip_status = $5, ended_by = $6,
    answered_at = $7, ended_at = $8
WHERE call_id = $1;

-- name: insert_leg_row
-- $1 leg_id, $2 call_id, $3 leg_type, $4 direction, $5 remote_address, $6 device_id, $7 account_id,
-- $8 sip_call_id, $9 status, $10 status_reason, $11 started_at, $12 ended_at
INSERT INTO call_legs (leg_id, call_id, leg_type, direction, remote_address, device_id, account_id, sip_call_id,
                       status, status_reason, started_at, ended_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12);

-- name: insert_routing_row
-- $1 attempt_id, $2 call_id, $3 step, $4 target, $5 result, $6 sip_status, $7 leg_id, $8 attempted_at
INSERT INTO call_routing (attempt_id, call_id, step, target, result, sip_status, leg_id, attempted_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- name: lock_calls
-- lock_call for several calls at once ($1 uuid[]), in call_id order so that two transactions locking
-- overlapping sets cannot deadlock; calls that do not exist (yet) are simply not returned.
SELECT call_id, correlation_id, sip_call_id, direction, call_type AS media, status, from_uri, to_uri,
       initiator_account_id, callee_account_id, node_id, answered_leg_id, termination_cause, sip_status,
       ended_by, started_at, answered_at, ended_at
FROM call_sessions WHERE call_id = ANY($1::uuid[])
ORDER BY call_id
FOR UPDATE;

-- name: list_legs_of_calls
-- $1 call_ids (uuid[])
SELECT leg_id, call_id, leg_type, direction, remote_address, device_id, account_id, sip_call_id, status,
       status_reason, started_at, ended_at
FROM call_legs WHERE call_id = ANY($1::uuid[])
ORDER BY started_at, leg_id;
