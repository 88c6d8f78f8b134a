-- Idempotency-Key records for the gateway's POST routes (SQLite).
-- The request hash is an HMAC under the vault's fingerprint key, never a plain hash: a body can
-- hold a card number, and PCI DSS 3.5.1.1 wants hashes of a PAN keyed.
CREATE TABLE http_idempotency (
    principal      TEXT NOT NULL,
    idem_key       TEXT NOT NULL,
    route          TEXT NOT NULL,
    request_hash   BLOB NOT NULL CHECK (length(request_hash) = 32),
    state          TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
    response_status INTEGER,
    response_body  TEXT,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (principal, idem_key)
) STRICT;
