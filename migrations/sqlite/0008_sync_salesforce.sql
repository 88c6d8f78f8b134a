-- Salesforce flows (sqlite). Same version in both trees; see the postgres file for comments.
CREATE TABLE sync_sf_records (
    object           TEXT NOT NULL,
    id               TEXT NOT NULL,
    fields           TEXT NOT NULL,
    modified_at      TEXT NOT NULL,
    last_modified_by TEXT,
    is_deleted       INTEGER NOT NULL,
    pulled_at        TEXT NOT NULL,
    PRIMARY KEY (object, id)
) STRICT;

CREATE TABLE sync_sf_outbox (
    id                INTEGER PRIMARY KEY,
    object            TEXT NOT NULL,
    external_id_field TEXT NOT NULL,
    external_id       TEXT NOT NULL,
    fields            TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed', 'review')),
    version           INTEGER NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    salesforce_id     TEXT,
    last_error        TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    CONSTRAINT sync_sf_outbox_target UNIQUE (object, external_id_field, external_id)
) STRICT;
CREATE INDEX sync_sf_outbox_pending_idx ON sync_sf_outbox (object, status, id);
