-- DB_ACCOUNTS: identity, profiles, devices, feature flags, routing rules, policy assignments, and the SIP
-- digest credentials the edge's registrar checks. Cross-domain references are plain uuid columns.

CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TABLE accounts (
    account_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid,
    email text CHECK (email IS NULL OR (length(email) <= 320 AND email ~ '^[^@\s]+@[^@\s]+$')),
    -- scrypt$<n>$<r>$<p>$<salt b64>$<key b64>; NULL for accounts that only authenticate with SIP digest
    password_hash text CHECK (password_hash IS NULL OR password_hash LIKE 'scrypt$%'),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_deleted_at_iff_deleted CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);
-- Soft delete: a deleted account frees its e-mail address.
CREATE UNIQUE INDEX accounts_live_email ON accounts (lower(email)) WHERE email IS NOT NULL AND status <> 'deleted';
CREATE INDEX accounts_tenant ON accounts (tenant_id) WHERE tenant_id IS NOT NULL;
CREATE TRIGGER accounts_updated_at BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- 1:1 with accounts. Presence is deliberately not here (it lives in DB_MESSAGING / Redis).
CREATE TABLE user_profiles (
    account_id uuid PRIMARY KEY REFERENCES accounts (account_id) ON DELETE CASCADE,
    display_name text CHECK (length(display_name) <= 255),
    phone text CHECK (phone ~ '^\+?[0-9]{2,20}$'),
    timezone text NOT NULL DEFAULT 'UTC' CHECK (length(timezone) <= 64),
    language text NOT NULL DEFAULT 'en' CHECK (language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_profiles_phone ON user_profiles (phone) WHERE phone IS NOT NULL;
CREATE TRIGGER user_profiles_updated_at BEFORE UPDATE ON user_profiles
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Registered devices of an account; call control rings them (multi-device routing).
CREATE TABLE user_devices (
    device_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id uuid NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    device_type text NOT NULL CHECK (device_type IN ('web', 'mobile', 'desktop', 'sip')),
    name text CHECK (length(name) <= 255),
    user_agent text CHECK (length(user_agent) <= 1024),
    sip_instance_id text CHECK (length(sip_instance_id) <= 255),  -- RFC 5626 +sip.instance
    routing_priority integer NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'revoked')),
    last_seen_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_devices_account ON user_devices (account_id);
CREATE UNIQUE INDEX user_devices_instance ON user_devices (account_id, sip_instance_id)
    WHERE sip_instance_id IS NOT NULL;
CREATE TRIGGER user_devices_updated_at BEFORE UPDATE ON user_devices
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Feature toggles and configuration; scope_ref is a logical link (tenant, account or device id).
CREATE TABLE feature_flags (
    flag_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    flag_key text NOT NULL CHECK (flag_key ~ '^[a-z0-9][a-z0-9_.-]{0,127}$'),
    scope text NOT NULL CHECK (scope IN ('global', 'tenant', 'account', 'device')),
    scope_ref uuid,
    enabled boolean NOT NULL DEFAULT false,
    config jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(config) = 'object'),
    description text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT feature_flags_scope_ref CHECK ((scope = 'global') = (scope_ref IS NULL))
);
CREATE UNIQUE INDEX feature_flags_key_scope ON feature_flags
    (flag_key, scope, coalesce(scope_ref, '00000000-0000-0000-0000-000000000000'::uuid));
CREATE INDEX feature_flags_scope_ref ON feature_flags (scope_ref) WHERE scope_ref IS NOT NULL;
CREATE TRIGGER feature_flags_updated_at BEFORE UPDATE ON feature_flags
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Per-user rules call control evaluates in priority order to pick where a call goes.
CREATE TABLE routing_rules (
    rule_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id uuid NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    priority integer NOT NULL DEFAULT 100,
    condition_type text NOT NULL CHECK (condition_type IN ('always', 'time', 'presence', 'device')),
    -- e.g. {"days": ["mon"], "from": "09:00", "to": "18:00", "tz": "Europe/Moscow"}, {"presence": "busy"}
    condition jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(condition) = 'object'),
    action text NOT NULL CHECK (action IN ('ring_devices', 'forward', 'voicemail', 'reject', 'queue')),
    target text CHECK (length(target) <= 2048),
    device_id uuid REFERENCES user_devices (device_id) ON DELETE CASCADE,
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT routing_rules_target_needed CHECK (action NOT IN ('forward', 'queue') OR target IS NOT NULL)
);
CREATE INDEX routing_rules_account ON routing_rules (account_id, priority) WHERE enabled;
CREATE TRIGGER routing_rules_updated_at BEFORE UPDATE ON routing_rules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ABAC assignments; policy_bundle_version makes a decision reproducible later.
CREATE TABLE policy_assignments (
    assignment_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subject_type text NOT NULL CHECK (subject_type IN ('account', 'device', 'tenant', 'role')),
    subject_ref text NOT NULL CHECK (length(subject_ref) BETWEEN 1 AND 255),
    policy_id text NOT NULL CHECK (length(policy_id) BETWEEN 1 AND 255),
    policy_bundle_version text NOT NULL CHECK (length(policy_bundle_version) BETWEEN 1 AND 128),
    attributes jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(attributes) = 'object'),
    valid_from timestamptz NOT NULL DEFAULT now(),
    valid_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT policy_assignments_validity CHECK (valid_until IS NULL OR valid_until > valid_from),
    UNIQUE (subject_type, subject_ref, policy_id)
);
CREATE INDEX policy_assignments_policy ON policy_assignments (policy_id);
CREATE TRIGGER policy_assignments_updated_at BEFORE UPDATE ON policy_assignments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- SIP digest credentials (RFC 7616): only HA1 = H(username:realm:password) per algorithm, never a password.
CREATE TABLE sip_credentials (
    credential_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id uuid NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    username text NOT NULL CHECK (length(username) BETWEEN 1 AND 255),
    realm text NOT NULL CHECK (length(realm) BETWEEN 1 AND 255),
    ha1_md5 text NOT NULL CHECK (ha1_md5 ~ '^[0-9a-f]{32}$'),
    ha1_sha256 text NOT NULL CHECK (ha1_sha256 ~ '^[0-9a-f]{64}$'),
    ha1_sha512_256 text CHECK (ha1_sha512_256 ~ '^[0-9a-f]{64}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sip_credentials_username_realm UNIQUE (username, realm)
);
CREATE INDEX sip_credentials_account ON sip_credentials (account_id);
CREATE TRIGGER sip_credentials_updated_at BEFORE UPDATE ON sip_credentials
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
