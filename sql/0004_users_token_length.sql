-- 0004_users_token_length: cap the stored Instagram access token at 4096 characters.
-- depends: 0003_users_token_expiry_index
-- transactional: false
-- squawk: assumes every file runs in one transaction (.squawk.toml); this one does not, so the
-- NOT VALID step commits (and releases its lock) before VALIDATE scans under SHARE UPDATE
-- EXCLUSIVE, which blocks no reads or writes.
-- squawk-ignore-file constraint-missing-not-valid
--
-- Why: the column is TEXT, so nothing stopped a caller from storing a 10 MB "token" in every
-- row.  Real Instagram tokens are a few hundred characters; 4096 leaves room for format changes.
-- The DAL's InstagramConnection model refuses the same values first (ACCESS_TOKEN_MAX_LENGTH in
-- dal/models.py); CHECK_RULES there maps this constraint to the field instagram_access_token,
-- and tests/test_validation_parity.py shows both layers agree at 4096 and 4097.  char_length
-- counts characters as Python's len() does.
--
-- Why NOT VALID, then VALIDATE, and why outside a transaction (transactional: false above):
-- ADD CONSTRAINT ... CHECK scans the whole table while holding ACCESS EXCLUSIVE, which blocks
-- every read and write of users for the length of the scan.  Added NOT VALID, the constraint
-- only needs that lock for an instant (no scan) and already guards every new write; VALIDATE
-- then scans under SHARE UPDATE EXCLUSIVE, which lets reads and writes go on.  Inside one
-- transaction the first statement's ACCESS EXCLUSIVE lock would be held until COMMIT, i.e.
-- through the scan, and the split would gain nothing -- hence each statement commits alone.
--
-- If VALIDATE fails (a stored token is longer), yoyo runs this step's rollback (the DROP in the
-- .rollback.sql), so the catalog is back to 0003 and the migration stays pending.  Disconnect
-- those users (their tokens are not real ones) and apply again.  If the process dies between
-- the two statements, drop the NOT VALID constraint by hand before applying again.
ALTER TABLE users
    ADD CONSTRAINT instagram_access_token_max_length
    CHECK (char_length(instagram_access_token) <= 4096) NOT VALID;

ALTER TABLE users VALIDATE CONSTRAINT instagram_access_token_max_length;

COMMENT ON CONSTRAINT instagram_access_token_max_length ON users IS
    'Instagram tokens are a few hundred characters; refuse anything over 4096 (DAL: ACCESS_TOKEN_MAX_LENGTH).';
