-- 0009_erasure_receipts: what erasing a user leaves behind, and the index erasure needs (issue 23).
-- depends: 0008_auth_event_summaries
--
-- 1. erasure_receipts: one row per erased user, holding no personal data: the time and two
--    keyed HMAC-SHA256 digests (of the user id and of the normalized email) under
--    DEFEAH_ERASURE_PEPPER, which the database never sees.  `defeah-db reapply-erasures`
--    matches them against a restored backup and erases those users again.
-- 2. auth_events_email_idx: erasure deletes every event of the normalized email, including
--    the attempts that carry no user id (unknown email, typed before the account existed);
--    without it that DELETE reads the whole log.  Also serves reapply-erasures' DISTINCT email.
--
-- Locks: the new table locks nothing anyone waits on.  The index is built inside the
-- migration's transaction on the partitioned table and every partition (PostgreSQL cannot
-- build a partitioned index CONCURRENTLY, and the months present depend on the date, so the
-- per-partition concurrent route cannot be written as a static file): SHARE on auth_events
-- and each partition for the build, so sign-in event inserts wait for it (figures in
-- docs/benchmarks.md); reads continue.  Monthly partitions created later get the index when
-- auth_events_ensure_partitions attaches them.
--
-- squawk: the index build is SHARE-locked on purpose (see above); schedule it off-peak on a
-- large log.
-- squawk-ignore-file require-concurrent-index-creation

CREATE TABLE erasure_receipts (
    id BIGINT GENERATED ALWAYS AS IDENTITY,
    erased_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_hmac TEXT NOT NULL,
    email_hmac TEXT NOT NULL,
    CONSTRAINT erasure_receipts_pkey PRIMARY KEY (id),
    CONSTRAINT erasure_receipts_user_hmac_key UNIQUE (user_hmac),
    CONSTRAINT erasure_receipts_hmac_shape CHECK (
        user_hmac ~ '^[0-9a-f]{64}$' AND email_hmac ~ '^[0-9a-f]{64}$'
    )
);

CREATE INDEX erasure_receipts_email_hmac_idx ON erasure_receipts (email_hmac);

COMMENT ON TABLE erasure_receipts IS
    'One row per erased user, no personal data: reapply-erasures erases them again after a restore.';
COMMENT ON COLUMN erasure_receipts.id IS 'Sequence number of the erasure.';
COMMENT ON COLUMN erasure_receipts.erased_at IS
    'When the erasure committed; reapply-erasures removes only rows older than this (not a newer account of the same email).';
COMMENT ON COLUMN erasure_receipts.user_hmac IS
    'Hex HMAC-SHA256 of the erased users.id under DEFEAH_ERASURE_PEPPER (never stored here).';
COMMENT ON COLUMN erasure_receipts.email_hmac IS
    'Hex HMAC-SHA256 of the erased normalized email (trimmed, lower case) under DEFEAH_ERASURE_PEPPER.';
COMMENT ON INDEX erasure_receipts_email_hmac_idx IS
    'Serves the receipts of one email (export-user lists them).';

CREATE INDEX auth_events_email_idx ON auth_events (email);

COMMENT ON INDEX auth_events_email_idx IS
    'Serves erase_user and reapply-erasures: every event of one normalized email, in every partition.';
