//! The BusinessWorks agent's local record (`--state FILE`, SQLite): the idempotency record
//! (the same `agent_records` table as the Sage 100 agent) and the row hashes that stand in
//! for modification timestamps BusinessWorks' tables do not reliably have.
//!
//! A read's new hashes are written in the same transaction as its command's result, so a
//! re-delivered read is answered with the same rows from the record, and a crash before that
//! transaction leaves the old hashes: the rows are reported again (at least once, never lost).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

pub use crate::sage100::agent::Record;
use crate::sage100::agent::{StateStore, put_record};

/// One row's fingerprint: SHA-256 (hex) of its canonical text, keyed by object and key.
#[derive(Clone, Debug, PartialEq)]
pub struct RowHash {
    pub object: String,
    pub key: String,
    pub hash: String,
}

#[derive(Clone, Debug)]
pub struct BwState {
    record: StateStore,
}

impl BwState {
    pub async fn open(path: &Path) -> Result<BwState, sqlx::Error> {
        let record = StateStore::open(path).await?;
        let pool = record.pool();
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS row_hashes (
                object TEXT NOT NULL,
                key TEXT NOT NULL,
                hash TEXT NOT NULL,
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (object, key)
            ) STRICT",
        )
        .execute(pool)
        .await?;
        Ok(BwState { record })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Record>, sqlx::Error> {
        self.record.get(key).await
    }

    /// Records that `document_no` was taken for `key` (and, in `detail`, the import file
    /// written for it) before the file is written.
    pub async fn put_pending(
        &self,
        key: &str,
        kind: &str,
        document_no: &str,
        detail: &Value,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.record.pool().begin().await?;
        put_record(
            &mut tx,
            key,
            kind,
            "pending",
            Some(document_no),
            Some(detail),
        )
        .await?;
        tx.commit().await
    }

    /// Records `key`'s result and the rows' new hashes in one transaction.
    pub async fn finish(
        &self,
        key: &str,
        kind: &str,
        document_no: Option<&str>,
        result: &Value,
        hashes: &[RowHash],
    ) -> Result<(), sqlx::Error> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut tx = self.record.pool().begin().await?;
        for h in hashes {
            sqlx::query(
                "INSERT INTO row_hashes (object, key, hash, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (object, key) DO UPDATE SET hash = excluded.hash, updated_ms = excluded.updated_ms",
            )
            .bind(&h.object)
            .bind(&h.key)
            .bind(&h.hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        put_record(&mut tx, key, kind, "done", document_no, Some(result)).await?;
        tx.commit().await
    }

    /// The recorded hashes of `object`, by key.
    pub async fn hashes(&self, object: &str) -> Result<HashMap<String, String>, sqlx::Error> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT key, hash FROM row_hashes WHERE object = ?1")
                .bind(object)
                .fetch_all(self.record.pool())
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Document numbers taken for `kind` and not yet confirmed (so a new number skips them).
    pub async fn pending_documents(&self, kind: &str) -> Result<Vec<String>, sqlx::Error> {
        let rows: Vec<(Option<String>,)> = sqlx::query_as(
            "SELECT document_no FROM agent_records WHERE kind = ?1 AND status = 'pending'",
        )
        .bind(kind)
        .fetch_all(self.record.pool())
        .await?;
        Ok(rows.into_iter().filter_map(|r| r.0).collect())
    }
}
