//! The durable job queue every sync flow runs on (`sync_jobs`).
//!
//! A job is claimed with a lease: a random token and a `locked_until`. Only the token's holder
//! can finish the job; a worker that dies leaves the lease to expire and another worker takes
//! the job (with its attempt count raised). On PostgreSQL claims use `FOR UPDATE SKIP LOCKED`,
//! so several `cashloop serve` processes never take the same job; on SQLite the claim is one
//! `UPDATE … RETURNING` statement, which SQLite runs under its single write lock.
//!
//! A retryable failure goes back to `pending` with capped exponential backoff and jitter until
//! `max_attempts`; a permanent one (a validation error) goes straight to `dead` — the error
//! queue. An operator retries (`dead` → `pending`) or resolves (`dead` → `resolved`, with a
//! note); both are audited. Every attempt is kept in `sync_job_attempts`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use db::Db;
use serde::Serialize;

/// A boxed future, so handlers can sit behind `dyn Handler`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Every job status, in lifecycle order.
pub const STATUSES: [&str; 5] = ["pending", "running", "succeeded", "dead", "resolved"];

/// Default attempts before a retryable job goes to the error queue.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("job storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("there is no job {0}")]
    NotFound(i64),
    #[error("job {id} is {status}: {action} applies to dead jobs only")]
    WrongState {
        id: i64,
        status: String,
        action: &'static str,
    },
    #[error("job data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = JobsError> = std::result::Result<T, E>;

/// How a handler failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobError {
    /// Worth trying again later (a timeout, a 503, a rate limit).
    Retryable(String),
    /// Will fail the same way every time (bad data, a validation error): to the error queue.
    Permanent(String),
}

impl JobError {
    fn kind(&self) -> &'static str {
        match self {
            JobError::Retryable(_) => "retryable",
            JobError::Permanent(_) => "permanent",
        }
    }

    fn message(&self) -> &str {
        match self {
            JobError::Retryable(m) | JobError::Permanent(m) => m,
        }
    }
}

/// Work to queue.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub kind: String,
    pub payload: serde_json::Value,
    /// Unique forever: a second enqueue with the same key adds nothing.
    pub dedupe_key: Option<String>,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: Option<i32>,
}

impl NewJob {
    pub fn new(kind: &str, payload: serde_json::Value) -> NewJob {
        NewJob {
            kind: kind.to_owned(),
            payload,
            dedupe_key: None,
            run_at: None,
            max_attempts: None,
        }
    }

    pub fn dedupe(mut self, key: impl Into<String>) -> NewJob {
        self.dedupe_key = Some(key.into());
        self
    }
}

/// A claimed job, as a handler sees it.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    pub max_attempts: i32,
    lease: String,
    worker: String,
    started_at: DateTime<Utc>,
}

/// A job as the operator sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    pub dedupe_key: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<String>,
    pub resolution: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What became of a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failed {
    /// Back to `pending`, due at `run_at`.
    Retrying { run_at: DateTime<Utc> },
    /// In the error queue.
    Dead,
    /// The lease was lost (expired and taken by another worker): nothing recorded.
    LeaseLost,
}

/// Backoff between attempts: `base · 2^(attempt-1)`, capped, with jitter in [½, 1] of it.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base_ms: 1_000,
            cap_ms: 3_600_000,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1-based), with `jitter` in [0, 1].
    pub fn delay_ms(&self, attempt: i32, jitter_per_mille: u64) -> u64 {
        let exp = u32::try_from(attempt.clamp(1, 40) - 1).unwrap_or(0);
        let full = self
            .base_ms
            .saturating_mul(2u64.saturating_pow(exp))
            .min(self.cap_ms);
        // Full jitter would allow zero; half-to-full keeps retries spread but never immediate.
        full / 2 + (full / 2).saturating_mul(jitter_per_mille.min(1000)) / 1000
    }
}

/// Job counts and the age of the oldest due job, for `cashloop sync status` and the console.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct QueueStatus {
    pub by_status: std::collections::BTreeMap<String, i64>,
    pub oldest_pending_age_s: Option<i64>,
}

/// The queue.
#[derive(Clone, Debug)]
pub struct Jobs {
    db: Db,
    backoff: Backoff,
}

use db::sqlite_ts as ts;

