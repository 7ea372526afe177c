-- Sign-in: attempt budgets, outcomes and the auth_events log (dal/users/signin.py and signin_jobs.py, migrations 0005 and 0011).
--
-- A sign-in involves up to four budget keys (dal/users/budgets.py), passed as parallel arrays
-- (:scopes, :emails, :networks, and their :limits and :windows) in no particular order.  Every statement that locks budget
-- rows takes them in primary-key order itself (ORDER BY, or FOR UPDATE after an ORDER BY), so
-- concurrent sign-ins can wait for each other but never deadlock.  A new statement that locks
-- budget rows must do the same.

-- name: sign_in_state^
-- The first statement of every attempt: the account behind the normalized email (if any,
-- through users_email_lower_key, without a lock: the password check uses whatever hash this
-- returns) and, in the same round trip, the fast refusal without a claim -- the first spent
-- key (account lock, then ip, then network), with its event written by this statement.
-- Counters only fall by a success or a new window, so a stale "spent" can only refuse an
-- attempt a moment early, never let one through.  Budget rows are read by primary key.
-- Always one row: user columns NULL for an unknown email, scope NULL when nothing is spent.
-- The account lock (users.locked_until) refuses strangers only: not :known addresses.
-- db_now: the server's clock as it answers, for the process's hold of a refusal
-- (dal/users/signin_refusals.py), so a skewed application clock cannot stretch it.
WITH account AS (
    SELECT id, hashed_password, is_active, locked_until
    FROM users WHERE lower(email) = :email
),
keys AS (
    SELECT k.scope, k.email, k.network, k.lim
    FROM unnest(:scopes::text[], :emails::text[], :networks::text[], :limits::int[])
        AS k(scope, email, network, lim)
),
spent AS (
    SELECT scope, decided_by, until FROM (
        SELECT k.scope,
               CASE k.network WHEN '' THEN k.scope ELSE k.scope || ' ' || k.network END
                   AS decided_by,
               b.window_ends_at AS until
        FROM keys k
        JOIN sign_in_budgets b
          ON (b.scope, b.email, b.network) = (k.scope, k.email, k.network)
        WHERE b.window_ends_at > now() AND b.used >= k.lim
        UNION ALL
        SELECT 'account', 'account', a.locked_until
        FROM account a WHERE a.locked_until > now() AND NOT :known::boolean
    ) candidates
    -- the order of PRIORITY in dal/users/signin.py
    ORDER BY array_position(ARRAY['streak', 'account', 'known', 'ip', 'network'], scope),
             until DESC
    LIMIT 1
),
event AS (
    INSERT INTO auth_events (email, user_id, result, client_ip, user_agent, decided_by)
    SELECT :email, (SELECT id FROM account),
           CASE WHEN scope IN ('account', 'known', 'streak') THEN 'locked' ELSE 'throttled' END,
           :client_ip::inet, :user_agent, decided_by
    FROM spent
)
SELECT a.id, a.hashed_password, a.is_active, s.scope, s.decided_by, s.until,
    clock_timestamp() AS db_now
FROM (SELECT 1) AS one
LEFT JOIN account a ON true
LEFT JOIN spent s ON true;

-- name: claim_attempt
-- The claim: one unit on every key, in one atomic upsert.  A key whose window (:windows, one
-- per key) has ended starts a new one at 1; the streak key's window restarts at every claim
-- (it remembers failures for a year after the last one, not from the first).  ON CONFLICT takes each row's lock and reads its latest version, so N
-- concurrent claims on a key return N distinct values of used; the caller may run bcrypt only
-- if every returned used is within its key's limit.  Rows are inserted (and so locked) in
-- primary-key order (ORDER BY), which keeps concurrent claims deadlock-free.  db_now as in
-- sign_in_state.
INSERT INTO sign_in_budgets AS b (scope, email, network, used, window_ends_at)
SELECT k.scope, k.email, k.network, 1, now() + k.win
FROM unnest(:scopes::text[], :emails::text[], :networks::text[], :windows::interval[])
    AS k(scope, email, network, win)
ORDER BY k.scope, k.email, k.network
ON CONFLICT (scope, email, network) DO UPDATE SET
    used = CASE WHEN b.window_ends_at <= now() THEN 1 ELSE b.used + 1 END,
    window_ends_at = CASE WHEN b.window_ends_at <= now() OR b.scope = 'streak'
                          THEN EXCLUDED.window_ends_at ELSE b.window_ends_at END
