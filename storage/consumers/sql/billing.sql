-- Billing consumer queries (database uc_cdr).

-- name: apply_cdr_charge
-- $1 event_id, $2 cdr_id, $3 account_id, $4 amount (NULL: nothing to charge), $5 currency.
-- One statement: the inbox row decides whether this event is new; only a new event debits the balance.
-- Returns recorded = false for an event applied before, and the balance after the debit (NULL if none).
WITH inbox AS (
    INSERT INTO billing_inbox (event_id, cdr_id, account_id, amount, currency, outcome)
    VALUES ($1::uuid, $2::uuid, $3::uuid, $4::numeric, $5::text,
            CASE WHEN $4::numeric IS NULL THEN 'no_cost' ELSE 'charged' END)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
),
charged AS (
    UPDATE account_billing
    SET balance = balance - $4::numeric
    WHERE account_id = $3::uuid
      AND $4::numeric IS NOT NULL
      AND EXISTS (SELECT 1 FROM inbox)
    RETURNING balance
)
SELECT EXISTS (SELECT 1 FROM inbox) AS recorded,
       (SELECT balance FROM charged) AS balance_after;

-- name: mark_no_billing_account
-- $1 event_id: the CDR named an account with no account_billing row; keep the fact, charge nothing.
UPDATE billing_inbox SET outcome = 'no_billing_account' WHERE event_id = $1;

-- name: inbox_has_event
-- $1 event_id
SELECT EXISTS (SELECT 1 FROM billing_inbox WHERE event_id = $1);
