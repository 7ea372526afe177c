-- 0005_sign_in_budgets: sign-in attempt budgets and the sign-in event log (issue 11).
-- depends: 0004_users_token_length
--
-- Purely additive: two new tables, one sequence, two maintenance functions.  Nothing on users
-- changes.  Everything here works behind PgBouncer in transaction mode: no session state, no
-- LISTEN, no advisory locks; the DAL's statements are single statements or short explicit
-- transactions (dal/queries/signin.sql).
--
-- squawk: both tables are new and empty, so no column choice here takes a lock on live data.
-- sign_in_budgets.used counts attempts within one window, bounded by the thresholds (at most
-- 1,000,000 by configuration): INTEGER is ample.  auth_events.user_agent is VARCHAR(256) on
-- purpose: the cap is the rule (the DAL truncates to the same 256 characters).
-- squawk-ignore-file prefer-bigint-over-int, prefer-text-field

-- 1. Attempt budgets.
--    One row per budget key.  A sign-in first claims one unit on every key it involves (one
--    atomic INSERT ... ON CONFLICT DO UPDATE, rows taken in primary-key order so concurrent
--    claims cannot deadlock); only a claimed attempt may run bcrypt.  A failed check keeps its
--    claim, a successful one gives it back, so `used` counts failures plus checks in flight and
--    N concurrent attempts can never run more than `limit` checks per key per window.
--    Keyed by the normalized email, not users.id, so an unknown email is throttled exactly
--    like a known one and lockout reveals nothing about which emails have accounts.
CREATE TABLE sign_in_budgets (
    scope TEXT NOT NULL,
    email TEXT NOT NULL,
    network TEXT NOT NULL,
    used INTEGER NOT NULL,
    window_ends_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT sign_in_budgets_pkey PRIMARY KEY (scope, email, network),
    CONSTRAINT sign_in_budgets_scope CHECK (scope IN ('account', 'ip', 'network')),
    CONSTRAINT sign_in_budgets_used CHECK (used >= 0),
    CONSTRAINT sign_in_budgets_key_shape CHECK (
        (scope = 'network' AND email <> '' AND network <> '')
        OR (scope = 'ip' AND email = '' AND network <> '')
        OR (scope = 'account' AND email <> '' AND network = '')
    )
);

-- Serves prune_expired_budgets (delete rows whose window has ended).
CREATE INDEX sign_in_budgets_window_ends_at_idx ON sign_in_budgets (window_ends_at);

COMMENT ON TABLE sign_in_budgets IS
    'Sign-in attempt budgets per key and fixed window; claimed before any bcrypt work.';
COMMENT ON COLUMN sign_in_budgets.scope IS
    'network: (email, client network); ip: one client address across all emails; account: all networks of one email.';
COMMENT ON COLUMN sign_in_budgets.email IS
    'Normalized email (trimmed, lower case); empty for scope ip. Unknown emails are budgeted too.';
COMMENT ON COLUMN sign_in_budgets.network IS
    'scope network: IPv4 /24 or IPv6 /64, or unknown; scope ip: IPv4 /32 or IPv6 /64; empty for account.';
COMMENT ON COLUMN sign_in_budgets.used IS
    'Failed checks plus checks in flight in the current window; at the limit the key refuses attempts.';
COMMENT ON COLUMN sign_in_budgets.window_ends_at IS
    'End of the current window; the next claim after it starts a new window at 1. Expired rows are pruned.';
COMMENT ON INDEX sign_in_budgets_window_ends_at_idx IS
    'Serves prune_expired_budgets: expired rows in window order.';

-- 2. Sign-in event log, range-partitioned by month (UTC) so retention drops whole partitions.
--    A default partition catches rows outside the partitions created so far;
--    auth_events_ensure_partitions moves such rows when it creates their month.
CREATE SEQUENCE auth_events_id_seq AS BIGINT;

CREATE TABLE auth_events (
    id BIGINT NOT NULL DEFAULT nextval('auth_events_id_seq'),
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    email TEXT NOT NULL,
    user_id UUID,
    result TEXT NOT NULL,
    client_ip INET,
    user_agent VARCHAR(256),
    decided_by TEXT NOT NULL,
    CONSTRAINT auth_events_pkey PRIMARY KEY (occurred_at, id),
    CONSTRAINT auth_events_result CHECK (
        result IN ('success', 'invalid_credentials', 'locked', 'throttled', 'inactive', 'unlocked')
    )
) PARTITION BY RANGE (occurred_at);

ALTER SEQUENCE auth_events_id_seq OWNED BY auth_events.id;

CREATE TABLE auth_events_default PARTITION OF auth_events DEFAULT;