fn parse_ts(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| JobsError::Corrupt(format!("timestamp {text:?}: {e}")))
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    // getrandom fails only without an OS RNG; then fall back to time, still unique per claim.
    if getrandom::fill(&mut b).is_err() {
        let n = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        b[..8].copy_from_slice(&n.to_le_bytes());
    }
    hex::encode(b)
}

fn jitter_per_mille() -> u64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    u64::from(u16::from_le_bytes(b)) % 1001
}

type RecordRow = (
    i64,
    String,
    String,
    Option<String>,
    String,
    i32,
    i32,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
);

const RECORD_COLUMNS_PG: &str = "id, kind, payload, dedupe_key, status, attempts, max_attempts, to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), locked_by, last_error, last_error_kind, resolution, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
const RECORD_COLUMNS_SQLITE: &str = "id, kind, payload, dedupe_key, status, attempts, max_attempts, run_at, locked_by, last_error, last_error_kind, resolution, created_at, updated_at";

fn record(r: RecordRow) -> Result<JobRecord> {
    Ok(JobRecord {
        id: r.0,
        kind: r.1,
        payload: serde_json::from_str(&r.2)
            .map_err(|e| JobsError::Corrupt(format!("job {} payload: {e}", r.0)))?,
        dedupe_key: r.3,
        status: r.4,
        attempts: r.5,
        max_attempts: r.6,
        run_at: parse_ts(&r.7)?,
        locked_by: r.8,
        last_error: r.9,
        last_error_kind: r.10,
        resolution: r.11,
        created_at: parse_ts(&r.12)?,
        updated_at: parse_ts(&r.13)?,
    })
}

impl Jobs {
    pub fn new(db: Db) -> Jobs {
        Jobs {
            db,
            backoff: Backoff::default(),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Jobs {
        self.backoff = backoff;
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Queues a job; `Ok(None)` when its dedupe key was seen before (nothing added).
    pub async fn enqueue(&self, job: NewJob) -> Result<Option<i64>> {
        let now = Utc::now();
        let run_at = job.run_at.unwrap_or(now);
        let max = job.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1);
        let payload = job.payload.to_string();
        let id: Option<i64> = match &self.db {
            Db::Postgres(p) => sqlx::query_scalar(
                "INSERT INTO sync_jobs (kind, payload, dedupe_key, status, attempts, max_attempts, run_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'pending', 0, $4, $5, $6, $6) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
            )
            .bind(&job.kind)
            .bind(&payload)
            .bind(&job.dedupe_key)
            .bind(max)
            .bind(run_at)
            .bind(now)
            .fetch_optional(p)
            .await?,
            Db::Sqlite(s) => sqlx::query_scalar(
                "INSERT INTO sync_jobs (kind, payload, dedupe_key, status, attempts, max_attempts, run_at, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5, ?6, ?6) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
            )
            .bind(&job.kind)
            .bind(&payload)
            .bind(&job.dedupe_key)
            .bind(max)
            .bind(ts(run_at))
            .bind(ts(now))
            .fetch_optional(&s.pool)
            .await?,
        };
        Ok(id)
    }

    /// [`Jobs::enqueue`] inside the caller's transaction, so a job exists exactly when the
    /// work that produced it committed.
    pub async fn enqueue_in(tx: &mut db::DbTx, job: NewJob) -> Result<Option<i64>> {
        let now = Utc::now();
        let run_at = job.run_at.unwrap_or(now);
        let max = job.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1);
        let payload = job.payload.to_string();
        let id: Option<i64> = match tx {
            db::DbTx::Postgres(t) => sqlx::query_scalar(
                "INSERT INTO sync_jobs (kind, payload, dedupe_key, status, attempts, max_attempts, run_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'pending', 0, $4, $5, $6, $6) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
            )
            .bind(&job.kind)
            .bind(&payload)
            .bind(&job.dedupe_key)
            .bind(max)
            .bind(run_at)
            .bind(now)
            .fetch_optional(&mut **t)
            .await?,
            db::DbTx::Sqlite(t) => sqlx::query_scalar(
                "INSERT INTO sync_jobs (kind, payload, dedupe_key, status, attempts, max_attempts, run_at, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5, ?6, ?6) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
            )
            .bind(&job.kind)
            .bind(&payload)
            .bind(&job.dedupe_key)
            .bind(max)
            .bind(ts(run_at))
            .bind(ts(now))
            .fetch_optional(&mut **t)
            .await?,
        };
        Ok(id)
    }

    /// Queues many jobs of one kind in the caller's transaction (payload, dedupe key each);
    /// returns how many were new. One statement on PostgreSQL.
    pub async fn enqueue_many_in(
        tx: &mut db::DbTx,
        kind: &str,
        jobs: &[(serde_json::Value, String)],
    ) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        match tx {
            db::DbTx::Postgres(t) => {
                let now = Utc::now();
                let ids: Vec<i64> = sqlx::query_scalar(
                    "INSERT INTO sync_jobs (kind, payload, dedupe_key, status, attempts, max_attempts, run_at, created_at, updated_at) \
                     SELECT $1, u.payload, u.key, 'pending', 0, $4, $5, $5, $5 FROM UNNEST($2::TEXT[], $3::TEXT[]) AS u(payload, key) \
                     ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
                )
                .bind(kind)
                .bind(jobs.iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>())
                .bind(jobs.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>())
                .bind(DEFAULT_MAX_ATTEMPTS)
                .bind(now)
                .fetch_all(&mut **t)
                .await?;
                Ok(ids.len() as u64)
            }
            db::DbTx::Sqlite(_) => {
                let mut n = 0;
                for (payload, key) in jobs {
                    let job = NewJob::new(kind, payload.clone()).dedupe(key.clone());
                    n += u64::from(Jobs::enqueue_in(tx, job).await?.is_some());
                }
                Ok(n)
            }
        }
    }

