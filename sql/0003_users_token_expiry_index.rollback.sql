-- Rollback of 0003_users_token_expiry_index: restores exactly the catalog 0002 left.
-- squawk: dropping a partial index is a catalog change; the ACCESS EXCLUSIVE lock is held for
-- milliseconds, and the runner's lock_timeout bounds the wait for it.
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX users_token_expires_at_idx;
