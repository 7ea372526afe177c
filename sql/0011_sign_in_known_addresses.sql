-- 0011_sign_in_known_addresses: budgets that meet ASVS 4.0 V2.2.1 and NIST SP 800-63B 5.2.2
-- without handing an attacker a lockout of the owner (issue 20 item 8; docs/security.md).
-- depends: 0010_instagram_deletion_requests
--
-- Two new budget scopes and one new table:
-- * scope 'known': attempts on an email from an address where that account signed in before
--   (sign_in_known_addresses) spend a budget of their own instead of the 'account' one, so
--   strangers who spend the account budget (and its lock) do not lock the owner out;
-- * scope 'streak': failures since the email's last success (NIST's consecutive failures),
--   kept for a year after the last failure; past its limits strangers, then everyone, are
--   refused without a check until a success or an operator unlock.
--
-- Locks, all in one transaction (so a failure leaves nothing of it): sign_in_budgets is held
-- ACCESS EXCLUSIVE from the first DROP CONSTRAINT to COMMIT, through the VALIDATE scans.  That
-- table holds only the keys of windows still open (prune_expired_budgets deletes the rest), a
-- few rows per recent sign-in, so the scans take milliseconds; sign-ins queue behind them that
-- long, at most the lock timeout.  Nothing on users changes.

-- squawk: each CHECK is dropped only to be re-added, wider (0011) or as 0005 had it (rollback),
-- under the same name in the same transaction, so no client loses a guarantee; NOT VALID and
-- VALIDATE share that transaction on purpose (the table is small; the lock note above says how
-- long it is held).
-- squawk-ignore-file ban-drop-constraint, constraint-missing-not-valid

ALTER TABLE sign_in_budgets DROP CONSTRAINT sign_in_budgets_scope;
ALTER TABLE sign_in_budgets ADD CONSTRAINT sign_in_budgets_scope
    CHECK (scope IN ('account', 'ip', 'known', 'network', 'streak')) NOT VALID;
ALTER TABLE sign_in_budgets VALIDATE CONSTRAINT sign_in_budgets_scope;

ALTER TABLE sign_in_budgets DROP CONSTRAINT sign_in_budgets_key_shape;
ALTER TABLE sign_in_budgets ADD CONSTRAINT sign_in_budgets_key_shape CHECK (
    (scope = 'network' AND email <> '' AND network <> '')
    OR (scope = 'ip' AND email = '' AND network <> '')
    OR (scope IN ('account', 'known', 'streak') AND email <> '' AND network = '')
) NOT VALID;
ALTER TABLE sign_in_budgets VALIDATE CONSTRAINT sign_in_budgets_key_shape;

COMMENT ON COLUMN sign_in_budgets.scope IS
    'network: (email, client network); ip: one client address across all emails; account: all strangers'' attempts on one email; known: attempts on one email from its known addresses; streak: failures since the email''s last success.';

-- The addresses (the ip key: IPv4 /32, IPv6 /64) where an account signed in successfully.
-- A sign-in from one of them is the owner's more often than anyone's: it gets the 'known'
-- budget and is not refused by the strangers' account lock.  At most 10 per user (the DAL
-- keeps the newest and forgets those unused for 90 days).  No foreign key, like auth_events:
-- delete_user removes a user's rows, the look-up joins users anyway, and a key on users would
-- lock it here and make every TRUNCATE users name this table too.
CREATE TABLE sign_in_known_addresses (
    user_id UUID NOT NULL,
    address TEXT NOT NULL,
    last_success_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT sign_in_known_addresses_pkey PRIMARY KEY (user_id, address)
);

COMMENT ON TABLE sign_in_known_addresses IS
    'Client addresses (IPv4 /32, IPv6 /64) where each account signed in successfully; they get the known budget.';
COMMENT ON COLUMN sign_in_known_addresses.user_id IS 'The account (users.id); delete_user removes its rows.';
COMMENT ON COLUMN sign_in_known_addresses.address IS
    'The ip budget key of the address: IPv4 a.b.c.d/32 or IPv6 /64 network.';
COMMENT ON COLUMN sign_in_known_addresses.last_success_at IS
    'Last successful sign-in from it; unused for 90 days, the address is a stranger again.';
