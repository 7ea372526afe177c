-- The Instagram connection of a user: every statement dal/instagram/ runs (connect and
-- disconnect, the token read, the refresh workers' claims and records, re-encryption).
--
-- Rows are users rows; the statements that return a user return exactly the User columns, as in
-- users.sql.  Only instagram_token, claim_tokens_due and the re-encryption statements select
-- instagram_access_token, which is always the encrypted form (dal/instagram/keyring.py).

-- name: connect_instagram
-- Attach an Instagram account.  users_instagram_user_id_key keeps one user per account.
-- :instagram_access_token is already encrypted (dal/instagram/keyring.py).  A new token starts a new
-- refresh history: issued now, no failures, not flagged, and any worker's lease is dropped (so
-- a refresh of the old token in flight cannot record over this one).
UPDATE users SET
    instagram_user_id = :instagram_user_id,
    instagram_access_token = :instagram_access_token,
    instagram_username = :instagram_username,
    token_expires_at = :token_expires_at,
    token_issued_at = now(),
    token_refresh_failures = 0,
    token_refresh_error = NULL,
    needs_reauth = false,
    refresh_claimed_until = NULL
WHERE id = :id
RETURNING id, email, full_name, is_active, is_verified,
          instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
          instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
          timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
          created_at, updated_at;

-- name: disconnect_instagram
-- Forget the user's Instagram account and token.
UPDATE users SET
    instagram_user_id = NULL,
    instagram_access_token = NULL,
    instagram_username = NULL,
    token_expires_at = NULL,
    token_issued_at = NULL,
    token_refresh_failures = 0,
    token_refresh_error = NULL,
    needs_reauth = false,
    refresh_claimed_until = NULL
WHERE id = :id
RETURNING id, email, full_name, is_active, is_verified,
          instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
          instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
          timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
          created_at, updated_at;

-- name: expiring_instagram_tokens
-- Connected users whose token is still valid but expires within :within, soonest first (for
-- a refresh job).  Served by the partial index users_token_expiry_idx (0006).
SELECT id, email, full_name, is_active, is_verified,
       instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
       instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
       timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
       created_at, updated_at
FROM users
WHERE token_expires_at > now()
  AND token_expires_at <= now() + :within::interval
  AND instagram_access_token IS NOT NULL
ORDER BY token_expires_at, id
LIMIT :limit;

-- name: count_expiring_instagram_tokens
-- How many tokens expiring_instagram_tokens would return without a limit (the metric
-- defeah_instagram_tokens_due, cached by the web layer).  A range count on
-- users_token_expiry_idx (0006).
SELECT count(*) AS due
FROM users
WHERE token_expires_at > now()
  AND token_expires_at <= now() + :within::interval
  AND instagram_access_token IS NOT NULL;

-- name: instagram_token
-- The stored (encrypted, or legacy plaintext) token of one user, by primary key (users_pkey):
-- the one read of the token outside the refresh claim.
SELECT instagram_access_token FROM users WHERE id = :id;

