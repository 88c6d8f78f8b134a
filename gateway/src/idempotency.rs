//! `Idempotency-Key` for the gateway's POST routes: the same key with the same body replays
//! the first response (status and body); the same key with another body is refused; a
//! duplicate that arrives while the first is still running is told to retry (409).
//!
//! A key is claimed with an insert that only one request can win, on either backend and
//! across processes; the response is stored when the request finishes. Server errors (5xx)
//! release the key so the client's retry runs again; client errors (4xx) are stored and
//! replayed like successes — the same request gets the same answer.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use db::Db;

/// What claiming a key found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: run the request, then [`finish`] or [`release`].
    New,
    /// The same request already finished: send this again.
    Replay { status: u16, body: String },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// A stored key: route, request hash, state, response status and body.
type StoredKey = (String, Vec<u8>, String, Option<i64>, Option<String>);

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Claims `key` for `principal`'s request on `route` with `request_hash` (a keyed HMAC).
pub async fn claim(
    db: &Db,
    principal: &str,
    key: &str,
    route: &str,
    request_hash: &[u8; 32],
) -> Result<Claim, sqlx::Error> {
    let inserted = match db {
        Db::Postgres(p) => sqlx::query(
            "INSERT INTO http_idempotency (principal, idem_key, route, request_hash, state, created_at)
             VALUES ($1, $2, $3, $4, 'in_progress', $5) ON CONFLICT DO NOTHING",
        )
        .bind(principal)
        .bind(key)
        .bind(route)
        .bind(request_hash.as_slice())
        .bind(now())
        .execute(p)
        .await?
        .rows_affected(),
        Db::Sqlite(s) => sqlx::query(
            "INSERT INTO http_idempotency (principal, idem_key, route, request_hash, state, created_at)
             VALUES (?, ?, ?, ?, 'in_progress', ?) ON CONFLICT DO NOTHING",
        )
        .bind(principal)
        .bind(key)
        .bind(route)
        .bind(request_hash.as_slice())
        .bind(now().to_rfc3339_opts(SecondsFormat::Micros, true))
        .execute(&s.pool)
        .await?
        .rows_affected(),
    };
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let row: Option<StoredKey> = match db {
        Db::Postgres(p) => {
            sqlx::query_as(
                "SELECT route, request_hash, state, response_status::int8, response_body FROM http_idempotency WHERE principal = $1 AND idem_key = $2",
            )
            .bind(principal)
            .bind(key)
            .fetch_optional(p)
            .await?
        }
        Db::Sqlite(s) => {
            sqlx::query_as(
                "SELECT route, request_hash, state, response_status, response_body FROM http_idempotency WHERE principal = ? AND idem_key = ?",
            )
            .bind(principal)
            .bind(key)
            .fetch_optional(&s.pool)
            .await?
        }
    };
    Ok(match row {
        // Released between our insert and our read: the caller may simply retry.
        None => Claim::InProgress,
        Some((r, h, _, _, _)) if r != route || h.as_slice() != request_hash.as_slice() => {
            Claim::Mismatch
        }
        Some((_, _, state, Some(status), Some(body))) if state == "done" => Claim::Replay {
            status: u16::try_from(status).unwrap_or(500),
            body,
        },
        Some(_) => Claim::InProgress,
    })
}

/// Stores the response of a claimed key.
pub async fn finish(
    db: &Db,
    principal: &str,
    key: &str,
    status: u16,
    body: &str,
) -> Result<(), sqlx::Error> {
    match db {
        Db::Postgres(p) => {
            sqlx::query(
                "UPDATE http_idempotency SET state = 'done', response_status = $3, response_body = $4 WHERE principal = $1 AND idem_key = $2",
            )
            .bind(principal)
            .bind(key)
            .bind(i32::from(status))
            .bind(body)
            .execute(p)
            .await?;
        }
        Db::Sqlite(s) => {
            sqlx::query(
                "UPDATE http_idempotency SET state = 'done', response_status = ?3, response_body = ?4 WHERE principal = ?1 AND idem_key = ?2",
            )
            .bind(principal)
            .bind(key)
            .bind(i64::from(status))
            .bind(body)
            .execute(&s.pool)
            .await?;
        }
    }
    Ok(())
}

/// Gives a claimed key back (the request failed on our side; a retry should run again).
pub async fn release(db: &Db, principal: &str, key: &str) -> Result<(), sqlx::Error> {
    match db {
        Db::Postgres(p) => {
            sqlx::query("DELETE FROM http_idempotency WHERE principal = $1 AND idem_key = $2 AND state = 'in_progress'")
                .bind(principal)
                .bind(key)
                .execute(p)
                .await?;
        }
        Db::Sqlite(s) => {
            sqlx::query("DELETE FROM http_idempotency WHERE principal = ? AND idem_key = ? AND state = 'in_progress'")
                .bind(principal)
                .bind(key)
                .execute(&s.pool)
                .await?;
        }
    }
    Ok(())
}
