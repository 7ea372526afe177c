-- Meta's Instagram callbacks (deauthorize, data deletion) and the deletion status page: every
-- statement dal/instagram/callbacks.py runs.  Tables from migration 0010.
--
-- Each callback is one short transaction: record the request under its digest first (the
-- unique key makes a second, concurrent delivery of the same signed request wait for the
-- first one's commit and then find its row), and only a request recorded now clears anything.

-- name: record_deauthorization
-- Record a deauthorize callback; no row back when this signed request was recorded before (a
-- replay or a second delivery), which then disconnects nothing.  instagram_deauthorizations_pkey.
INSERT INTO instagram_deauthorizations (request_digest, outcome)
VALUES (:digest, 'not_connected')
ON CONFLICT (request_digest) DO NOTHING
RETURNING request_digest;

-- name: deauthorization_outcome
-- What an earlier delivery of this signed request did (instagram_deauthorizations_pkey).
SELECT outcome FROM instagram_deauthorizations WHERE request_digest = :digest;

-- name: note_deauthorization
-- The outcome of the deauthorization recorded by record_deauthorization in this transaction.
UPDATE instagram_deauthorizations SET outcome = :outcome, user_id = :user_id
WHERE request_digest = :digest
RETURNING outcome;

-- name: record_deletion_request
-- Record a data deletion callback with a fresh confirmation code; no row back when this signed
-- request was recorded before, whose code then stands.  instagram_deletion_requests_digest_key.
INSERT INTO instagram_deletion_requests (confirmation_code, request_digest, status)
VALUES (:code, :digest, 'nothing_held')
ON CONFLICT (request_digest) DO NOTHING
RETURNING confirmation_code, status, received_at;

-- name: deletion_request_by_digest
-- The request an earlier delivery of this signed request recorded
-- (instagram_deletion_requests_digest_key).
SELECT confirmation_code, status, received_at
FROM instagram_deletion_requests WHERE request_digest = :digest;

-- name: note_deletion_request
-- The outcome of the deletion recorded by record_deletion_request in this transaction.
UPDATE instagram_deletion_requests SET status = :status, user_id = :user_id
WHERE request_digest = :digest
RETURNING confirmation_code, status, received_at;

-- name: deletion_request
-- The status page: by confirmation code (instagram_deletion_requests_pkey).  Nothing about the
-- person: no account, no Instagram id.
SELECT confirmation_code, status, received_at
FROM instagram_deletion_requests WHERE confirmation_code = :code;

-- name: clear_instagram_account
-- Erase everything held about one Instagram user: the account that holds it loses the Instagram
-- id, username, token, expiry and refresh bookkeeping; the account itself stays.  At most one
-- row (users_instagram_user_id_key).
UPDATE users SET
    instagram_user_id = NULL,
    instagram_access_token = NULL,
    instagram_username = NULL,
    token_expires_at = NULL,
    token_issued_at = NULL,
    token_refresh_failures = 0,
    token_refresh_error = NULL,
    needs_reauth = false,
    refresh_claimed_until = NULL
WHERE instagram_user_id = :instagram_user_id
RETURNING id;
