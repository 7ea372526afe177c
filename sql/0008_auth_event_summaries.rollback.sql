-- Rollback of 0008_auth_event_summaries: back to one row per attempt and no 'overloaded'.
-- yoyo pairs these statements with 0008's in reverse (0008 is non-transactional: each runs
-- alone); a rollback runs them in this order: delete, restore the columns and CHECK, comment.
-- Summary rows and 'overloaded' rows do not fit 0005's shape, so they are deleted first (the
-- counts they hold are lost with them; that is what rolling back this migration means).
-- squawk: dropping these columns is the point of a rollback; only 0008's code uses them.
-- squawk-ignore-file ban-drop-column
-- squawk: the narrower CHECK of 0005 comes back validated (as 0005 made it, so the catalog is
-- 0007's again); its scan runs under the rollback's ACCESS EXCLUSIVE lock, which a rollback
-- of the event log accepts.
-- squawk-ignore-file ban-drop-constraint, constraint-missing-not-valid
DELETE FROM auth_events WHERE result = 'overloaded' OR attempts <> 1;

ALTER TABLE auth_events
    DROP CONSTRAINT auth_events_result,
    ADD CONSTRAINT auth_events_result CHECK (
        result IN ('success', 'invalid_credentials', 'locked', 'throttled', 'inactive', 'unlocked')
    ),
    DROP COLUMN last_occurred_at,
    DROP COLUMN attempts;

COMMENT ON COLUMN auth_events.result IS
    'success, invalid_credentials (checked, wrong), locked (account-wide lock), throttled (budget spent, no check), inactive, unlocked (operator).';
