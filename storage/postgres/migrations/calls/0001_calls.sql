-- DB_CALLS: signalling and call control, written by the edge. call_id and correlation_id are the
-- through-identifiers; *_account_id and device_id are logical links into DB_ACCOUNTS (no FK).

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

CREATE TABLE call_queues (
    queue_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 255),
    strategy text NOT NULL DEFAULT 'ring_all'
        CHECK (strategy IN ('ring_all', 'round_robin', 'longest_idle', 'least_calls', 'linear', 'random')),
    ring_timeout_seconds integer NOT NULL DEFAULT 20 CHECK (ring_timeout_seconds > 0),
    max_wait_seconds integer NOT NULL DEFAULT 300 CHECK (max_wait_seconds > 0),
    max_queue_length integer CHECK (max_queue_length > 0),
    -- SLA: sla_target_percent of calls answered within sla_answer_seconds
    sla_answer_seconds integer NOT NULL DEFAULT 20 CHECK (sla_answer_seconds > 0),
    sla_target_percent numeric(5, 2) NOT NULL DEFAULT 80 CHECK (sla_target_percent BETWEEN 0 AND 100),
    overflow_target text CHECK (length(overflow_target) <= 2048),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'closed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER call_queues_updated_at BEFORE UPDATE ON call_queues FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE queue_members (
    queue_id uuid NOT NULL REFERENCES call_queues (queue_id) ON DELETE CASCADE,
    account_id uuid NOT NULL,
    penalty integer NOT NULL DEFAULT 0 CHECK (penalty >= 0),
    status text NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'paused', 'offline')),
    last_call_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue_id, account_id)
);
CREATE INDEX queue_members_account ON queue_members (account_id);
CREATE TRIGGER queue_members_updated_at BEFORE UPDATE ON queue_members
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE call_sessions (
    call_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    correlation_id uuid NOT NULL,
    sip_call_id text CHECK (length(sip_call_id) BETWEEN 1 AND 255),  -- Call-ID header of the first leg
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    call_type text NOT NULL DEFAULT 'audio' CHECK (call_type IN ('audio', 'video')),
    status text NOT NULL DEFAULT 'initiated' CHECK (status IN ('initiated', 'answered', 'ended', 'failed')),
    from_uri text NOT NULL CHECK (length(from_uri) BETWEEN 1 AND 2048),
    to_uri text NOT NULL CHECK (length(to_uri) BETWEEN 1 AND 2048),
    initiator_account_id uuid,
    callee_account_id uuid,
    queue_id uuid REFERENCES call_queues (queue_id) ON DELETE SET NULL,
    node_id text NOT NULL CHECK (length(node_id) BETWEEN 1 AND 255),
    answered_leg_id uuid,
    termination_cause text CHECK (length(termination_cause) BETWEEN 1 AND 64),
    sip_status integer CHECK (sip_status BETWEEN 100 AND 699),
    ended_by text CHECK (ended_by IN ('caller', 'callee', 'system')),
    started_at timestamptz NOT NULL DEFAULT now(),
    answered_at timestamptz,
    ended_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT call_sessions_answered_after_start CHECK (answered_at IS NULL OR answered_at >= started_at),
    CONSTRAINT call_sessions_ended_after_start CHECK (ended_at IS NULL OR ended_at >= started_at),
    CONSTRAINT call_sessions_ended_at_iff_over CHECK ((status IN ('ended', 'failed')) = (ended_at IS NOT NULL)),
    CONSTRAINT call_sessions_answered_at_iff_answered CHECK (status <> 'answered' OR answered_at IS NOT NULL)
);
CREATE INDEX call_sessions_correlation ON call_sessions (correlation_id);
CREATE INDEX call_sessions_sip_call_id ON call_sessions (sip_call_id) WHERE sip_call_id IS NOT NULL;
CREATE INDEX call_sessions_initiator ON call_sessions (initiator_account_id, started_at DESC)
    WHERE initiator_account_id IS NOT NULL;
CREATE INDEX call_sessions_callee ON call_sessions (callee_account_id, started_at DESC)
    WHERE callee_account_id IS NOT NULL;
