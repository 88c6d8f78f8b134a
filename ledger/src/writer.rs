//! The write path: group commit.
//!
//! Callers hand entries to a bounded queue and wait. A small number of writer tasks each
//! take everything queued (up to `max_batch_entries`), check it against the chart of
//! accounts, and write it in ONE database transaction — so sixteen concurrent callers cost
//! one commit, not sixteen, and hot accounts are locked once per batch instead of once per
//! entry. Each caller still gets its own result: a bad entry is rejected alone, and a batch
//! the database refuses is retried (deadlock, serialization, busy) or split into single
//! entries so one failure cannot take its neighbours down.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use db::Db;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::clock::Clock;
use crate::entry::{Account, JournalEntry, NewEntry, Posting};
use crate::error::{ErrorCode, LedgerError, Rejection, Result};
use crate::store::{self, Prepared, WriteOutcome};
use crate::types::{AccountId, EntryId};

/// Attempts for a batch that fails with a retryable database error.
const MAX_WRITE_ATTEMPTS: u32 = 6;
/// First retry delay; doubles per attempt, plus jitter.
const RETRY_BASE_MS: u64 = 2;

/// Writer tuning.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Concurrent writer tasks (each one open transaction at a time).
    pub writers: usize,
    /// Most entries coalesced into one transaction.
    pub max_batch_entries: usize,
    /// Jobs that may wait in the queue before `post` waits for room (back-pressure).
    pub queue_capacity: usize,
}

impl WriterConfig {
    /// SQLite has one writer at a time anyway; PostgreSQL overlaps a commit with the next batch.
    pub fn for_backend(backend: db::Backend) -> Self {
        WriterConfig {
            writers: match backend {
                db::Backend::Sqlite => 1,
                db::Backend::Postgres => 2,
            },
            max_batch_entries: 1000,
            queue_capacity: 4096,
        }
    }
}

/// The result of posting one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostOutcome {
    pub entry: JournalEntry,
    /// True when the idempotency key had been used with the same body: nothing new was written.
    pub replayed: bool,
}

struct Job {
    entries: Vec<NewEntry>,
    reply: oneshot::Sender<Vec<Result<PostOutcome>>>,
}

/// The chart of accounts, cached: account code, entity and currency never change once
/// created, so a cached account can only be missing, never stale.
#[derive(Debug, Default)]
pub(crate) struct AccountCache {
    snapshot: RwLock<Arc<AccountSnapshot>>,
}

#[derive(Debug, Default)]
pub(crate) struct AccountSnapshot {
    pub by_id: HashMap<AccountId, Account>,
    by_key: HashMap<(String, String), AccountId>,
}

impl AccountSnapshot {
    pub fn get(&self, entity: &str, code: &str) -> Option<&Account> {
        self.by_key
            .get(&(entity.to_owned(), code.to_owned()))
            .and_then(|id| self.by_id.get(id))
    }
}

impl AccountCache {
    pub fn current(&self) -> Arc<AccountSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub async fn reload(&self, db: &Db) -> Result<Arc<AccountSnapshot>> {
        let accounts = store::accounts(db, None).await?;
        let mut snap = AccountSnapshot::default();
        for a in accounts {
            snap.by_key.insert(
                (a.entity.as_str().to_owned(), a.code.as_str().to_owned()),
                a.id,
            );
            snap.by_id.insert(a.id, a);
        }
        let snap = Arc::new(snap);
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = snap.clone();
        Ok(snap)
    }
}

pub(crate) struct Shared {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub accounts: AccountCache,
}

