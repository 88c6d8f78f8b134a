-- Sync engine (sqlite): the durable job queue, per-object cursors, the ID cross-reference and
-- the review queue. Same version in both trees; see the postgres file for the comments.
CREATE TABLE sync_jobs (
    id             INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL,
    payload        TEXT NOT NULL,
    dedupe_key     TEXT UNIQUE,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'dead', 'resolved')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL CHECK (max_attempts > 0),
    run_at         TEXT NOT NULL,
    lease          TEXT,
    locked_by      TEXT,
    locked_until   TEXT,
    last_error     TEXT,
    last_error_kind TEXT,
    resolution     TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    finished_at    TEXT
) STRICT;
CREATE INDEX sync_jobs_due_idx ON sync_jobs (status, run_at);
CREATE INDEX sync_jobs_lease_idx ON sync_jobs (status, locked_until);

CREATE TABLE sync_job_attempts (
    job_id      INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (job_id, attempt)
) STRICT;
CREATE TRIGGER sync_job_attempts_no_update BEFORE UPDATE ON sync_job_attempts
BEGIN SELECT RAISE(ABORT, 'sync_job_attempts is append-only'); END;
CREATE TRIGGER sync_job_attempts_no_delete BEFORE DELETE ON sync_job_attempts
BEGIN SELECT RAISE(ABORT, 'sync_job_attempts is append-only'); END;

CREATE TABLE sync_cursors (
    system      TEXT NOT NULL,
    object      TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    last_id     TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (system, object)
) STRICT;

CREATE TABLE sync_xref (
    object        TEXT NOT NULL,
    salesforce_id TEXT NOT NULL,
    sage_system   TEXT NOT NULL,
    sage_entity   TEXT NOT NULL,
    sage_id       TEXT NOT NULL,
    last_values   TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (object, salesforce_id, sage_system),
    CONSTRAINT sync_xref_sage_key UNIQUE (sage_system, object, sage_entity, sage_id)
) STRICT;

CREATE TABLE sync_review (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('conflict', 'multiple_match', 'other')),
    object      TEXT NOT NULL,
    record_key  TEXT NOT NULL,
    detail      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution  TEXT,
    resolved_by TEXT,
    created_at  TEXT NOT NULL,
    resolved_at TEXT
) STRICT;
CREATE INDEX sync_review_open_idx ON sync_review (status, created_at);
