-- Rollback of 0006_users_token_expiry_index_concurrently: restores exactly the catalog 0003 left,
-- again without blocking writes (this file also runs outside a transaction).
-- yoyo pairs the statements in reverse: this file's last statement undoes 0006's first, so a
-- failure half-way through 0006 is undone step by step.
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction

CREATE INDEX CONCURRENTLY IF NOT EXISTS users_token_expires_at_idx
    ON users (token_expires_at)
    WHERE instagram_access_token IS NOT NULL;

COMMENT ON INDEX users_token_expires_at_idx IS
    'Serves the DAL''s expiring_instagram_tokens(within): connected users by token expiry.';

DROP INDEX CONCURRENTLY IF EXISTS users_token_expiry_idx;