/// Handle to the writer tasks.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    max_batch_entries: usize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Writer {
    pub fn start(shared: Arc<Shared>, config: &WriterConfig) -> Writer {
        let (tx, rx) = mpsc::channel::<Job>(config.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..config.writers.max(1) {
            let rx = rx.clone();
            let shared = shared.clone();
            let max = config.max_batch_entries.max(1);
            tokio::spawn(async move {
                tracing::debug!(writer = n, "ledger writer started");
                loop {
                    let jobs = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { break };
                        let mut count = first.entries.len();
                        let mut jobs = vec![first];
                        while count < max {
                            match rx.try_recv() {
                                Ok(job) => {
                                    count += job.entries.len();
                                    jobs.push(job);
                                }
                                Err(_) => break,
                            }
                        }
                        jobs
                    };
                    process(&shared, jobs).await;
                }
                tracing::debug!(writer = n, "ledger writer stopped");
            });
        }
        Writer {
            tx,
            max_batch_entries: config.max_batch_entries.max(1),
        }
    }

    /// Posts entries (one transaction when they fit in a batch); one result per entry.
    pub async fn submit(&self, entries: Vec<NewEntry>) -> Result<Vec<Result<PostOutcome>>> {
        if entries.len() > self.max_batch_entries {
            return Err(LedgerError::rejected(
                ErrorCode::BatchTooLarge,
                Some("entries".to_owned()),
                format!(
                    "entries: at most {} entries per batch, got {}",
                    self.max_batch_entries,
                    entries.len()
                ),
            ));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { entries, reply })
            .await
            .map_err(|_| LedgerError::WriterStopped)?;
        rx.await.map_err(|_| LedgerError::WriterStopped)
    }
}

/// Checks one entry against the chart of accounts.
fn prepare(
    entry: NewEntry,
    accounts: &AccountSnapshot,
) -> std::result::Result<Prepared, Rejection> {
    let mut account_ids = Vec::with_capacity(entry.postings().len());
    for (i, p) in entry.postings().iter().enumerate() {
        let Some(account) = accounts.get(entry.entity().as_str(), p.account.as_str()) else {
            return Err(Rejection::new(
                ErrorCode::UnknownAccount,
                Some(format!("postings[{i}].account")),
                format!(
                    "postings[{i}].account: there is no account {} in entity {}",
                    p.account,
                    entry.entity()
                ),
            ));
        };
        if account.currency != p.amount.currency() {
            return Err(Rejection::new(
                ErrorCode::CurrencyMismatch,
                Some(format!("postings[{i}].currency")),
                format!(
                    "postings[{i}].currency: account {} is kept in {}, the posting is in {}",
                    account.code,
                    account.currency,
                    p.amount.currency()
                ),
            ));
        }
        if account.customer_subledger && p.customer_id.is_none() {
            return Err(Rejection::new(
                ErrorCode::CustomerRequired,
                Some(format!("postings[{i}].customer_id")),
                format!(
                    "postings[{i}].customer_id: account {} is a customer sub-ledger account; name the customer",
                    account.code
                ),
            ));
        }
        account_ids.push(account.id);
    }
    Ok(Prepared {
        request_hash: entry.request_hash(),
        entry,
        account_ids,
    })
}

/// The stored form of an entry just inserted, built without a round trip.
fn stored(p: &Prepared, id: EntryId, recorded_at: DateTime<Utc>) -> JournalEntry {
    let e = &p.entry;
    JournalEntry {
        id,
        entity: e.entity().clone(),
        idempotency_key: e.idempotency_key().clone(),
        effective_date: e.effective_date(),
        recorded_at,
        source: e.source().clone(),
        external_ref: e.external_ref().cloned(),
        memo: e.memo().cloned(),
        reverses_entry_id: e.reverses(),
        postings: e
            .postings()
            .iter()
            .zip(&p.account_ids)
            .enumerate()
            .map(|(i, (np, account_id))| Posting {
                line: u32::try_from(i + 1).unwrap_or(u32::MAX),
                account_id: *account_id,
                account_code: np.account.clone(),
                direction: np.direction,
                amount: np.amount,
                customer_id: np.customer_id.clone(),
                document_ref: np.document_ref.clone(),
                memo: np.memo.clone(),
            })
            .collect(),
    }
}

fn jitter_ms(max: u64) -> u64 {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    if max == 0 { 0 } else { r % max }
}

