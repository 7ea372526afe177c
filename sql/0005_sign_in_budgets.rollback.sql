-- Rollback of 0005_sign_in_budgets: restores exactly the catalog 0003 left.
-- WARNING: this deletes every attempt budget and the whole sign-in event log.
-- squawk: the rollback drops only what 0005 created; no other object or client depends on it.
-- squawk-ignore-file ban-drop-function, ban-drop-table
DROP FUNCTION auth_events_drop_partitions_before(TIMESTAMPTZ);
DROP FUNCTION auth_events_ensure_partitions(INTEGER);
-- Drops every partition and the owned sequence auth_events_id_seq with it.
DROP TABLE auth_events;
DROP TABLE sign_in_budgets;
