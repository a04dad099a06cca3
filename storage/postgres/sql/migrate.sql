-- Queries of the migration runner (storage/postgres/migrate.py).

-- name: database_exists
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS present;

-- name: create_database_statement
-- CREATE DATABASE takes no parameters and cannot run in a function: the server quotes the name (%I).
SELECT format('CREATE DATABASE %I', $1::text) AS statement;

-- name: lock_database_creation
-- Session lock on the server's maintenance database: nodes create domain databases one at a time.
SELECT pg_advisory_lock(hashtext('uc-edge: create domain databases'));

-- name: unlock_database_creation
SELECT pg_advisory_unlock(hashtext('uc-edge: create domain databases'));

-- name: lock_migrations
-- Session lock in the domain database: a second node migrating at once waits, then finds nothing to do.
SELECT pg_advisory_lock(hashtext('uc-edge: schema migrations'));

-- name: unlock_migrations
SELECT pg_advisory_unlock(hashtext('uc-edge: schema migrations'));

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY CHECK (version > 0),
    name text NOT NULL,
    checksum text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: schema_migrations_exists
SELECT to_regclass('schema_migrations') IS NOT NULL AS present;

-- name: applied_migrations
SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3);
