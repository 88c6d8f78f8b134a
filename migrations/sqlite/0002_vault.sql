-- The payment-method vault (SQLite). Same version numbers as migrations/postgres.
-- Card and bank-account numbers exist here only inside `ciphertext` (AES-256-GCM under a per-row
-- data key, itself wrapped by a key-encryption key that lives outside the database). The other
-- columns hold what PCI DSS allows in the clear: brand, last four, expiry, account type.

CREATE TABLE vault_payment_methods (
    token         TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('card', 'bank_account')),
    fingerprint   BLOB NOT NULL CHECK (length(fingerprint) = 32),
    kek_version   INTEGER NOT NULL,
    wrapped_dek   BLOB NOT NULL,
    dek_nonce     BLOB NOT NULL CHECK (length(dek_nonce) = 12),
    nonce         BLOB NOT NULL CHECK (length(nonce) = 12),
    ciphertext    BLOB NOT NULL,
    brand         TEXT,
    last4         TEXT NOT NULL CHECK (length(last4) = 4 AND last4 NOT GLOB '*[^0-9]*'),
    exp_month     INTEGER CHECK (exp_month BETWEEN 1 AND 12),
    exp_year      INTEGER,
    account_type  TEXT,
    sec_code      TEXT,
    status        TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'blocked')),
    status_reason TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;
CREATE INDEX vault_payment_methods_fingerprint_idx ON vault_payment_methods (fingerprint);
CREATE INDEX vault_payment_methods_kek_idx ON vault_payment_methods (kek_version);
