-- Rollback of 0007_instagram_token_refresh: drops the refresh bookkeeping (the tokens stay).
-- Dropping a column only marks it dropped in the catalog (no rewrite), ACCESS EXCLUSIVE for an
-- instant.  squawk: dropping these columns is the point of a rollback, and only the code of
-- 0007 (which a rollback also rolls back) uses them.
-- squawk-ignore-file ban-drop-column
ALTER TABLE users
    DROP COLUMN refresh_claimed_until,
    DROP COLUMN needs_reauth,
    DROP COLUMN token_refresh_error,
    DROP COLUMN token_refresh_failures,
    DROP COLUMN token_issued_at;
