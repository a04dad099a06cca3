-- DB_CONFERENCES: voice conferences (separate from chat). owner_account_id / account_id are logical links
-- into DB_ACCOUNTS, call_id into DB_CALLS. This domain also indexes the conference mixes it records
-- (object_index, presigned_url_lease).

CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TABLE conferences (
    conference_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    owner_account_id uuid NOT NULL,
    tenant_id uuid,  -- the organisation of the 'org' access model
    access_model text NOT NULL CHECK (access_model IN ('invite_only', 'org', 'public_link')),
    public_link_token_sha256 text CHECK (public_link_token_sha256 ~ '^[0-9a-f]{64}$'),
    max_participants integer NOT NULL DEFAULT 50 CHECK (max_participants BETWEEN 1 AND 1000),
    record_by_default boolean NOT NULL DEFAULT false,
    parameters jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(parameters) = 'object'),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conferences_public_link_token
        CHECK ((access_model = 'public_link') = (public_link_token_sha256 IS NOT NULL)),
    CONSTRAINT conferences_org_has_tenant CHECK (access_model <> 'org' OR tenant_id IS NOT NULL)
);
CREATE INDEX conferences_owner ON conferences (owner_account_id);
CREATE UNIQUE INDEX conferences_public_link ON conferences (public_link_token_sha256)
    WHERE public_link_token_sha256 IS NOT NULL;
CREATE TRIGGER conferences_updated_at BEFORE UPDATE ON conferences FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Who may take part: internal (account_id) or external (external_ref: e-mail, phone or guest id).
CREATE TABLE conference_participants (
    participant_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conference_id uuid NOT NULL REFERENCES conferences (conference_id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('internal', 'external')),
    account_id uuid,
    external_kind text CHECK (external_kind IN ('email', 'phone', 'guest')),
    external_ref text CHECK (length(external_ref) BETWEEN 1 AND 320),
    role text NOT NULL DEFAULT 'speaker' CHECK (role IN ('host', 'speaker', 'listener')),
    display_name text CHECK (length(display_name) <= 255),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conference_participants_identity CHECK (
        (kind = 'internal' AND account_id IS NOT NULL AND external_ref IS NULL AND external_kind IS NULL)
        OR (kind = 'external' AND account_id IS NULL AND external_ref IS NOT NULL AND external_kind IS NOT NULL)
    )
);
CREATE UNIQUE INDEX conference_participants_internal ON conference_participants (conference_id, account_id)
    WHERE account_id IS NOT NULL;
CREATE UNIQUE INDEX conference_participants_external
    ON conference_participants (conference_id, external_kind, external_ref) WHERE external_ref IS NOT NULL;
CREATE INDEX conference_participants_account ON conference_participants (account_id) WHERE account_id IS NOT NULL;
CREATE TRIGGER conference_participants_updated_at BEFORE UPDATE ON conference_participants
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- One run of a conference; correlation_id links it with the calls and CDRs of its participants.
CREATE TABLE conference_sessions (
    conf_session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conference_id uuid NOT NULL REFERENCES conferences (conference_id) ON DELETE RESTRICT,
    correlation_id uuid NOT NULL,
    node_id text NOT NULL CHECK (length(node_id) BETWEEN 1 AND 255),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    end_reason text CHECK (length(end_reason) <= 255),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conference_sessions_ended_at_iff_ended CHECK ((status = 'ended') = (ended_at IS NOT NULL)),
    CONSTRAINT conference_sessions_ended_after_start CHECK (ended_at IS NULL OR ended_at >= started_at)
);
-- A conference runs at most one session at a time.
CREATE UNIQUE INDEX conference_sessions_one_active ON conference_sessions (conference_id) WHERE status = 'active';
CREATE INDEX conference_sessions_correlation ON conference_sessions (correlation_id);
CREATE INDEX conference_sessions_started_at ON conference_sessions (started_at);
CREATE TRIGGER conference_sessions_updated_at BEFORE UPDATE ON conference_sessions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Who was in a session, from when to when, over which call.
CREATE TABLE conference_attendance (
    attendance_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conf_session_id uuid NOT NULL REFERENCES conference_sessions (conf_session_id) ON DELETE CASCADE,
    participant_id uuid NOT NULL REFERENCES conference_participants (participant_id) ON DELETE RESTRICT,
    call_id uuid,
    joined_at timestamptz NOT NULL DEFAULT now(),
    left_at timestamptz,
    leave_reason text CHECK (length(leave_reason) <= 255),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conference_attendance_left_after_join CHECK (left_at IS NULL OR left_at >= joined_at)
);
CREATE UNIQUE INDEX conference_attendance_present ON conference_attendance (conf_session_id, participant_id)
    WHERE left_at IS NULL;
CREATE INDEX conference_attendance_call ON conference_attendance (call_id) WHERE call_id IS NOT NULL;
CREATE TRIGGER conference_attendance_updated_at BEFORE UPDATE ON conference_attendance
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

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

CREATE TABLE conference_recordings (
    recording_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conf_session_id uuid NOT NULL REFERENCES conference_sessions (conf_session_id) ON DELETE RESTRICT,
    object_id uuid REFERENCES object_index (object_id) ON DELETE RESTRICT,
    storage_key text NOT NULL UNIQUE CHECK (storage_key ~ '^recordings/conferences/[^/]+/[^/]+$'),
    content_type text NOT NULL DEFAULT 'audio/ogg' CHECK (length(content_type) BETWEEN 1 AND 255),
    status text NOT NULL DEFAULT 'recording' CHECK (status IN ('recording', 'completed', 'failed')),
    started_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    duration_ms bigint CHECK (duration_ms >= 0),
    size_bytes bigint CHECK (size_bytes >= 0),
    retention_until timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conference_recordings_completed CHECK (
        status <> 'completed' OR (completed_at IS NOT NULL AND duration_ms IS NOT NULL AND size_bytes IS NOT NULL)
    )
);
CREATE INDEX conference_recordings_session ON conference_recordings (conf_session_id);
CREATE INDEX conference_recordings_retention ON conference_recordings (retention_until);
CREATE TRIGGER conference_recordings_updated_at BEFORE UPDATE ON conference_recordings
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
