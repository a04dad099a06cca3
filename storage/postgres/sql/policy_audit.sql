-- Policy-decision audit (database uc_calls). The table rejects UPDATE, DELETE and TRUNCATE.

-- name: insert_decision
-- $1 subject, $2 action, $3 resource, $4 decision, $5 policy_bundle_version, $6 obligations (JSON text),
-- $7 reason, $8 subject_account_id, $9 call_id, $10 correlation_id, $11 decided_at, $12 node_id
INSERT INTO policy_decision_audit (subject, action, resource, decision, policy_bundle_version, obligations, reason,
                                   subject_account_id, call_id, correlation_id, decided_at, node_id)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12)
RETURNING decision_id, subject, action, resource, decision, policy_bundle_version, obligations::text AS obligations,
          reason, subject_account_id, call_id, correlation_id, decided_at, node_id;

-- name: get_decision
SELECT decision_id, subject, action, resource, decision, policy_bundle_version, obligations::text AS obligations,
       reason, subject_account_id, call_id, correlation_id, decided_at, node_id
FROM policy_decision_audit WHERE decision_id = $1;

-- name: list_for_call
SELECT decision_id, subject, action, resource, decision, policy_bundle_version, obligations::text AS obligations,
       reason, subject_account_id, call_id, correlation_id, decided_at, node_id
FROM policy_decision_audit WHERE call_id = $1
ORDER BY decided_at, decision_id;

-- name: list_since
-- $1 since, $2 limit
SELECT decision_id, subject, action, resource, decision, policy_bundle_version, obligations::text AS obligations,
       reason, subject_account_id, call_id, correlation_id, decided_at, node_id
FROM policy_decision_audit WHERE decided_at >= $1
ORDER BY decided_at, decision_id
LIMIT $2;
