-- Rollback of 0011_sign_in_known_addresses: forget the known addresses, drop the known and
-- streak budget rows, and restore 0005's CHECKs (NOT VALID, then validated, as in 0011).
-- squawk: dropping the table is the point of a rollback; only 0011's code uses it.
-- squawk-ignore-file ban-drop-table, ban-drop-constraint, constraint-missing-not-valid
-- (the CHECKs are put back as 0005 had them, in this one transaction: see 0011's note.)
DROP TABLE sign_in_known_addresses;

DELETE FROM sign_in_budgets WHERE scope IN ('known', 'streak');

ALTER TABLE sign_in_budgets DROP CONSTRAINT sign_in_budgets_key_shape;
ALTER TABLE sign_in_budgets ADD CONSTRAINT sign_in_budgets_key_shape CHECK (
    (scope = 'network' AND email <> '' AND network <> '')
    OR (scope = 'ip' AND email = '' AND network <> '')
    OR (scope = 'account' AND email <> '' AND network = '')
) NOT VALID;
ALTER TABLE sign_in_budgets VALIDATE CONSTRAINT sign_in_budgets_key_shape;

ALTER TABLE sign_in_budgets DROP CONSTRAINT sign_in_budgets_scope;
ALTER TABLE sign_in_budgets ADD CONSTRAINT sign_in_budgets_scope
    CHECK (scope IN ('account', 'ip', 'network')) NOT VALID;
ALTER TABLE sign_in_budgets VALIDATE CONSTRAINT sign_in_budgets_scope;

COMMENT ON COLUMN sign_in_budgets.scope IS
    'network: (email, client network); ip: one client address across all emails; account: all networks of one email.';