CREATE INDEX call_sessions_started_at ON call_sessions (started_at);
CREATE INDEX call_sessions_live ON call_sessions (node_id) WHERE status IN ('initiated', 'answered');
CREATE TRIGGER call_sessions_updated_at BEFORE UPDATE ON call_sessions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE call_legs (
    leg_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id uuid NOT NULL REFERENCES call_sessions (call_id) ON DELETE CASCADE,
    leg_type text NOT NULL CHECK (leg_type IN ('pstn', 'webrtc', 'sip')),
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    remote_address text NOT NULL CHECK (length(remote_address) BETWEEN 1 AND 255),
    device_id uuid,
    account_id uuid,
    sip_call_id text CHECK (length(sip_call_id) BETWEEN 1 AND 255),
    status text NOT NULL DEFAULT 'initiated'
        CHECK (status IN ('initiated', 'early', 'confirmed', 'terminated', 'failed')),
    status_reason text CHECK (length(status_reason) <= 255),
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_legs_call ON call_legs (call_id);
CREATE INDEX call_legs_device ON call_legs (device_id) WHERE device_id IS NOT NULL;
CREATE INDEX call_legs_sip_call_id ON call_legs (sip_call_id) WHERE sip_call_id IS NOT NULL;
CREATE TRIGGER call_legs_updated_at BEFORE UPDATE ON call_legs FOR EACH ROW EXECUTE FUNCTION set_updated_at();

ALTER TABLE call_sessions ADD CONSTRAINT call_sessions_answered_leg
    FOREIGN KEY (answered_leg_id) REFERENCES call_legs (leg_id) ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED;

-- Each routing attempt (step, target, result), for routing-quality analysis and debugging.
CREATE TABLE call_routing (
    attempt_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id uuid NOT NULL REFERENCES call_sessions (call_id) ON DELETE CASCADE,
    step integer NOT NULL CHECK (step >= 1),
    target text NOT NULL CHECK (length(target) BETWEEN 1 AND 2048),
    result text NOT NULL CHECK (result ~ '^[a-z_]{1,32}$'),
    sip_status integer CHECK (sip_status BETWEEN 100 AND 699),
    leg_id uuid REFERENCES call_legs (leg_id) ON DELETE SET NULL,
    rule_id uuid,  -- logical link to DB_ACCOUNTS.routing_rules
    attempted_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT call_routing_step_target UNIQUE (call_id, step, target)
);
CREATE INDEX call_routing_attempted_at ON call_routing (attempted_at);

-- Media quality reports per leg and interval (RTCP-derived); the live series goes to Prometheus.
CREATE TABLE call_quality (
    report_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id uuid NOT NULL REFERENCES call_sessions (call_id) ON DELETE CASCADE,
    leg_id uuid NOT NULL REFERENCES call_legs (leg_id) ON DELETE CASCADE,
    interval_seconds double precision NOT NULL CHECK (interval_seconds > 0),
    rtt_ms double precision CHECK (rtt_ms >= 0),
    jitter_ms double precision NOT NULL CHECK (jitter_ms >= 0),
    packet_loss_fraction double precision NOT NULL CHECK (packet_loss_fraction BETWEEN 0 AND 1),
    packets_lost bigint NOT NULL CHECK (packets_lost >= 0),
    mos double precision CHECK (mos BETWEEN 1 AND 5),
    reported_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_quality_call ON call_quality (call_id, reported_at);
CREATE INDEX call_quality_leg ON call_quality (leg_id);

-- Runtime ABAC/OPA decisions: append-only (explainability, security/compliance).
CREATE TABLE policy_decision_audit (
    decision_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    decided_at timestamptz NOT NULL DEFAULT now(),
    subject text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    subject_account_id uuid,
    action text NOT NULL CHECK (length(action) BETWEEN 1 AND 128),
    resource text NOT NULL CHECK (length(resource) BETWEEN 1 AND 2048),
    decision text NOT NULL CHECK (decision IN ('allow', 'deny')),
    obligations jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(obligations) = 'array'),
    reason text CHECK (length(reason) <= 1024),
    policy_bundle_version text NOT NULL CHECK (length(policy_bundle_version) BETWEEN 1 AND 128),
    -- A decision may precede the call row or concern another domain's object: logical links only.
    call_id uuid,
    correlation_id uuid,
    node_id text CHECK (length(node_id) <= 255),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX policy_decision_audit_decided_at ON policy_decision_audit (decided_at);
CREATE INDEX policy_decision_audit_call ON policy_decision_audit (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX policy_decision_audit_correlation ON policy_decision_audit (correlation_id)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX policy_decision_audit_subject ON policy_decision_audit (subject_account_id, decided_at)
    WHERE subject_account_id IS NOT NULL;
CREATE TRIGGER policy_decision_audit_append_only BEFORE UPDATE OR DELETE ON policy_decision_audit
    FOR EACH ROW EXECUTE FUNCTION reject_change();
CREATE TRIGGER policy_decision_audit_no_truncate BEFORE TRUNCATE ON policy_decision_audit
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
