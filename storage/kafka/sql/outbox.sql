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
SELECT pg_advisory_xact_lock(hashtext('uc-edge outbox claim'));

-- name: claim_batch
-- $1 relay id, $2 batch size, $3 lease seconds.
-- Candidates are the first unsent rows nobody holds. A candidate is skipped when an earlier unsent row of
-- its key is outside the batch (leased by another relay, or locked): publishing it now would overtake
-- that row.
-- The check costs one index step per candidate whatever the statistics: the unsent row just before a
-- candidate in its key must be the candidate just before it in its key in the batch, or neither exists.
-- Where it is not, a row outside the batch sits between the two, and that candidate and the later ones of
-- its key are skipped. The row before a candidate is found as the entry before (key, id) in
-- outbox_unsent_by_key, by a row comparison with no equality on the key: only that index yields rows in
-- (key, id) order, so it is the one plan that does not sort the unsent rows; an equality would let the
-- planner walk outbox_unsent backwards over the other keys' rows when it believes there are few keys.
-- (The previous form joined the candidates against every unsent row below the last one; a plan made for
-- a nearly empty table ran that join as nested loops, batch size x unsent rows per claim.)
WITH candidates AS (
    SELECT id, partition_key
    FROM outbox
    WHERE sent_at IS NULL
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
neighbours AS (
    SELECT c.id,
           c.partition_key,
           lag(c.id) OVER (PARTITION BY c.partition_key ORDER BY c.id) AS previous_in_batch,
           CASE WHEN before.partition_key = c.partition_key THEN before.id END AS previous_unsent
    FROM candidates c
    LEFT JOIN LATERAL (
        SELECT o.partition_key, o.id
        FROM outbox o
        WHERE o.sent_at IS NULL AND (o.partition_key, o.id) < (c.partition_key, c.id)
        ORDER BY o.partition_key DESC, o.id DESC
        LIMIT 1
    ) before ON true
),
claimable AS (
    SELECT id
    FROM (
        SELECT id,
               bool_and(previous_unsent IS NOT DISTINCT FROM previous_in_batch)
                   OVER (PARTITION BY partition_key ORDER BY id) AS follows_the_batch
        FROM neighbours
    ) checked
    WHERE follows_the_batch
)
UPDATE outbox o
SET claimed_by = $1,
    claimed_until = now() + make_interval(secs => $3),
    attempts = o.attempts + 1
WHERE o.id = ANY (ARRAY(SELECT id FROM claimable))
RETURNING o.id, o.event_id, o.topic, o.partition_key, o.event_type, o.envelope::text AS envelope;

-- name: mark_sent
-- $1 ids. Marked even if the lease ran out meanwhile: the broker acknowledged these rows.
UPDATE outbox
SET sent_at = now(), claimed_by = NULL, claimed_until = NULL, last_error = NULL
WHERE id = ANY($1::bigint[]) AND sent_at IS NULL;

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

-- name: insert_event
-- $1 event_id, $2 topic, $3 partition_key, $4 event_type, $5 envelope (JSON text). Run inside the
-- transaction of the state change the event reports; the table's trigger wakes the relays on commit.
INSERT INTO outbox (event_id, topic, partition_key, event_type, envelope)
VALUES ($1, $2, $3, $4, $5::jsonb);