-- name: claim_tokens_due
-- Lease up to :limit tokens due for a refresh, in one statement: not expired, expiring within
-- :within, at least :min_age old (Instagram refuses younger tokens; NULL issue time = before
-- 0007, old enough), not flagged needs_reauth, not leased (an expired lease counts as free:
-- its worker died).  FOR UPDATE SKIP LOCKED makes concurrent workers take disjoint rows without
-- waiting for each other; a row whose lease another worker committed meanwhile is re-checked
-- under its lock and dropped.  Served by users_token_expiry_idx (0006) read in order; the
-- leased/flagged/young rows of the window are filtered on the way (tests/test_query_plans.py).
WITH due AS (
    SELECT id FROM users
    WHERE instagram_access_token IS NOT NULL
      AND token_expires_at > now()
      AND token_expires_at <= now() + :within::interval
      AND COALESCE(token_issued_at, '-infinity') <= now() - :min_age::interval
      AND NOT needs_reauth
      AND (refresh_claimed_until IS NULL OR refresh_claimed_until <= now())
    ORDER BY token_expires_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE users SET refresh_claimed_until = now() + :lease::interval
FROM due
WHERE users.id = due.id
RETURNING users.id, users.instagram_access_token, users.token_expires_at,
    users.refresh_claimed_until AS lease_until;

-- name: record_token_refreshed
-- A refresh succeeded: store the new (encrypted) token and expiry, restart the 24-hour clock,
-- clear failures, flag and lease.  Only while the row is still leased: a reconnect meanwhile
-- dropped the lease, and its token must not be overwritten by a refresh of the old one.
-- :lease_until, when given, is the claim's own lease end (a fencing token): a worker whose
-- lease ran out and was re-claimed by another worker matches no row and writes nothing.
UPDATE users SET
    instagram_access_token = :token,
    token_expires_at = :expires_at,
    token_issued_at = now(),
    token_refresh_failures = 0,
    token_refresh_error = NULL,
    needs_reauth = false,
    refresh_claimed_until = NULL
WHERE id = :id AND refresh_claimed_until IS NOT NULL
  AND (:lease_until::timestamptz IS NULL OR refresh_claimed_until = :lease_until)
RETURNING id;

-- name: record_token_refresh_failed
-- A refresh failed: count it, remember the code, set needs_reauth for an invalid token
-- (:needs_reauth, OAuth code 190), and replace the lease by a back-off of :retry_step per
-- consecutive failure (at most :retry_max) so claims skip the row that long instead of
-- hammering a failing token.  Same still-leased (and fencing) condition as
-- record_token_refreshed.
UPDATE users SET
    token_refresh_failures = token_refresh_failures + 1,
    token_refresh_error = :code,
    needs_reauth = needs_reauth OR :needs_reauth::boolean,
    refresh_claimed_until = CASE WHEN :needs_reauth::boolean THEN NULL
                                 ELSE now() + least(:retry_step::interval * (token_refresh_failures + 1),
                                                    :retry_max::interval) END
WHERE id = :id AND refresh_claimed_until IS NOT NULL
  AND (:lease_until::timestamptz IS NULL OR refresh_claimed_until = :lease_until)
RETURNING token_refresh_failures, needs_reauth;

-- name: tokens_to_reencrypt
-- The next batch for `defeah-db reencrypt`: tokens not yet well-formed under the active key
-- (:current_form is the regular expression of 'v1:<active key id>:<base64>', anchored, so a
-- value that merely starts like one is not done), in id order after :after_id so a run walks
-- the table once and a resumed run skips what is done (finished rows no longer match).  An
-- index scan of users_pkey from :after_id; the form test is a filter.
SELECT id, instagram_access_token FROM users
WHERE id > :after_id
  AND instagram_access_token IS NOT NULL
  AND instagram_access_token !~ :current_form
ORDER BY id
LIMIT :limit;

-- name: tokens_of_emails
-- The stored tokens of the users with these emails: `defeah-db seed` seals the tokens its own
-- seed file wrote in plaintext (a psql script cannot encrypt), for the seed users only.
SELECT id, instagram_access_token FROM users
WHERE email = ANY(:emails::text[]) AND instagram_access_token IS NOT NULL
ORDER BY id;

-- name: count_tokens_to_reencrypt
-- How many tokens are not well-formed under the active key yet (the progress bar's total).
SELECT count(*) AS remaining FROM users
WHERE instagram_access_token IS NOT NULL
  AND instagram_access_token !~ :current_form;

-- name: replace_tokens!
-- Compare-and-swap for reencrypt, one batch in one statement: each row's token is rewritten
-- only if it is still exactly the value the batch read (:olds).  A token connected or
-- refreshed since then no longer matches and is left alone (it is already under the active
-- key), so a concurrent write is never reverted.  users_pkey finds each row.
UPDATE users SET instagram_access_token = batch.new
FROM unnest(:ids::uuid[], :olds::text[], :news::text[]) AS batch(id, old, new)
WHERE users.id = batch.id AND users.instagram_access_token = batch.old;

-- name: release_token_claims
-- A stopping worker gives back the rows it claimed but did not start, instead of leaving them
-- leased until the lease runs out.  Rows that are no longer leased are left as they are, and
-- so are rows whose lease is not the one in :leases (when given, parallel to :ids): another
-- worker re-claimed them after this worker's lease ran out.
UPDATE users SET refresh_claimed_until = NULL
FROM unnest(:ids::uuid[], :leases::timestamptz[]) AS mine(id, lease_until)
WHERE users.id = mine.id AND refresh_claimed_until IS NOT NULL
  AND (mine.lease_until IS NULL OR refresh_claimed_until = mine.lease_until)
RETURNING users.id;
