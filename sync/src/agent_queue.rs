//! The command queue of the on-premise agents (`agent_commands`, migration 0012).
//!
//! A Sage 100 installation has no cloud API: an agent on the customer's network dials out,
//! leases the next command addressed to it, executes it against Sage and posts the result.
//! A command is `pending` → `leased` (with `lease_until_ms`) → `done` | `failed`. A lease that
//! expires (the agent died or lost the connection) makes the command available again; the
//! agent's own idempotency record (see `cashloop agent`) answers such a re-delivery without
//! executing it twice. The first result is kept; a result for a finished command is accepted
//! and ignored, so an agent may resend results freely.
//!
//! Every statement is written once with `$n` placeholders (both backends read them) and run
//! through `db::on_pool!`; the lease is one conditional UPDATE, so two pollers never hold the
//! same command.

use db::Db;
use serde::{Deserialize, Serialize};

/// Every command kind an agent understands.
pub const KINDS: [&str; 6] = [
    "upsert_customer",
    "create_sales_order",
    "read_changed_invoices",
    "read_cash_receipts",
    "read_items",
    "import_cash_receipts",
];

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("agent queue storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("there is no command {0} for this agent")]
    NotFound(i64),
    #[error("unknown command kind {0:?}")]
    UnknownKind(String),
    #[error("command data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// A command as delivered to an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    pub idempotency_key: String,
    /// How many times this command has been handed out (1 on the first delivery).
    pub deliveries: i64,
}

/// A command's state as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandState {
    pub id: i64,
    pub agent: String,
    pub kind: String,
    pub status: String,
    pub deliveries: i64,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// What an agent reports for a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done(serde_json::Value),
    Failed(String),
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Queues a command for `agent`. The idempotency key is unique forever: a second enqueue with
/// the same key adds nothing and returns the first command's id.
pub async fn enqueue(
    db: &Db,
    agent: &str,
    kind: &str,
    payload: &serde_json::Value,
    idempotency_key: &str,
) -> Result<i64> {
    if !KINDS.contains(&kind) {
        return Err(QueueError::UnknownKind(kind.to_owned()));
    }
    let payload = payload.to_string();
    let now = now_ms();
    const INSERT: &str = "INSERT INTO agent_commands (agent, kind, payload, idempotency_key, status, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $5) ON CONFLICT (idempotency_key) DO NOTHING";
    const SELECT: &str = "SELECT id FROM agent_commands WHERE idempotency_key = $1";
    let id: i64 = db::on_pool!(db, |c| {
        sqlx::query(INSERT)
            .bind(agent)
            .bind(kind)
            .bind(&payload)
            .bind(idempotency_key)
            .bind(now)
            .execute(c)
            .await?;
        sqlx::query_scalar(SELECT)
            .bind(idempotency_key)
            .fetch_one(c)
            .await?
    });
    Ok(id)
}

/// Leases `agent`'s next available command (pending, or leased with an expired lease) until
/// `now + lease_ms`. `None` when there is nothing to do (or a concurrent poller took it).
pub async fn lease(db: &Db, agent: &str, lease_ms: i64) -> Result<Option<Command>> {
    let now = now_ms();
    const SQL: &str = "UPDATE agent_commands SET status = 'leased', lease_until_ms = $3, \
           deliveries = deliveries + 1, updated_ms = $2 \
         WHERE id = (SELECT id FROM agent_commands WHERE agent = $1 \
             AND (status = 'pending' OR (status = 'leased' AND lease_until_ms < $2)) ORDER BY id LIMIT 1) \
           AND (status = 'pending' OR (status = 'leased' AND lease_until_ms < $2)) \
         RETURNING id, kind, payload, idempotency_key, deliveries";
    type Row = (i64, String, String, String, i64);
    let row: Option<Row> = db::on_pool!(db, |c| sqlx::query_as(SQL)
        .bind(agent)
        .bind(now)
        .bind(now.saturating_add(lease_ms))
        .fetch_optional(c)
        .await)?;
    row.map(|(id, kind, payload, idempotency_key, deliveries)| {
        Ok(Command {
            id,
            kind,
            payload: serde_json::from_str(&payload)
                .map_err(|e| QueueError::Corrupt(format!("command {id} payload: {e}")))?,
            idempotency_key,
            deliveries,
        })
    })
    .transpose()
}

