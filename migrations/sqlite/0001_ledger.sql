-- Double-entry ledger (SQLite). Same version numbers as migrations/postgres.
-- STRICT tables: an INTEGER column refuses a REAL, so an overflowing sum can never turn into a float.
-- Dates are ISO-8601 TEXT; hashes are 32-byte BLOBs. Journal tables are append-only (triggers below).

CREATE TABLE ledger_accounts (
    id                 INTEGER PRIMARY KEY,
    entity             TEXT NOT NULL,
    code               TEXT NOT NULL,
    name               TEXT NOT NULL,
    account_type       TEXT NOT NULL
        CHECK (account_type IN ('asset', 'liability', 'equity', 'revenue', 'expense')),
    normal_balance     TEXT NOT NULL CHECK (normal_balance IN ('debit', 'credit')),
    currency           TEXT NOT NULL CHECK (length(currency) = 3 AND currency = upper(currency)),
    customer_subledger INTEGER NOT NULL DEFAULT 0 CHECK (customer_subledger IN (0, 1)),
    created_at         TEXT NOT NULL,
    CONSTRAINT ledger_accounts_entity_code_key UNIQUE (entity, code)
) STRICT;

CREATE TABLE ledger_entries (
    id                INTEGER PRIMARY KEY,
    entity            TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    request_hash      BLOB NOT NULL CHECK (length(request_hash) = 32),
    effective_date    TEXT NOT NULL,
    recorded_at       TEXT NOT NULL,
    source            TEXT NOT NULL,
    external_ref      TEXT,
    memo              TEXT,
    reverses_entry_id INTEGER REFERENCES ledger_entries (id),
    CONSTRAINT ledger_entries_idempotency_key_key UNIQUE (idempotency_key)
) STRICT;
CREATE UNIQUE INDEX ledger_entries_reverses_key ON ledger_entries (reverses_entry_id)
    WHERE reverses_entry_id IS NOT NULL;
CREATE INDEX ledger_entries_effective_idx ON ledger_entries (effective_date, id);

CREATE TABLE ledger_postings (
    entry_id     INTEGER NOT NULL,
    line         INTEGER NOT NULL CHECK (line >= 1),
    account_id   INTEGER NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('D', 'C')),
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    currency     TEXT NOT NULL,
    customer_id  TEXT,
    document_ref TEXT,
    memo         TEXT,
    PRIMARY KEY (entry_id, line)
) STRICT, WITHOUT ROWID;
CREATE INDEX ledger_postings_account_idx ON ledger_postings (account_id, entry_id);
CREATE INDEX ledger_postings_customer_idx ON ledger_postings (customer_id, document_ref)
    WHERE customer_id IS NOT NULL;

CREATE TABLE ledger_balances (
    account_id   INTEGER NOT NULL,
    day          TEXT NOT NULL,
    debit_minor  INTEGER NOT NULL CHECK (debit_minor >= 0),
    credit_minor INTEGER NOT NULL CHECK (credit_minor >= 0),
    PRIMARY KEY (account_id, day)
) STRICT, WITHOUT ROWID;

CREATE TABLE ledger_unsealed (
    entry_id INTEGER PRIMARY KEY
) STRICT;

CREATE TABLE ledger_chain (
    seq       INTEGER PRIMARY KEY CHECK (seq >= 1),
    entry_id  INTEGER NOT NULL REFERENCES ledger_entries (id),
    prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash      BLOB NOT NULL CHECK (length(hash) = 32),
    sealed_at TEXT NOT NULL,
    CONSTRAINT ledger_chain_entry_key UNIQUE (entry_id)
) STRICT;

CREATE TABLE ledger_periods (
    entity     TEXT NOT NULL,
    period     TEXT NOT NULL CHECK (period GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]'),
    status     TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    changed_at TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    PRIMARY KEY (entity, period)
) STRICT;

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL
) STRICT;

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'table ledger_entries is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'table ledger_entries is append-only: DELETE is not allowed'); END;
CREATE TRIGGER ledger_postings_no_update BEFORE UPDATE ON ledger_postings
BEGIN SELECT RAISE(ABORT, 'table ledger_postings is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER ledger_postings_no_delete BEFORE DELETE ON ledger_postings
BEGIN SELECT RAISE(ABORT, 'table ledger_postings is append-only: DELETE is not allowed'); END;
CREATE TRIGGER ledger_chain_no_update BEFORE UPDATE ON ledger_chain
BEGIN SELECT RAISE(ABORT, 'table ledger_chain is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER ledger_chain_no_delete BEFORE DELETE ON ledger_chain
BEGIN SELECT RAISE(ABORT, 'table ledger_chain is append-only: DELETE is not allowed'); END;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'table audit_log is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'table audit_log is append-only: DELETE is not allowed'); END;
