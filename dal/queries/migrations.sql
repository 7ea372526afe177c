-- name: create_checksum_table#
-- Our bookkeeping of migration *content* (yoyo's _yoyo_migration hashes only the id).  A table
-- of our own, not extra columns on yoyo's: yoyo upgrades its internal tables itself and would
-- not carry columns it does not know.  Idempotent; created under yoyo's lock by every migrate.
CREATE TABLE IF NOT EXISTS defeah_migration_checksum (
    migration_id text PRIMARY KEY,
    sha256 text NOT NULL,
    rollback_sha256 text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- name: checksum_table_exists^
-- True once a migrate has created the checksum table (status must not create it).
SELECT to_regclass('defeah_migration_checksum') IS NOT NULL AS present;

-- name: recorded_checksums
-- Recorded hashes of every applied migration, compared with the files on each migrate/status.
SELECT migration_id, sha256, rollback_sha256 FROM defeah_migration_checksum ORDER BY migration_id;

-- name: record_checksum!
-- Record the hashes of one migration after applying it, or re-record them on accept-checksum.
INSERT INTO defeah_migration_checksum (migration_id, sha256, rollback_sha256)
VALUES (:migration_id, :sha256, :rollback_sha256)
ON CONFLICT (migration_id) DO UPDATE
    SET sha256 = EXCLUDED.sha256, rollback_sha256 = EXCLUDED.rollback_sha256, recorded_at = now();

-- name: forget_checksum!
-- A rolled-back migration has no applied content any more; re-applying records it afresh.
DELETE FROM defeah_migration_checksum WHERE migration_id = :migration_id;

-- name: blockers
-- Sessions blocking our migration session (found by its unique application_name): what a
-- lock-timeout error names so the DBA knows whom to wait for or stop.
SELECT b.pid, b.state, b.query,
       extract(epoch FROM now() - b.xact_start)::float8 AS xact_seconds
FROM pg_stat_activity AS w
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp (pid)
JOIN pg_stat_activity AS b ON b.pid = bp.pid
WHERE w.application_name = :application_name
ORDER BY b.pid;

-- name: invalid_indexes
-- Indexes of the current schema left INVALID by an interrupted CREATE INDEX CONCURRENTLY.
SELECT c.relname AS name
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE NOT i.indisvalid AND c.relnamespace = current_schema()::regnamespace
ORDER BY 1;

-- name: drop_index_concurrently#
-- Drop one invalid index without blocking writes; {index} is filled with a quoted identifier
-- (an identifier cannot be a bind parameter).
DROP INDEX CONCURRENTLY IF EXISTS {index};

-- name: begin_read_only#
-- Dry runs: everything yoyo reads happens in one read-only transaction, so a write that slipped
-- past the recording backend would fail instead of landing (dal/migrations/yoyo_backend.py read_only).
BEGIN READ ONLY;

-- name: plan_mark_applied!
-- Dry-run plans only: what yoyo's mark_one writes once a migration has run.
INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc)
VALUES (:migration_hash, :migration_id, timezone('UTC', now()));

-- name: plan_unmark_applied!
-- Dry-run plans only: what yoyo's unmark_one deletes once a rollback has run.
DELETE FROM _yoyo_migration WHERE migration_hash = :migration_hash;

-- name: plan_log!
-- Dry-run plans only: yoyo's _yoyo_log entry for an apply or a rollback.
INSERT INTO _yoyo_log
    (id, migration_hash, migration_id, operation, username, hostname, created_at_utc)
VALUES (gen_random_uuid()::text, :migration_hash, :migration_id, :operation, current_user,
        :hostname, timezone('UTC', now()));

-- name: plan_session_limits#
-- Dry-run plans only: the session limits migrate sets, as psql statements.
SET lock_timeout = {lock_timeout};
SET statement_timeout = {statement_timeout};

-- name: bookkeeping_tables^
-- Which bookkeeping tables exist (a never-migrated database has neither); health reads them
-- only when present, and never creates them.
SELECT to_regclass('_yoyo_migration') IS NOT NULL AS yoyo,
       to_regclass('defeah_migration_checksum') IS NOT NULL AS checksums;

-- name: applied_migration_ids
-- Ids yoyo recorded as applied, oldest first: what health compares with the code's REQUIRED_HEAD.
SELECT migration_id FROM _yoyo_migration ORDER BY applied_at_utc, migration_id;
