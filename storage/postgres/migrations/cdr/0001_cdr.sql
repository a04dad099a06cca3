-- DB_CDR: billing detail. CDRs are never deleted nor changed (audit/compliance); account_id and device_id
-- are logical links into DB_ACCOUNTS, call_id/correlation_id into DB_CALLS. This domain also indexes the
-- call recordings (object_index, presigned_url_lease).

CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE FUNCTION reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on %: rows of this table are kept for audit and never changed or deleted',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

-- Tariffs: cost = max(minimum_charge, ceil(talk / increment) * increment / 60 * per_minute_rate).
CREATE TABLE billing_plans (
    plan_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 255),
    tariff_model text NOT NULL DEFAULT 'per_minute' CHECK (tariff_model IN ('per_minute', 'free')),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    per_minute_rate numeric(16, 6) NOT NULL DEFAULT 0 CHECK (per_minute_rate >= 0),
    billing_increment_seconds integer NOT NULL DEFAULT 60 CHECK (billing_increment_seconds BETWEEN 1 AND 3600),
    minimum_charge numeric(16, 6) NOT NULL DEFAULT 0 CHECK (minimum_charge >= 0),
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER billing_plans_updated_at BEFORE UPDATE ON billing_plans FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE account_billing (
    account_id uuid PRIMARY KEY,
    plan_id uuid NOT NULL REFERENCES billing_plans (plan_id) ON DELETE RESTRICT,
    balance numeric(18, 6) NOT NULL DEFAULT 0,
    credit_limit numeric(18, 6) NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'closed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_billing_plan ON account_billing (plan_id);
CREATE TRIGGER account_billing_updated_at BEFORE UPDATE ON account_billing
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE cdr_records (
    cdr_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id uuid NOT NULL,
    correlation_id uuid NOT NULL,
    account_id uuid,
    device_id uuid,
    caller text NOT NULL CHECK (length(caller) BETWEEN 1 AND 2048),
    callee text NOT NULL CHECK (length(callee) BETWEEN 1 AND 2048),
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    started_at timestamptz NOT NULL,
    answered_at timestamptz,
    ended_at timestamptz NOT NULL,
    duration_seconds integer NOT NULL CHECK (duration_seconds >= 0),
    billable_seconds integer NOT NULL CHECK (billable_seconds >= 0),
    termination_cause text NOT NULL CHECK (length(termination_cause) BETWEEN 1 AND 64),
    sip_status integer CHECK (sip_status BETWEEN 100 AND 699),
    -- the tariff as it was when rated, so a CDR explains its cost after the plan changes
    plan_id uuid REFERENCES billing_plans (plan_id) ON DELETE RESTRICT,
    per_minute_rate numeric(16, 6),
    billing_increment_seconds integer,
    minimum_charge numeric(16, 6),
    cost numeric(18, 6) CHECK (cost >= 0),
    currency text CHECK (currency ~ '^[A-Z]{3}$'),
    node_id text CHECK (length(node_id) <= 255),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cdr_records_one_per_call UNIQUE (call_id),
    CONSTRAINT cdr_records_ended_after_start CHECK (ended_at >= started_at),
    CONSTRAINT cdr_records_answered_in_call CHECK (answered_at IS NULL OR answered_at BETWEEN started_at AND ended_at),
    CONSTRAINT cdr_records_cost_has_currency CHECK ((cost IS NULL) = (currency IS NULL)),
    CONSTRAINT cdr_records_rated_by_plan CHECK ((cost IS NULL) = (plan_id IS NULL))
);
CREATE INDEX cdr_records_correlation ON cdr_records (correlation_id);
CREATE INDEX cdr_records_account ON cdr_records (account_id, started_at DESC) WHERE account_id IS NOT NULL;
CREATE INDEX cdr_records_started_at ON cdr_records (started_at);
CREATE TRIGGER cdr_records_immutable BEFORE UPDATE OR DELETE ON cdr_records
    FOR EACH ROW EXECUTE FUNCTION reject_change();
CREATE TRIGGER cdr_records_no_truncate BEFORE TRUNCATE ON cdr_records
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();

-- Logical index of the S3 objects this domain owns: find them without listing buckets, keep them until
-- retention_until (compliance), and know their owner and access class.
CREATE TABLE object_index (
    object_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket text NOT NULL CHECK (length(bucket) BETWEEN 3 AND 63),
    storage_key text NOT NULL CHECK (length(storage_key) BETWEEN 1 AND 1024),
    object_kind text NOT NULL
        CHECK (object_kind IN ('call_audio', 'call_video', 'transcript', 'conference_mix')),
    content_type text NOT NULL CHECK (length(content_type) BETWEEN 1 AND 255),
    size_bytes bigint CHECK (size_bytes >= 0),
    checksum_sha256 text CHECK (checksum_sha256 ~ '^[0-9a-f]{64}$'),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'available', 'failed', 'deleted')),
    owner_account_id uuid,
    call_id uuid,
    conf_session_id uuid,
    correlation_id uuid,
    access_policy_ref text NOT NULL CHECK (length(access_policy_ref) BETWEEN 1 AND 255),
    retention_until timestamptz NOT NULL,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT object_index_location UNIQUE (bucket, storage_key),
    CONSTRAINT object_index_deleted_at_iff_deleted CHECK ((status = 'deleted') = (deleted_at IS NOT NULL)),
    -- nothing compliance keeps is deleted before its retention ends
    CONSTRAINT object_index_retention_respected CHECK (deleted_at IS NULL OR deleted_at >= retention_until)
);
CREATE INDEX object_index_call ON object_index (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX object_index_conf_session ON object_index (conf_session_id) WHERE conf_session_id IS NOT NULL;
CREATE INDEX object_index_correlation ON object_index (correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX object_index_owner ON object_index (owner_account_id) WHERE owner_account_id IS NOT NULL;
CREATE INDEX object_index_retention ON object_index (retention_until) WHERE status <> 'deleted';
CREATE TRIGGER object_index_updated_at BEFORE UPDATE ON object_index FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Every pre-signed URL issued for an object: who, when, why (the allowing policy decision), until when,
-- and its revocation. The URL itself is a bearer secret and is not stored, only its SHA-256.
CREATE TABLE presigned_url_lease (
    lease_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    object_id uuid NOT NULL REFERENCES object_index (object_id) ON DELETE RESTRICT,
    issued_to text NOT NULL CHECK (length(issued_to) BETWEEN 1 AND 255),
    issued_to_account_id uuid,
    purpose text NOT NULL CHECK (length(purpose) BETWEEN 1 AND 255),
    decision_id uuid,  -- logical link to DB_CALLS.policy_decision_audit
    http_method text NOT NULL DEFAULT 'GET' CHECK (http_method IN ('GET', 'PUT')),
    url_sha256 text CHECK (url_sha256 ~ '^[0-9a-f]{64}$'),
    correlation_id uuid,
    issued_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_by text CHECK (length(revoked_by) <= 255),
    revoke_reason text CHECK (length(revoke_reason) <= 1024),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT presigned_url_lease_expiry CHECK (expires_at > issued_at),
    CONSTRAINT presigned_url_lease_revocation CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX presigned_url_lease_object ON presigned_url_lease (object_id, issued_at);
CREATE INDEX presigned_url_lease_issued_to ON presigned_url_lease (issued_to, issued_at);
CREATE INDEX presigned_url_lease_live ON presigned_url_lease (expires_at) WHERE revoked_at IS NULL;
CREATE TRIGGER presigned_url_lease_updated_at BEFORE UPDATE ON presigned_url_lease
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
