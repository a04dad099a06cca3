-- Accounts and SIP digest credentials (database uc_accounts).

-- name: insert_account
-- $1 email (NULL allowed), $2 scrypt password hash.
INSERT INTO accounts (email, password_hash)
VALUES ($1, $2)
RETURNING account_id, status, email, created_at;

-- name: insert_credentials
-- $1 account_id, $2 username, $3 realm, $4 HA1 MD5, $5 HA1 SHA-256, $6 HA1 SHA-512-256 (NULL allowed).
INSERT INTO sip_credentials (account_id, username, realm, ha1_md5, ha1_sha256, ha1_sha512_256)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: list_sip_accounts
SELECT c.username, c.realm, a.account_id, a.status, a.email, a.created_at
FROM sip_credentials c
JOIN accounts a USING (account_id)
WHERE a.status <> 'deleted'
ORDER BY c.realm, c.username;

-- name: remove_sip_account
-- $1 username, $2 realm. Deletes the credentials; the account is soft-deleted when it has no other
-- credentials left. Returns one row per credentials deleted (zero or one).
WITH gone AS (
    DELETE FROM sip_credentials
    WHERE username = $1 AND realm = $2
    RETURNING account_id
),
retired AS (
    UPDATE accounts a
    SET status = 'deleted', deleted_at = now()
    FROM gone
    WHERE a.account_id = gone.account_id
      AND a.status <> 'deleted'
      AND NOT EXISTS (
          SELECT 1 FROM sip_credentials o
          WHERE o.account_id = a.account_id AND (o.username, o.realm) <> ($1, $2)
      )
    RETURNING a.account_id
)
SELECT account_id FROM gone;

-- name: lookup_credentials
-- $1 username, $2 realm. Only active accounts authenticate.
SELECT c.account_id, c.username, c.realm, c.ha1_md5, c.ha1_sha256, c.ha1_sha512_256
FROM sip_credentials c
JOIN accounts a USING (account_id)
WHERE c.username = $1 AND c.realm = $2 AND a.status = 'active';

-- name: routing_rules_for_account
-- $1 account_id. Enabled rules in the order call control tries them: lowest priority number first, then
-- the oldest rule (ties keep a stable, repeatable order).
SELECT priority, condition_type, action, target
FROM routing_rules
WHERE account_id = $1 AND enabled
ORDER BY priority, created_at, rule_id;
