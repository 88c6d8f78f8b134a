//! The Salesforce flows on the job queue.
//!
//! **Pull** (`salesforce.pull`, one job per object): reads changes since the object's cursor
//! (minus a look-back) with `queryAll` — deletes included — ordered by `(SystemModstamp, Id)`,
//! page by page. Each page is written in one transaction: the mirror rows
//! (`sync_sf_records`), a `salesforce.changed:<Object>` job per record a person changed (changes made by
//! the integration user are our own writes coming back and are not passed on), and the cursor
//! moved to the page's last record. A worker killed mid-pull leaves the cursor at the last
//! committed page; the rerun resumes there and re-reads nothing twice into downstream jobs
//! (they are deduplicated on object, id and modstamp).
//!
//! **Push** (`salesforce.push`, one job per object): sends pending rows of `sync_sf_outbox`
//! with sObject Collections upserts by external id, 200 records a call. A row is marked done
//! only if it did not change meanwhile (its version); a record Salesforce refuses is marked
//! failed with the reason; an ambiguous external id goes to the review queue. Interrupted, the
//! rerun sends the rest again — upserts by external id never duplicate a record.
//!
//! A circuit breaker stops calling Salesforce for a while after consecutive retryable
//! failures (a 500/503 storm): jobs then fail fast as retryable and back off.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use db::{Db, DbTx};
use serde_json::{Map, Value as Json, json};

use crate::cursor::{Cursors, Position};
use crate::jobs::{BoxFuture, Handler, Job, JobError, Jobs, NewJob, Registry};
use crate::review::Review;
use crate::salesforce::soql::{datetime_literal, parse_datetime};
use crate::salesforce::{
    COLLECTION_MAX_RECORDS, Record, SalesforceClient, SalesforceError, SaveResult, Value,
};

/// Collection calls a push keeps in flight.
const PUSH_CONCURRENCY: usize = 4;

pub const PULL: &str = "salesforce.pull";
pub const PUSH: &str = "salesforce.push";
/// Queued per changed record by a pull, as the kind `salesforce.changed:<Object>` (see
/// [`changed_kind`]), so the flows to Sage register a handler per object and the changes of an
/// object nobody handles yet wait.
pub const CHANGED: &str = "salesforce.changed";

/// The job kind of a change to a record of `object`: `salesforce.changed:Account`.
pub fn changed_kind(object: &str) -> String {
    format!("{CHANGED}:{object}")
}
pub const SYSTEM: &str = "salesforce";

/// Fields every pull reads besides the configured ones.
const SYSTEM_FIELDS: [&str; 4] = ["Id", "SystemModstamp", "LastModifiedById", "IsDeleted"];

/// One object to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullObject {
    pub name: String,
    pub fields: Vec<String>,
}

impl PullObject {
    /// The fields a pull reads: the system fields, then the configured ones (no repeats).
    fn select_fields(&self) -> Vec<&str> {
        let mut fields: Vec<&str> = SYSTEM_FIELDS.to_vec();
        for f in &self.fields {
            if !fields.contains(&f.as_str()) {
                fields.push(f);
            }
        }
        fields
    }
}