RETURNING scope, network, used, window_ends_at, clock_timestamp() AS db_now;

-- name: release_claims!
-- Give back the unit claim_attempt took on every key, for an attempt refused after claiming
-- (a race the fast refusal did not see).  Runs in the claim's transaction, which still holds
-- the rows' locks, so no other sign-in ever sees the over-count.
UPDATE sign_in_budgets b SET used = b.used - 1
FROM unnest(:scopes::text[], :emails::text[], :networks::text[]) AS k(scope, email, network)
WHERE (b.scope, b.email, b.network) = (k.scope, k.email, k.network) AND b.used > 0;

-- name: refund_overloaded!
-- An attempt refused with Overloaded after its claim: the password was never checked, so it
-- gives back the unit it claimed on every key -- only in the window it claimed in
-- (:claimed_windows, parallel to the keys; a window started since belongs to other attempts)
-- -- and is logged as 'overloaded', in one statement.  Rows locked in primary-key order, like the claim.
WITH mine AS (
    SELECT b.scope, b.email, b.network
    FROM sign_in_budgets b
    JOIN unnest(
        :scopes::text[], :emails::text[], :networks::text[], :claimed_windows::timestamptz[]
    )
        AS k(scope, email, network, window_ends_at)
      ON (b.scope, b.email, b.network, b.window_ends_at)
       = (k.scope, k.email, k.network, k.window_ends_at)
    ORDER BY b.scope, b.email, b.network
    FOR UPDATE OF b
),
refunded AS (
    UPDATE sign_in_budgets b SET used = greatest(b.used - 1, 0)
    FROM mine WHERE (b.scope, b.email, b.network) = (mine.scope, mine.email, mine.network)
)
INSERT INTO auth_events (email, user_id, result, client_ip, user_agent, decided_by)
VALUES (:email, :user_id::uuid, 'overloaded', :client_ip::inet, :user_agent, 'bcrypt queue');

-- name: record_refusal_summaries!
-- Refusals made in process (dal/users/signin_refusals.py), one row per refusing key per
-- interval: attempts counted from occurred_at (:firsts) to last_occurred_at (:lasts), both
-- on the server's clock.  Parallel arrays, one element per row.
INSERT INTO auth_events
    (occurred_at, last_occurred_at, attempts, email, user_id, result, client_ip, user_agent,
     decided_by)
SELECT * FROM unnest(
    :firsts::timestamptz[], :lasts::timestamptz[], :attempts::int[], :emails::text[],
    :user_ids::uuid[], :results::text[], :client_ips::inet[], :user_agents::text[],
    :decided_bys::text[]
);

-- name: record_event!
-- One auth_events row (claim refusals and operator unlocks); partition by occurred_at.
INSERT INTO auth_events (email, user_id, result, client_ip, user_agent, decided_by)
VALUES (:email, :user_id::uuid, :result, :client_ip::inet, :user_agent, :decided_by);

-- name: record_failure!
-- A wrong password after a claim: the claims stay (they are the failure), users counts it
-- (users_pkey) and takes the account-wide lock when the account budget is spent, and the
-- event is written -- one statement, so all of it or none.  For an unknown email :user_id is
-- NULL and only the event is written.  The counter saturates at INTEGER's maximum (rules.py
-- COUNTER_MAX) instead of overflowing, which would fail the statement and lose the event.
-- An account erased while its password was being checked (erase-user commits between the
-- claim and this statement; the UPDATE waits for it, then finds no row) gets no event: the
-- erasure removed everything of that person, and this attempt would bring its id, email and
-- address back after the fact.
WITH account AS (
    SELECT window_ends_at FROM sign_in_budgets
    WHERE scope = 'account' AND email = :email AND network = ''
      AND window_ends_at > now() AND used >= :account_limit
),
counted AS (
    UPDATE users SET
        failed_login_attempts = LEAST(failed_login_attempts, 2147483646) + 1,
        locked_until = COALESCE((SELECT window_ends_at FROM account), locked_until)
    WHERE id = :user_id::uuid
    RETURNING id
)
INSERT INTO auth_events (email, user_id, result, client_ip, user_agent, decided_by)
SELECT :email, :user_id::uuid, 'invalid_credentials', :client_ip::inet, :user_agent, 'password'
WHERE :user_id::uuid IS NULL OR EXISTS (SELECT 1 FROM counted);