    /// Claims up to `max` due jobs (and jobs whose lease expired) of the given `kinds` for
    /// `worker`, each leased for `lease`. A job of a kind no running worker handles waits (a
    /// later release, or another process, may handle it) rather than failing.
    pub async fn claim(
        &self,
        worker: &str,
        kinds: &[&str],
        max: i64,
        lease: Duration,
    ) -> Result<Vec<Job>> {
        let kinds_json = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".into());
        let kinds_vec: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let token = random_token();
        type Row = (i64, String, String, i32, i32);
        let rows: Vec<Row> = match &self.db {
            Db::Postgres(p) => sqlx::query_as(
                "UPDATE sync_jobs SET status = 'running', lease = $1, locked_by = $2, locked_until = $3, \
                 attempts = attempts + 1, updated_at = $4 WHERE id IN ( \
                   SELECT id FROM sync_jobs WHERE ((status = 'pending' AND run_at <= $4) \
                      OR (status = 'running' AND locked_until < $4)) AND kind = ANY($6) \
                   ORDER BY run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, kind, payload, attempts, max_attempts",
            )
            .bind(&token)
            .bind(worker)
            .bind(until)
            .bind(now)
            .bind(max)
            .bind(&kinds_vec)
            .fetch_all(p)
            .await?,
            Db::Sqlite(s) => sqlx::query_as(
                "UPDATE sync_jobs SET status = 'running', lease = ?1, locked_by = ?2, locked_until = ?3, \
                 attempts = attempts + 1, updated_at = ?4 WHERE id IN ( \
                   SELECT id FROM sync_jobs WHERE ((status = 'pending' AND run_at <= ?4) \
                      OR (status = 'running' AND locked_until < ?4)) \
                      AND kind IN (SELECT value FROM json_each(?6)) \
                   ORDER BY run_at, id LIMIT ?5) \
                 RETURNING id, kind, payload, attempts, max_attempts",
            )
            .bind(&token)
            .bind(worker)
            .bind(ts(until))
            .bind(ts(now))
            .bind(max)
            .bind(&kinds_json)
            .fetch_all(&s.pool)
            .await?,
        };
        let mut jobs = Vec::with_capacity(rows.len());
        for (id, kind, payload, attempt, max_attempts) in rows {
            jobs.push(Job {
                id,
                kind,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| JobsError::Corrupt(format!("job {id} payload: {e}")))?,
                attempt,
                max_attempts,
                lease: token.clone(),
                worker: worker.to_owned(),
                started_at: now,
            });
        }
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// Marks a claimed job done; `false` if the lease was lost meanwhile (another worker owns
    /// the job now, and its outcome counts).
    pub async fn succeed(&self, job: &Job) -> Result<bool> {
        let done = self.finish(job, "succeeded", None, None).await?;
        if done {
            self.attempt(job, "succeeded", None).await?;
        }
        Ok(done)
    }

