-- 0002_users_hardening: additive changes a reviewing DBA asked for on top of the spec.
-- depends: 0001_users
--
-- Nothing from 0001 is removed or renamed: the spec's UNIQUE(email), CHECKs and indexes all stay.
-- The whole file runs in one transaction (yoyo wraps each migration), so a failure leaves 0001's
-- state untouched.

-- 1. Timestamps that mean an instant.
--    The spec declares last_login_at, token_expires_at and locked_until as TIMESTAMP (without
--    time zone) while created_at/updated_at are TIMESTAMPTZ.  Comparing the two kinds makes
--    PostgreSQL apply the *session* time zone, so `locked_until > now()` would give different
--    answers to clients in different zones.  The DAL has always written these columns in UTC
--    (sessions run with timezone=UTC), so existing values are read as UTC.
--    The ALTER rewrites the table under an ACCESS EXCLUSIVE lock; on a large table schedule it in
--    a maintenance window.  idx_users_last_login is rebuilt automatically, same name, same
--    definition.
-- squawk: accepted rewrite (see above).  The runner's lock_timeout bounds the wait for the lock,
-- so a long reader makes this migration fail and retry instead of queueing every read behind it.
-- squawk-ignore-file changing-column-type
ALTER TABLE users
    ALTER COLUMN last_login_at TYPE TIMESTAMPTZ USING last_login_at AT TIME ZONE 'UTC',
    ALTER COLUMN token_expires_at TYPE TIMESTAMPTZ USING token_expires_at AT TIME ZONE 'UTC',
    ALTER COLUMN locked_until TYPE TIMESTAMPTZ USING locked_until AT TIME ZONE 'UTC';

-- 2. Case-insensitive email uniqueness.
--    UNIQUE(email) alone lets 'Alice@x.io' and 'alice@x.io' become two accounts, and sign-in by
--    email would then depend on how the user typed it.  This expression index makes both the
--    rule and the DAL's lookup (`WHERE lower(email) = lower($1)`) exact and index-backed.  The
--    spec's users_email_key stays, as the spec requires.
-- squawk: runs in the same transaction as the rewrite above, which already holds ACCESS
-- EXCLUSIVE on users, so a concurrent build would gain nothing (and cannot run in a transaction).
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

-- 3. updated_at that tells the truth.
--    The spec's DEFAULT now() fires only on INSERT, so without a trigger updated_at would stay at
--    the creation time forever.  The WHEN clause skips no-op updates (every column unchanged),
--    so re-running an idempotent script does not move the timestamp.
CREATE FUNCTION users_set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION users_set_updated_at() IS
    'Trigger function: stamps users.updated_at with the transaction time on every real change.';

CREATE TRIGGER users_set_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION users_set_updated_at();

-- 4. Documentation in the catalog, so \d+ users explains itself.
COMMENT ON TABLE users IS
    'Defeah user accounts: credentials, Instagram connection, preferences and sign-in tracking.';
COMMENT ON COLUMN users.id IS 'Primary key; random UUID (gen_random_uuid()).';
COMMENT ON COLUMN users.email IS
    'Sign-in email; unique case-insensitively (users_email_lower_key) and as typed (users_email_key).';
COMMENT ON COLUMN users.hashed_password IS 'bcrypt hash ($2b$, cost in the hash); never the password.';
COMMENT ON COLUMN users.full_name IS 'Display name; NULL or at least 2 characters.';
COMMENT ON COLUMN users.is_active IS 'False for deactivated accounts, which may not sign in.';
COMMENT ON COLUMN users.is_verified IS 'True once the user has confirmed their email address.';
COMMENT ON COLUMN users.instagram_user_id IS 'Connected Instagram account id; one Defeah user per account.';
COMMENT ON COLUMN users.instagram_access_token IS 'Instagram API access token. Secret: never log or return it.';
COMMENT ON COLUMN users.instagram_username IS 'Instagram handle at connection time, for display.';
COMMENT ON COLUMN users.token_expires_at IS 'When instagram_access_token expires (UTC instant).';
COMMENT ON COLUMN users.timezone IS 'IANA time zone name of the user, e.g. Europe/Paris.';
COMMENT ON COLUMN users.language IS 'Preferred language tag, at most 5 characters, e.g. en or pt-BR.';
COMMENT ON COLUMN users.last_login_at IS 'Time of the last successful sign-in.';
COMMENT ON COLUMN users.login_count IS 'Number of successful sign-ins.';
COMMENT ON COLUMN users.failed_login_attempts IS
    'Failed sign-ins since the last success; reaching the threshold sets locked_until.';
COMMENT ON COLUMN users.locked_until IS 'Sign-in refused until this instant; NULL when not locked.';
COMMENT ON COLUMN users.created_at IS 'When the account was created.';
COMMENT ON COLUMN users.updated_at IS 'When the row last changed (maintained by trigger users_set_updated_at).';
