-- 0001_users: the three development accounts every checkout starts with.
--
-- Run it with psql:   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f seeds/0001_users.sql
-- or with the CLI:    defeah-db seed        (runs every seeds/*.sql file, in name order)
--
-- DEVELOPMENT PASSWORDS (documented on purpose; never load this file into production --
-- `defeah-db seed` refuses to when DEFEAH_ENV=production or the database is marked production):
--
--   email               password           what the account is for
--   admin@defeah.com    defeah-admin-dev   verified staff account, long sign-in history
--   demo@defeah.com     defeah-demo-dev    Instagram connected, token valid for 60 more days
--   test@defeah.com     defeah-test-dev    Instagram connected, token EXPIRED 3 days ago
--
-- The hashes are bcrypt $2b$ at cost 12 (the production default, so sign-in timing in
-- development is realistic), made once with Python's bcrypt.hashpw -- pgcrypto's crypt() cannot
-- produce $2b$ and is not available on the embedded server.  (The DAL re-hashes a password at
-- sign-in when its cost differs from DEFEAH_BCRYPT_ROUNDS; that changes the hash, not the password.)
--
-- Idempotent: a user whose email is already present (compared case-insensitively, the unique
-- index users_email_lower_key) is left untouched, so a second run inserts nothing and does not
-- move updated_at.  Times are relative to now(), so the demo token is always in the future and
-- the test token always in the past, whenever the file is run.
--
-- Idempotent under concurrency too (`up` seeds on every start, so replicas starting together
-- run this file at the same moment).  ON CONFLICT can name only one arbiter, and email has two
-- unique indexes: two concurrent runs both inserting 'demo@defeah.com' collide on
-- users_email_key, which the lower(email) arbiter does not cover, and one run fails.  Leaving
-- the target out would cover it but also silence a real clash on instagram_user_id.  So the
-- transaction first takes a transaction-scoped advisory lock (released by COMMIT/ROLLBACK,
-- nothing to clean up after a crash): seed runs queue behind one another, and each INSERT
-- starts after the previous run committed, sees its rows and does nothing.  The key is an
-- arbitrary constant used only by the seeds (dal/seeding.py SEED_LOCK_KEY, same number).
--
-- The Instagram ids and tokens are invented; they work against no Instagram API.
-- `defeah-db clear` removes exactly these three emails (dal/seeding.py SEED_EMAILS), nothing else.

BEGIN;

SELECT pg_advisory_xact_lock(4733620119);

INSERT INTO users (
    email, hashed_password, full_name, is_active, is_verified,
    instagram_user_id, instagram_access_token, instagram_username, token_expires_at,
    timezone, language,
    last_login_at, login_count, failed_login_attempts, locked_until,
    created_at
)
VALUES
    (
        'admin@defeah.com',
        '$2b$12$yOCSMid1JJ/oGZV8e/xM2eO3.l/rreCYS9lzxtTicI5gubmZoiYyy',
        'Nadia Okafor', true, true,
        NULL, NULL, NULL, NULL,
        'Europe/London', 'en',
        now() - interval '3 hours', 214, 0, NULL,
        now() - interval '540 days'
    ),
    (
        'demo@defeah.com',
        '$2b$12$y88MjL1prhM.dzLQJ4GTmunctNtSl7Ip0yNfXTYD9aDmKl/FEBCRq',
        'Lucas Ferreira', true, true,
        '17841400000000101', 'IGQWRdev-seed-demo-token-not-valid-on-instagram', 'lucas.ferreira.studio',
        now() + interval '60 days',
        'America/Sao_Paulo', 'pt-BR',
        now() - interval '2 days', 37, 0, NULL,
        now() - interval '120 days'
    ),
    (
        'test@defeah.com',
        '$2b$12$VGdjE/rWVjJKR9gz12mKae/NNub0AC1RymZz/el19J7vb/8B7SyNK',
        'Mei Tanaka', true, true,
        '17841400000000202', 'IGQWRdev-seed-test-token-expired', 'mei.tanaka.photo',
        now() - interval '3 days',
        'Asia/Tokyo', 'ja',
        now() - interval '9 days', 4, 0, NULL,
        now() - interval '30 days'
    )
ON CONFLICT ((lower(email))) DO NOTHING;

COMMIT;
