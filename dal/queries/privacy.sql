-- Privacy: erase, export and re-erase a user (dal/users/erasure.py, dal/users/export.py,
-- migration 0009).  Every statement that removes a user's data goes by the user id and the
-- normalized email only, never by a column list, so rows that gain columns stay covered.

-- name: user_id_by_email^
-- The account of a normalized email, through users_email_lower_key; none: no row.
SELECT id FROM users WHERE lower(email) = :email;

-- name: lock_erase_target^
-- The user to erase, locked (users_pkey) so a concurrent update or sign-in waits for the
-- erasure; the normalized email is what the receipt and the event delete go by.
SELECT id, lower(email) AS email FROM users WHERE id = :user_id FOR UPDATE;

-- name: erase_user^
-- Everything held about one user, in one statement (one snapshot): every auth_events row of
-- the id or of the normalized email in every partition, the default one included
-- (auth_events_user_idx, auth_events_email_idx), every budget keyed by the email (each
-- scope that has an email, through sign_in_budgets_pkey: streak rows live a year, so the
-- table can be large), the addresses the account signed in from, the users row with its
-- Instagram connection and token, and the receipt.  Returns the counts and the receipt's time.
WITH events AS (
    DELETE FROM auth_events WHERE user_id = :user_id OR email = :email RETURNING 1
),
budgets AS (
    DELETE FROM sign_in_budgets
    WHERE scope = ANY ('{account,known,network,streak}'::text[]) AND email = :email
      AND email <> ''
    RETURNING 1
),
addresses AS (  -- where the account signed in (migration 0011; no foreign key to users)
    DELETE FROM sign_in_known_addresses WHERE user_id = :user_id RETURNING 1
),
account AS (
    DELETE FROM users WHERE id = :user_id RETURNING 1
),
receipt AS (
    INSERT INTO erasure_receipts (user_hmac, email_hmac) VALUES (:user_hmac, :email_hmac)
    RETURNING erased_at
)
SELECT (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM budgets) AS budgets,
       (SELECT count(*) FROM account) AS users,
       (SELECT erased_at FROM receipt) AS erased_at;

-- name: keep_receipt!
-- A receipt brought from elsewhere (reapply-erasures --receipts): kept here too, so the next
-- restore of this database is cleaned as well.  An id is erased once: a known digest is skipped.
INSERT INTO erasure_receipts (erased_at, user_hmac, email_hmac)
VALUES (:erased_at, :user_hmac, :email_hmac)
ON CONFLICT (user_hmac) DO NOTHING;

-- name: all_receipts
-- Every receipt, oldest first (erasure-receipts and reapply-erasures; a small table).
SELECT erased_at, user_hmac, email_hmac FROM erasure_receipts ORDER BY id;

-- name: receipts_for
-- The receipts of one user id or normalized email (export-user): erasure_receipts_user_hmac_key
-- and erasure_receipts_email_hmac_idx.
SELECT erased_at, user_hmac = :user_hmac AS same_user, email_hmac = :email_hmac AS same_email
FROM erasure_receipts
WHERE user_hmac = :user_hmac OR email_hmac = :email_hmac
ORDER BY id;

-- name: known_users
-- Every account's id and normalized email, read through a cursor by reapply-erasures, which
-- digests them in the application (the pepper never reaches the server).
SELECT id, lower(email) AS email FROM users;

-- name: logged_emails
-- Every distinct email of the event log and the budgets (auth_events_email_idx, index-only
-- where the visibility map allows), read through a cursor by reapply-erasures.
SELECT email FROM auth_events
UNION
SELECT email FROM sign_in_budgets WHERE email <> '';

-- name: logged_user_ids
-- Every distinct user id of the event log (auth_events_user_idx) and of the known sign-in
-- addresses (their primary key), for reapply-erasures.
SELECT user_id FROM auth_events WHERE user_id IS NOT NULL
UNION
SELECT user_id FROM sign_in_known_addresses;

-- name: reapply_erasure^
-- Erase again, after a restore, what a receipt covers: the account by id and the events of
-- the id or the email, only those no newer than the erasure (a later account of the same
-- email, or its later attempts, are someone else's), and the email's budgets.
WITH events AS (
    DELETE FROM auth_events
    WHERE (user_id = :user_id::uuid OR email = :email) AND occurred_at <= :erased_at
    RETURNING 1
),
budgets AS (
    DELETE FROM sign_in_budgets
    WHERE scope = ANY ('{account,known,network,streak}'::text[]) AND email = :email
      AND email <> ''
    RETURNING 1
),
addresses AS (
    DELETE FROM sign_in_known_addresses
    WHERE user_id = :user_id::uuid
      AND NOT EXISTS (SELECT 1 FROM users WHERE id = :user_id::uuid AND created_at > :erased_at)
    RETURNING 1
),
account AS (
    DELETE FROM users WHERE id = :user_id::uuid AND created_at <= :erased_at RETURNING 1
)
SELECT (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM budgets) AS budgets,
       (SELECT count(*) FROM account) AS users;

-- name: export_profile^
-- One user's profile and Instagram connection for export-user (users_pkey): every column but
-- hashed_password and instagram_access_token (only whether a token is held).
SELECT id, email, full_name, is_active, is_verified, timezone, language,
       last_login_at, login_count, failed_login_attempts, locked_until, created_at, updated_at,
       instagram_user_id, instagram_username, instagram_access_token IS NOT NULL AS has_token,
       token_expires_at, token_issued_at, token_refresh_failures, token_refresh_error,
       needs_reauth
FROM users WHERE id = :user_id;

-- name: export_events
-- Every kept event of one user id or normalized email, oldest first, each row as the JSON
-- PostgreSQL makes of it (every column, also ones added later), read through a cursor.
SELECT to_jsonb(e)::text AS event
FROM auth_events e
WHERE e.user_id = :user_id OR e.email = :email
ORDER BY e.occurred_at, e.id;

-- name: export_clock
-- The export's time: the snapshot's (transaction start), so it matches what was read.
SELECT now() AS now;

-- name: export_deletion_requests
-- The Meta data deletion requests carried out for one account (instagram_deletion_requests_user_idx).
SELECT confirmation_code, status, received_at
FROM instagram_deletion_requests
WHERE user_id = :user_id
ORDER BY received_at;

-- name: export_deauthorizations
-- Meta's deauthorize callbacks for one account (instagram_deauthorizations_user_idx).
SELECT outcome, received_at
FROM instagram_deauthorizations
WHERE user_id = :user_id
ORDER BY received_at;

-- name: export_known_addresses
-- The addresses one account signed in from (sign_in_known_addresses_pkey), for export-user.
SELECT address, last_success_at
FROM sign_in_known_addresses
WHERE user_id = :user_id
ORDER BY last_success_at, address;
