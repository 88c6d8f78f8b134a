-- Reconciliation (postgres). Same version in both trees. Times are epoch milliseconds
-- (`*_at_ms`) so both backends run the same SQL.

-- Imported input rows, append-only. A row is one CSV record in its kind's canonical column
-- order; a later row with the same (kind, natural_key) supersedes it, and an empty row_text
-- closes it (an open item missing from a newer AR snapshot). `seq` is the high-water mark a
-- run records, so a rerun reads exactly the same rows.
CREATE TABLE recon_inputs (
    seq          BIGSERIAL PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('payments', 'invoices', 'settlements', 'rates')),
    natural_key  TEXT NOT NULL,
    entity       TEXT NOT NULL,
    row_date     TEXT NOT NULL,
    row_text     TEXT NOT NULL,
    import_id    BIGINT NOT NULL,
    CHECK (length(natural_key) > 0)
);
CREATE INDEX recon_inputs_key_idx ON recon_inputs (kind, natural_key, seq);
CREATE TRIGGER recon_inputs_append_only BEFORE UPDATE OR DELETE ON recon_inputs FOR EACH ROW EXECUTE FUNCTION cashloop_append_only();

CREATE TABLE recon_imports (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL,
    origin      TEXT NOT NULL,
    rows_read   BIGINT NOT NULL,
    added       BIGINT NOT NULL,
    changed     BIGINT NOT NULL,
    unchanged   BIGINT NOT NULL,
    closed      BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);

-- One run of one period (and entity; '' = all). Only completed runs are stored; a dry run
-- stores nothing.
CREATE TABLE recon_runs (
    id            BIGSERIAL PRIMARY KEY,
    period        TEXT NOT NULL,
    entity        TEXT NOT NULL,
    high_water    BIGINT NOT NULL,
    config        TEXT NOT NULL,
    summary       TEXT NOT NULL,
    digest        TEXT NOT NULL,
    actor         TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL
);
CREATE INDEX recon_runs_period_idx ON recon_runs (period, entity, id);

-- Who is running a period now. Taken by an upsert that only overwrites an expired lease, so
-- it excludes other processes on either backend.
CREATE TABLE recon_leases (
    name          TEXT PRIMARY KEY,
    holder        TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

-- One row per payment, open item and settlement of a run, in the engine's canonical order.
CREATE TABLE recon_results (
    run_id        BIGINT NOT NULL REFERENCES recon_runs (id),
    kind          TEXT NOT NULL CHECK (kind IN ('payment', 'item', 'settlement')),
    ord           BIGINT NOT NULL,
    item_key      TEXT NOT NULL,
    entity        TEXT NOT NULL,
    customer      TEXT NOT NULL,
    currency      TEXT NOT NULL,
    amount_minor  BIGINT NOT NULL,
    category      TEXT NOT NULL,
    rule          TEXT,
    confidence    BIGINT NOT NULL,
    applied_minor BIGINT NOT NULL,
    open_minor    BIGINT NOT NULL,
    fx_difference_minor BIGINT NOT NULL,
    related       TEXT,
    PRIMARY KEY (run_id, kind, ord)
);
CREATE INDEX recon_results_category_idx ON recon_results (run_id, category);

CREATE TABLE recon_applications (
    run_id        BIGINT NOT NULL REFERENCES recon_runs (id),
    ord           BIGINT NOT NULL,
    payment_key   TEXT NOT NULL,
    payment_source TEXT NOT NULL,
    payment_date  TEXT NOT NULL,
    item_key      TEXT NOT NULL,
    document      TEXT NOT NULL,
    rule          TEXT NOT NULL,
    confidence    BIGINT NOT NULL,
    payment_amount_minor BIGINT NOT NULL,
    payment_currency TEXT NOT NULL,
    item_amount_minor BIGINT NOT NULL,
    item_currency TEXT NOT NULL,
    fx_rate       TEXT,
    fx_rate_date  TEXT,
    -- The sync job that applies it in Sage, once queued.
    sage_job_id   BIGINT,
    PRIMARY KEY (run_id, ord)
);

CREATE TABLE recon_suggestions (
    run_id      BIGINT NOT NULL REFERENCES recon_runs (id),
    ord         BIGINT NOT NULL,
    payment_key TEXT NOT NULL,
    item_keys   TEXT NOT NULL,
    sum_minor   BIGINT NOT NULL,
    confidence  BIGINT NOT NULL,
    PRIMARY KEY (run_id, ord)
);

-- Proposed adjusting entries; approving one posts it to the ledger.
CREATE TABLE recon_adjustments (
    run_id        BIGINT NOT NULL REFERENCES recon_runs (id),
    ord           BIGINT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('write_off', 'fx_gain_loss', 'unapplied_cash')),
    payment_key   TEXT,
    item_key      TEXT,
    document      TEXT,
    customer      TEXT NOT NULL,
    amount_minor  BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('proposed', 'approved')),
    ledger_entry_id BIGINT,
    approved_by   TEXT,
    approved_at_ms BIGINT,
    PRIMARY KEY (run_id, ord)
);
