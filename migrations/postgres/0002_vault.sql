-- The payment-method vault (PostgreSQL). Same version numbers as migrations/sqlite.
-- Card and bank-account numbers exist here only inside `ciphertext` (AES-256-GCM under a per-row
-- data key, itself wrapped by a key-encryption key that lives outside the database). The other
-- columns hold what PCI DSS allows in the clear: brand, last four, expiry, account type.

CREATE TABLE vault_payment_methods (
    token         TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('card', 'bank_account')),
    -- HMAC-SHA256 of the normalised number under the fingerprint key: recognises duplicates.
    fingerprint   BYTEA NOT NULL CHECK (length(fingerprint) = 32),
    kek_version   BIGINT NOT NULL,
    wrapped_dek   BYTEA NOT NULL,
    dek_nonce     BYTEA NOT NULL CHECK (length(dek_nonce) = 12),
    nonce         BYTEA NOT NULL CHECK (length(nonce) = 12),
    ciphertext    BYTEA NOT NULL,
    brand         TEXT,
    last4         TEXT NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month     BIGINT CHECK (exp_month BETWEEN 1 AND 12),
    exp_year      BIGINT,
    account_type  TEXT,
    sec_code      TEXT,
    status        TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'blocked')),
    status_reason TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX vault_payment_methods_fingerprint_idx ON vault_payment_methods (fingerprint);
CREATE INDEX vault_payment_methods_kek_idx ON vault_payment_methods (kek_version);