/// Records `agent`'s outcome for command `id`. Returns true when this call finished the
/// command, false when it was already finished (the earlier outcome is kept).
pub async fn finish(db: &Db, agent: &str, id: i64, outcome: &Outcome) -> Result<bool> {
    let now = now_ms();
    let (status, result, error) = match outcome {
        Outcome::Done(v) => ("done", Some(v.to_string()), None),
        Outcome::Failed(e) => ("failed", None, Some(e.as_str())),
    };
    const SQL: &str = "UPDATE agent_commands SET status = $3, result = $4, error = $5, \
           lease_until_ms = NULL, updated_ms = $6 \
         WHERE id = $1 AND agent = $2 AND status IN ('pending', 'leased')";
    let n = db::on_pool!(db, |c| sqlx::query(SQL)
        .bind(id)
        .bind(agent)
        .bind(status)
        .bind(result.as_deref())
        .bind(error)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 1 {
        return Ok(true);
    }
    match get(db, id).await? {
        Some(c) if c.agent == agent => Ok(false),
        _ => Err(QueueError::NotFound(id)),
    }
}

/// One command's stored state.
pub async fn get(db: &Db, id: i64) -> Result<Option<CommandState>> {
    const SQL: &str = "SELECT id, agent, kind, status, deliveries, result, error FROM agent_commands WHERE id = $1";
    type Row = (
        i64,
        String,
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> =
        db::on_pool!(db, |c| sqlx::query_as(SQL).bind(id).fetch_optional(c).await)?;
    row.map(|(id, agent, kind, status, deliveries, result, error)| {
        Ok(CommandState {
            id,
            agent,
            kind,
            status,
            deliveries,
            result: result
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(|e| QueueError::Corrupt(format!("command {id} result: {e}")))?,
            error,
        })
    })
    .transpose()
}

/// The statuses a command goes through.
pub const STATUSES: [&str; 4] = ["pending", "leased", "done", "failed"];

/// A command as an operator sees it (no payload or result: those are the agent's business and
/// can be large).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandSummary {
    pub id: i64,
    pub agent: String,
    pub kind: String,
    pub status: String,
    pub idempotency_key: String,
    pub deliveries: i64,
    /// While leased: until when (epoch ms); after that the command is handed out again.
    pub lease_until_ms: Option<i64>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// The newest commands (at most `limit`), optionally of one agent and one status.
pub async fn list(
    db: &Db,
    agent: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<CommandSummary>> {
    const SQL: &str = "SELECT id, agent, kind, status, idempotency_key, deliveries, lease_until_ms, \
           error, created_ms, updated_ms FROM agent_commands \
         WHERE ($1 IS NULL OR agent = $1) AND ($2 IS NULL OR status = $2) \
         ORDER BY id DESC LIMIT $3";
    type Row = (
        i64,
        String,
        String,
        String,
        String,
        i64,
        Option<i64>,
        Option<String>,
        i64,
        i64,
    );
    let rows: Vec<Row> = db::on_pool!(db, |c| sqlx::query_as(SQL)
        .bind(agent)
        .bind(status)
        .bind(limit)
        .fetch_all(c)
        .await)?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                agent,
                kind,
                status,
                idempotency_key,
                deliveries,
                lease_until_ms,
                error,
                created_ms,
                updated_ms,
            )| {
                CommandSummary {
                    id,
                    agent,
                    kind,
                    status,
                    idempotency_key,
                    deliveries,
                    lease_until_ms,
                    error,
                    created_ms,
                    updated_ms,
                }
            },
        )
        .collect())
}
