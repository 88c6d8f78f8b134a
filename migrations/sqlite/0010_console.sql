-- The operator console's sessions and the hosted payment page's links (sqlite). Same version
-- in both trees. Times are epoch milliseconds so both backends run the same SQL.

-- A console login. The cookie holds a random session id; only its SHA-256 is stored, so a
-- copy of the database does not log anyone in. Deleted at logout; expired rows are pruned.
CREATE TABLE console_sessions (
    id_sha256     TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'finance', 'viewer')),
    csrf_token    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX console_sessions_expiry_idx ON console_sessions (expires_at_ms);

-- A hosted payment page for an Opportunity: `/pay/{id}`, the id random and unguessable. Paid
-- once: `open` → `paying` (a lease while the processor is asked) → `paid`, or back to `open`
-- after a decline.
CREATE TABLE payment_links (
    id              TEXT PRIMARY KEY,
    opportunity_id  TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL,
    invoice_ref     TEXT,
    description     TEXT,
    status          TEXT NOT NULL CHECK (status IN ('open', 'paying', 'paid')),
    claimed_until_ms INTEGER,
    -- Declined or refused payments so far; at MAX the link takes no more (card testing).
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    payment_id      TEXT,
    created_by      TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    paid_at_ms      INTEGER,
    CHECK (status <> 'paid' OR payment_id IS NOT NULL)
) STRICT;
CREATE INDEX payment_links_opportunity_idx ON payment_links (opportunity_id);
