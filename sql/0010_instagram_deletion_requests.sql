-- 0010_instagram_deletion_requests: what Meta's two Instagram callbacks leave behind (issue 23).
-- depends: 0009_erasure_receipts
--
-- Purely additive: two new, empty tables.  Nothing on users changes.  Each table's foreign key
-- to users takes SHARE ROW EXCLUSIVE on users for an instant when the table is created (no
-- row is checked: the new table is empty); behind a long transaction it waits at most the
-- lock timeout, then the runner retries.
--
-- Why a request is keyed by a digest of its signature: Meta may deliver the same signed
-- request more than once (and anybody who captured one can replay it within its age limit).
-- The digest makes the second delivery find the first one's row, so it gets the same
-- confirmation code and erases or disconnects nothing again, also when both arrive at once
-- (the unique key serialises them).  Neither table holds the Instagram user id, the username
-- or the payload: only the outcome, the time and, while the account exists, which account it
-- was (ON DELETE SET NULL, so erasing the account also unlinks these rows).

CREATE TABLE instagram_deletion_requests (
    confirmation_code TEXT NOT NULL,
    request_digest BYTEA NOT NULL,
    status TEXT NOT NULL,
    user_id UUID,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT instagram_deletion_requests_pkey PRIMARY KEY (confirmation_code),
    CONSTRAINT instagram_deletion_requests_digest_key UNIQUE (request_digest),
    CONSTRAINT instagram_deletion_requests_user_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT instagram_deletion_requests_status CHECK (status IN ('completed', 'nothing_held')),
    CONSTRAINT instagram_deletion_requests_code_length
        CHECK (length(confirmation_code) BETWEEN 16 AND 64),
    CONSTRAINT instagram_deletion_requests_digest_length CHECK (length(request_digest) = 32)
);

-- Serves the ON DELETE SET NULL of an erased account and a user's export.
CREATE INDEX instagram_deletion_requests_user_idx ON instagram_deletion_requests (user_id)
    WHERE user_id IS NOT NULL;

COMMENT ON TABLE instagram_deletion_requests IS
    'One row per verified data deletion callback from Meta; its confirmation code is the key of the public status page.';
COMMENT ON COLUMN instagram_deletion_requests.confirmation_code IS
    'Random code (base64url, 192 bits) returned to Meta and shown to the person; unguessable.';
COMMENT ON COLUMN instagram_deletion_requests.request_digest IS
    'SHA-256 of the signed request''s signature: the same delivery twice finds this row (same code, erased once).';
COMMENT ON COLUMN instagram_deletion_requests.status IS
    'completed: an account held that Instagram user and its Instagram data were erased; nothing_held: no account did.';
COMMENT ON COLUMN instagram_deletion_requests.user_id IS
    'The account whose Instagram data was erased; NULL when none was, or once the account itself is erased.';
COMMENT ON COLUMN instagram_deletion_requests.received_at IS
    'When the request was received and, in the same transaction, carried out.';
COMMENT ON INDEX instagram_deletion_requests_user_idx IS
    'Serves the foreign key''s ON DELETE SET NULL and a user''s export.';

CREATE TABLE instagram_deauthorizations (
    request_digest BYTEA NOT NULL,
    outcome TEXT NOT NULL,
    user_id UUID,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT instagram_deauthorizations_pkey PRIMARY KEY (request_digest),
    CONSTRAINT instagram_deauthorizations_user_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT instagram_deauthorizations_outcome CHECK (outcome IN ('disconnected', 'not_connected')),
    CONSTRAINT instagram_deauthorizations_digest_length CHECK (length(request_digest) = 32)
);

CREATE INDEX instagram_deauthorizations_user_idx ON instagram_deauthorizations (user_id)
    WHERE user_id IS NOT NULL;

COMMENT ON TABLE instagram_deauthorizations IS
    'One row per verified deauthorize callback from Meta (the person removed the app on Instagram).';
COMMENT ON COLUMN instagram_deauthorizations.request_digest IS
    'SHA-256 of the signed request''s signature: a replay finds this row and disconnects nothing again.';
COMMENT ON COLUMN instagram_deauthorizations.outcome IS
    'disconnected: an account held that Instagram user and was disconnected; not_connected: none did.';
COMMENT ON COLUMN instagram_deauthorizations.user_id IS
    'The account that was disconnected; NULL when none was, or once the account itself is erased.';
COMMENT ON COLUMN instagram_deauthorizations.received_at IS 'When the callback was received and carried out.';
COMMENT ON INDEX instagram_deauthorizations_user_idx IS
    'Serves the foreign key''s ON DELETE SET NULL and a user''s export.';
