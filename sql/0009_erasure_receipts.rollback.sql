-- Rollback of 0009_erasure_receipts: restores exactly the catalog 0007 left.
-- WARNING: this deletes every erasure receipt; a backup restored afterwards cannot be cleaned
-- of the users erased so far.  Keep `defeah-db erasure-receipts -o FILE` output first.
-- squawk: the rollback drops only what 0009 created; nothing else depends on it.  Dropping an
-- index of a partitioned table cannot be CONCURRENTLY; it takes ACCESS EXCLUSIVE for an instant.
-- squawk-ignore-file ban-drop-table, require-concurrent-index-deletion
DROP INDEX auth_events_email_idx;
DROP TABLE erasure_receipts;
