-- 0007_instagram_token_refresh: bookkeeping for refreshing Instagram tokens with many workers.
-- depends: 0006_users_token_expiry_index_concurrently
--
-- Purely additive: five nullable or constant-default columns on users, nothing rewritten.
-- (Since PostgreSQL 11 a constant DEFAULT is stored in the catalog, so ADD COLUMN ... NOT NULL
-- DEFAULT false/0 takes ACCESS EXCLUSIVE only for an instant and rewrites no row.)
--
-- Why: long-lived Instagram tokens last 60 days, can be refreshed once they are 24 hours old,
-- and each refresh gives 60 more days.  Without an issue time the 24-hour rule cannot be
-- applied, and without a lease two refresh workers refresh the same token.  The statements
-- that use these columns are claim_tokens_due / record_token_refreshed /
-- record_token_refresh_failed in dal/queries/users.sql; connect_instagram resets them all.
--
-- No new index: the claim reads the window of users_token_expiry_idx (0006: token_expires_at,
-- id WHERE instagram_access_token IS NOT NULL) in order and filters the few leased or flagged
-- rows it meets; tests/test_query_plans.py asserts the plan at 1,000,000 users.
--
-- squawk: the failure counter is reset by every success and reconnect, so it stays tiny;
-- INTEGER is ample.
-- squawk-ignore-file prefer-bigint-over-int

ALTER TABLE users
    ADD COLUMN token_issued_at TIMESTAMPTZ,
    ADD COLUMN token_refresh_failures INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN token_refresh_error TEXT,
    ADD COLUMN needs_reauth BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN refresh_claimed_until TIMESTAMPTZ;

COMMENT ON COLUMN users.token_issued_at IS
    'When the stored Instagram token was issued or last refreshed; NULL for tokens stored before 0007 (treated as old enough to refresh).';
COMMENT ON COLUMN users.token_refresh_failures IS
    'Consecutive failed refreshes of the current token; 0 after a success or a reconnect.';
COMMENT ON COLUMN users.token_refresh_error IS
    'Code of the last failed refresh (Graph API error code such as 190, or http_429, http_500, timeout, network).';
COMMENT ON COLUMN users.needs_reauth IS
    'Instagram declared the token invalid (OAuth code 190): no refresh until the user reconnects.';
COMMENT ON COLUMN users.refresh_claimed_until IS
    'Lease of a refresh worker (or back-off after a failure); the row is claimable again once it has passed.';
