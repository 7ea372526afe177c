-- Server administration (dal/db/admin.py): create the target database when missing, and
-- scratch copies for snapshot and rehearsal.

-- name: create_database#
-- The target database (createdb, up) or a scratch one (snapshot, rehearse); {database} is
-- filled in as a quoted identifier by psycopg2.sql (CREATE DATABASE takes no parameters).
CREATE DATABASE {database};

-- name: drop_database#
-- Drops the scratch database again (FORCE: a leftover session must not keep it alive).
DROP DATABASE IF EXISTS {database} WITH (FORCE);

-- name: database_exists
-- Whether the database the DSN names exists yet (createdb / up create it when it does not).
SELECT 1 FROM pg_database WHERE datname = :name;
