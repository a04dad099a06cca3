-- Upkeep of a domain database that runs without autovacuum (storage.postgres.upkeep).

-- name: autovacuum_on
SELECT current_setting('autovacuum') = 'on';

-- name: stale_tables
-- The tables whose planner statistics are out of date by autovacuum's own rule: more rows changed since
-- the last ANALYZE than autovacuum_analyze_threshold + autovacuum_analyze_scale_factor × the rows the
-- statistics counted (a table analyzed while empty counts 0, so its first 50 rows already qualify). The
-- outbox is left out: the relay vacuums and analyzes it on its own schedule. Returns the ANALYZE statement
-- of each, its name quoted, the most changed first.
SELECT s.relname AS table_name,
       format('ANALYZE %I.%I', s.schemaname, s.relname) AS statement,
       s.n_mod_since_analyze AS changed_rows,
       greatest(c.reltuples, 0)::bigint AS counted_rows
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
WHERE s.relname <> 'outbox'
  AND s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::bigint
        + current_setting('autovacuum_analyze_scale_factor')::float8 * greatest(c.reltuples, 0)
ORDER BY s.n_mod_since_analyze DESC;