    /// Records a failed attempt: back to `pending` after a backoff, or to the error queue.
    pub async fn fail(&self, job: &Job, error: &JobError) -> Result<Failed> {
        let exhausted = job.attempt >= job.max_attempts;
        let outcome = match error {
            JobError::Retryable(_) if !exhausted => {
                let delay = self.backoff.delay_ms(job.attempt, jitter_per_mille());
                let run_at = Utc::now()
                    + chrono::Duration::milliseconds(i64::try_from(delay).unwrap_or(i64::MAX));
                if !self
                    .finish(job, "pending", Some(error), Some(run_at))
                    .await?
                {
                    return Ok(Failed::LeaseLost);
                }
                Failed::Retrying { run_at }
            }
            _ => {
                if !self.finish(job, "dead", Some(error), None).await? {
                    return Ok(Failed::LeaseLost);
                }
                Failed::Dead
            }
        };
        self.attempt(job, error.kind(), Some(error.message()))
            .await?;
        Ok(outcome)
    }

    /// Sets the status of a job this lease holds; `false` when the lease is gone.
    async fn finish(
        &self,
        job: &Job,
        status: &str,
        error: Option<&JobError>,
        run_at: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let now = Utc::now();
        let finished = (status != "pending").then_some(now);
        let n = match &self.db {
            Db::Postgres(p) => sqlx::query(
                "UPDATE sync_jobs SET status = $1, lease = NULL, locked_by = NULL, locked_until = NULL, \
                 last_error = COALESCE($2, last_error), last_error_kind = COALESCE($3, last_error_kind), \
                 run_at = COALESCE($4, run_at), finished_at = $5, updated_at = $6 \
                 WHERE id = $7 AND lease = $8 AND status = 'running'",
            )
            .bind(status)
            .bind(error.map(JobError::message))
            .bind(error.map(JobError::kind))
            .bind(run_at)
            .bind(finished)
            .bind(now)
            .bind(job.id)
            .bind(&job.lease)
            .execute(p)
            .await?
            .rows_affected(),
            Db::Sqlite(s) => sqlx::query(
                "UPDATE sync_jobs SET status = ?1, lease = NULL, locked_by = NULL, locked_until = NULL, \
                 last_error = COALESCE(?2, last_error), last_error_kind = COALESCE(?3, last_error_kind), \
                 run_at = COALESCE(?4, run_at), finished_at = ?5, updated_at = ?6 \
                 WHERE id = ?7 AND lease = ?8 AND status = 'running'",
            )
            .bind(status)
            .bind(error.map(JobError::message))
            .bind(error.map(JobError::kind))
            .bind(run_at.map(ts))
            .bind(finished.map(ts))
            .bind(ts(now))
            .bind(job.id)
            .bind(&job.lease)
            .execute(&s.pool)
            .await?
            .rows_affected(),
        };
        Ok(n == 1)
    }

    async fn attempt(&self, job: &Job, outcome: &str, error: Option<&str>) -> Result<()> {
        let now = Utc::now();
        match &self.db {
            Db::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO sync_job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, error) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(job.id)
                .bind(job.attempt)
                .bind(&job.worker)
                .bind(job.started_at)
                .bind(now)
                .bind(outcome)
                .bind(error)
                .execute(p)
                .await?;
            }
            Db::Sqlite(s) => {
                sqlx::query(
                    "INSERT INTO sync_job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, error) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(job.id)
                .bind(job.attempt)
                .bind(&job.worker)
                .bind(ts(job.started_at))
                .bind(ts(now))
                .bind(outcome)
                .bind(error)
                .execute(&s.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Extends a claimed job's lease (long jobs call this between steps); `false` if lost.
    pub async fn heartbeat(&self, job: &Job, lease: Duration) -> Result<bool> {
        let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let n = match &self.db {
            Db::Postgres(p) => sqlx::query(
                "UPDATE sync_jobs SET locked_until = $1 WHERE id = $2 AND lease = $3 AND status = 'running'",
            )
            .bind(until)
            .bind(job.id)
            .bind(&job.lease)
            .execute(p)
            .await?
            .rows_affected(),
            Db::Sqlite(s) => sqlx::query(
                "UPDATE sync_jobs SET locked_until = ? WHERE id = ? AND lease = ? AND status = 'running'",
            )
            .bind(ts(until))
            .bind(job.id)
            .bind(&job.lease)
            .execute(&s.pool)
            .await?
            .rows_affected(),
        };
        Ok(n == 1)
    }

    pub async fn get(&self, id: i64) -> Result<JobRecord> {
        let row: Option<RecordRow> = match &self.db {
            Db::Postgres(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {RECORD_COLUMNS_PG} FROM sync_jobs WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(p)
                .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {RECORD_COLUMNS_SQLITE} FROM sync_jobs WHERE id = ?"
                )))
                .bind(id)
                .fetch_optional(&s.pool)
                .await?
            }
        };
        record(row.ok_or(JobsError::NotFound(id))?)
    }

