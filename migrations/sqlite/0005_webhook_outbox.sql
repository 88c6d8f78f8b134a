-- Outbound webhooks (sqlite): one row per (subscriber, event), written in the same transaction as
-- the change it announces, delivered and retried by a worker. Same version in both trees.
CREATE TABLE webhook_outbox (
    id              INTEGER PRIMARY KEY,
    subscriber      TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT,
    CONSTRAINT webhook_outbox_event_key UNIQUE (subscriber, event_id)
) STRICT;
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (status, next_attempt_at);
