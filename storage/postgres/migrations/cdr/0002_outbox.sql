-- Transactional outbox of the cdr domain: a change and the events reporting it commit together; the relay
-- (storage/kafka/relay.py) publishes rows in id order per partition key and marks them sent.

CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    topic text NOT NULL,
    partition_key text NOT NULL,
    event_type text NOT NULL,
    envelope jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    claimed_by text,
    claimed_until timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    sent_at timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
-- The relay looks for earlier unsent rows of a key before claiming a later one.
CREATE INDEX outbox_unsent_by_key ON outbox (partition_key, id) WHERE sent_at IS NULL;

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('uc_outbox', TG_ARGV[0]);
    RETURN NULL;
END $$;

-- One notification per inserting statement (delivered on commit) wakes the relays of this domain.
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify('cdr');
