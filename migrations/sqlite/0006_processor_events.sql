-- Processor webhooks and ACH status polling (sqlite). Same version in both trees.
-- Every verified inbound processor notification, once per (processor, event id): a redelivered
-- or replayed notification finds its row and is not acted on again.
CREATE TABLE gateway_processor_events (
    processor     TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    processor_ref TEXT,
    payment_id    TEXT,
    outcome       TEXT NOT NULL,
    event_at      TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    PRIMARY KEY (processor, event_id)
) STRICT;
-- When an ACH debit's status was last asked of the processor (pending and settled debits are
-- polled until their return window closes).
ALTER TABLE gateway_payments ADD COLUMN ach_checked_at TEXT;
CREATE INDEX gateway_payments_ach_idx ON gateway_payments (method_kind, status, ach_checked_at);
