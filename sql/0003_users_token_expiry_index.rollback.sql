-- Rollback of 0003_users_token_expiry_index: restores exactly the catalog 0002 left.
DROP INDEX users_token_expires_at_idx;