-- Serve recent_auth_events_for_user / recent_auth_events_for_ip (newest first, LIMIT n).
CREATE INDEX auth_events_user_idx ON auth_events (user_id, occurred_at DESC)
    WHERE user_id IS NOT NULL;
CREATE INDEX auth_events_client_ip_idx ON auth_events (client_ip, occurred_at DESC)
    WHERE client_ip IS NOT NULL;

COMMENT ON SEQUENCE auth_events_id_seq IS 'Ids of auth_events rows (tie-breaker within one instant).';
COMMENT ON TABLE auth_events IS
    'One row per sign-in attempt (and operator unlock), written in the transaction that moved the budgets. Monthly partitions.';
COMMENT ON TABLE auth_events_default IS
    'Rows outside every monthly partition; auth_events_ensure_partitions moves them into their month.';
COMMENT ON COLUMN auth_events.id IS 'Sequence number; with occurred_at the primary key.';
COMMENT ON COLUMN auth_events.occurred_at IS 'When the attempt was decided (transaction time); the partition key.';
COMMENT ON COLUMN auth_events.email IS 'Normalized email as typed (trimmed, lower case), known or not.';
COMMENT ON COLUMN auth_events.user_id IS
    'users.id when the email has an account, else NULL. No foreign key: the log outlives deleted users.';
COMMENT ON COLUMN auth_events.result IS
    'success, invalid_credentials (checked, wrong), locked (account-wide lock), throttled (budget spent, no check), inactive, unlocked (operator).';
COMMENT ON COLUMN auth_events.client_ip IS 'Client address given to authenticate; NULL when unknown.';
COMMENT ON COLUMN auth_events.user_agent IS 'Client user agent, cut to 256 characters.';
COMMENT ON COLUMN auth_events.decided_by IS
    'What decided: password, or the budget key that refused (account, ip <addr>, network <net>), or operator.';
COMMENT ON INDEX auth_events_user_idx IS 'Serves recent_auth_events_for_user: newest first per user.';
COMMENT ON INDEX auth_events_client_ip_idx IS 'Serves recent_auth_events_for_ip: newest first per address.';

-- 3. Partition maintenance.  Dynamic DDL needs PL/pgSQL; the DAL calls these two functions
--    from dal/queries/signin.sql.  Partitions are named auth_events_pYYYYMM (UTC month).
CREATE FUNCTION auth_events_ensure_partitions(months_ahead INTEGER)
    RETURNS SETOF TEXT
    LANGUAGE plpgsql
AS $$
DECLARE
    first_month TIMESTAMP := date_trunc('month', now() AT TIME ZONE 'UTC');
    lo TIMESTAMPTZ;
    hi TIMESTAMPTZ;
    part TEXT;
BEGIN
    FOR i IN 0..months_ahead LOOP
        lo := (first_month + make_interval(months => i)) AT TIME ZONE 'UTC';
        hi := (first_month + make_interval(months => i + 1)) AT TIME ZONE 'UTC';
        part := 'auth_events_p' || to_char(first_month + make_interval(months => i), 'YYYYMM');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        -- Rows of this month that landed in the default partition must leave it first, or
        -- attaching the month would violate the default partition's implicit constraint.
        EXECUTE format('CREATE TABLE %I (LIKE auth_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format(
            'WITH moved AS (DELETE FROM auth_events_default WHERE occurred_at >= %L AND occurred_at < %L RETURNING *) '
            'INSERT INTO %I SELECT * FROM moved', lo, hi, part);
        EXECUTE format('ALTER TABLE auth_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        EXECUTE format('COMMENT ON TABLE %I IS %L', part, 'auth_events of one UTC month');
        RETURN NEXT part;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION auth_events_ensure_partitions(INTEGER) IS
    'Creates the monthly auth_events partitions from the current month to months_ahead; returns the names created.';

CREATE FUNCTION auth_events_drop_partitions_before(cutoff TIMESTAMPTZ)
    RETURNS SETOF TEXT
    LANGUAGE plpgsql
AS $$
DECLARE
    part TEXT;
BEGIN
    FOR part IN
        SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'auth_events'::regclass AND c.relname ~ '^auth_events_p[0-9]{6}$'
          AND (to_date(substr(c.relname, 14), 'YYYYMM')::timestamp + interval '1 month')
              AT TIME ZONE 'UTC' <= cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION auth_events_drop_partitions_before(TIMESTAMPTZ) IS
    'Drops the monthly auth_events partitions that end at or before cutoff; returns their names.';

-- This month and the next two, so inserts land in monthly partitions from the start (DO/PERFORM:
-- yoyo would otherwise print the names).  `defeah-db maintain-events` keeps months ahead.
DO $$ BEGIN PERFORM auth_events_ensure_partitions(2); END $$;