    /// Jobs with `status` (all when `None`), newest first.
    pub async fn list(&self, status: Option<&str>, limit: i64) -> Result<Vec<JobRecord>> {
        let rows: Vec<RecordRow> = match &self.db {
            Db::Postgres(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {RECORD_COLUMNS_PG} FROM sync_jobs WHERE ($1::TEXT IS NULL OR status = $1) ORDER BY id DESC LIMIT $2"
                )))
                .bind(status)
                .bind(limit)
                .fetch_all(p)
                .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {RECORD_COLUMNS_SQLITE} FROM sync_jobs WHERE (?1 IS NULL OR status = ?1) ORDER BY id DESC LIMIT ?2"
                )))
                .bind(status)
                .bind(limit)
                .fetch_all(&s.pool)
                .await?
            }
        };
        rows.into_iter().map(record).collect()
    }

    /// Counts by status and the age of the oldest due pending job.
    /// Deletes finished jobs (succeeded or resolved by a person) that finished before
    /// `before`, in batches of `batch`; returns how many. Dead jobs (the error queue) and their
    /// attempt history stay. A deleted job's dedupe key is free again, so keep finished jobs
    /// longer than any sender retries (Salesforce retries an event for minutes, not days).
    pub async fn prune(&self, before: DateTime<Utc>, batch: i64) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let n = match &self.db {
                Db::Postgres(p) => sqlx::query(
                    "DELETE FROM sync_jobs WHERE id IN (SELECT id FROM sync_jobs \
                     WHERE status IN ('succeeded', 'resolved') AND finished_at < $1 ORDER BY id LIMIT $2)",
                )
                .bind(before)
                .bind(batch)
                .execute(p)
                .await?
                .rows_affected(),
                Db::Sqlite(s) => sqlx::query(
                    "DELETE FROM sync_jobs WHERE id IN (SELECT id FROM sync_jobs \
                     WHERE status IN ('succeeded', 'resolved') AND finished_at < ?1 ORDER BY id LIMIT ?2)",
                )
                .bind(ts(before))
                .bind(batch)
                .execute(&s.pool)
                .await?
                .rows_affected(),
            };
            total += n;
            if n < batch.max(1) as u64 {
                return Ok(total);
            }
        }
    }

    pub async fn status(&self) -> Result<QueueStatus> {
        let now = Utc::now();
        let (counts, oldest): (Vec<(String, i64)>, Option<String>) = match &self.db {
            Db::Postgres(p) => (
                sqlx::query_as("SELECT status, COUNT(*) FROM sync_jobs GROUP BY status")
                    .fetch_all(p)
                    .await?,
                sqlx::query_scalar(
                    "SELECT to_char(MIN(run_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM sync_jobs WHERE status = 'pending' AND run_at <= $1",
                )
                .bind(now)
                .fetch_one(p)
                .await?,
            ),
            Db::Sqlite(s) => (
                sqlx::query_as("SELECT status, COUNT(*) FROM sync_jobs GROUP BY status")
                    .fetch_all(&s.pool)
                    .await?,
                sqlx::query_scalar(
                    "SELECT MIN(run_at) FROM sync_jobs WHERE status = 'pending' AND run_at <= ?",
                )
                .bind(ts(now))
                .fetch_one(&s.pool)
                .await?,
            ),
        };
        let oldest_pending_age_s = match oldest {
            Some(t) => Some((now - parse_ts(&t)?).num_seconds().max(0)),
            None => None,
        };
        Ok(QueueStatus {
            by_status: counts.into_iter().collect(),
            oldest_pending_age_s,
        })
    }

    /// Operator: a dead job runs again (now, with `max_attempts` fresh attempts). Audited.
    pub async fn retry(&self, id: i64, actor: &str) -> Result<JobRecord> {
        self.operator(id, actor, "retry", None).await
    }

    /// Operator: a dead job is closed without running, with a note. Audited.
    pub async fn resolve(&self, id: i64, actor: &str, note: &str) -> Result<JobRecord> {
        self.operator(id, actor, "resolve", Some(note)).await
    }

    async fn operator(
        &self,
        id: i64,
        actor: &str,
        action: &'static str,
        note: Option<&str>,
    ) -> Result<JobRecord> {
        let now = Utc::now();
        let mut tx = self
            .db
            .begin()
            .await
            .map_err(|e| JobsError::Corrupt(e.to_string()))?;
        let n = match (&mut tx, note) {
            (db::DbTx::Postgres(t), None) => sqlx::query(
                "UPDATE sync_jobs SET status = 'pending', run_at = $1, updated_at = $1, finished_at = NULL, \
                 max_attempts = attempts + max_attempts WHERE id = $2 AND status = 'dead'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut **t)
            .await?
            .rows_affected(),
            (db::DbTx::Sqlite(t), None) => sqlx::query(
                "UPDATE sync_jobs SET status = 'pending', run_at = ?1, updated_at = ?1, finished_at = NULL, \
                 max_attempts = attempts + max_attempts WHERE id = ?2 AND status = 'dead'",
            )
            .bind(ts(now))
            .bind(id)
            .execute(&mut **t)
            .await?
            .rows_affected(),
            (db::DbTx::Postgres(t), Some(note)) => sqlx::query(
                "UPDATE sync_jobs SET status = 'resolved', resolution = $3, updated_at = $1, finished_at = $1 \
                 WHERE id = $2 AND status = 'dead'",
            )
            .bind(now)
            .bind(id)
            .bind(note)
            .execute(&mut **t)
            .await?
            .rows_affected(),
            (db::DbTx::Sqlite(t), Some(note)) => sqlx::query(
                "UPDATE sync_jobs SET status = 'resolved', resolution = ?3, updated_at = ?1, finished_at = ?1 \
                 WHERE id = ?2 AND status = 'dead'",
            )
            .bind(ts(now))
            .bind(id)
            .bind(note)
            .execute(&mut **t)
            .await?
            .rows_affected(),
        };
        if n == 0 {
            drop(tx);
            let current = self.get(id).await?;
            return Err(JobsError::WrongState {
                id,
                status: current.status,
                action,
            });
        }
        let detail = match note {
            Some(n) => format!("note: {n}"),
            None => "queued again".to_owned(),
        };
        db::audit::record_in(
            &mut tx,
            db::audit::AuditRecord {
                at: now,
                actor,
                action: &format!("sync.job.{action}"),
                subject: &format!("job {id}"),
                detail: &detail,
            },
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| JobsError::Corrupt(e.to_string()))?;
        self.get(id).await
    }
}

