-- Rollback of 0001_users: removes the users table with its constraints and indexes.
-- WARNING: this deletes every user row. yoyo asks for confirmation unless run in batch mode.
-- squawk: dropping the table is the point of this rollback (see the warning above).
-- squawk-ignore ban-drop-table
DROP TABLE users;
