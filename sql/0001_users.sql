-- 0001_users: the users table exactly as the original Defeah design specified it
-- (shared/seed-schema.sql, Epic 2 "Database Foundation").
--
-- Reviewer's note: this migration is deliberately a verbatim reproduction of the spec -- every
-- column, type, default, NOT NULL, CHECK name and index name -- so that the catalog after it can
-- be compared with the spec mechanically (tests/test_migrations.py does exactly that).  All
-- improvements live in later migrations, each one commented, so they can be reviewed one by one.
-- gen_random_uuid() is built into PostgreSQL 13+; no extension is needed.

-- squawk: the spec's VARCHAR(n), INTEGER and TIMESTAMP columns are kept verbatim (see above);
-- CREATE TABLE of a new, empty table locks nothing anyone waits on.  0002 converts the timestamps.
-- squawk-ignore-file prefer-text-field, prefer-timestamp-tz, prefer-bigint-over-int
CREATE TABLE users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) UNIQUE NOT NULL,
    hashed_password VARCHAR(255) NOT NULL,
    full_name VARCHAR(255),
    is_active BOOLEAN DEFAULT true NOT NULL,
    is_verified BOOLEAN DEFAULT false NOT NULL,

    -- Instagram integration
    instagram_user_id VARCHAR(100) UNIQUE,
    instagram_access_token TEXT,
    instagram_username VARCHAR(255),
    token_expires_at TIMESTAMP,

    -- User preferences
    timezone VARCHAR(50) DEFAULT 'UTC' NOT NULL,
    language VARCHAR(5) DEFAULT 'en' NOT NULL,

    -- Security tracking
    last_login_at TIMESTAMP,
    login_count INTEGER DEFAULT 0 NOT NULL,
    failed_login_attempts INTEGER DEFAULT 0 NOT NULL,
    locked_until TIMESTAMP,

    -- Timestamps
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,

    -- Constraints
    CONSTRAINT valid_email_format CHECK (email ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$'),
    CONSTRAINT email_min_length CHECK (char_length(email) >= 5),
    CONSTRAINT full_name_min_length CHECK (char_length(full_name) >= 2 OR full_name IS NULL),
    CONSTRAINT non_negative_failed_attempts CHECK (failed_login_attempts >= 0),
    CONSTRAINT non_negative_login_count CHECK (login_count >= 0)
);

-- Indexes, by the spec's names.
CREATE INDEX idx_users_active_verified ON users(is_active, is_verified);
CREATE INDEX idx_users_instagram_info ON users(instagram_user_id, instagram_username);
CREATE INDEX idx_users_created_at ON users(created_at);
CREATE INDEX idx_users_last_login ON users(last_login_at);
