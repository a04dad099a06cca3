-- The relay's claim no longer looks up each candidate's predecessor by key (it scans the unsent rows below
-- its last candidate once, through outbox_unsent): the index by key only cost every event an extra entry.
DROP INDEX IF EXISTS outbox_unsent_by_key;