/// Writes a batch, retrying retryable failures; on any other failure, writes each entry on
/// its own so the failure stays with the entry that caused it.
async fn write_with_retry(
    shared: &Shared,
    batch: &[&Prepared],
) -> Vec<std::result::Result<(WriteOutcome, DateTime<Utc>), LedgerError>> {
    let mut attempt = 0;
    loop {
        let recorded_at = shared.clock.now();
        match store::write_batch(&shared.db, batch, recorded_at).await {
            Ok(outcomes) => return outcomes.into_iter().map(|o| Ok((o, recorded_at))).collect(),
            Err(e) if db::is_retryable(&e) && attempt + 1 < MAX_WRITE_ATTEMPTS => {
                attempt += 1;
                let delay = RETRY_BASE_MS << attempt;
                tracing::debug!(attempt, error = %e, "ledger batch retry");
                tokio::time::sleep(Duration::from_millis(delay + jitter_ms(delay))).await;
            }
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, entries = batch.len(), "ledger batch failed; writing its entries one by one");
                let mut out = Vec::with_capacity(batch.len());
                for p in batch {
                    out.push(
                        Box::pin(write_with_retry(shared, std::slice::from_ref(p)))
                            .await
                            .remove(0),
                    );
                }
                return out;
            }
            Err(e) => return vec![Err(single_error(e))],
        }
    }
}

fn single_error(e: sqlx::Error) -> LedgerError {
    if db::constraint_name(&e).as_deref() == Some("ledger_entries_reverses_key")
        || e.to_string().contains("ledger_entries.reverses_entry_id")
    {
        return LedgerError::rejected(
            ErrorCode::AlreadyReversed,
            Some("reverses".to_owned()),
            "reverses: that entry has already been reversed",
        );
    }
    LedgerError::Storage(e)
}

async fn process(shared: &Shared, jobs: Vec<Job>) {
    let mut results: Vec<Vec<Option<Result<PostOutcome>>>> = jobs
        .iter()
        .map(|j| (0..j.entries.len()).map(|_| None).collect())
        .collect();
    let mut replies = Vec::with_capacity(jobs.len());
    let mut items: Vec<(usize, usize, NewEntry)> = Vec::new();
    for (j, job) in jobs.into_iter().enumerate() {
        replies.push(job.reply);
        for (i, e) in job.entries.into_iter().enumerate() {
            items.push((j, i, e));
        }
    }

    // Resolve accounts; reload the cache once if something is missing.
    let mut snap = shared.accounts.current();
    let missing = items.iter().any(|(_, _, e)| {
        e.postings()
            .iter()
            .any(|p| snap.get(e.entity().as_str(), p.account.as_str()).is_none())
    });
    if missing {
        match shared.accounts.reload(&shared.db).await {
            Ok(s) => snap = s,
            Err(e) => {
                let msg = e.to_string();
                for (j, i, _) in &items {
                    results[*j][*i] = Some(Err(LedgerError::Corrupt(format!(
                        "loading accounts: {msg}"
                    ))));
                }
                items.clear();
            }
        }
    }
    let mut pending: Vec<(usize, usize, Prepared)> = Vec::with_capacity(items.len());
    for (j, i, e) in items {
        match prepare(e, &snap) {
            Ok(p) => pending.push((j, i, p)),
            Err(r) => results[j][i] = Some(Err(r.into())),
        }
    }

    // Rounds: the first entry with a given key is written; later ones with the same key
    // wait for the next round, where they meet the first as an existing row.
    while !pending.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(_, _, p)| seen.insert(p.entry.idempotency_key().as_str().to_owned()));
        pending = later;
        let batch: Vec<&Prepared> = round.iter().map(|(_, _, p)| p).collect();
        let outcomes = write_with_retry(shared, &batch).await;
        let mut replays: Vec<(usize, usize, EntryId)> = Vec::new();
        for ((j, i, p), outcome) in round.iter().zip(outcomes) {
            results[*j][*i] = match outcome {
                Ok((o, at)) => match map_outcome(p, o, at) {
                    Mapped::Done(r) => Some(r),
                    Mapped::Replay(id) => {
                        replays.push((*j, *i, id));
                        None
                    }
                },
                Err(e) => Some(Err(e)),
            };
        }
        if !replays.is_empty() {
            let ids: Vec<i64> = replays.iter().map(|(_, _, id)| id.0).collect();
            match load_with_reload(shared, &ids, shared.accounts.current()).await {
                Ok(entries) => {
                    let by_id: HashMap<EntryId, JournalEntry> =
                        entries.into_iter().map(|e| (e.id, e)).collect();
                    for (j, i, id) in replays {
                        results[j][i] = Some(match by_id.get(&id) {
                            Some(e) => Ok(PostOutcome {
                                entry: e.clone(),
                                replayed: true,
                            }),
                            None => Err(LedgerError::Corrupt(format!("entry {id} vanished"))),
                        });
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for (j, i, _) in replays {
                        results[j][i] = Some(Err(LedgerError::Corrupt(format!(
                            "loading replayed entry: {msg}"
                        ))));
                    }
                }
            }
        }
    }

    for (reply, res) in replies.into_iter().zip(results) {
        let res: Vec<Result<PostOutcome>> = res
            .into_iter()
            .map(|r| r.unwrap_or(Err(LedgerError::WriterStopped)))
            .collect();
        // The caller may have gone away (timeout); the entries are written regardless.
        let _ = reply.send(res);
    }
}

