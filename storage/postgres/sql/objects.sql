-- Object index and pre-signed URL leases (databases uc_cdr and uc_conferences: same tables in both).

-- name: insert_object
-- $1 bucket, $2 storage_key, $3 object_kind, $4 content_type, $5 access_policy_ref, $6 retention_until,
-- $7 owner_account_id, $8 call_id, $9 conf_session_id, $10 correlation_id
INSERT INTO object_index (bucket, storage_key, object_kind, content_type, access_policy_ref, retention_until,
                          owner_account_id, call_id, conf_session_id, correlation_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING object_id, bucket, storage_key, object_kind, content_type, size_bytes, checksum_sha256, status,
          owner_account_id, call_id, conf_session_id, correlation_id, access_policy_ref, retention_until,
          deleted_at;

-- name: lock_object
SELECT object_id, bucket, storage_key, object_kind, content_type, size_bytes, checksum_sha256, status,
       owner_account_id, call_id, conf_session_id, correlation_id, access_policy_ref, retention_until, deleted_at
FROM object_index WHERE object_id = $1
FOR UPDATE;

-- name: share_object
-- A lease is issued against the object as it is: FOR SHARE keeps it from being deleted meanwhile.
SELECT object_id, bucket, storage_key, object_kind, content_type, size_bytes, checksum_sha256, status,
       owner_account_id, call_id, conf_session_id, correlation_id, access_policy_ref, retention_until, deleted_at
FROM object_index WHERE object_id = $1
FOR SHARE;

-- name: get_object
SELECT object_id, bucket, storage_key, object_kind, content_type, size_bytes, checksum_sha256, status,
       owner_account_id, call_id, conf_session_id, correlation_id, access_policy_ref, retention_until, deleted_at
FROM object_index WHERE object_id = $1;

-- name: find_object
SELECT object_id, bucket, storage_key, object_kind, content_type, size_bytes, checksum_sha256, status,
       owner_account_id, call_id, conf_session_id, correlation_id, access_policy_ref, retention_until, deleted_at
FROM object_index WHERE bucket = $1 AND storage_key = $2;

-- name: set_status
-- $1 object_id, $2 status, $3 size_bytes, $4 checksum_sha256, $5 deleted_at (kept when NULL)
UPDATE object_index
SET status = $2,
    size_bytes = coalesce($3, size_bytes),
    checksum_sha256 = coalesce($4, checksum_sha256),
    deleted_at = coalesce($5, deleted_at)
WHERE object_id = $1
RETURNING object_id, bucket, storage_key, object_kind, content_type, size_bytes, checksum_sha256, status,
          owner_account_id, call_id, conf_session_id, correlation_id, access_policy_ref, retention_until,
          deleted_at;

-- name: list_for_call
SELECT object_id, bucket, storage_key, object_kind, content_type, size_bytes, checksum_sha256, status,
       owner_account_id, call_id, conf_session_id, correlation_id, access_policy_ref, retention_until, deleted_at
FROM object_index WHERE call_id = $1
ORDER BY created_at, object_id;

-- name: list_for_conf_session
SELECT object_id, bucket, storage_key, object_kind, content_type, size_bytes, checksum_sha256, status,
       owner_account_id, call_id, conf_session_id, correlation_id, access_policy_ref, retention_until, deleted_at
FROM object_index WHERE conf_session_id = $1
ORDER BY created_at, object_id;

-- name: list_expired
-- $1 now, $2 limit
SELECT object_id, bucket, storage_key, object_kind, content_type, size_bytes, checksum_sha256, status,
       owner_account_id, call_id, conf_session_id, correlation_id, access_policy_ref, retention_until, deleted_at
FROM object_index WHERE status <> 'deleted' AND retention_until <= $1
ORDER BY retention_until, object_id
LIMIT $2;

-- name: insert_lease
-- $1 object_id, $2 issued_to, $3 issued_to_account_id, $4 purpose, $5 decision_id, $6 http_method,
-- $7 url_sha256, $8 correlation_id, $9 issued_at, $10 expires_at
INSERT INTO presigned_url_lease (object_id, issued_to, issued_to_account_id, purpose, decision_id, http_method,
                                 url_sha256, correlation_id, issued_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING lease_id, object_id, issued_to, issued_to_account_id, purpose, decision_id, http_method, url_sha256,
          correlation_id, issued_at, expires_at, revoked_at, revoked_by, revoke_reason;

-- name: revoke_lease
-- $1 lease_id, $2 revoked_at, $3 revoked_by, $4 reason. Only the first revocation counts.
UPDATE presigned_url_lease SET revoked_at = $2, revoked_by = $3, revoke_reason = $4
WHERE lease_id = $1 AND revoked_at IS NULL
RETURNING lease_id, object_id, issued_to, issued_to_account_id, purpose, decision_id, http_method, url_sha256,
          correlation_id, issued_at, expires_at, revoked_at, revoked_by, revoke_reason;

-- name: get_lease
SELECT lease_id, object_id, issued_to, issued_to_account_id, purpose, decision_id, http_method, url_sha256,
       correlation_id, issued_at, expires_at, revoked_at, revoked_by, revoke_reason
FROM presigned_url_lease WHERE lease_id = $1;

-- name: find_lease_by_url
SELECT lease_id, object_id, issued_to, issued_to_account_id, purpose, decision_id, http_method, url_sha256,
       correlation_id, issued_at, expires_at, revoked_at, revoked_by, revoke_reason
FROM presigned_url_lease WHERE url_sha256 = $1
ORDER BY issued_at DESC
LIMIT 1;

-- name: list_leases
SELECT lease_id, object_id, issued_to, issued_to_account_id, purpose, decision_id, http_method, url_sha256,
       correlation_id, issued_at, expires_at, revoked_at, revoked_by, revoke_reason
FROM presigned_url_lease WHERE object_id = $1
ORDER BY issued_at, lease_id;
