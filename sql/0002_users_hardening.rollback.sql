-- Rollback of 0002_users_hardening: restores exactly the catalog 0001 created.
-- Timestamps go back to TIMESTAMP holding the UTC wall-clock time (the inverse of the upgrade).

COMMENT ON COLUMN users.id IS NULL;
COMMENT ON COLUMN users.email IS NULL;
COMMENT ON COLUMN users.hashed_password IS NULL;
COMMENT ON COLUMN users.full_name IS NULL;
COMMENT ON COLUMN users.is_active IS NULL;
COMMENT ON COLUMN users.is_verified IS NULL;
COMMENT ON COLUMN users.instagram_user_id IS NULL;
COMMENT ON COLUMN users.instagram_access_token IS NULL;
COMMENT ON COLUMN users.instagram_username IS NULL;
COMMENT ON COLUMN users.token_expires_at IS NULL;
COMMENT ON COLUMN users.timezone IS NULL;
COMMENT ON COLUMN users.language IS NULL;
COMMENT ON COLUMN users.last_login_at IS NULL;
COMMENT ON COLUMN users.login_count IS NULL;
COMMENT ON COLUMN users.failed_login_attempts IS NULL;
COMMENT ON COLUMN users.locked_until IS NULL;
COMMENT ON COLUMN users.created_at IS NULL;
COMMENT ON COLUMN users.updated_at IS NULL;
COMMENT ON TABLE users IS NULL;

DROP TRIGGER users_set_updated_at ON users;
-- squawk: the function exists only for the trigger dropped above; nothing else calls it.
-- squawk-ignore ban-drop-function
DROP FUNCTION users_set_updated_at();

-- squawk: the ALTER below takes ACCESS EXCLUSIVE on users in this same transaction anyway.
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX users_email_lower_key;

-- squawk: the exact inverse of 0002's accepted rewrite; TIMESTAMP is what 0001 declared.
-- squawk-ignore-file changing-column-type, prefer-timestamp-tz
ALTER TABLE users
    ALTER COLUMN last_login_at TYPE TIMESTAMP USING last_login_at AT TIME ZONE 'UTC',
    ALTER COLUMN token_expires_at TYPE TIMESTAMP USING token_expires_at AT TIME ZONE 'UTC',
    ALTER COLUMN locked_until TYPE TIMESTAMP USING locked_until AT TIME ZONE 'UTC';
