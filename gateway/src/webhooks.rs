//! Outbound webhooks: payment events for subscribers (Salesforce, or any URL), from an outbox.
//!
//! An event is written to `webhook_outbox` in the same transaction as the change it announces
//! (so none is lost and none is sent for a change that rolled back); a worker delivers due rows
//! and retries failures with capped exponential backoff and jitter. Each request is signed:
//! `Cashloop-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">` under the
//! subscriber's secret — the receiver recomputes it and rejects old timestamps.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use db::{Db, DbTx};
use serde::Serialize;

use crate::crypto::FingerprintKey;

/// Deliveries attempted before an event is marked failed.
pub const MAX_ATTEMPTS: i64 = 10;
/// Longest wait between two attempts.
pub const MAX_BACKOFF_S: i64 = 3600;
/// Rows claimed per worker pass; a claim is a lease so a crashed worker's rows come back.
pub const DELIVERY_BATCH: i64 = 50;
const CLAIM_LEASE_S: i64 = 120;
/// Timeout of one delivery request.
pub const DELIVERY_TIMEOUT_MS: u64 = 10_000;

/// A configured subscriber.
#[derive(Clone, Debug)]
pub struct Subscriber {
    pub name: String,
    pub url: String,
    pub secret: Arc<FingerprintKey>,
}

/// One delivery row, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub subscriber: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// The `Cashloop-Signature` header value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &FingerprintKey, t: i64, body: &[u8]) -> String {
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!("t={t},v1={}", hex::encode(secret.fingerprint(&signed)))
}

/// Checks a `Cashloop-Signature` header: right MAC, timestamp within `tolerance_s` of `now`.
pub fn verify(
    secret: &FingerprintKey,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > tolerance_s {
        return false;
    }
    let expected = signature(secret, t, body);
    let want = expected
        .rsplit("v1=")
        .next()
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_default();
    crate::crypto::ct_eq(&want, &v1)
}

use db::sqlite_ts as ts;

/// Capped exponential backoff with jitter: 2^attempts seconds (≤ 1 h), ±25%.
fn backoff_s(attempts: i64) -> i64 {
    let base = 1i64 << attempts.clamp(0, 12);
    let base = base.min(MAX_BACKOFF_S);
    let jitter = i64::try_from(
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), attempts)
            % 1000,
    )
    .unwrap_or(0);
    (base * (750 + jitter / 2) / 1000).max(1)
}

/// The outbox and its subscribers.
#[derive(Clone, Debug)]
pub struct Outbox {
    db: Db,
    subscribers: Arc<Vec<Subscriber>>,
    http: reqwest::Client,
}

impl Outbox {
    pub fn new(db: Db, subscribers: Vec<Subscriber>) -> Result<Outbox, reqwest::Error> {
        let http = crate::http::client_builder()
            .timeout(Duration::from_millis(DELIVERY_TIMEOUT_MS))
            .build()?;
        Ok(Outbox {
            db,
            subscribers: Arc::new(subscribers),
            http,
        })
    }

    /// Queues `payload` for every subscriber, inside the caller's transaction. Idempotent per
    /// (subscriber, `event_id`).
    pub async fn enqueue_in(
        &self,
        tx: &mut DbTx,
        event_type: &str,
        event_id: &str,
        payload: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let body = serde_json::json!({"id": event_id, "type": event_type, "created": now.timestamp(), "data": payload}).to_string();
        for s in self.subscribers.iter() {
            match tx {
                DbTx::Postgres(t) => {
                    sqlx::query(
                        "INSERT INTO webhook_outbox (subscriber, event_id, event_type, payload, status, attempts, next_attempt_at, created_at)
                         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(&s.name)
                    .bind(event_id)
                    .bind(event_type)
                    .bind(&body)
                    .bind(now)
                    .execute(&mut **t)
                    .await?;
                }
                DbTx::Sqlite(t) => {
                    sqlx::query(
                        "INSERT INTO webhook_outbox (subscriber, event_id, event_type, payload, status, attempts, next_attempt_at, created_at)
                         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5) ON CONFLICT DO NOTHING",
                    )
                    .bind(&s.name)
                    .bind(event_id)
                    .bind(event_type)
                    .bind(&body)
                    .bind(ts(now))
                    .execute(&mut **t)
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Claims due rows (a lease, so two workers never send the same row at once).
    async fn claim(&self, now: DateTime<Utc>) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
        let lease = now + chrono::Duration::seconds(CLAIM_LEASE_S);
        match &self.db {
            Db::Postgres(p) => {
                sqlx::query_as(
                    "UPDATE webhook_outbox SET next_attempt_at = $1 WHERE id IN (
                        SELECT id FROM webhook_outbox WHERE status = 'pending' AND next_attempt_at <= $2
                        ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING id, subscriber, payload",
                )
                .bind(lease)
                .bind(now)
                .bind(DELIVERY_BATCH)
                .fetch_all(p)
                .await
            }
            Db::Sqlite(s) => {
                sqlx::query_as(
                    "UPDATE webhook_outbox SET next_attempt_at = ?1 WHERE id IN (
                        SELECT id FROM webhook_outbox WHERE status = 'pending' AND next_attempt_at <= ?2
                        ORDER BY next_attempt_at LIMIT ?3)
                     RETURNING id, subscriber, payload",
                )
                .bind(ts(lease))
                .bind(ts(now))
                .bind(DELIVERY_BATCH)
                .fetch_all(&s.pool)
                .await
            }
        }
    }

    /// Sends every due row once; returns (delivered, failed attempts).
    pub async fn deliver_due(&self, now: DateTime<Utc>) -> Result<(u64, u64), sqlx::Error> {
        let rows = self.claim(now).await?;
        let (mut ok, mut bad) = (0, 0);
        for (id, subscriber, payload) in rows {
            let Some(sub) = self.subscribers.iter().find(|s| s.name == subscriber) else {
                self.record(id, None, Some("subscriber no longer configured"), now, true)
                    .await?;
                bad += 1;
                continue;
            };
            let sig = signature(&sub.secret, Utc::now().timestamp(), payload.as_bytes());
            let sent = self
                .http
                .post(&sub.url)
                .header("content-type", "application/json")
                .header("cashloop-signature", sig)
                .body(payload)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    self.record(id, Some(i64::from(r.status().as_u16())), None, now, false)
                        .await?;
                    ok += 1;
                }
                Ok(r) => {
                    let status = i64::from(r.status().as_u16());
                    self.record(
                        id,
                        Some(status),
                        Some(&format!("HTTP {status}")),
                        now,
                        false,
                    )
                    .await?;
                    bad += 1;
                }
                Err(e) => {
                    // The error names the URL at most, never the payload.
                    let why = if e.is_timeout() {
                        "timed out".to_owned()
                    } else {
                        format!("{e}")
                    };
                    self.record(id, None, Some(&why), now, false).await?;
                    bad += 1;
                }
            }
        }
        Ok((ok, bad))
    }

