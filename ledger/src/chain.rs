//! Tamper evidence: the hash chain, its sealer and its verifier.
//!
//! Writers only queue new entries in `ledger_unsealed`; the sealer, off the hot path,
//! takes them in entry-id order, gives each the next sequence number and
//! `hash = SHA-256(prev_hash ‖ canonical bytes)`, and appends the links to `ledger_chain`.
//! One sealer runs at a time across all processes (an advisory lock on PostgreSQL, the
//! write lock on SQLite). The verifier recomputes every link from the stored rows and
//! names the first broken one; it also re-adds every posting and compares the result with
//! the balance table, so a changed amount shows up twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use db::Db;
use serde::Serialize;

use crate::canonical::{GENESIS_HASH, chain_hash};
use crate::entry::JournalEntry;
use crate::error::LedgerError;
use crate::error::Result;
use crate::store::sqlite;
use crate::verify::{self, Partial, Problems};
use crate::writer::Shared;

/// Most entries sealed per transaction (bounds how long the sealer holds its lock).
pub const MAX_SEAL_BATCH: usize = 5000;

/// One broken link or inconsistency found by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub seq: Option<i64>,
    pub entry_id: Option<i64>,
    pub reason: String,
}

/// What `ledger verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub entries: u64,
    pub postings: u64,
    pub sealed: u64,
    pub unsealed: u64,
    pub chain_head_seq: Option<i64>,
    pub chain_head_hash: Option<String>,
    /// The first problem in chain order, if any.
    pub first_break: Option<ChainBreak>,
    pub problems: u64,
    /// Up to 20 problems, in chain order.
    pub sample: Vec<ChainBreak>,
    pub elapsed_ms: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems == 0
    }
}

/// Seals up to `max` pending entries; returns how many were sealed (0 if another sealer
/// holds the lock or nothing is pending).
pub(crate) async fn seal_pending(shared: &Shared, max: usize) -> Result<u64> {
    let db = &shared.db;
    let limit = i64::try_from(max.clamp(1, MAX_SEAL_BATCH)).unwrap_or(1);
    let ids: Vec<i64> = match db {
        Db::Sqlite(s) => {
            sqlx::query_scalar("SELECT entry_id FROM ledger_unsealed ORDER BY entry_id LIMIT ?")
                .bind(limit)
                .fetch_all(&s.pool)
                .await?
        }
        Db::Postgres(p) => {
            sqlx::query_scalar("SELECT entry_id FROM ledger_unsealed ORDER BY entry_id LIMIT $1")
                .bind(limit)
                .fetch_all(p)
                .await?
        }
    };
    if ids.is_empty() {
        return Ok(0);
    }
    // Load before taking the lock: entries are immutable, and loading is the slow part.
    let entries = crate::writer::load_with_reload(shared, &ids, shared.accounts.current()).await?;
    let sealed_at = shared.clock.now();
    match db {
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let got: bool = sqlx::query_scalar(
                "SELECT pg_try_advisory_xact_lock(hashtextextended('cashloop-ledger-sealer:' || current_schema(), 0))",
            )
            .fetch_one(&mut *tx)
            .await?;
            if !got {
                return Ok(0);
            }
            let still: Vec<i64> = sqlx::query_scalar(
                "SELECT entry_id FROM ledger_unsealed WHERE entry_id = ANY($1) ORDER BY entry_id",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
            let head: Option<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT seq, hash FROM ledger_chain ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            let links = links(&entries, &still, head)?;
            if links.is_empty() {
                return Ok(0);
            }
            let (seqs, eids, prevs, hashes) = unzip4(&links);
            sqlx::query(
                "INSERT INTO ledger_chain (seq, entry_id, prev_hash, hash, sealed_at)
                 SELECT s, e, p, h, $5 FROM UNNEST($1::int8[], $2::int8[], $3::bytea[], $4::bytea[]) AS u(s, e, p, h)",
            )
            .bind(&seqs)
            .bind(&eids)
            .bind(&prevs)
            .bind(&hashes)
            .bind(sealed_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM ledger_unsealed WHERE entry_id = ANY($1)")
                .bind(&eids)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(links.len() as u64)
        }
        Db::Sqlite(s) => {
            let mut tx = s.pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut still = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(900) {
                let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "SELECT entry_id FROM ledger_unsealed WHERE entry_id IN (",
                );
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                let got: Vec<i64> = qb
                    .build_query_scalar()
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await?;
                still.extend(got);
            }
            still.sort_unstable();
            let head: Option<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT seq, hash FROM ledger_chain ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            let links = links(&entries, &still, head)?;
            if links.is_empty() {
                return Ok(0);
            }
            let at = sqlite::ts(sealed_at);
            for chunk in links.chunks(900) {
                let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO ledger_chain (seq, entry_id, prev_hash, hash, sealed_at) ",
                );
                qb.push_values(chunk, |mut b, l| {
                    b.push_bind(l.0)
                        .push_bind(l.1)
                        .push_bind(l.2.to_vec())
                        .push_bind(l.3.to_vec())
                        .push_bind(at.clone());
                });
                qb.build().persistent(false).execute(&mut *tx).await?;
                let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "DELETE FROM ledger_unsealed WHERE entry_id IN (",
                );
                let mut sep = qb.separated(", ");
                for l in chunk {
                    sep.push_bind(l.1);
                }
                qb.push(")");
                qb.build().persistent(false).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(links.len() as u64)
        }
    }
}

