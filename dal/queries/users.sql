-- The users aggregate: every statement dal/users/repository.py runs against the users table.
--
-- Read them as a DBA would: each has a name (the Python side refers to it by that name), a
-- comment saying what it is for and which index serves it, and :named parameters that the
-- loader turns into $1, $2, ... in order of first appearance.  No SQL is ever assembled from
-- input: the partial update, the optional filters and the pagination are single static
-- statements whose parameters switch parts on or off.
--
-- Every statement that returns a user returns exactly the User columns (a test compares each
-- one's result columns with the model): no statement here selects hashed_password (only
-- dal/queries/signin.sql's sign-in reads it) or instagram_access_token (only
-- dal/queries/instagram.sql's token reads do); a User says has_instagram_token instead, so it
-- never carries a secret.

-- name: get_user
-- One user by primary key (users_pkey).
SELECT id, email, full_name, is_active, is_verified,
       instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
       instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
       timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
       created_at, updated_at
FROM users WHERE id = :id;

-- name: get_user_by_email
-- One user by email, ignoring case: the expression matches the unique index
-- users_email_lower_key (0002), so this is an index lookup, not a scan.
SELECT id, email, full_name, is_active, is_verified,
       instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
       instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
       timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
       created_at, updated_at
FROM users WHERE lower(email) = lower(:email);

-- name: create_user
-- Insert a user; the database fills id, timestamps and counters.  Unique violations on
-- users_email_key / users_email_lower_key mean the email is taken.
INSERT INTO users (email, hashed_password, full_name, is_active, is_verified, timezone, language)
VALUES (:email, :hashed_password, :full_name, :is_active, :is_verified, :timezone, :language)
RETURNING id, email, full_name, is_active, is_verified,
          instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
          instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
          timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
          created_at, updated_at;

-- name: update_user
-- Partial update in one static statement.  NOT NULL columns use COALESCE (NULL = keep);
-- full_name may be set to NULL, so :set_full_name says whether to touch it.  The trigger
-- users_set_updated_at moves updated_at only when something really changed.
UPDATE users SET
    email = COALESCE(:email, email),
    hashed_password = COALESCE(:hashed_password, hashed_password),
    full_name = CASE WHEN :set_full_name::boolean THEN :full_name ELSE full_name END,
    is_active = COALESCE(:is_active, is_active),
    is_verified = COALESCE(:is_verified, is_verified),
    timezone = COALESCE(:timezone, timezone),
    language = COALESCE(:language, language)
WHERE id = :id
RETURNING id, email, full_name, is_active, is_verified,
          instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
          instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
          timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
          created_at, updated_at;

-- name: delete_user
-- Delete one user by primary key; no row back means there was none.  The user's known sign-in
-- addresses go with it (sign_in_known_addresses has no foreign key, like auth_events).
WITH addresses AS (DELETE FROM sign_in_known_addresses WHERE user_id = :id)
DELETE FROM users WHERE id = :id RETURNING id;

-- name: list_users
-- First page, newest first.  (:x IS NULL OR ...) turns a filter off.  Served by a backward
-- scan of the spec's idx_users_created_at (plus an incremental sort on id for equal
-- timestamps), which stops after :limit rows; tests/test_query_plans.py asserts the plan.
SELECT id, email, full_name, is_active, is_verified,
       instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
       instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
       timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
       created_at, updated_at
FROM users
WHERE (:active::boolean IS NULL OR is_active = :active)
  AND (:verified::boolean IS NULL OR is_verified = :verified)
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: list_users_after
-- Next pages: keyset pagination on (created_at, id), strictly after the cursor's row.  The
-- row comparison starts the backward scan of idx_users_created_at at the cursor, so page 1000
-- costs what page 1 costs (an OFFSET would read and discard every earlier row).
SELECT id, email, full_name, is_active, is_verified,
       instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
       instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
       timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
       created_at, updated_at
FROM users
WHERE (:active::boolean IS NULL OR is_active = :active)
  AND (:verified::boolean IS NULL OR is_verified = :verified)
  AND (created_at, id) < (:after_created_at::timestamptz, :after_id::uuid)
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: record_login_success
-- Successful sign-in: stamp it, count it, clear the failure counter and any lock.  When
-- :upgraded_hash is given it is a new hash of the same password; it replaces the stored hash
-- only if that is still :verified_hash (the one we checked), so a password change racing the
-- sign-in is never undone.  login_count saturates at INTEGER's maximum (rules.COUNTER_MAX).
UPDATE users SET
    last_login_at = now(),
    login_count = LEAST(login_count, 2147483646) + 1,
    failed_login_attempts = 0,
    locked_until = NULL,
    hashed_password = CASE WHEN hashed_password = :verified_hash
                           THEN COALESCE(:upgraded_hash, hashed_password)
                           ELSE hashed_password END
WHERE id = :id
RETURNING id, email, full_name, is_active, is_verified,
          instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
          instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
          timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
          created_at, updated_at;

-- name: record_login_failure
-- Failed sign-in, atomically: the increment reads the row's current value under its row
-- lock, so N concurrent failures count N (a read-then-write in Python would lose some).
-- Reaching :threshold locks the account for :window from now.  The counter saturates at
-- INTEGER's maximum (rules.COUNTER_MAX) instead of failing the statement.
UPDATE users SET
    failed_login_attempts = LEAST(failed_login_attempts, 2147483646) + 1,
    locked_until = CASE WHEN failed_login_attempts >= :threshold - 1
                        THEN now() + :window::interval
                        ELSE locked_until END
WHERE id = :id
RETURNING failed_login_attempts, locked_until;
