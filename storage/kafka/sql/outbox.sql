-- Outbox relay queries. The outbox table: id bigserial (publication order), event_id, topic, partition_key,
-- event_type, envelope jsonb, created_at, claimed_by, claimed_until, attempts, last_error, sent_at.

-- name: begin_serialized_claim
-- Opens the claim transaction and waits for the claim lock, in one round trip (a simple-protocol query
-- string; the relay then runs claim_batch and COMMIT, or ROLLBACK after an error).
-- Claims are serialised per database (a few ms each) so two relays never decide on the same keys from
-- snapshots that miss each other's fresh leases; publishing itself runs in parallel. The lock must be taken
-- by a statement before claim_batch: claim_batch's snapshot is taken when it starts, so only then does it
-- see the leases of the claim that held the lock before.
BEGIN;
SET LOCAL enable_nestloop = off;
SELECT pg_advisory_xact_lock(hashtext('uc-edge outbox claim'));

-- name: claim_batch
-- $1 relay id, $2 batch size, $3 lease seconds.
-- Candidates are the first unsent rows nobody holds. A candidate is skipped when an earlier unsent row of
-- its key is outside the batch (leased by another relay, or locked): publishing it now would overtake
-- that row.
-- Every unsent row below the last candidate that is not a candidate is such a row (the candidates are all
-- the free ones in that id range), so one range scan of outbox_unsent finds them, however many unsent
-- rows lie beyond: the first of each key blocks the candidates of its key from there on. Its cost is the
-- batch plus the held rows, whatever the statistics say — begin_serialized_claim turns nested loops off,
-- since statistics taken before a burst of events (autovacuum off, or not run yet) estimate one unsent
-- row, and nested loops over a batch of 1,000 then cost a million comparisons.
-- (An earlier form looked up each candidate's predecessor in outbox_unsent_by_key through a LATERAL
-- subquery: with such statistics the planner sorted every unsent row once per candidate — a 30 s claim
-- with 60,000 rows waiting.)
WITH candidates AS (
    SELECT id, partition_key
    FROM outbox
    WHERE sent_at IS NULL
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
held AS (
    SELECT o.partition_key, min(o.id) AS first_held
    FROM outbox o
    WHERE o.sent_at IS NULL
      AND o.id < (SELECT max(id) FROM candidates)
      AND NOT EXISTS (SELECT 1 FROM candidates c WHERE c.id = o.id)
    GROUP BY o.partition_key
),
claimable AS (
    SELECT c.id
    FROM candidates c
    LEFT JOIN held h ON h.partition_key = c.partition_key
    WHERE h.first_held IS NULL OR c.id < h.first_held
)
UPDATE outbox o
SET claimed_by = $1,
    claimed_until = now() + make_interval(secs => $3),
    attempts = o.attempts + 1
WHERE o.id = ANY (ARRAY(SELECT id FROM claimable))
RETURNING o.id, o.event_id::text AS event_id, o.topic, o.partition_key, o.event_type, o.envelope::text AS envelope;

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
-- be claimed again (0: at once). A delayed row still blocks the later rows of its key.
UPDATE outbox o
SET claimed_by = NULL,
    claimed_until = CASE WHEN $4::float8 > 0 THEN now() + make_interval(secs => $4::float8) END,
    last_error = coalesce(f.error, o.last_error)
FROM unnest($2::bigint[], $3::text[]) AS f(id, error)
WHERE o.id = f.id AND o.claimed_by = $1 AND o.sent_at IS NULL;

-- name: backlog
SELECT count(*) AS unsent,
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
-- order. Run inside the transaction of the state change the events report; the table's trigger wakes the
-- relays on commit. One statement and one parameter for all of them: a B2BUA call writes a dozen events at
-- a time; a statement per event cost a Bind/Execute on the client and an executor start, a trigger firing
-- and a NOTIFY on the server, and five parallel arrays (the form before this one) cost the client ~3.5 µs
-- an event to encode, element by element, where one JSON text costs ~0.8 µs, and the server ~8.4 µs an
-- event where this takes ~5.4 µs (130 events a statement). Ids are drawn in the array's order.
INSERT INTO outbox (event_id, topic, partition_key, event_type, envelope)
SELECT (e->>0)::uuid, e->>1, e->>2, e->>3, e->4
FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS a(e, position)
ORDER BY a.position;
