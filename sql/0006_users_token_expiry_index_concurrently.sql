-- 0006_users_token_expiry_index_concurrently: 0003's index, rebuilt without blocking writes.
-- depends: 0003_users_token_expiry_index
-- transactional: false
--
-- 0003 built users_token_expires_at_idx inside yoyo's transaction, i.e. without CONCURRENTLY,
-- holding a SHARE lock that blocks every write to users for the whole build.  0003 stays as it
-- was applied (its checksum is recorded); this migration replaces its index with a concurrent
-- build, and makes it cover the query's whole ORDER BY (token_expires_at, id), so the
-- token-refresh job's query (dal/users.py) reads the window in order with no sort step.
--
-- CREATE/DROP INDEX CONCURRENTLY cannot run inside a transaction block, hence
-- `transactional: false` above: yoyo runs each statement on its own.  The file is therefore
-- written to be re-run after an interruption at any point: IF NOT EXISTS / IF EXISTS on every
-- statement.  A build killed mid-way leaves an INVALID users_token_expiry_idx;
-- `defeah-db migrate` drops it (concurrently) before re-running this file.
--
-- Locks: SHARE UPDATE EXCLUSIVE on users for each statement (reads and writes continue); each
-- statement waits for transactions already running on users to finish, within lock_timeout.
-- squawk: this file runs outside a transaction (see above), whatever .squawk.toml assumes.
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction

CREATE INDEX CONCURRENTLY IF NOT EXISTS users_token_expiry_idx
    ON users (token_expires_at, id)
    WHERE instagram_access_token IS NOT NULL;

COMMENT ON INDEX users_token_expiry_idx IS
    'Serves the DAL''s expiring_instagram_tokens(within): connected users by token expiry, then id.';

DROP INDEX CONCURRENTLY IF EXISTS users_token_expires_at_idx;