-- name: settle_right_password!
-- The password was right but the account is inactive: reset this (email, network) key, give
-- back the ip and account units, and log it.  Rows locked in primary-key order (FOR UPDATE
-- under ORDER BY) like the claim, so this cannot deadlock with it.
WITH mine AS (
    SELECT b.scope, b.email, b.network
    FROM sign_in_budgets b
    JOIN unnest(:scopes::text[], :emails::text[], :networks::text[]) AS k(scope, email, network)
      ON (b.scope, b.email, b.network) = (k.scope, k.email, k.network)
    ORDER BY b.scope, b.email, b.network
    FOR UPDATE OF b
),
settled AS (
    UPDATE sign_in_budgets b
    SET used = CASE WHEN b.scope = 'network' THEN 0 ELSE greatest(b.used - 1, 0) END
    FROM mine WHERE (b.scope, b.email, b.network) = (mine.scope, mine.email, mine.network)
)
INSERT INTO auth_events (email, user_id, result, client_ip, user_agent, decided_by)
VALUES (:email, :user_id::uuid, 'inactive', :client_ip::inet, :user_agent, 'password');

-- name: record_success^
-- A right password on an active account, in one statement: reset this (email, network) key
-- and the email's streak (the consecutive failures end here), give back the ip and account
-- (or known) units, stamp the user (users_pkey; login_count saturates at INTEGER's maximum)
-- and log the event.
-- An upgraded hash (:upgraded) replaces the stored one only if that is still :verified, so a
-- password change racing the sign-in is never undone.  The event is written from the stamped
-- row: an account erased meanwhile (no row to stamp) leaves no event behind.
WITH mine AS (
    SELECT b.scope, b.email, b.network
    FROM sign_in_budgets b
    JOIN unnest(:scopes::text[], :emails::text[], :networks::text[]) AS k(scope, email, network)
      ON (b.scope, b.email, b.network) = (k.scope, k.email, k.network)
    ORDER BY b.scope, b.email, b.network
    FOR UPDATE OF b
),
settled AS (
    UPDATE sign_in_budgets b
    SET used = CASE WHEN b.scope IN ('network', 'streak') THEN 0 ELSE greatest(b.used - 1, 0) END
    FROM mine WHERE (b.scope, b.email, b.network) = (mine.scope, mine.email, mine.network)
),
stamped AS (
    UPDATE users SET
        last_login_at = now(),
        login_count = LEAST(login_count, 2147483646) + 1,
        failed_login_attempts = 0,
        locked_until = NULL,
        hashed_password = CASE WHEN hashed_password = :verified
                               THEN COALESCE(:upgraded, hashed_password)
                               ELSE hashed_password END
    WHERE id = :user_id::uuid
    RETURNING id, email, full_name, is_active, is_verified,
        instagram_user_id, instagram_access_token IS NOT NULL AS has_instagram_token,
        instagram_username, token_expires_at, needs_reauth AS instagram_needs_reauth,
        timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
        created_at, updated_at
),
event AS (
    INSERT INTO auth_events (email, user_id, result, client_ip, user_agent, decided_by)
    SELECT :email, id, 'success', :client_ip::inet, :user_agent, 'password' FROM stamped
)
SELECT id, email, full_name, is_active, is_verified, instagram_user_id, has_instagram_token,
    instagram_username, token_expires_at, instagram_needs_reauth, timezone, language,
    last_login_at, login_count, failed_login_attempts, locked_until, created_at, updated_at
FROM stamped;

-- name: unlock_email
-- Operator unlock: delete every budget of the email (network, account, known and streak keys,
-- by the primary key's prefix after scope), lift the account lock and log an 'unlocked' event, in
-- one statement.  Returns the number of budget rows removed and the user id, if any.
WITH cleared AS (
    DELETE FROM sign_in_budgets
    WHERE scope IN ('account', 'known', 'network', 'streak') AND email = :email
    RETURNING 1
),
unlocked AS (
    UPDATE users SET locked_until = NULL
    WHERE lower(email) = :email
    RETURNING id
),
event AS (
    INSERT INTO auth_events (email, user_id, result, decided_by)
    SELECT :email, (SELECT id FROM unlocked), 'unlocked', 'operator'
)
SELECT (SELECT count(*) FROM cleared) AS budgets, (SELECT id FROM unlocked) AS user_id;

-- name: known_address^
-- Whether :address (an ip budget key) is one where the account of :email signed in within the
-- last 90 days: users_email_lower_key, then sign_in_known_addresses_pkey.  Runs for unknown
-- emails too (false), so it tells nothing about which emails have accounts.
SELECT EXISTS (
    SELECT 1 FROM users u
    JOIN sign_in_known_addresses k ON k.user_id = u.id
    WHERE lower(u.email) = :email AND k.address = :address
      AND k.last_success_at > now() - interval '90 days'
) AS known;

-- name: remember_address!
-- After a successful sign-in: :address becomes (or stays) known for the user, and the user's
-- other known addresses are forgotten when unused for 90 days or beyond the 9 newest, so a
-- user has at most 10.  (The DELETE sees the rows as they were before this INSERT.)  The
-- address is taken from the users row under FOR KEY SHARE: an erasure (which locks that row
-- FOR UPDATE) either waits for this statement and then deletes the address with the rest, or
-- has already deleted the row, and nothing is inserted.
WITH seen AS (
    INSERT INTO sign_in_known_addresses AS k (user_id, address)
    SELECT u.id, :address FROM users u WHERE u.id = :user_id::uuid FOR KEY SHARE
    ON CONFLICT (user_id, address) DO UPDATE SET last_success_at = now()
)
DELETE FROM sign_in_known_addresses
WHERE user_id = :user_id::uuid AND address <> :address
  AND (last_success_at <= now() - interval '90 days'
       OR address NOT IN (
           SELECT address FROM sign_in_known_addresses
           WHERE user_id = :user_id::uuid AND address <> :address
           ORDER BY last_success_at DESC
           LIMIT 9));

-- name: recent_events_for_user
-- Newest events of one user: auth_events_user_idx on every partition, merged, LIMIT n.
SELECT occurred_at, email, user_id, result, client_ip, user_agent, decided_by, attempts,
    last_occurred_at
FROM auth_events
WHERE user_id = :user_id
ORDER BY occurred_at DESC, id DESC
LIMIT :limit;

-- name: recent_events_for_ip
-- Newest events from one client address: auth_events_client_ip_idx, LIMIT n.
SELECT occurred_at, email, user_id, result, client_ip, user_agent, decided_by, attempts,
    last_occurred_at
FROM auth_events
WHERE client_ip = :client_ip::inet
ORDER BY occurred_at DESC, id DESC
LIMIT :limit;

-- name: lock_event_maintenance^
-- Serialises maintain-events runs (cron or timers on several hosts at once): a transaction-
-- level advisory lock, released at commit, so it also works behind PgBouncer in transaction
-- mode.  Waits at most the caller's lock_timeout.  The key is a fixed hash of the job's name.
SELECT pg_advisory_xact_lock(hashtextextended('defeah-db maintain-events', 0)) AS locked;

-- name: ensure_partitions
-- Create the monthly partitions from this month to :months_ahead (function from 0005).
SELECT auth_events_ensure_partitions(:months_ahead) AS created;

-- name: drop_partitions_before
-- Drop whole monthly partitions that end at or before :cutoff (function from 0005).
SELECT auth_events_drop_partitions_before(:cutoff) AS dropped;

-- name: delete_events_batch
-- Delete up to :batch rows older than :cutoff from partitions that straddle it (and the
-- default partition); auth_events_pkey (occurred_at, id) finds them oldest first.
DELETE FROM auth_events
WHERE (occurred_at, id) IN (
    SELECT occurred_at, id FROM auth_events
    WHERE occurred_at < :cutoff
    ORDER BY occurred_at, id
    LIMIT :batch
);

-- name: prune_expired_budgets
-- Budget rows whose window ended carry no information (the next claim would restart them):
-- delete them, :batch at a time, through sign_in_budgets_window_ends_at_idx.
DELETE FROM sign_in_budgets
WHERE (scope, email, network) IN (
    SELECT scope, email, network FROM sign_in_budgets
    WHERE window_ends_at <= now()
    ORDER BY window_ends_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
);
