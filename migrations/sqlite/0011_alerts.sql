-- Alerts (sqlite): see the postgres file for the comments. Same version in both trees.
CREATE TABLE alert_state (
    rule              TEXT NOT NULL,
    subject           TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    title             TEXT NOT NULL,
    first_seen_ms     INTEGER NOT NULL,
    last_seen_ms      INTEGER NOT NULL,
    notified_ms       INTEGER,
    outcome           TEXT CHECK (outcome IN ('sent', 'suppressed')),
    email_sent_ms     INTEGER,
    salesforce_sent_ms INTEGER,
    claimed_by        TEXT,
    claim_until_ms    INTEGER,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    resolved_ms       INTEGER,
    PRIMARY KEY (rule, subject)
) STRICT;
CREATE INDEX alert_state_firing_idx ON alert_state (rule, status);

CREATE TABLE alert_rate_slots (
    rule     TEXT NOT NULL,
    slot     INTEGER NOT NULL,
    used_ms  INTEGER NOT NULL,
    PRIMARY KEY (rule, slot)
) STRICT;

CREATE TABLE alert_log (
    id        INTEGER PRIMARY KEY,
    rule      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    event     TEXT NOT NULL CHECK (event IN ('sent', 'suppressed', 'failed', 'resolved')),
    detail    TEXT NOT NULL,
    sender    TEXT NOT NULL,
    at_ms     INTEGER NOT NULL
) STRICT;
CREATE INDEX alert_log_rule_idx ON alert_log (rule, at_ms);
