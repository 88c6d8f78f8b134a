-- Payments (postgres). Same version numbers in both trees.
-- A payment row changes state (optimistic version check); its history is the append-only
-- gateway_payment_events table, and every money movement is also a ledger entry written in
-- the same transaction as the state change.

CREATE TABLE gateway_payments (
    id               TEXT PRIMARY KEY,
    token            TEXT NOT NULL,
    method_kind      TEXT NOT NULL CHECK (method_kind IN ('card', 'bank_account')),
    amount_minor     BIGINT NOT NULL CHECK (amount_minor > 0),
    currency         TEXT NOT NULL,
    status           TEXT NOT NULL,
    authorized_minor BIGINT NOT NULL,
    captured_minor   BIGINT NOT NULL,
    refunded_minor   BIGINT NOT NULL,
    capture_requested BIGINT NOT NULL,
    representments   BIGINT NOT NULL,
    processor        TEXT NOT NULL,
    processor_ref    TEXT,
    failure_code     TEXT,
    failure_message  TEXT,
    entity           TEXT NOT NULL,
    opportunity_id   TEXT,
    account_id       TEXT,
    invoice_refs     TEXT NOT NULL,
    metadata         TEXT NOT NULL,
    version          BIGINT NOT NULL,
    -- Set while one operation (capture, refund…) is at the processor; see Payments::claim.
    claimed_until    TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CHECK (0 <= refunded_minor AND refunded_minor <= captured_minor AND captured_minor <= authorized_minor AND authorized_minor <= amount_minor)
);
CREATE INDEX gateway_payments_opportunity_idx ON gateway_payments (opportunity_id);
CREATE INDEX gateway_payments_status_idx ON gateway_payments (status);

CREATE TABLE gateway_payment_events (
    payment_id    TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    amount_minor  BIGINT,
    status        TEXT NOT NULL,
    processor_ref TEXT,
    detail        TEXT,
    ledger_entry_id BIGINT,
    at            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (payment_id, seq)
);
CREATE TRIGGER gateway_payment_events_append_only BEFORE UPDATE OR DELETE ON gateway_payment_events FOR EACH ROW EXECUTE FUNCTION cashloop_append_only();