/// What a write outcome means for its caller: a final result, or a replay to load.
enum Mapped {
    Done(Result<PostOutcome>),
    Replay(EntryId),
}

fn map_outcome(p: &Prepared, outcome: WriteOutcome, at: DateTime<Utc>) -> Mapped {
    match outcome {
        WriteOutcome::Inserted(id) => Mapped::Done(Ok(PostOutcome {
            entry: stored(p, id, at),
            replayed: false,
        })),
        WriteOutcome::Existing { id, request_hash } if request_hash == p.request_hash => {
            Mapped::Replay(id)
        }
        WriteOutcome::Existing { id, .. } => Mapped::Done(Err(LedgerError::rejected(
            ErrorCode::IdempotencyKeyReused,
            Some("idempotency_key".to_owned()),
            format!(
                "idempotency_key: {} was already used for entry {id} with a different body",
                p.entry.idempotency_key()
            ),
        ))),
        WriteOutcome::PeriodClosed => Mapped::Done(Err(LedgerError::rejected(
            ErrorCode::PeriodClosed,
            Some("effective_date".to_owned()),
            format!(
                "effective_date: period {} of entity {} is closed; post into an open period and reference the original",
                p.period(),
                p.entry.entity()
            ),
        ))),
    }
}

/// Posts one entry inside the caller's transaction: it commits (or rolls back) with the
/// caller's own writes. No group commit here — the caller's transaction is the unit. After a
/// storage error the transaction is unusable (PostgreSQL aborts it); roll it back.
pub(crate) async fn post_in(
    shared: &Shared,
    tx: &mut db::DbTx,
    entry: NewEntry,
) -> Result<PostOutcome> {
    let mut snap = shared.accounts.current();
    if entry.postings().iter().any(|p| {
        snap.get(entry.entity().as_str(), p.account.as_str())
            .is_none()
    }) {
        snap = shared.accounts.reload(&shared.db).await?;
    }
    let prepared = prepare(entry, &snap)?;
    let at = shared.clock.now();
    let outcome = store::write_batch_in(tx, &[&prepared], at)
        .await
        .map_err(single_error)?
        .pop()
        .ok_or_else(|| LedgerError::Corrupt("a batch of one returned no outcome".to_owned()))?;
    match map_outcome(&prepared, outcome, at) {
        Mapped::Done(r) => r,
        Mapped::Replay(id) => {
            let entry = store::load_entries_in(tx, &[id.0], &snap.by_id)
                .await?
                .pop()
                .ok_or_else(|| LedgerError::Corrupt(format!("entry {id} vanished")))?;
            Ok(PostOutcome {
                entry,
                replayed: true,
            })
        }
    }
}

/// Loads entries, reloading the account cache once if they use accounts it lacks.
pub(crate) async fn load_with_reload(
    shared: &Shared,
    ids: &[i64],
    snap: Arc<AccountSnapshot>,
) -> Result<Vec<JournalEntry>> {
    match store::load_entries(&shared.db, ids, &snap.by_id).await {
        Err(LedgerError::Corrupt(msg)) if msg.contains("unknown account") => {
            let snap = shared.accounts.reload(&shared.db).await?;
            store::load_entries(&shared.db, ids, &snap.by_id).await
        }
        other => other,
    }
}
