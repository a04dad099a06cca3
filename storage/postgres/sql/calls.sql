-- Call sessions, legs, routing attempts and quality reports (database uc_calls). Columns are returned
-- under the field names of storage.ports.CallSession / CallLeg / RoutingAttempt / QualityReport.

-- name: insert_call
-- $1 call_id, $2 correlation_id, $3 sip_call_id, $4 direction, $5 media, $6 from_uri, $7 to_uri,
-- $8 initiator_account_id, $9 callee_account_id, $10 node_id, $11 started_at
INSERT INTO call_sessions (call_id, correlation_id, sip_call_id, direction, call_type, from_uri, to_uri,
                           initiator_account_id, callee_account_id, node_id, started_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING call_id, correlation_id, sip_call_id, direction, call_type AS media, status, from_uri, to_uri,
          initiator_account_id, callee_account_id, node_id, answered_leg_id, termination_cause, sip_status,
          ended_by, started_at, answered_at, ended_at;

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

-- name: answer_call
-- $1 call_id, $2 answered_at, $3 answered_leg_id
UPDATE call_sessions SET status = 'answered', answered_at = $2, answered_leg_id = $3
WHERE call_id = $1
RETURNING call_id, correlation_id, sip_call_id, direction, call_type AS media, status, from_uri, to_uri,
          initiator_account_id, callee_account_id, node_id, answered_leg_id, termination_cause, sip_status,
          ended_by, started_at, answered_at, ended_at;

-- name: end_call
-- $1 call_id, $2 ended_at, $3 termination_cause, $4 sip_status, $5 ended_by
UPDATE call_sessions SET status = 'ended', ended_at = $2, termination_cause = $3, sip_status = $4, ended_by = $5
WHERE call_id = $1
RETURNING call_id, correlation_id, sip_call_id, direction, call_type AS media, status, from_uri, to_uri,
          initiator_account_id, callee_account_id, node_id, answered_leg_id, termination_cause, sip_status,
          ended_by, started_at, answered_at, ended_at;

-- name: insert_leg
-- $1 leg_id, $2 call_id, $3 leg_type, $4 direction, $5 remote_address, $6 device_id, $7 account_id,
-- $8 sip_call_id, $9 started_at
INSERT INTO call_legs (leg_id, call_id, leg_type, direction, remote_address, device_id, account_id, sip_call_id,
                       started_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING leg_id, call_id, leg_type, direction, remote_address, device_id, account_id, sip_call_id, status,
          status_reason, started_at, ended_at;

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

-- name: insert_routing_attempt
-- $1 call_id, $2 step, $3 target, $4 result, $5 sip_status, $6 leg_id, $7 attempted_at
INSERT INTO call_routing (call_id, step, target, result, sip_status, leg_id, attempted_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING attempt_id, call_id, step, target, result, sip_status, leg_id, attempted_at;

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