type Link = (i64, i64, [u8; 32], [u8; 32]);

/// Chains `entries` whose ids are in `still` (sorted), after `head`.
fn links(
    entries: &[JournalEntry],
    still: &[i64],
    head: Option<(i64, Vec<u8>)>,
) -> Result<Vec<Link>> {
    let (mut seq, mut prev) = match head {
        None => (0, GENESIS_HASH),
        Some((s, h)) => (
            s,
            <[u8; 32]>::try_from(h.as_slice()).map_err(|_| {
                crate::error::LedgerError::Corrupt(format!("chain link {s} has a malformed hash"))
            })?,
        ),
    };
    let by_id: HashMap<i64, &JournalEntry> = entries.iter().map(|e| (e.id.0, e)).collect();
    let mut out = Vec::with_capacity(still.len());
    for id in still {
        let Some(entry) = by_id.get(id) else { continue };
        seq += 1;
        let hash = chain_hash(&prev, entry);
        out.push((seq, *id, prev, hash));
        prev = hash;
    }
    Ok(out)
}

/// Column arrays of chain links, for one `UNNEST` insert.
type LinkColumns = (Vec<i64>, Vec<i64>, Vec<Vec<u8>>, Vec<Vec<u8>>);

fn unzip4(links: &[Link]) -> LinkColumns {
    let mut a = Vec::with_capacity(links.len());
    let mut b = Vec::with_capacity(links.len());
    let mut c = Vec::with_capacity(links.len());
    let mut d = Vec::with_capacity(links.len());
    for l in links {
        a.push(l.0);
        b.push(l.1);
        c.push(l.2.to_vec());
        d.push(l.3.to_vec());
    }
    (a, b, c, d)
}

