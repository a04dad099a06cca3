-- CDRs, billing plans and account plans (database uc_cdr). Columns come back under the field names of
-- storage.ports.BillingPlan / CdrRecord.

-- name: insert_plan
-- $1 name, $2 currency, $3 per_minute_rate, $4 billing_increment_seconds, $5 minimum_charge, $6 tariff_model
INSERT INTO billing_plans (name, currency, per_minute_rate, billing_increment_seconds, minimum_charge, tariff_model)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING plan_id, name, currency, per_minute_rate, billing_increment_seconds, minimum_charge, tariff_model;

-- name: plan_exists
SELECT EXISTS (SELECT 1 FROM billing_plans WHERE plan_id = $1);

-- name: assign_plan
-- $1 account_id, $2 plan_id, $3 credit_limit. The balance of an account already billed is kept.
INSERT INTO account_billing (account_id, plan_id, credit_limit)
VALUES ($1, $2, $3)
ON CONFLICT (account_id) DO UPDATE SET plan_id = EXCLUDED.plan_id, credit_limit = EXCLUDED.credit_limit;

-- name: plan_for_account
SELECT p.plan_id, p.name, p.currency, p.per_minute_rate, p.billing_increment_seconds, p.minimum_charge,
       p.tariff_model
FROM account_billing b
JOIN billing_plans p USING (plan_id)
WHERE b.account_id = $1;

-- name: balance
SELECT balance FROM account_billing WHERE account_id = $1;

-- name: insert_cdr
-- $1 call_id, $2 correlation_id, $3 account_id, $4 device_id, $5 caller, $6 callee, $7 direction,
-- $8 started_at, $9 answered_at, $10 ended_at, $11 duration_seconds, $12 billable_seconds,
-- $13 termination_cause, $14 sip_status, $15 plan_id, $16 per_minute_rate, $17 billing_increment_seconds,
-- $18 minimum_charge, $19 cost, $20 currency, $21 node_id.
-- One CDR per call: a second insert for the call returns no row (the caller then reads the stored one).
INSERT INTO cdr_records (call_id, correlation_id, account_id, device_id, caller, callee, direction, started_at,
                         answered_at, ended_at, duration_seconds, billable_seconds, termination_cause, sip_status,
                         plan_id, per_minute_rate, billing_increment_seconds, minimum_charge, cost, currency,
                         node_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
ON CONFLICT (call_id) DO NOTHING
RETURNING cdr_id, call_id, correlation_id, account_id, device_id, caller, callee, direction, started_at,
          answered_at, ended_at, duration_seconds, billable_seconds, termination_cause, sip_status, plan_id,
          cost, currency;

-- name: get_cdr
SELECT cdr_id, call_id, correlation_id, account_id, device_id, caller, callee, direction, started_at,
       answered_at, ended_at, duration_seconds, billable_seconds, termination_cause, sip_status, plan_id,
       cost, currency
FROM cdr_records WHERE cdr_id = $1;

-- name: cdr_for_call
SELECT cdr_id, call_id, correlation_id, account_id, device_id, caller, callee, direction, started_at,
       answered_at, ended_at, duration_seconds, billable_seconds, termination_cause, sip_status, plan_id,
       cost, currency
FROM cdr_records WHERE call_id = $1;

-- name: list_cdrs
-- $1 account_id, $2 limit
SELECT cdr_id, call_id, correlation_id, account_id, device_id, caller, callee, direction, started_at,
       answered_at, ended_at, duration_seconds, billable_seconds, termination_cause, sip_status, plan_id,
       cost, currency
FROM cdr_records WHERE account_id = $1
ORDER BY started_at DESC, cdr_id
LIMIT $2;

-- name: insert_cdr_row
-- insert_cdr with the cdr_id chosen by the caller ($22) and nothing returned: a transaction writes its CDRs
-- with one executemany, then reads them back with cdrs_for_calls (a CDR whose cdr_id is not the one sent
-- was stored before: a retry, not a second charge).
INSERT INTO cdr_records (call_id, correlation_id, account_id, device_id, caller, callee, direction, started_at,
                         answered_at, ended_at, duration_seconds, billable_seconds, termination_cause, sip_status,
                         plan_id, per_minute_rate, billing_increment_seconds, minimum_charge, cost, currency,
                         node_id, cdr_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
ON CONFLICT (call_id) DO NOTHING;

-- name: cdrs_for_calls
-- $1 call_ids (uuid[])
SELECT cdr_id, call_id, correlation_id, account_id, device_id, caller, callee, direction, started_at,
       answered_at, ended_at, duration_seconds, billable_seconds, termination_cause, sip_status, plan_id,
       cost, currency
FROM cdr_records WHERE call_id = ANY($1::uuid[]);