    /// Stores the outcome of one attempt: delivered, or retried later, or failed for good.
    async fn record(
        &self,
        id: i64,
        status: Option<i64>,
        error: Option<&str>,
        now: DateTime<Utc>,
        give_up: bool,
    ) -> Result<(), sqlx::Error> {
        let delivered = error.is_none();
        let sql_pg = "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = $2, last_error = $3,
                status = CASE WHEN $4 THEN 'delivered' WHEN $5 OR attempts + 1 >= $6 THEN 'failed' ELSE 'pending' END,
                delivered_at = CASE WHEN $4 THEN $7 ELSE NULL END,
                next_attempt_at = $8
             WHERE id = $1";
        let sql_sqlite = "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = ?2, last_error = ?3,
                status = CASE WHEN ?4 THEN 'delivered' WHEN ?5 OR attempts + 1 >= ?6 THEN 'failed' ELSE 'pending' END,
                delivered_at = CASE WHEN ?4 THEN ?7 ELSE NULL END,
                next_attempt_at = ?8
             WHERE id = ?1";
        let attempts: i64 = match &self.db {
            Db::Postgres(p) => {
                sqlx::query_scalar("SELECT attempts FROM webhook_outbox WHERE id = $1")
                    .bind(id)
                    .fetch_one(p)
                    .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_scalar("SELECT attempts FROM webhook_outbox WHERE id = ?")
                    .bind(id)
                    .fetch_one(&s.pool)
                    .await?
            }
        };
        let next = now + chrono::Duration::seconds(backoff_s(attempts + 1));
        match &self.db {
            Db::Postgres(p) => {
                sqlx::query(sql_pg)
                    .bind(id)
                    .bind(status)
                    .bind(error)
                    .bind(delivered)
                    .bind(give_up)
                    .bind(MAX_ATTEMPTS)
                    .bind(now)
                    .bind(next)
                    .execute(p)
                    .await?;
            }
            Db::Sqlite(s) => {
                sqlx::query(sql_sqlite)
                    .bind(id)
                    .bind(status)
                    .bind(error)
                    .bind(delivered)
                    .bind(give_up)
                    .bind(MAX_ATTEMPTS)
                    .bind(ts(now))
                    .bind(ts(next))
                    .execute(&s.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Deliveries, newest first, optionally of one status.
    pub async fn deliveries(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Delivery>, sqlx::Error> {
        const COLS: &str =
            "id, subscriber, event_id, event_type, status, attempts, last_status, last_error";
        match &self.db {
            Db::Postgres(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLS} FROM webhook_outbox WHERE ($1::text IS NULL OR status = $1) ORDER BY id DESC LIMIT $2"
                )))
                .bind(status)
                .bind(limit)
                .fetch_all(p)
                .await
            }
            Db::Sqlite(s) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLS} FROM webhook_outbox WHERE (?1 IS NULL OR status = ?1) ORDER BY id DESC LIMIT ?2"
                )))
                .bind(status)
                .bind(limit)
                .fetch_all(&s.pool)
                .await
            }
        }
    }

    /// Delivers due events every `interval` until `stop` turns true.
    pub async fn run(self, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            match self.deliver_due(Utc::now()).await {
                Ok((0, 0)) => {}
                Ok((ok, bad)) => {
                    tracing::info!(delivered = ok, failed_attempts = bad, "webhooks sent")
                }
                Err(e) => tracing::warn!(error = %e, "webhook delivery pass failed; will retry"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FingerprintKey {
        FingerprintKey::from_hex(1, &"ab".repeat(32)).unwrap()
    }

    #[test]
    fn signatures_verify_and_expire() {
        let k = key();
        let sig = signature(&k, 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("t=1700000000,v1="));
        assert!(verify(&k, &sig, b"{\"a\":1}", 1_700_000_100, 300));
        assert!(
            !verify(&k, &sig, b"{\"a\":2}", 1_700_000_100, 300),
            "another body"
        );
        assert!(
            !verify(&k, &sig, b"{\"a\":1}", 1_700_001_000, 300),
            "too old"
        );
        let other = FingerprintKey::from_hex(1, &"cd".repeat(32)).unwrap();
        assert!(
            !verify(&other, &sig, b"{\"a\":1}", 1_700_000_100, 300),
            "another secret"
        );
        assert!(!verify(&k, "garbage", b"", 0, 300));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!((1..=2).contains(&backoff_s(1)));
        assert!(backoff_s(5) >= 24 && backoff_s(5) <= 40);
        assert!(backoff_s(30) <= MAX_BACKOFF_S * 5 / 4);
    }
}
