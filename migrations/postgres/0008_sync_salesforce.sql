-- Salesforce flows (postgres). Same version in both trees.
-- The last pulled state of each Salesforce record cashloop follows (a mirror: what changed,
-- who changed it, whether it is deleted). Written with the cursor in one transaction.
CREATE TABLE sync_sf_records (
    object           TEXT NOT NULL,
    id               TEXT NOT NULL,
    fields           TEXT NOT NULL,
    modified_at      TIMESTAMPTZ NOT NULL,
    last_modified_by TEXT,
    is_deleted       BOOLEAN NOT NULL,
    pulled_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (object, id)
);

-- Records to write to Salesforce, upserted by external id. One row per target record: a newer
-- change replaces a pending one (version moves on), so a push never sends stale values and a
-- push interrupted half-way sends the rest again — harmless, upserts do not duplicate.
CREATE TABLE sync_sf_outbox (
    id                BIGSERIAL PRIMARY KEY,
    object            TEXT NOT NULL,
    external_id_field TEXT NOT NULL,
    external_id       TEXT NOT NULL,
    fields            TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed', 'review')),
    version           BIGINT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    salesforce_id     TEXT,
    last_error        TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    CONSTRAINT sync_sf_outbox_target UNIQUE (object, external_id_field, external_id)
);
CREATE INDEX sync_sf_outbox_pending_idx ON sync_sf_outbox (object, status, id);
