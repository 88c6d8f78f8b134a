//! The audit log: who did what, when, with what result — for every mutating call and every
//! vault access, from every crate. Append-only (triggers on both backends); never holds a
//! secret (callers pass descriptions, not payloads).

use chrono::{DateTime, Utc};

use crate::Db;

/// One audit record.
#[derive(Clone, Copy, Debug)]
pub struct AuditRecord<'a> {
    pub at: DateTime<Utc>,
    /// The API key's name, `cli`, or a system actor.
    pub actor: &'a str,
    /// What was done: `vault.reveal`, `POST /v1/payments`, `ledger.period.close`…
    pub action: &'a str,
    /// What it was done to: a token, a payment id, `MAIN/2026-10`…
    pub subject: &'a str,
    /// Result and context (status, source address), never a secret.
    pub detail: &'a str,
}

/// Appends one record inside the caller's transaction (it commits with the work it describes).
pub async fn record_in(tx: &mut crate::DbTx, r: AuditRecord<'_>) -> Result<(), sqlx::Error> {
    match tx {
        crate::DbTx::Postgres(t) => {
            sqlx::query("INSERT INTO audit_log (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)")
                .bind(r.at)
                .bind(r.actor)
                .bind(r.action)
                .bind(r.subject)
                .bind(r.detail)
                .execute(&mut **t)
                .await?;
        }
        crate::DbTx::Sqlite(t) => {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(crate::sqlite_ts(r.at))
            .bind(r.actor)
            .bind(r.action)
            .bind(r.subject)
            .bind(r.detail)
            .execute(&mut **t)
            .await?;
        }
    }
    Ok(())
}

/// Appends one record.
pub async fn record(db: &Db, r: AuditRecord<'_>) -> Result<(), sqlx::Error> {
    match db {
        Db::Postgres(p) => {
            sqlx::query("INSERT INTO audit_log (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)")
                .bind(r.at)
                .bind(r.actor)
                .bind(r.action)
                .bind(r.subject)
                .bind(r.detail)
                .execute(p)
                .await?;
        }
        Db::Sqlite(s) => {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(crate::sqlite_ts(r.at))
            .bind(r.actor)
            .bind(r.action)
            .bind(r.subject)
            .bind(r.detail)
            .execute(&s.pool)
            .await?;
        }
    }
    Ok(())
}
