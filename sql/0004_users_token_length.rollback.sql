-- Rollback of 0004_users_token_length: restores exactly the catalog 0003 left (dropping the
-- constraint drops its comment too).  The only statement, so yoyo pairs it with 0004's ADD
-- CONSTRAINT: it is also what yoyo runs to undo that ADD when a later step of 0004 fails.
-- squawk: it drops only the constraint 0004 added; restoring 0003's catalog is the point.
-- squawk-ignore ban-drop-constraint
ALTER TABLE users DROP CONSTRAINT instagram_access_token_max_length;