/// Seals everything pending, in batches.
pub(crate) async fn seal_all(shared: &Shared) -> Result<u64> {
    let mut total = 0;
    loop {
        let n = seal_pending(shared, MAX_SEAL_BATCH).await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// Runs the sealer every `interval` until `stop` resolves.
pub(crate) async fn run_sealer(
    shared: std::sync::Arc<Shared>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match seal_all(&shared).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sealed = n, "ledger entries sealed"),
            Err(e) => tracing::warn!(error = %e, "ledger sealer failed; will retry"),
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

/// Ranges of entry ids verified in parallel (one blocking reader per range on SQLite).
fn verify_parts() -> usize {
    if let Some(n) = std::env::var("CLX_VERIFY_PARTS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

/// Recomputes the chain and the balances from the stored rows.
pub(crate) async fn verify(
    shared: &Shared,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<VerifyReport> {
    let started = Instant::now();
    let db = &shared.db;
    let snap = shared.accounts.reload(db).await?;
    let codes: Arc<verify::FxMap<i64, String>> = Arc::new(
        snap.by_id
            .iter()
            .map(|(id, a)| (id.0, a.code.as_str().to_owned()))
            .collect(),
    );

    // Every link on its own, in parallel over id ranges.
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (lo, hi) in verify::partitions(db, verify_parts()).await? {
        let db = db.clone();
        let codes = codes.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            verify::partition(&db, lo, hi, codes, counter).await
        }));
    }
    let mut all = futures_util::future::join_all(tasks);
    let results = loop {
        tokio::select! {
            r = &mut all => break r,
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                progress(counter.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
    };

    let mut problems = Problems::default();
    let mut total = Partial::default();
    for r in results {
        let part = r.map_err(|e| LedgerError::Corrupt(format!("verify worker failed: {e}")))??;
        total.merge(part);
    }
    progress(total.entries);
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "verify: partitions done"
    );
    problems.merge(std::mem::take(&mut total.problems));
    total.links.check(&mut problems);
    let links = total.links.count;
    let head = total.links.head;

    // Counts that catch what the merge cannot: a lost sealing-queue row, a dropped link.
    let (unsealed_rows, chain_rows) = counts(db).await?;
    if unsealed_rows != total.unsealed {
        problems.add(None, None, format!(
            "{} entries are unsealed but the sealing queue holds {unsealed_rows}: an entry is missing from the chain",
            total.unsealed
        ));
    }
    if chain_rows != links {
        problems.add(
            None,
            None,
            format!("the chain table has {chain_rows} links but {links} were read"),
        );
    }

    // The balance table against the postings.
    let table = balance_rows(db).await?;
    let mut table_map: HashMap<(i64, i32), (i128, i128)> = HashMap::with_capacity(table.len());
    for (a, d, deb, cred) in table {
        table_map.insert(
            (a, d.num_days_from_ce()),
            (i128::from(deb), i128::from(cred)),
        );
    }
    let mut keys: Vec<&(i64, i32)> = total.sums.keys().chain(table_map.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let want = total.sums.get(k).copied().unwrap_or_default();
        let got = table_map.get(k).copied().unwrap_or_default();
        if want != got {
            let code = codes
                .get(&k.0)
                .cloned()
                .unwrap_or_else(|| format!("id {}", k.0));
            let day = NaiveDate::from_num_days_from_ce_opt(k.1)
                .map(|d| d.to_string())
                .unwrap_or_default();
            problems.add(None, None, format!(
                "balance of account {code} on {day}: table says debits {} / credits {}, postings add up to {} / {}",
                got.0, got.1, want.0, want.1
            ));
        }
    }

    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "verify: balances compared"
    );
    problems.sort();
    let sample: Vec<ChainBreak> = problems
        .list
        .iter()
        .take(20)
        .map(|p| ChainBreak {
            seq: p.seq,
            entry_id: p.entry_id,
            reason: p.reason.clone(),
        })
        .collect();
    Ok(VerifyReport {
        entries: total.entries,
        postings: total.postings,
        sealed: total.sealed,
        unsealed: total.unsealed,
        chain_head_seq: head.as_ref().map(|h| h.0),
        chain_head_hash: head.as_ref().map(|h| hex::encode(h.1)),
        first_break: sample.first().cloned(),
        problems: problems.count,
        sample,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

async fn counts(db: &Db) -> Result<(u64, u64)> {
    const SQL: &str =
        "SELECT (SELECT count(*) FROM ledger_unsealed), (SELECT count(*) FROM ledger_chain)";
    let (b, c): (i64, i64) = match db {
        Db::Sqlite(s) => sqlx::query_as(SQL).fetch_one(&s.pool).await?,
        Db::Postgres(p) => sqlx::query_as(SQL).fetch_one(p).await?,
    };
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok((u(b), u(c)))
}

async fn balance_rows(db: &Db) -> Result<Vec<(i64, NaiveDate, i64, i64)>> {
    const SQL: &str = "SELECT account_id, day, debit_minor, credit_minor FROM ledger_balances";
    Ok(match db {
        Db::Postgres(p) => sqlx::query_as(SQL).fetch_all(p).await?,
        Db::Sqlite(s) => {
            let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(SQL).fetch_all(&s.pool).await?;
            rows.into_iter()
                .map(|(a, d, x, y)| Ok((a, sqlite::parse_date(&d)?, x, y)))
                .collect::<std::result::Result<_, sqlx::Error>>()?
        }
    })
}

/// The chain head: (seq, hash).
pub(crate) async fn head(db: &Db) -> Result<Option<(i64, [u8; 32])>> {
    const SQL: &str = "SELECT seq, hash FROM ledger_chain ORDER BY seq DESC LIMIT 1";
    let row: Option<(i64, Vec<u8>)> = match db {
        Db::Sqlite(s) => sqlx::query_as(SQL).fetch_optional(&s.pool).await?,
        Db::Postgres(p) => sqlx::query_as(SQL).fetch_optional(p).await?,
    };
    Ok(row.and_then(|(s, h)| <[u8; 32]>::try_from(h.as_slice()).ok().map(|h| (s, h))))
}
