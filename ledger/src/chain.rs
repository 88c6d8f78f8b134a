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

use chrono::NaiveDate;
use db::Db;
use serde::Serialize;

use crate::canonical::{GENESIS_HASH, chain_hash};
use crate::entry::JournalEntry;
use crate::error::Result;
use crate::scan::{self, ScanFilter};
use crate::store::sqlite;
use crate::types::{AccountId, Direction};
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

#[derive(Default)]
struct Problems {
    list: Vec<(i64, i64, ChainBreak)>,
    count: u64,
}

impl Problems {
    fn add(&mut self, seq: Option<i64>, entry_id: Option<i64>, reason: String) {
        self.count += 1;
        let order = (seq.unwrap_or(i64::MAX), entry_id.unwrap_or(i64::MAX));
        self.list.push((
            order.0,
            order.1,
            ChainBreak {
                seq,
                entry_id,
                reason,
            },
        ));
        // Keep the earliest problems only: memory stays bounded on a badly broken ledger.
        if self.list.len() > 1000 {
            self.list.sort_by_key(|(s, e, _)| (*s, *e));
            self.list.truncate(100);
        }
    }
}

/// Recomputes the chain and the balances from the stored rows.
pub(crate) async fn verify(
    shared: &Shared,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<VerifyReport> {
    let started = Instant::now();
    let db = &shared.db;
    let snap = shared.accounts.reload(db).await?;
    let mut problems = Problems::default();

    // Pass 1: the links, in sequence order.
    let mut expected_seq = 1i64;
    let mut prev: Vec<u8> = GENESIS_HASH.to_vec();
    let mut head: Option<(i64, Vec<u8>)> = None;
    scan::scan_chain(db, |(seq, entry_id, prev_hash, hash)| {
        if seq != expected_seq {
            problems.add(
                Some(seq),
                Some(entry_id),
                format!("sequence gap: expected {expected_seq}, found {seq}"),
            );
        }
        if prev_hash != prev {
            problems.add(
                Some(seq),
                Some(entry_id),
                "prev_hash does not match the hash of the previous link".to_owned(),
            );
        }
        expected_seq = seq + 1;
        prev = hash.clone();
        head = Some((seq, hash));
        Ok(())
    })
    .await?;
    let sealed_links = u64::try_from(expected_seq - 1).unwrap_or(0);

    // Pass 2: every entry, recomputed.
    let mut entries = 0u64;
    let mut postings = 0u64;
    let mut sealed = 0u64;
    let mut unsealed = 0u64;
    let mut sums: HashMap<(i64, NaiveDate), (i128, i128)> = HashMap::new();
    scan::scan_entries(db, &ScanFilter::default(), &snap.by_id, |s| {
        entries += 1;
        postings += s.entry.postings.len() as u64;
        let id = Some(s.entry.id.0);
        if let Err(msg) = s.entry.check() {
            problems.add(s.seq, id, msg);
        }
        match (s.seq, s.prev_hash.as_deref(), s.hash.as_deref()) {
            (Some(seq), Some(prev), Some(hash)) => {
                sealed += 1;
                match <&[u8; 32]>::try_from(prev) {
                    Ok(prev) if chain_hash(prev, &s.entry) == hash => {}
                    _ => problems.add(
                        Some(seq),
                        id,
                        "hash mismatch: the entry's stored data no longer matches its sealed hash"
                            .to_owned(),
                    ),
                }
            }
            _ => unsealed += 1,
        }
        for p in &s.entry.postings {
            let slot = sums
                .entry((p.account_id.0, s.entry.effective_date))
                .or_default();
            match p.direction {
                Direction::Debit => slot.0 += i128::from(p.amount.amount_minor()),
                Direction::Credit => slot.1 += i128::from(p.amount.amount_minor()),
            }
        }
        if entries.is_multiple_of(65_536) {
            progress(entries);
        }
        Ok(())
    })
    .await?;
    progress(entries);

    // Counts that catch rows the joins cannot see: orphan postings, lost queue rows.
    let (posting_rows, unsealed_rows, chain_rows) = counts(db).await?;
    if posting_rows != postings {
        problems.add(
            None,
            None,
            format!(
                "{} postings belong to no entry",
                posting_rows.abs_diff(postings)
            ),
        );
    }
    if unsealed_rows != unsealed {
        problems.add(None, None, format!(
            "{unsealed} entries are unsealed but the sealing queue holds {unsealed_rows}: an entry is missing from the chain"
        ));
    }
    if chain_rows != sealed || sealed_links != sealed {
        problems.add(
            None,
            None,
            format!("the chain has {chain_rows} links but {sealed} sealed entries were found"),
        );
    }

    // The balance table against the postings.
    let table = balance_rows(db).await?;
    let mut table_map: HashMap<(i64, NaiveDate), (i128, i128)> =
        HashMap::with_capacity(table.len());
    for (a, d, deb, cred) in table {
        table_map.insert((a, d), (i128::from(deb), i128::from(cred)));
    }
    let mut keys: Vec<&(i64, NaiveDate)> = sums.keys().chain(table_map.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let want = sums.get(k).copied().unwrap_or_default();
        let got = table_map.get(k).copied().unwrap_or_default();
        if want != got {
            let code = snap
                .by_id
                .get(&AccountId(k.0))
                .map(|a| a.code.to_string())
                .unwrap_or_else(|| format!("id {}", k.0));
            problems.add(None, None, format!(
                "balance of account {code} on {}: table says debits {} / credits {}, postings add up to {} / {}",
                k.1, got.0, got.1, want.0, want.1
            ));
        }
    }

    problems.list.sort_by_key(|(s, e, _)| (*s, *e));
    let sample: Vec<ChainBreak> = problems
        .list
        .iter()
        .take(20)
        .map(|(_, _, b)| b.clone())
        .collect();
    Ok(VerifyReport {
        entries,
        postings,
        sealed,
        unsealed,
        chain_head_seq: head.as_ref().map(|h| h.0),
        chain_head_hash: head.as_ref().map(|h| hex::encode(&h.1)),
        first_break: sample.first().cloned(),
        problems: problems.count,
        sample,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

async fn counts(db: &Db) -> Result<(u64, u64, u64)> {
    const SQL: &str = "SELECT (SELECT count(*) FROM ledger_postings), (SELECT count(*) FROM ledger_unsealed), (SELECT count(*) FROM ledger_chain)";
    let (a, b, c): (i64, i64, i64) = match db {
        Db::Sqlite(s) => sqlx::query_as(SQL).fetch_one(&s.pool).await?,
        Db::Postgres(p) => sqlx::query_as(SQL).fetch_one(p).await?,
    };
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok((u(a), u(b), u(c)))
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
