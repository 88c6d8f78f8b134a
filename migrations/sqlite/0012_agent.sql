-- On-premise agent command queue (sqlite): see the postgres file for the comments.
CREATE TABLE agent_commands (
    id               INTEGER PRIMARY KEY,
    agent            TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('upsert_customer', 'create_sales_order',
                         'read_changed_invoices', 'read_cash_receipts', 'read_items',
                         'import_cash_receipts')),
    payload          TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL UNIQUE,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'leased', 'done', 'failed')),
    lease_until_ms   INTEGER,
    deliveries       INTEGER NOT NULL DEFAULT 0,
    result           TEXT,
    error            TEXT,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL
) STRICT;
CREATE INDEX agent_commands_next_idx ON agent_commands (agent, status, id);
