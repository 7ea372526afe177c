-- name: migration_locks
-- Relation locks held or awaited by migration sessions (application_name 'defeah-db migrate …')
-- with the statement each one runs, stamped with the server clock; sampled every few ms while
-- `defeah-db rehearse` applies the pending migrations.  Only our schema's relations, without the
-- bookkeeping tables: system catalogs are not what a DBA schedules around.
SELECT clock_timestamp() AS sampled_at, a.pid, a.query, a.query_start, a.state,
       l.mode, c.relname AS target, l.granted
FROM pg_stat_activity AS a
JOIN pg_locks AS l ON l.pid = a.pid AND l.locktype = 'relation'
JOIN pg_class AS c ON c.oid = l.relation
WHERE a.application_name LIKE 'defeah-db migrate%'
  AND a.datname = current_database()
  AND c.relnamespace = current_schema()::regnamespace
  AND c.relname NOT LIKE '\_yoyo\_%'
  AND c.relname NOT LIKE 'yoyo\_lock%'
  AND c.relname NOT LIKE 'defeah\_migration\_checksum%';

-- name: sample_user_ids
-- Ids the rehearsal's light load reads and signs in, spread over the table.
SELECT id FROM users TABLESAMPLE SYSTEM (1) LIMIT :limit;

-- name: load_read
-- The rehearsal load's read: one user by primary key, spec columns only, so the same statement
-- runs before and after every pending migration (the DAL's own statements may need columns a
-- pending migration has yet to add).
SELECT id, email, is_active, locked_until FROM users WHERE id = :id;

-- name: load_sign_in
-- The rehearsal load's write: the sign-in bookkeeping a successful login does, on spec columns.
UPDATE users SET last_login_at = now(), login_count = login_count + 1,
                 failed_login_attempts = 0
WHERE id = :id
RETURNING id;

-- name: own_scratch
-- Marks this session as the owner of a rehearsal's scratch database for as long as it lives:
-- a session-level advisory lock on (:lock_class, hashtext(:name)), taken before the database
-- exists and released by the server when the owner's session ends, however its process died.
-- The application_name shows the owner in pg_stat_activity.
SELECT pg_advisory_lock(:lock_class, hashtext(:name)) AS locked,
       set_config('application_name', :application_name, false) AS application_name;

-- name: mark_scratch#
-- The comment that tells a rehearsal's scratch database (whose owner holds the lock above)
-- from anything else named alike: only marked databases are ever swept.
COMMENT ON DATABASE {database} IS 'defeah-db rehearse scratch copy';

-- name: scratch_databases
-- The rehearsal scratch databases on this server, and whether each carries our mark.
SELECT datname AS name,
       coalesce(shobj_description(oid, 'pg_database') = 'defeah-db rehearse scratch copy', false)
           AS marked
FROM pg_database
WHERE datname LIKE 'defeah\_rehearse\_%'
ORDER BY datname;

-- name: try_own_scratch
-- True when nobody owns the scratch database :name any more (its owner's session is gone):
-- the lock is then ours, so no second sweeper drops it at the same time.
SELECT pg_try_advisory_lock(:lock_class, hashtext(:name)) AS free;

-- name: disown_scratch
-- Releases the lock of try_own_scratch once the stale database is dropped.
SELECT pg_advisory_unlock(:lock_class, hashtext(:name)) AS released;

-- name: end_scratch_migrations
-- On SIGTERM: ends the migration sessions working on the scratch database :name, so the worker
-- thread running them returns at once instead of finishing a long index build first.
SELECT count(pg_terminate_backend(pid)) AS ended
FROM pg_stat_activity
WHERE datname = :name AND application_name LIKE 'defeah-db migrate%';