/// Stops calls after `threshold` consecutive retryable failures, for `cooldown`.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<(u32, Option<Instant>)>,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> CircuitBreaker {
        CircuitBreaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new((0, None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, Option<Instant>)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err` while open: do not call.
    pub fn check(&self) -> Result<(), JobError> {
        let mut s = self.lock();
        match s.1 {
            Some(until) if Instant::now() < until => Err(JobError::Retryable(format!(
                "Salesforce circuit open after {} consecutive failures; retrying in {} ms",
                s.0,
                until.saturating_duration_since(Instant::now()).as_millis()
            ))),
            Some(_) => {
                // Half-open: let the next call through; one more failure reopens it.
                s.1 = None;
                s.0 = self.threshold - 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn record(&self, result: &Result<(), &SalesforceError>) {
        let mut s = self.lock();
        match result {
            Err(e) if e.retryable() => {
                s.0 += 1;
                if s.0 >= self.threshold {
                    s.1 = Some(Instant::now() + self.cooldown);
                }
            }
            _ => *s = (0, None),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.lock().1, Some(until) if Instant::now() < until)
    }
}

/// What a pull did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullReport {
    pub pages: u64,
    pub records: u64,
    /// Already behind the cursor (the look-back overlap).
    pub skipped: u64,
    /// Changed by the integration user: mirrored, not passed on.
    pub echoes: u64,
    /// `salesforce.changed` jobs queued.
    pub queued: u64,
}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    pub sent: u64,
    pub done: u64,
    pub failed: u64,
    pub review: u64,
    /// Changed while in flight: left pending for the next push.
    pub superseded: u64,
}

/// The Salesforce flows. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SalesforceSync {
    db: Db,
    jobs: Jobs,
    client: SalesforceClient,
    objects: Arc<Vec<PullObject>>,
    integration_user_id: Option<String>,
    look_back: chrono::Duration,
    breaker: Arc<CircuitBreaker>,
    /// Outbox rows read per push round (sent in collection calls of 200).
    push_batch: i64,
}

use db::sqlite_ts as ts;

fn job_error(e: &SalesforceError) -> JobError {
    if e.retryable() {
        JobError::Retryable(e.to_string())
    } else {
        JobError::Permanent(e.to_string())
    }
}

fn storage(e: impl std::fmt::Display) -> JobError {
    JobError::Retryable(format!("storage: {e}"))
}

fn to_json(v: &Value) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// A JSON value from the outbox as a Salesforce field value; numbers stay decimal text.
fn from_json(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => crate::salesforce::wire::parse_decimal(&n.to_string())
            .map(Value::Number)
            .unwrap_or_else(|| Value::text(n.to_string())),
        Json::String(s) => Value::text(s.clone()),
        other => Value::Json(other.to_string()),
    }
}

impl SalesforceSync {
    pub fn new(
        db: Db,
        client: SalesforceClient,
        objects: Vec<PullObject>,
        integration_user_id: Option<String>,
    ) -> SalesforceSync {
        SalesforceSync {
            jobs: Jobs::new(db.clone()),
            db,
            client,
            objects: Arc::new(objects),
            integration_user_id,
            look_back: chrono::Duration::seconds(60),
            breaker: Arc::new(CircuitBreaker::new(5, Duration::from_secs(30))),
            push_batch: 2_000,
        }
    }

    pub fn with_look_back(mut self, look_back: chrono::Duration) -> SalesforceSync {
        self.look_back = look_back;
        self
    }

    pub fn with_breaker(mut self, breaker: CircuitBreaker) -> SalesforceSync {
        self.breaker = Arc::new(breaker);
        self
    }

    pub fn with_jobs(mut self, jobs: Jobs) -> SalesforceSync {
        self.jobs = jobs;
        self
    }

    pub fn client(&self) -> &SalesforceClient {
        &self.client
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    pub fn objects(&self) -> &[PullObject] {
        &self.objects
    }

    /// Handlers for this module's job kinds.
    pub fn register(self, registry: Registry) -> Registry {
        let me = Arc::new(self);
        registry
            .register(PULL, Arc::new(PullHandler(me.clone())))
            .register(PUSH, Arc::new(PushHandler(me)))
    }

    /// Queues a pull of every configured object (or one), deduplicated per `slot` (the
    /// schedule's tick), so several servers polling at once queue one job.
    pub async fn queue_pulls(&self, only: Option<&str>, slot: i64) -> Result<Vec<i64>, JobError> {
        let mut ids = Vec::new();
        for o in self
            .objects
            .iter()
            .filter(|o| only.is_none_or(|n| n == o.name))
        {
            if let Some(id) = self
                .jobs
                .enqueue(
                    NewJob::new(PULL, json!({"object": o.name}))
                        .dedupe(format!("{PULL}:{}:{slot}", o.name)),
                )
                .await
                .map_err(storage)?
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Queues a push for every object with pending outbox rows, deduplicated per `slot`.
    pub async fn queue_pushes(&self, slot: i64) -> Result<Vec<i64>, JobError> {
        let objects: Vec<String> = match &self.db {
            Db::Postgres(p) => sqlx::query_scalar(
                "SELECT DISTINCT object FROM sync_sf_outbox WHERE status = 'pending' ORDER BY object",
            )
            .fetch_all(p)
            .await
            .map_err(storage)?,
            Db::Sqlite(s) => sqlx::query_scalar(
                "SELECT DISTINCT object FROM sync_sf_outbox WHERE status = 'pending' ORDER BY object",
            )
            .fetch_all(&s.pool)
            .await
            .map_err(storage)?,
        };
        let mut ids = Vec::new();
        for o in objects {
            if let Some(id) = self
                .jobs
                .enqueue(
                    NewJob::new(PUSH, json!({"object": o})).dedupe(format!("{PUSH}:{o}:{slot}")),
                )
                .await
                .map_err(storage)?
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Queues pulls and pushes every `interval` until `stop` turns true (one job per object and
    /// tick across all servers: the tick is part of the dedupe key).
    pub async fn run_schedule(self, interval: Duration, stop: tokio::sync::watch::Receiver<bool>) {
        crate::jobs::run_on_ticks(interval, stop, |slot| {
            let me = &self;
            async move {
                if let Err(e) = me.queue_pulls(None, slot).await {
                    tracing::warn!(error = ?e, "queueing Salesforce pulls failed");
                }
                if let Err(e) = me.queue_pushes(slot).await {
                    tracing::warn!(error = ?e, "queueing Salesforce pushes failed");
                }
            }
        })
        .await
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, SalesforceError>>,
    ) -> Result<T, JobError> {
        self.breaker.check()?;
        let r = f.await;
        self.breaker.record(&r.as_ref().map(|_| ()));
        r.map_err(|e| job_error(&e))
    }

    /// Pulls `object`'s changes since its cursor; see the module docs.
    pub async fn pull(&self, object: &str, job: Option<&Job>) -> Result<PullReport, JobError> {
        let spec = self
            .objects
            .iter()
            .find(|o| o.name == object)
            .ok_or_else(|| JobError::Permanent(format!("{object} is not a configured object")))?;
        let cursors = Cursors::new(self.db.clone());
        let mut position = cursors.get(SYSTEM, object).await.map_err(storage)?;
        let fields = spec.select_fields();
        let filter = match &position {
            Some(p) => format!(
                " WHERE SystemModstamp > {}",
                datetime_literal(p.modified_at - self.look_back)
            ),
            None => String::new(),
        };
        let soql = format!(
            "SELECT {} FROM {object}{filter} ORDER BY SystemModstamp, Id",
            fields.join(", ")
        );
        let mut pager = self.client.query_all_pages(&soql);
        let mut report = PullReport::default();
        loop {
            let Some(records) = self.call(pager.next_page()).await? else {
                break;
            };
            report.pages += 1;
            let mut tx = self.db.begin().await.map_err(storage)?;
            let mut last: Option<Position> = None;
            let mut mirror: Vec<MirrorRow> = Vec::with_capacity(records.len());
            let mut downstream: Vec<(Json, String)> = Vec::new();
            for r in &records {
                report.records += 1;
                let id = r
                    .id()
                    .ok_or_else(|| JobError::Permanent(format!("a {object} record without Id")))?;
                let modified = r
                    .get_str("SystemModstamp")
                    .and_then(parse_datetime)
                    .ok_or_else(|| {
                        JobError::Permanent(format!("{object} {id}: unreadable SystemModstamp"))
                    })?;
                let here = Position {
                    modified_at: modified,
                    last_id: id.to_owned(),
                };
                if position.as_ref().is_some_and(|p| &here <= p) {
                    report.skipped += 1;
                    continue;
                }
                let by = r.get_str("LastModifiedById");
                let deleted = r.get("IsDeleted").and_then(Value::as_bool).unwrap_or(false);
                let echo = self
                    .integration_user_id
                    .as_deref()
                    .is_some_and(|u| crate::mapping::is_echo(by, u));
                let mirrored: Map<String, Json> = r
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), to_json(v)))
                    .collect();
                mirror.push(MirrorRow {
                    id: id.to_owned(),
                    fields: Json::Object(mirrored).to_string(),
                    modified,
                    by: by.map(str::to_owned),
                    deleted,
                });
                if echo {
                    report.echoes += 1;
                } else {
                    downstream.push((
                        json!({"object": object, "id": id, "modified_at": ts(modified), "deleted": deleted}),
                        format!("{CHANGED}:{object}:{id}:{}", ts(modified)),
                    ));
                }
                last = Some(here);
            }
            mirror_many_in(&mut tx, object, &mirror)
                .await
                .map_err(storage)?;
            report.queued += Jobs::enqueue_many_in(&mut tx, &changed_kind(object), &downstream)
                .await
                .map_err(storage)?;
            if let Some(p) = &last {
                Cursors::advance_in(&mut tx, SYSTEM, object, p)
                    .await
                    .map_err(storage)?;
            }
            tx.commit().await.map_err(storage)?;
            if last.is_some() {
                position = last;
            }
            if let Some(job) = job
                && !self
                    .jobs
                    .heartbeat(job, Duration::from_secs(120))
                    .await
                    .map_err(storage)?
            {
                return Err(JobError::Retryable(
                    "lost the job's lease mid-pull; another worker continues".into(),
                ));
            }
        }
        Ok(report)
    }

    /// A historical load through Bulk API 2.0 (a `queryAll` job), for an object that has no
    /// cursor yet: the same mirror rows, downstream jobs and cursor as a pull, written 2,000
    /// rows a transaction in (SystemModstamp, Id) order. Later pulls continue from its cursor.
    pub async fn initial_load_bulk(&self, object: &str) -> Result<PullReport, JobError> {
        let spec = self
            .objects
            .iter()
            .find(|o| o.name == object)
            .ok_or_else(|| JobError::Permanent(format!("{object} is not a configured object")))?;
        let cursors = Cursors::new(self.db.clone());
        if cursors
            .get(SYSTEM, object)
            .await
            .map_err(storage)?
            .is_some()
        {
            return Err(JobError::Permanent(format!(
                "{object} already has a cursor: the initial load is for objects never pulled"
            )));
        }
        let fields = spec.select_fields();
        let soql = format!("SELECT {} FROM {object}", fields.join(", "));
        let outcome = self
            .call(self.client.bulk_query(&soql, true, 50_000))
            .await?;
        // Bulk results come in no promised order: sort, so the cursor can follow.
        let mut rows: Vec<(Position, std::collections::BTreeMap<String, String>)> = Vec::new();
        for row in outcome.table.maps() {
            let id = row.get("Id").cloned().unwrap_or_default();
            let modified = row
                .get("SystemModstamp")
                .and_then(|t| parse_datetime(t))
                .ok_or_else(|| {
                    JobError::Permanent(format!("{object} {id}: unreadable SystemModstamp"))
                })?;
            rows.push((
                Position {
                    modified_at: modified,
                    last_id: id,
                },
                row,
            ));
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut report = PullReport {
            pages: u64::from(outcome.pages),
            ..PullReport::default()
        };
        for chunk in rows.chunks(2_000) {
            let mut tx = self.db.begin().await.map_err(storage)?;
            let mut mirror = Vec::with_capacity(chunk.len());
            let mut downstream = Vec::new();
            for (pos, row) in chunk {
                report.records += 1;
                let by = row.get("LastModifiedById").filter(|s| !s.is_empty());
                let deleted = row.get("IsDeleted").is_some_and(|v| v == "true");
                let echo = self
                    .integration_user_id
                    .as_deref()
                    .is_some_and(|u| crate::mapping::is_echo(by.map(String::as_str), u));
                // CSV carries text: empty is null.
                let values: Map<String, Json> = row
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            if v.is_empty() {
                                Json::Null
                            } else {
                                Json::String(v.clone())
                            },
                        )
                    })
                    .collect();
                mirror.push(MirrorRow {
                    id: pos.last_id.clone(),
                    fields: Json::Object(values).to_string(),
                    modified: pos.modified_at,
                    by: by.cloned(),
                    deleted,
                });
                if echo {
                    report.echoes += 1;
                } else {
                    downstream.push((
                        json!({"object": object, "id": pos.last_id, "modified_at": ts(pos.modified_at), "deleted": deleted}),
                        format!("{CHANGED}:{object}:{}:{}", pos.last_id, ts(pos.modified_at)),
                    ));
                }
            }
            mirror_many_in(&mut tx, object, &mirror)
                .await
                .map_err(storage)?;
            report.queued += Jobs::enqueue_many_in(&mut tx, &changed_kind(object), &downstream)
                .await
                .map_err(storage)?;
            if let Some((last, _)) = chunk.last() {
                Cursors::advance_in(&mut tx, SYSTEM, object, last)
                    .await
                    .map_err(storage)?;
            }
            tx.commit().await.map_err(storage)?;
        }
        Ok(report)
    }

    /// Queues a record to upsert into Salesforce by `external_id_field` = `external_id`. The
    /// fields merge into what is already queued for that record (an upsert changes only the
    /// fields it names, so a later write of other fields must not drop an earlier one not yet
    /// pushed); the same values already pushed are not queued again.
    pub async fn queue_push(
        &self,
        object: &str,
        external_id_field: &str,
        external_id: &str,
        fields: &Map<String, Json>,
    ) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        let text = Json::Object(fields.clone()).to_string();
        match &self.db {
            Db::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO sync_sf_outbox (object, external_id_field, external_id, fields, status, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 'pending', 1, $5, $5) \
                     ON CONFLICT (object, external_id_field, external_id) DO UPDATE \
                     SET fields = (sync_sf_outbox.fields::jsonb || excluded.fields::jsonb)::text, status = 'pending', \
                     version = sync_sf_outbox.version + 1, attempts = 0, last_error = NULL, updated_at = excluded.updated_at \
                     WHERE (sync_sf_outbox.fields::jsonb || excluded.fields::jsonb) <> sync_sf_outbox.fields::jsonb \
                     OR sync_sf_outbox.status <> 'done'",
                )
                .bind(object)
                .bind(external_id_field)
                .bind(external_id)
                .bind(&text)
                .bind(now)
                .execute(p)
                .await?;
            }
            Db::Sqlite(s) => {
                sqlx::query(
                    "INSERT INTO sync_sf_outbox (object, external_id_field, external_id, fields, status, version, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, 'pending', 1, ?5, ?5) \
                     ON CONFLICT (object, external_id_field, external_id) DO UPDATE \
                     SET fields = json_patch(sync_sf_outbox.fields, excluded.fields), status = 'pending', \
                     version = sync_sf_outbox.version + 1, attempts = 0, last_error = NULL, updated_at = excluded.updated_at \
                     WHERE json_patch(sync_sf_outbox.fields, excluded.fields) <> sync_sf_outbox.fields \
                     OR sync_sf_outbox.status <> 'done'",
                )
                .bind(object)
                .bind(external_id_field)
                .bind(external_id)
                .bind(&text)
                .bind(ts(now))
                .execute(&s.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Sends pending outbox rows of `object`; see the module docs.
    pub async fn push(&self, object: &str, job: Option<&Job>) -> Result<PushReport, JobError> {
        let mut report = PushReport::default();
        let review = Review::new(self.db.clone());
        // Rows already tried in this run are not re-read (a retryable per-record error stays
        // pending for the next job, not this loop).
        let mut after_id = 0i64;
        loop {
            type Row = (i64, String, String, String, i64);
            let rows: Vec<Row> = match &self.db {
                Db::Postgres(p) => sqlx::query_as(
                    "SELECT id, external_id_field, external_id, fields, version FROM sync_sf_outbox \
                     WHERE object = $1 AND status = 'pending' AND id > $2 ORDER BY id LIMIT $3",
                )
                .bind(object)
                .bind(after_id)
                .bind(self.push_batch)
                .fetch_all(p)
                .await
                .map_err(storage)?,
                Db::Sqlite(s) => sqlx::query_as(
                    "SELECT id, external_id_field, external_id, fields, version FROM sync_sf_outbox \
                     WHERE object = ? AND status = 'pending' AND id > ? ORDER BY id LIMIT ?",
                )
                .bind(object)
                .bind(after_id)
                .bind(self.push_batch)
                .fetch_all(&s.pool)
                .await
                .map_err(storage)?,
            };
            let Some(last) = rows.last() else { break };
            after_id = last.0;
            // One upsert call sequence per external id field.
            let mut by_field: std::collections::BTreeMap<&str, Vec<&Row>> = Default::default();
            for r in &rows {
                by_field.entry(r.1.as_str()).or_default().push(r);
            }
            for (field, group) in by_field {
                let records: Vec<Record> = group
                    .iter()
                    .map(|r| {
                        let mut rec = Record::new(object);
                        if let Ok(Json::Object(m)) = serde_json::from_str::<Json>(&r.3) {
                            for (k, v) in &m {
                                rec.set(k, from_json(v));
                            }
                        }
                        rec.set(field, Value::text(r.2.clone()));
                        rec
                    })
                    .collect();
                // Up to PUSH_CONCURRENCY collection calls in flight: Salesforce serves
                // concurrent calls, and the latency per call dominates a push.
                let mut answers: Vec<Result<Vec<SaveResult>, JobError>> = Vec::new();
                for window in records.chunks(COLLECTION_MAX_RECORDS * PUSH_CONCURRENCY) {
                    let mut calls: Vec<BoxFuture<'_, Result<Vec<SaveResult>, JobError>>> =
                        Vec::new();
                    for chunk in window.chunks(COLLECTION_MAX_RECORDS) {
                        calls.push(Box::pin(
                            self.call(self.client.upsert_many(object, field, chunk)),
                        ));
                    }
                    answers.extend(futures_util::future::join_all(calls).await);
                }
                let mut first_error = None;
                let mut results: Vec<(&Row, SaveResult)> = Vec::with_capacity(group.len());
                for (rows, answer) in group.chunks(COLLECTION_MAX_RECORDS).zip(answers) {
                    match answer {
                        Ok(saved) => {
                            report.sent += rows.len() as u64;
                            results.extend(rows.iter().copied().zip(saved));
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                let mut tx = self.db.begin().await.map_err(storage)?;
                let mut outcomes = Vec::with_capacity(results.len());
                for (row, result) in &results {
                    let (status, error) = if result.success {
                        ("done", None)
                    } else {
                        let code = result
                            .errors
                            .first()
                            .map(|e| e.status_code.as_str())
                            .unwrap_or("UNKNOWN");
                        let message = result
                            .errors
                            .iter()
                            .map(|e| format!("{}: {}", e.status_code, e.message))
                            .collect::<Vec<_>>()
                            .join("; ");
                        match code {
                            "DUPLICATE_EXTERNAL_ID" => ("review", Some(message)),
                            "UNABLE_TO_LOCK_ROW"
                            | "REQUEST_LIMIT_EXCEEDED"
                            | "SERVER_UNAVAILABLE" => ("pending", Some(message)),
                            _ => ("failed", Some(message)),
                        }
                    };
                    outcomes.push(OutboxOutcome {
                        id: row.0,
                        version: row.4,
                        status,
                        salesforce_id: result.id.clone(),
                        error,
                    });
                }
                let changed = set_outbox_many_in(&mut tx, &outcomes)
                    .await
                    .map_err(storage)?;
                for o in &outcomes {
                    if !changed.contains(&o.id) {
                        report.superseded += 1;
                        continue;
                    }
                    match o.status {
                        "done" => report.done += 1,
                        "failed" => report.failed += 1,
                        "review" => report.review += 1,
                        _ => {}
                    }
                }
                tx.commit().await.map_err(storage)?;
                for (row, result) in &results {
                    let ambiguous = result
                        .errors
                        .iter()
                        .any(|e| e.status_code == "DUPLICATE_EXTERNAL_ID");
                    if ambiguous {
                        review
                            .open(
                                "multiple_match",
                                object,
                                &format!("{field}={}", row.2),
                                &json!({"external_id_field": field, "external_id": row.2, "errors": result.errors.iter().map(|e| &e.message).collect::<Vec<_>>()}),
                            )
                            .await
                            .map_err(storage)?;
                    }
                }
                // What succeeded is recorded; the failed calls' rows stay pending for the retry.
                if let Some(e) = first_error {
                    return Err(e);
                }
            }
            if let Some(job) = job
                && !self
                    .jobs
                    .heartbeat(job, Duration::from_secs(120))
                    .await
                    .map_err(storage)?
            {
                return Err(JobError::Retryable(
                    "lost the job's lease mid-push; another worker continues".into(),
                ));
            }
        }
        Ok(report)
    }
}

/// One pulled record's mirror row.
struct MirrorRow {
    id: String,
    fields: String,
    modified: DateTime<Utc>,
    by: Option<String>,
    deleted: bool,
}

/// Writes a page's mirror rows: one statement on PostgreSQL (arrays), a prepared statement
/// per row on SQLite (in-process, no round trips). A row never goes back in time.
async fn mirror_many_in(
    tx: &mut DbTx,
    object: &str,
    rows: &[MirrorRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    match tx {
        DbTx::Postgres(t) => {
            sqlx::query(
                "INSERT INTO sync_sf_records (object, id, fields, modified_at, last_modified_by, is_deleted, pulled_at) \
                 SELECT $1, u.id, u.fields, u.modified_at, u.by, u.deleted, $7 \
                 FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TIMESTAMPTZ[], $5::TEXT[], $6::BOOLEAN[]) AS u(id, fields, modified_at, by, deleted) \
                 ON CONFLICT (object, id) DO UPDATE SET fields = excluded.fields, \
                 modified_at = excluded.modified_at, last_modified_by = excluded.last_modified_by, is_deleted = excluded.is_deleted, \
                 pulled_at = excluded.pulled_at WHERE sync_sf_records.modified_at <= excluded.modified_at",
            )
            .bind(object)
            .bind(rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.fields.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.modified).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.by.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.deleted).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut **t)
            .await?;
        }
        DbTx::Sqlite(t) => {
            for r in rows {
                sqlx::query(
                    "INSERT INTO sync_sf_records (object, id, fields, modified_at, last_modified_by, is_deleted, pulled_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (object, id) DO UPDATE SET fields = excluded.fields, \
                     modified_at = excluded.modified_at, last_modified_by = excluded.last_modified_by, is_deleted = excluded.is_deleted, \
                     pulled_at = excluded.pulled_at WHERE sync_sf_records.modified_at <= excluded.modified_at",
                )
                .bind(object)
                .bind(&r.id)
                .bind(&r.fields)
                .bind(ts(r.modified))
                .bind(&r.by)
                .bind(r.deleted)
                .bind(ts(now))
                .execute(&mut **t)
                .await?;
            }
        }
    }
    Ok(())
}

/// What a push decided for one outbox row.
struct OutboxOutcome {
    id: i64,
    version: i64,
    status: &'static str,
    salesforce_id: Option<String>,
    error: Option<String>,
}

/// Records push outcomes, each only if the row's version is the one sent; returns the ids
/// updated. One statement on PostgreSQL.
async fn set_outbox_many_in(
    tx: &mut DbTx,
    outcomes: &[OutboxOutcome],
) -> Result<std::collections::HashSet<i64>, sqlx::Error> {
    let now = Utc::now();
    let mut changed = std::collections::HashSet::new();
    if outcomes.is_empty() {
        return Ok(changed);
    }
    match tx {
        DbTx::Postgres(t) => {
            let ids: Vec<i64> = sqlx::query_scalar(
                "UPDATE sync_sf_outbox AS o SET status = u.status, salesforce_id = COALESCE(u.sfid, o.salesforce_id), \
                 last_error = u.err, attempts = o.attempts + 1, updated_at = $6 \
                 FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[]) AS u(id, version, status, sfid, err) \
                 WHERE o.id = u.id AND o.version = u.version RETURNING o.id",
            )
            .bind(outcomes.iter().map(|o| o.id).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| o.version).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| o.status).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| o.salesforce_id.clone()).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| o.error.clone()).collect::<Vec<_>>())
            .bind(now)
            .fetch_all(&mut **t)
            .await?;
            changed.extend(ids);
        }
        DbTx::Sqlite(t) => {
            for o in outcomes {
                let n = sqlx::query(
                    "UPDATE sync_sf_outbox SET status = ?1, salesforce_id = COALESCE(?2, salesforce_id), last_error = ?3, \
                     attempts = attempts + 1, updated_at = ?4 WHERE id = ?5 AND version = ?6",
                )
                .bind(o.status)
                .bind(&o.salesforce_id)
                .bind(&o.error)
                .bind(ts(now))
                .bind(o.id)
                .bind(o.version)
                .execute(&mut **t)
                .await?
                .rows_affected();
                if n == 1 {
                    changed.insert(o.id);
                }
            }
        }
    }
    Ok(changed)
}

fn object_of(job: &Job) -> Result<String, JobError> {
    job.payload["object"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| JobError::Permanent("the job names no object".into()))
}

struct PullHandler(Arc<SalesforceSync>);
struct PushHandler(Arc<SalesforceSync>);

impl Handler for PullHandler {
    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let object = object_of(job)?;
            let r = self.0.pull(&object, Some(job)).await?;
            tracing::info!(object = %object, pages = r.pages, records = r.records, queued = r.queued, echoes = r.echoes, "salesforce pull done");
            Ok(())
        })
    }
}

impl Handler for PushHandler {
    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let object = object_of(job)?;
            let r = self.0.push(&object, Some(job)).await?;
            tracing::info!(object = %object, sent = r.sent, done = r.done, failed = r.failed, review = r.review, "salesforce push done");
            Ok(())
        })
    }
}

/// The mirrored fields of one Salesforce record (`sync_sf_records`), if pulled.
pub async fn mirrored(
    db: &Db,
    object: &str,
    id: &str,
) -> Result<Option<Map<String, Json>>, sqlx::Error> {
    let text: Option<String> = match db {
        Db::Postgres(p) => {
            sqlx::query_scalar("SELECT fields FROM sync_sf_records WHERE object = $1 AND id = $2")
                .bind(object)
                .bind(id)
                .fetch_optional(p)
                .await?
        }
        Db::Sqlite(s) => {
            sqlx::query_scalar("SELECT fields FROM sync_sf_records WHERE object = ?1 AND id = ?2")
                .bind(object)
                .bind(id)
                .fetch_optional(&s.pool)
                .await?
        }
    };
    Ok(text.and_then(|t| match serde_json::from_str(&t) {
        Ok(Json::Object(m)) => Some(m),
        _ => None,
    }))
}
