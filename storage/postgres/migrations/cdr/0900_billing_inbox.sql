-- Inbox of the billing consumer (storage/consumers/billing.py): one row per cdr.created event applied to
-- account_billing, inserted in the same statement as the balance debit, so a redelivered event never
-- charges twice. Rows are the audit of what billing applied; like cdr_records they are kept.
CREATE TABLE billing_inbox (
    event_id uuid PRIMARY KEY,
    cdr_id uuid NOT NULL,
    account_id uuid,
    amount numeric(18, 6),
    currency text CHECK (currency ~ '^[A-Z]{3}$'),
    -- charged: balance debited; no_cost: CDR without a plan; no_billing_account: nothing to debit.
    outcome text NOT NULL CHECK (outcome IN ('charged', 'no_cost', 'no_billing_account')),
    applied_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX billing_inbox_account ON billing_inbox (account_id, applied_at);
