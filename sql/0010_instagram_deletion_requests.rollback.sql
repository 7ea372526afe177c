-- Rollback of 0010_instagram_deletion_requests: drops the two callback tables (their rows only
-- record what the callbacks did; the users rows they point at stay as they are).
-- squawk: dropping these tables is the point of a rollback; only 0010's code uses them.
-- squawk-ignore-file ban-drop-table
DROP TABLE instagram_deauthorizations;
DROP TABLE instagram_deletion_requests;
