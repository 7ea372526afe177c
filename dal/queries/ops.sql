-- Operations: the statements the seed runner, the production guard and the replica probe run.
-- None of them touches a user's data beyond the fixed seed accounts and the bulk generator's
-- own domain (dal/devdata/seeds.py says why those lists are safe).

-- name: production_marker
-- The per-database marker an operator sets with
-- ALTER DATABASE ... SET defeah.environment = 'production' (NULL when unset; the second
-- argument makes a missing setting NULL instead of an error).
SELECT current_setting(:name, true) AS marker;

-- name: users_table_exists
-- Whether the users table exists yet (to_regclass takes no lock and logs no error).
SELECT to_regclass('public.users') IS NOT NULL AS present;

-- name: seed_users_present
-- Which of the seed accounts exist, compared case-insensitively (users_email_lower_key).
SELECT lower(email) AS email FROM users WHERE lower(email) = ANY(:emails::text[]);

-- name: delete_seed_users!
-- Remove exactly the seed accounts (users_email_lower_key); nobody else matches the list.
DELETE FROM users WHERE lower(email) = ANY(:emails::text[]);

-- name: delete_generated_users!
-- Remove the bulk generator's users: their domain is under the reserved .test TLD, so no real
-- person's address matches.  A sequential scan: clearing bulk data is an offline chore.
DELETE FROM users WHERE lower(email) LIKE :pattern;

-- name: replica_probe
-- One round trip saying whether the server really is a standby and how far behind it is.
-- Lag is 0 when everything received has been replayed (an idle primary makes the replay
-- timestamp age without the standby being behind).
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0.0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
       END AS lag_seconds;

-- name: begin_bounded#
-- Opens a health check's transaction in one round trip (simple query protocol): read only,
-- with statement_timeout and lock_timeout for this transaction only ({ms} is the health
-- timeout in whole milliseconds, filled in by Database.bounded; SET takes no parameters).
BEGIN READ ONLY; SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms};

-- name: end_bounded#
-- Ends a health check's read-only transaction (nothing to commit).
ROLLBACK;

-- name: ping
-- The health round trip: one row, no table.
SELECT 1 AS one;

-- name: local_lock_timeout
-- lock_timeout for the rest of the current transaction only (set_config(..., true) is
-- SET LOCAL): a maintenance statement that needs an exclusive lock gives up instead of
-- queueing every reader and writer behind it.
SELECT set_config('lock_timeout', :timeout, true) AS lock_timeout;

-- name: database_now
-- The database clock, for cut-offs computed against timestamps the database wrote.
SELECT now() AS now;

-- name: events_lock_holders
-- Other sessions holding a granted lock on auth_events or one of its partitions: whom a
-- prune-events that gave up names, so the DBA knows which transaction to wait for or end.
SELECT DISTINCT a.pid, a.state, a.query,
       extract(epoch FROM now() - a.xact_start)::float8 AS xact_seconds
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation' AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (l.relation = 'auth_events'::regclass
       OR l.relation IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'auth_events'::regclass))
ORDER BY a.pid;
