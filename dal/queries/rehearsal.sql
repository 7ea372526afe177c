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
