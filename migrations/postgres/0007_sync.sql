-- Sync engine (postgres): the durable job queue, per-object cursors, the ID cross-reference and
-- the review queue. Same version in both trees.

-- One row per job. status: pending → running → succeeded | pending (retry) | dead (the error
-- queue); an operator moves dead → pending (retry) or → resolved. A claim sets a random lease
-- token: only its holder can finish the job, and an expired lease lets another worker take it.
CREATE TABLE sync_jobs (
    id             BIGSERIAL PRIMARY KEY,
    kind           TEXT NOT NULL,
    payload        TEXT NOT NULL,
    -- Unique forever: a replayed event or a second enqueue of the same work adds nothing.
    dedupe_key     TEXT UNIQUE,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'dead', 'resolved')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL CHECK (max_attempts > 0),
    run_at         TIMESTAMPTZ NOT NULL,
    lease          TEXT,
    locked_by      TEXT,
    locked_until   TIMESTAMPTZ,
    last_error     TEXT,
    -- 'retryable' or 'permanent' for the last failure.
    last_error_kind TEXT,
    resolution     TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ
);
CREATE INDEX sync_jobs_due_idx ON sync_jobs (status, run_at);
CREATE INDEX sync_jobs_lease_idx ON sync_jobs (status, locked_until);

-- Every attempt, for the operator's view of what went wrong (append-only).
CREATE TABLE sync_job_attempts (
    job_id      BIGINT NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (job_id, attempt)
);
CREATE TRIGGER sync_job_attempts_append_only BEFORE UPDATE OR DELETE ON sync_job_attempts FOR EACH ROW EXECUTE FUNCTION cashloop_append_only();

-- Change capture position per (system, object): the last (modified timestamp, id) whose
-- changes are committed. Moves only forward.
CREATE TABLE sync_cursors (
    system      TEXT NOT NULL,
    object      TEXT NOT NULL,
    modified_at TIMESTAMPTZ NOT NULL,
    last_id     TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (system, object)
);

-- Which Sage record a Salesforce record is, per Sage system and entity.
CREATE TABLE sync_xref (
    object        TEXT NOT NULL,
    salesforce_id TEXT NOT NULL,
    sage_system   TEXT NOT NULL,
    sage_entity   TEXT NOT NULL,
    sage_id       TEXT NOT NULL,
    -- The field values last written or read in sync, for echo suppression and conflicts.
    last_values   TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (object, salesforce_id, sage_system),
    CONSTRAINT sync_xref_sage_key UNIQUE (sage_system, object, sage_entity, sage_id)
);

-- Things a person must decide: conflicts (both sides changed an owned field), ambiguous
-- matches (an upsert matched several records). Never picked automatically.
CREATE TABLE sync_review (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('conflict', 'multiple_match', 'other')),
    object      TEXT NOT NULL,
    record_key  TEXT NOT NULL,
    detail      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution  TEXT,
    resolved_by TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ
);
CREATE INDEX sync_review_open_idx ON sync_review (status, created_at);