impl Job {
    /// A text field of the payload; missing, it is a permanent error naming the field.
    pub fn text(&self, field: &str) -> std::result::Result<&str, JobError> {
        self.payload
            .get(field)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| JobError::Permanent(format!("{field} is missing")))
    }

    /// The record id of a `salesforce.changed:<Object>` job; `None` for a deletion.
    pub fn changed_id(&self) -> std::result::Result<Option<&str>, JobError> {
        if self
            .payload
            .get("deleted")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
        {
            return Ok(None);
        }
        self.text("id").map(Some)
    }
}

impl Jobs {
    /// Queues `kind` once per value of `field` (`{"entity": "US"}` …) for the schedule's tick
    /// `slot`: the slot is in the dedupe key, so several servers queue one job per tick.
    pub async fn enqueue_tick<'v>(
        &self,
        kind: &str,
        field: &str,
        values: impl IntoIterator<Item = &'v str>,
        slot: i64,
    ) -> Result<()> {
        for v in values {
            self.enqueue(
                NewJob::new(kind, serde_json::json!({ field: v }))
                    .dedupe(format!("{kind}:{v}:{slot}")),
            )
            .await?;
        }
        Ok(())
    }
}

/// Calls `tick(slot)` at every `interval` boundary (`slot` = Unix seconds / interval) until
/// `stop` turns true. Schedules put the slot in their dedupe keys.
pub async fn run_on_ticks<F, Fut>(
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut tick: F,
) where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = ()>,
{
    let secs = interval.as_secs().max(1) as i64;
    loop {
        let slot = Utc::now().timestamp() / secs;
        tick(slot).await;
        // Sleep to the next tick boundary.
        let wait = ((slot + 1) * secs - Utc::now().timestamp()).max(1) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Runs a job of one kind.
pub trait Handler: Send + Sync {
    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, std::result::Result<(), JobError>>;
}

/// Handlers by job kind; a job of an unknown kind fails permanently.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(mut self, kind: &str, handler: Arc<dyn Handler>) -> Registry {
        self.handlers.insert(kind.to_owned(), handler);
        self
    }

    pub fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self.handlers.keys().cloned().collect();
        k.sort();
        k
    }
}

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Names this worker in leases and attempts (`host:pid:n`).
    pub name: String,
    /// Jobs run at once.
    pub concurrency: usize,
    pub lease: Duration,
    /// Sleep when nothing is due.
    pub idle_poll: Duration,
}

