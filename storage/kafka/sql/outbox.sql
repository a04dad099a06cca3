-- Outbox relay queries. The outbox table: id bigserial (publication order), events json (an array of
-- [event_id, topic, partition_key, event_type, envelope], one writing transaction's events in order),
-- partition_keys text[] (their distinct keys), event_count, created_at, claimed_by, claimed_until,
-- attempts, last_error, sent_at (migration 0004_outbox_batches).

-- name: begin_serialized_claim
-- Opens the claim transaction and waits for the claim lock, in one round trip (a simple-protocol query
-- string; the relay then runs claim_candidates, claim_ids and COMMIT, or ROLLBACK after an error).
-- Claims are serialised per database (a few ms each) so two relays never decide on the same keys from
-- snapshots that miss each other's fresh leases; publishing itself runs in parallel. The lock must be taken
-- by a statement before claim_candidates: its snapshot is taken when it starts, so only then does it
-- see the leases of the claim that held the lock before.
BEGIN;
SET LOCAL enable_nestloop = off;
SELECT pg_advisory_xact_lock(hashtext('uc-edge outbox claim'));

-- name: claim_candidates
-- $1 most rows, $2 most events (the row reaching it included). The first unsent rows nobody holds, locked
-- until the claim commits ("free"), and the unsent rows below the last of them that are not free ("held":
-- leased by another relay, waiting after a rejection, or locked). The relay leases a free row only if no
-- earlier row sharing a key with it stays behind (relay.claimable). One range scan of outbox_unsent finds
-- the held rows, however many unsent rows lie beyond. begin_serialized_claim turns nested loops off:
-- statistics taken before a burst of events (autovacuum off, or not run yet) estimate one unsent row, and
-- nested loops over the candidates then cost a comparison per pair. (Locked rows beyond the event budget
-- are not returned; their locks go with the claim's commit.)
WITH locked AS (
    SELECT id, partition_keys, event_count
    FROM outbox
    WHERE sent_at IS NULL
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
candidates AS (
    SELECT id, partition_keys
    FROM (
        SELECT l.id, l.partition_keys, l.event_count,
               sum(l.event_count) OVER (ORDER BY l.id) - l.event_count AS before
        FROM locked l
    ) AS numbered
    WHERE before < $2
)
SELECT id, partition_keys, true AS free FROM candidates
UNION ALL
SELECT o.id, o.partition_keys, false
FROM outbox o
WHERE o.sent_at IS NULL
  AND o.id < (SELECT max(id) FROM candidates)
  AND NOT EXISTS (SELECT 1 FROM locked l WHERE l.id = o.id);

-- name: claim_ids
-- $1 relay id, $2 the ids relay.claimable chose among claim_candidates, $3 lease seconds. The events go
-- back as the row's text: the relay parses it (orjson: ~1 ms for 1,000 events); splitting it here, with a
-- json_array_elements and ->> per field, cost PostgreSQL ~10 ms.
UPDATE outbox o
SET claimed_by = $1,
    claimed_until = now() + make_interval(secs => $3),
    attempts = o.attempts + 1
WHERE o.id = ANY ($2::bigint[])
RETURNING o.id, o.events::text AS events;

-- name: mark_sent
-- $1 ids. Marked even if the lease ran out meanwhile: the broker acknowledged these rows.
UPDATE outbox
SET sent_at = now(), claimed_by = NULL, claimed_until = NULL, last_error = NULL
WHERE id = ANY($1::bigint[]) AND sent_at IS NULL;

-- name: delete_sent
-- $1 ids. The rows Kafka acknowledged, deleted at once when the relay keeps no sent history (the default):
-- a delete only marks the row dead, where marking it sent wrote a new version of the row (~0.6 kB and an
-- entry in each index) and the purge deleted it later. A row whose lease ran out and that another relay
-- published too is gone already; that is fine.
DELETE FROM outbox WHERE id = ANY($1::bigint[]) AND sent_at IS NULL;

-- name: release_unsent
-- $1 relay id, $2 ids, $3 error text per id (NULL keeps the previous one), $4 seconds before the rows may
-- be claimed again (0: at once), $5 per id the events still to publish as a JSON array when the broker
-- took some of the row's events (NULL: all of them stay). A delayed row still blocks the later rows of
-- its keys; a rewritten row keeps only the keys of the events it still carries.
UPDATE outbox o
SET claimed_by = NULL,
    claimed_until = CASE WHEN $4::float8 > 0 THEN now() + make_interval(secs => $4::float8) END,
    last_error = coalesce(f.error, o.last_error),
    events = coalesce(f.events::json, o.events),
    partition_keys = CASE WHEN f.events IS NULL THEN o.partition_keys
                          ELSE ARRAY(SELECT DISTINCT e->>2 FROM json_array_elements(f.events::json) AS e) END,
    event_count = CASE WHEN f.events IS NULL THEN o.event_count ELSE json_array_length(f.events::json) END
FROM unnest($2::bigint[], $3::text[], $5::text[]) AS f(id, error, events)
WHERE o.id = f.id AND o.claimed_by = $1 AND o.sent_at IS NULL;

-- name: insert_sent_part
-- $1 a JSON array of events the broker acknowledged out of row $2, which keeps the rest (release_unsent):
-- kept as a row of its own, marked sent, when the relay keeps a sent history. It has the original row's
-- age and attempts but a later id: the history is not in publication order (Kafka's offsets are). Its
-- insert wakes the relays once for nothing.
INSERT INTO outbox (events, partition_keys, event_count, created_at, attempts, sent_at)
SELECT $1::json, ARRAY(SELECT DISTINCT e->>2 FROM json_array_elements($1::json) AS e),
       json_array_length($1::json), o.created_at, o.attempts, now()
FROM outbox o
WHERE o.id = $2;

-- name: backlog
-- Events (not rows) waiting.
SELECT coalesce(sum(event_count), 0)::bigint AS unsent,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds
FROM outbox
WHERE sent_at IS NULL;

-- name: purge_sent
-- $1 retention seconds, $2 max rows. Sent rows are only history; delete them in bounded chunks.
DELETE FROM outbox
WHERE id IN (
    SELECT id FROM outbox
    WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1)
    ORDER BY id
    LIMIT $2
);

-- name: insert_events
-- $1 a JSON array with one [event_id, topic, partition_key, event_type, envelope] per event, in publication
-- order; $2 the distinct partition keys; $3 the number of events. Run inside the transaction of the state
-- change the events report; the table's trigger wakes the relays on commit. One row for all of them: a
-- B2BUA call writes a dozen events, and a group commit the events of many calls. (A row per event cost
-- PostgreSQL an insert and three index entries, a lease update and a delete per event: b2bua-cps at 450
-- calls/s, PostgreSQL 1.26 ms of CPU per call; one row per transaction, 0.54 ms.) The array is stored as
-- written (json, not jsonb): PostgreSQL only checks its syntax.
INSERT INTO outbox (events, partition_keys, event_count) VALUES ($1::json, $2::text[], $3);
