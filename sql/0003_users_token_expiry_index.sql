-- 0003_users_token_expiry_index: an index for the one DAL query no spec index serves.
-- depends: 0002_users_hardening
--
-- Query: expiring_instagram_tokens in dal/queries/users.sql (run by the token-refresh job): the
-- connected users whose token expires within a window, soonest first.  Without this index that is a sequential scan of every user plus a sort (12 ms at 100,000
-- users on the CI machine, linear in the table).  With it, PostgreSQL reads only the index
-- range of the window (1 ms for the same data); tests/test_query_plans.py asserts the plan.
--
-- Partial (WHERE instagram_access_token IS NOT NULL): most users never connect Instagram, so
-- the index holds only connected users and costs nothing on sign-ups without a token.  The
-- predicate repeats the query's own condition, which is what lets the planner use it.
--
-- The other DAL queries are already served by 0001/0002 indexes (plans in the same test):
-- get by id -> users_pkey; get by email -> users_email_lower_key; list newest first with the
-- keyset cursor -> a backward scan of idx_users_created_at (index condition created_at <= cursor)
-- plus an incremental sort on id.
--
-- Runs inside yoyo's transaction, so CREATE INDEX (not CONCURRENTLY) takes a SHARE lock that
-- blocks writes to users while it builds (about 0.1 s per 100,000 connected users).  On a large
-- live table a DBA may build it beforehand with CREATE INDEX CONCURRENTLY, same name and
-- definition; the IF NOT EXISTS below then makes this migration a no-op.
-- squawk: kept as applied; 0006 replaces this index with a concurrent build, so a database
-- that has not reached 0003 yet pays this SHARE lock only for the time of a small build.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS users_token_expires_at_idx
    ON users (token_expires_at)
    WHERE instagram_access_token IS NOT NULL;

COMMENT ON INDEX users_token_expires_at_idx IS
    'Serves the DAL''s expiring_instagram_tokens(within): connected users by token expiry.';