/// Claims and runs jobs until `stop` turns true; in-flight jobs finish first.
pub async fn run_worker(
    jobs: Jobs,
    registry: Registry,
    options: WorkerOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let kinds = registry.kinds();
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    if kinds.is_empty() {
        return;
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut running = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let free = permits.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            match jobs
                .claim(&options.name, &kinds, free as i64, options.lease)
                .await
            {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming sync jobs failed; will retry");
                    Vec::new()
                }
            }
        };
        let idle = claimed.is_empty();
        for job in claimed {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let jobs = jobs.clone();
            let handler = registry.handlers.get(&job.kind).cloned();
            // Every log line of the job's run carries its id, kind and attempt.
            let span = tracing::info_span!("job", job_id = job.id, kind = %job.kind, attempt = job.attempt);
            running.spawn(tracing::Instrument::instrument(async move {
                let started = std::time::Instant::now();
                let result = match &handler {
                    Some(h) => h.handle(&job).await,
                    None => Err(JobError::Permanent(format!(
                        "no handler for job kind {:?}",
                        job.kind
                    ))),
                };
                let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let recorded = match &result {
                    Ok(()) => jobs.succeed(&job).await.map(|done| if done { "succeeded" } else { "lease_lost" }),
                    Err(e) => jobs.fail(&job, e).await.map(|outcome| {
                        tracing::info!(job = job.id, kind = %job.kind, attempt = job.attempt, ?outcome, error = %e.message(), "sync job failed");
                        match outcome {
                            Failed::Retrying { .. } => "retrying",
                            Failed::Dead => "dead",
                            Failed::LeaseLost => "lease_lost",
                        }
                    }),
                };
                let outcome = match recorded {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(job = job.id, error = %e, "recording a job outcome failed; the lease will expire and the job run again");
                        "unrecorded"
                    }
                };
                metrics::record_job(&job.kind, outcome, latency_us);
                drop(permit);
            }, span));
        }
        while running.try_join_next().is_some() {}
        if idle || permits.available_permits() == 0 {
            tokio::select! {
                _ = tokio::time::sleep(options.idle_poll) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = stop.changed() => {}
            }
        }
    }
    while running.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half_to_full() {
        let b = Backoff {
            base_ms: 1_000,
            cap_ms: 60_000,
        };
        assert_eq!(b.delay_ms(1, 1000), 1_000);
        assert_eq!(b.delay_ms(1, 0), 500);
        assert_eq!(b.delay_ms(3, 1000), 4_000);
        assert_eq!(b.delay_ms(30, 1000), 60_000, "capped");
        assert_eq!(b.delay_ms(30, 0), 30_000);
        for j in [0, 1, 499, 500, 1000, 5000] {
            let d = b.delay_ms(4, j);
            assert!((4_000..=8_000).contains(&d), "{d}");
        }
    }
}
