//! The fast half of `ledger verify`: every entry re-encoded and re-hashed straight from the
//! database rows, in parallel over ranges of entry ids.
//!
//! Each partition merges three streams sorted by entry id — entries, postings, chain links —
//! so there is no join, and encodes into one reused buffer, so there is no allocation per
//! entry. A link checks on its own (`SHA-256(stored prev_hash ‖ bytes) = stored hash`), which
//! is what makes the work divisible; the continuity of the links (each `prev_hash` equals the
//! previous `hash`) is checked by a separate pass over the chain in sequence order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Datelike, NaiveDate};
use db::Db;
use futures_util::TryStreamExt;

use crate::canonical::{EntryEncoder, HeaderRef, PostingRef};
use crate::error::{LedgerError, Result};

/// FxHash (rustc's hasher): a multiply and a rotate per word. The verifier's maps are keyed
/// by account ids and days from the database, not by attacker-chosen strings, so SipHash's
/// flood resistance buys nothing here and costs a third of the per-posting time.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(u64::from_ne_bytes(n.to_ne_bytes()));
    }
    fn write_i32(&mut self, n: i32) {
        self.write_i64(i64::from(n));
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = std::hash::BuildHasherDefault<FxHasher>;
pub(crate) type FxMap<K, V> = HashMap<K, V, FxBuild>;

/// A problem found, keyed for ordering by (seq, entry id); unknown parts sort last.
#[derive(Clone, Debug)]
pub(crate) struct Problem {
    pub seq: Option<i64>,
    pub entry_id: Option<i64>,
    pub reason: String,
}

/// Problems found, keeping only the earliest so memory stays bounded on a badly broken ledger.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub list: Vec<Problem>,
    pub count: u64,
}

const KEEP_PROBLEMS: usize = 100;
/// Entries between progress updates.
const PROGRESS_STEP: u64 = 4096;

impl Problems {
    pub fn add(&mut self, seq: Option<i64>, entry_id: Option<i64>, reason: String) {
        self.count += 1;
        self.list.push(Problem {
            seq,
            entry_id,
            reason,
        });
        if self.list.len() > 10 * KEEP_PROBLEMS {
            self.sort();
            self.list.truncate(KEEP_PROBLEMS);
        }
    }

    pub fn merge(&mut self, other: Problems) {
        self.count += other.count;
        self.list.extend(other.list);
        self.sort();
        self.list.truncate(KEEP_PROBLEMS);
    }

    pub fn sort(&mut self) {
        self.list
            .sort_by_key(|p| (p.seq.unwrap_or(i64::MAX), p.entry_id.unwrap_or(i64::MAX)));
    }
}

/// What one partition found.
#[derive(Debug, Default)]
pub(crate) struct Partial {
    pub entries: u64,
    pub postings: u64,
    pub sealed: u64,
    pub unsealed: u64,
    pub problems: Problems,
    /// (account id, effective day as days from CE) → (debits, credits).
    pub sums: FxMap<(i64, i32), (i128, i128)>,
    pub links: Links,
}

/// The chain's continuity, checked from links seen in entry-id order. Where consecutive links
/// of a stream have consecutive sequence numbers, `prev_hash` is checked on the spot; the
/// few links at a discontinuity (stream edges, entries sealed out of id order) are kept and
/// matched up across partitions at the end — so the chain is read once, not twice.
#[derive(Debug, Default)]
pub(crate) struct Links {
    last: Option<(i64, [u8; 32])>,
    /// Links whose predecessor was not seen just before them: (seq, prev_hash).
    needs: Vec<(i64, [u8; 32])>,
    /// Links whose successor was not seen just after them: (seq, hash).
    provides: Vec<(i64, [u8; 32])>,
    pub count: u64,
    pub head: Option<(i64, [u8; 32])>,
    min_seq: Option<i64>,
}

impl Links {
    fn see(
        &mut self,
        seq: i64,
        prev: [u8; 32],
        hash: [u8; 32],
        problems: &mut Problems,
        entry_id: i64,
    ) {
        self.count += 1;
        match self.last {
            Some((ls, lh)) if ls + 1 == seq => {
                if prev != lh {
                    problems.add(
                        Some(seq),
                        Some(entry_id),
                        "prev_hash does not match the hash of the previous link".to_owned(),
                    );
                }
            }
            Some(last) => {
                self.provides.push(last);
                self.needs.push((seq, prev));
            }
            None => self.needs.push((seq, prev)),
        }
        self.last = Some((seq, hash));
        if self.head.is_none_or(|(s, _)| seq > s) {
            self.head = Some((seq, hash));
        }
        if self.min_seq.is_none_or(|m| seq < m) {
            self.min_seq = Some(seq);
        }
    }

    /// Closes this stream (its last link provides for whatever follows it elsewhere).
    fn close(&mut self) {
        if let Some(last) = self.last.take() {
            self.provides.push(last);
        }
    }

    fn merge(&mut self, mut other: Links) {
        other.close();
        self.close();
        self.count += other.count;
        self.needs.extend(other.needs);
        self.provides.extend(other.provides);
        if let Some((s, h)) = other.head
            && self.head.is_none_or(|(mine, _)| s > mine)
        {
            self.head = Some((s, h));
        }
        if let Some(m) = other.min_seq
            && self.min_seq.is_none_or(|mine| m < mine)
        {
            self.min_seq = Some(m);
        }
    }

    /// Matches the discontinuities and checks the sequence is 1..=count with no gap.
    pub fn check(&mut self, problems: &mut Problems) {
        self.close();
        let provided: HashMap<i64, [u8; 32]> = self.provides.iter().copied().collect();
        for (seq, prev) in &self.needs {
            let expected = if *seq == 1 {
                Some(crate::canonical::GENESIS_HASH)
            } else {
                provided.get(&(seq - 1)).copied()
            };
            match expected {
                Some(h) if h == *prev => {}
                Some(_) => problems.add(
                    Some(*seq),
                    None,
                    "prev_hash does not match the hash of the previous link".to_owned(),
                ),
                None => problems.add(Some(*seq), None, format!("link {} is missing", seq - 1)),
            }
        }
        let max = self.head.map_or(0, |h| h.0);
        if self.count > 0
            && (self.min_seq != Some(1) || u64::try_from(max).ok() != Some(self.count))
        {
            problems.add(
                None,
                None,
                format!(
                    "the chain has {} links but its sequence runs from {:?} to {max}",
                    self.count, self.min_seq
                ),
            );
        }
    }
}

impl Partial {
    pub fn merge(&mut self, other: Partial) {
        self.entries += other.entries;
        self.postings += other.postings;
        self.sealed += other.sealed;
        self.unsealed += other.unsealed;
        self.problems.merge(other.problems);
        for (k, (d, c)) in other.sums {
            let slot = self.sums.entry(k).or_default();
            slot.0 += d;
            slot.1 += c;
        }
        self.links.merge(other.links);
    }
}

/// Checks one entry at a time as its rows stream past.
struct Checker<'a> {
    codes: &'a FxMap<i64, String>,
    /// Entries checked, shared with the caller for a progress display.
    progress: &'a AtomicU64,
    enc: EntryEncoder,
    out: Partial,
    id: i64,
    days: i32,
    postings: u64,
    expected_line: u32,
    link: Option<(i64, [u8; 32], [u8; 32])>,
    bad_link: Option<(i64, String)>,
    /// Net per currency of the current entry.
    nets: Vec<([u8; 3], i128)>,
    open: bool,
}

impl<'a> Checker<'a> {
    fn new(codes: &'a FxMap<i64, String>, progress: &'a AtomicU64) -> Self {
        Checker {
            codes,
            progress,
            enc: EntryEncoder::new(),
            out: Partial::default(),
            id: 0,
            days: 0,
            postings: 0,
            expected_line: 1,
            link: None,
            bad_link: None,
            nets: Vec::with_capacity(2),
            open: false,
        }
    }

    fn begin(&mut self, h: &HeaderRef<'_>, link: Option<(i64, &[u8], &[u8])>) {
        self.end();
        self.open = true;
        self.id = h.id;
        self.days = h.effective_days;
        self.postings = 0;
        self.expected_line = 1;
        self.nets.clear();
        self.enc.header(h);
        self.link = None;
        self.bad_link = None;
        if let Some((seq, prev, hash)) = link {
            match (<[u8; 32]>::try_from(prev), <[u8; 32]>::try_from(hash)) {
                (Ok(p), Ok(hash)) => {
                    self.link = Some((seq, p, hash));
                    self.out
                        .links
                        .see(seq, p, hash, &mut self.out.problems, h.id);
                }
                _ => self.bad_link = Some((seq, "chain link holds a malformed hash".to_owned())),
            }
        }
    }

    fn posting(&mut self, p: RawPostingRef<'_>) {
        let code = match self.codes.get(&p.account_id) {
            Some(c) => c.as_bytes(),
            None => {
                self.out.problems.add(
                    self.link.map(|l| l.0),
                    Some(self.id),
                    format!("posting to unknown account id {}", p.account_id),
                );
                b""
            }
        };
        if p.line != self.expected_line {
            self.out.problems.add(
                self.link.map(|l| l.0),
                Some(self.id),
                format!(
                    "posting line {} where {} was expected",
                    p.line, self.expected_line
                ),
            );
        }
        self.expected_line = p.line.saturating_add(1);
        let direction = match p.direction {
            [d] => *d,
            _ => 0,
        };
        self.enc.posting(&PostingRef {
            line: p.line,
            account_id: p.account_id,
            account_code: code,
            direction,
            amount_minor: p.amount_minor,
            currency: p.currency,
            customer_id: p.customer_id,
            document_ref: p.document_ref,
            memo: p.memo,
        });
        self.postings += 1;
        let amount = i128::from(p.amount_minor);
        let cur: [u8; 3] = p.currency.try_into().unwrap_or([0; 3]);
        let signed = match direction {
            b'D' => amount,
            b'C' => -amount,
            _ => {
                self.out.problems.add(
                    self.link.map(|l| l.0),
                    Some(self.id),
                    format!(
                        "posting {} has direction {:?}",
                        p.line,
                        String::from_utf8_lossy(p.direction)
                    ),
                );
                0
            }
        };
        if amount <= 0 {
            self.out.problems.add(
                self.link.map(|l| l.0),
                Some(self.id),
                format!("posting {} has a non-positive amount", p.line),
            );
        }
        match self.nets.iter_mut().find(|(c, _)| *c == cur) {
            Some((_, n)) => *n += signed,
            None => self.nets.push((cur, signed)),
        }
        let slot = self.out.sums.entry((p.account_id, self.days)).or_default();
        match direction {
            b'D' => slot.0 += amount,
            _ => slot.1 += amount,
        }
    }

    fn end(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        if self.out.entries % PROGRESS_STEP == PROGRESS_STEP - 1 {
            self.progress.fetch_add(PROGRESS_STEP, Ordering::Relaxed);
        }
        let seq = self
            .link
            .map(|l| l.0)
            .or(self.bad_link.as_ref().map(|b| b.0));
        self.out.entries += 1;
        self.out.postings += self.postings;
        if self.postings < 2 {
            self.out.problems.add(
                seq,
                Some(self.id),
                format!("entry has {} postings", self.postings),
            );
        }
        let off: Vec<String> = self
            .nets
            .iter()
            .filter(|(_, n)| *n != 0)
            .map(|(c, n)| format!("{} off by {n} minor units", String::from_utf8_lossy(c)))
            .collect();
        if !off.is_empty() {
            self.out.problems.add(
                seq,
                Some(self.id),
                format!("entry does not balance: {}", off.join(", ")),
            );
        }
        if let Some((s, why)) = self.bad_link.take() {
            self.out.sealed += 1;
            self.out.problems.add(Some(s), Some(self.id), why);
        } else if let Some((s, prev, hash)) = self.link {
            self.out.sealed += 1;
            if self.enc.chain_hash(&prev) != hash {
                self.out.problems.add(
                    Some(s),
                    Some(self.id),
                    "hash mismatch: the entry's stored data no longer matches its sealed hash"
                        .to_owned(),
                );
            }
        } else {
            self.out.unsealed += 1;
        }
    }

    fn orphan_posting(&mut self, entry_id: i64) {
        self.out.postings += 1;
        self.out.problems.add(
            None,
            Some(entry_id),
            format!("a posting belongs to entry {entry_id}, which does not exist"),
        );
    }

    fn orphan_link(&mut self, entry_id: i64, seq: i64, prev: &[u8], hash: &[u8]) {
        if let (Ok(p), Ok(h)) = (<[u8; 32]>::try_from(prev), <[u8; 32]>::try_from(hash)) {
            self.out
                .links
                .see(seq, p, h, &mut self.out.problems, entry_id);
        }
        self.out.problems.add(
            Some(seq),
            Some(entry_id),
            format!("chain link {seq} names entry {entry_id}, which does not exist"),
        );
    }

    fn finish(mut self) -> Partial {
        self.end();
        self.progress
            .fetch_add(self.out.entries % PROGRESS_STEP, Ordering::Relaxed);
        self.out
    }
}

/// Borrowed posting columns (account code is looked up by id).
struct RawPostingRef<'a> {
    line: u32,
    account_id: i64,
    direction: &'a [u8],
    amount_minor: i64,
    currency: &'a [u8],
    customer_id: Option<&'a [u8]>,
    document_ref: Option<&'a [u8]>,
    memo: Option<&'a [u8]>,
}

const ENTRIES_SQL_PG: &str = "SELECT id, entity, idempotency_key, effective_date, recorded_at, source, external_ref, memo, reverses_entry_id
     FROM ledger_entries WHERE id BETWEEN $1 AND $2 ORDER BY id";
const POSTINGS_SQL_PG: &str = "SELECT entry_id, line, account_id, direction, amount_minor, currency, customer_id, document_ref, memo
     FROM ledger_postings WHERE entry_id BETWEEN $1 AND $2 ORDER BY entry_id, line";
/// PostgreSQL: entries and their links in one merge join, one stream instead of two (each
/// streamed row costs more in the driver than the join costs the server). A link whose entry
/// is gone is then missed here, and caught by comparing link counts.
const ENTRIES_WITH_LINKS_SQL_PG: &str =
    "SELECT e.id, e.entity, e.idempotency_key, e.effective_date, e.recorded_at, e.source,
            e.external_ref, e.memo, e.reverses_entry_id, c.seq, c.prev_hash, c.hash
     FROM ledger_entries e LEFT JOIN ledger_chain c ON c.entry_id = e.id
     WHERE e.id BETWEEN $1 AND $2 ORDER BY e.id";
const CHAIN_SQL_PG: &str = "SELECT entry_id, seq, prev_hash, hash FROM ledger_chain WHERE entry_id BETWEEN $1 AND $2 ORDER BY entry_id";

/// Entry-id ranges that split the journal into `parts` pieces.
pub(crate) async fn partitions(db: &Db, parts: usize) -> Result<Vec<(i64, i64)>> {
    const SQL: &str = "SELECT min(id), max(id) FROM ledger_entries";
    let (lo, hi): (Option<i64>, Option<i64>) = match db {
        Db::Sqlite(s) => sqlx::query_as(SQL).fetch_one(&s.pool).await?,
        Db::Postgres(p) => sqlx::query_as(SQL).fetch_one(p).await?,
    };
    // Orphan postings or links outside the entries' id range belong to the first / last part.
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(vec![(i64::MIN, i64::MAX)]);
    };
    let parts = i64::try_from(parts.max(1)).unwrap_or(1);
    let span = (hi - lo) / parts + 1;
    let mut out = Vec::new();
    let mut start = i64::MIN;
    for i in 0..parts {
        let end = if i == parts - 1 {
            i64::MAX
        } else {
            lo + span * (i + 1) - 1
        };
        if end >= start {
            out.push((start, end));
        }
        start = end.saturating_add(1);
    }
    Ok(out)
}

/// Verifies the entries with ids in `[lo, hi]`.
pub(crate) async fn partition(
    db: &Db,
    lo: i64,
    hi: i64,
    codes: Arc<FxMap<i64, String>>,
    progress: Arc<AtomicU64>,
) -> Result<Partial> {
    match db {
        Db::Postgres(pool) => pg_partition(pool, lo, hi, &codes, &progress).await,
        Db::Sqlite(s) => {
            let path = s.path.clone();
            tokio::task::spawn_blocking(move || sqlite_partition(&path, lo, hi, &codes, &progress))
                .await
                .map_err(|e| LedgerError::Corrupt(format!("verify worker failed: {e}")))?
        }
    }
}

/// Reads a `COPY … TO STDOUT (FORMAT binary)` stream one tuple at a time, without copying
/// fields out of its buffer. (Binary COPY is PostgreSQL's cheapest way to ship rows, and
/// parsing it by hand costs a fraction of decoding result rows through a driver.)
struct CopyReader<'c> {
    stream: futures_util::stream::BoxStream<'c, sqlx::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    /// Start of the current tuple's first field header, and where the next tuple starts.
    pos: usize,
    next: usize,
    /// (offset, length or -1 for NULL) of each field of the current tuple.
    fields: Vec<(usize, i32)>,
    header_done: bool,
    eof: bool,
}

const PGCOPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl<'c> CopyReader<'c> {
    fn new(stream: futures_util::stream::BoxStream<'c, sqlx::Result<bytes::Bytes>>) -> Self {
        CopyReader {
            stream,
            buf: Vec::with_capacity(1 << 20),
            pos: 0,
            next: 0,
            fields: Vec::with_capacity(16),
            header_done: false,
            eof: false,
        }
    }

    async fn fill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        // Drop what has been consumed before appending, so the buffer stays small.
        if self.next > 0 {
            self.buf.drain(..self.next);
            self.next = 0;
        }
        match self.stream.try_next().await? {
            Some(chunk) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            None => {
                self.eof = true;
                Ok(false)
            }
        }
    }

    /// Tries to parse one tuple at `self.next`; `None` if the buffer holds only part of it.
    fn parse(&mut self) -> Result<Option<bool>> {
        let b = &self.buf;
        let mut at = self.next;
        if !self.header_done {
            // Signature, flags (4), header extension length (4) + extension.
            if b.len() < at + 19 {
                return Ok(None);
            }
            if &b[at..at + 11] != PGCOPY_SIGNATURE {
                return Err(LedgerError::Corrupt(
                    "COPY stream has no PGCOPY signature".into(),
                ));
            }
            let ext = be_u32(&b[at + 15..at + 19]) as usize;
            if b.len() < at + 19 + ext {
                return Ok(None);
            }
            at += 19 + ext;
            self.next = at;
            self.header_done = true;
        }
        if b.len() < at + 2 {
            return Ok(None);
        }
        let n = i16::from_be_bytes([b[at], b[at + 1]]);
        if n == -1 {
            self.next = at + 2;
            return Ok(Some(false)); // trailer
        }
        at += 2;
        self.fields.clear();
        for _ in 0..n {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            at += 4;
            let used = usize::try_from(len.max(0)).unwrap_or(0);
            if b.len() < at + used {
                return Ok(None);
            }
            self.fields.push((at, len));
            at += used;
        }
        self.pos = self.next;
        self.next = at;
        Ok(Some(true))
    }

    /// Advances to the next tuple; false at the end of the stream.
    async fn advance(&mut self) -> Result<bool> {
        loop {
            match self.parse()? {
                Some(more) => return Ok(more),
                None => {
                    if !self.fill().await? {
                        return Err(LedgerError::Corrupt("COPY stream ended mid-tuple".into()));
                    }
                }
            }
        }
    }

    fn raw(&self, i: usize) -> Option<&[u8]> {
        let (off, len) = *self.fields.get(i)?;
        let len = usize::try_from(len).ok()?;
        self.buf.get(off..off + len)
    }

    fn i64(&self, i: usize) -> Result<i64> {
        self.raw(i)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
            .ok_or_else(|| LedgerError::Corrupt(format!("COPY field {i}: expected int8")))
    }

    fn i32(&self, i: usize) -> Result<i32> {
        self.raw(i)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_be_bytes)
            .ok_or_else(|| LedgerError::Corrupt(format!("COPY field {i}: expected int4/date")))
    }

    fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        match self.fields.get(i) {
            Some((_, -1)) => Ok(None),
            _ => self.i64(i).map(Some),
        }
    }

    /// A text field's bytes: hashed as stored, so no UTF-8 check is needed.
    fn str(&self, i: usize) -> Result<&[u8]> {
        self.raw(i)
            .ok_or_else(|| LedgerError::Corrupt(format!("COPY field {i}: expected text")))
    }

    fn opt_str(&self, i: usize) -> Result<Option<&[u8]>> {
        match self.fields.get(i) {
            Some((_, -1)) => Ok(None),
            _ => self.str(i).map(Some),
        }
    }

    fn bytes(&self, i: usize) -> Result<&[u8]> {
        self.raw(i)
            .ok_or_else(|| LedgerError::Corrupt(format!("COPY field {i}: expected bytea")))
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// PostgreSQL's binary dates count days from 2000-01-01, timestamps microseconds from it.
const PG_EPOCH_DAYS_FROM_CE: i32 = 730_120;
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A connection of its own (not from the pool: verify must not starve the server's pool, nor
/// deadlock on a small one), with sorts switched off so ranges stream in index order.
async fn verify_connection(pool: &sqlx::PgPool) -> Result<sqlx::PgConnection> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(&pool.connect_options()).await?;
    // Fresh bulk loads have stale statistics; a sort of a whole range would delay the first row.
    sqlx::raw_sql(
        "SET enable_sort = off; SET enable_bitmapscan = off; SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_nestloop = off",
    )
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

async fn pg_partition(
    pool: &sqlx::PgPool,
    lo: i64,
    hi: i64,
    codes: &FxMap<i64, String>,
    progress: &AtomicU64,
) -> Result<Partial> {
    let mut ce = verify_connection(pool).await?;
    let mut cp = verify_connection(pool).await?;
    let range = |sql: &str| {
        format!(
            "COPY ({}) TO STDOUT (FORMAT binary)",
            sql.replace("$1", &lo.to_string())
                .replace("$2", &hi.to_string())
        )
    };
    let mut entries = CopyReader::new(ce.copy_out_raw(&range(ENTRIES_WITH_LINKS_SQL_PG)).await?);
    let mut postings = CopyReader::new(cp.copy_out_raw(&range(POSTINGS_SQL_PG)).await?);
    let mut check = Checker::new(codes, progress);
    let mut p = postings.advance().await?;
    while entries.advance().await? {
        let id = entries.i64(0)?;
        while p && postings.i64(0)? < id {
            check.orphan_posting(postings.i64(0)?);
            p = postings.advance().await?;
        }
        let link = match entries.opt_i64(9)? {
            Some(seq) => Some((seq, entries.bytes(10)?, entries.bytes(11)?)),
            None => None,
        };
        check.begin(
            &HeaderRef {
                id,
                entity: entries.str(1)?,
                idempotency_key: entries.str(2)?,
                effective_days: entries.i32(3)? + PG_EPOCH_DAYS_FROM_CE,
                recorded_at_micros: entries.i64(4)? + PG_EPOCH_UNIX_MICROS,
                source: entries.str(5)?,
                external_ref: entries.opt_str(6)?,
                memo: entries.opt_str(7)?,
                reverses_entry_id: entries.opt_i64(8)?,
            },
            link,
        );
        while p && postings.i64(0)? == id {
            check.posting(RawPostingRef {
                line: u32::try_from(postings.i32(1)?).unwrap_or(0),
                account_id: postings.i64(2)?,
                direction: postings.str(3)?,
                amount_minor: postings.i64(4)?,
                currency: postings.str(5)?,
                customer_id: postings.opt_str(6)?,
                document_ref: postings.opt_str(7)?,
                memo: postings.opt_str(8)?,
            });
            p = postings.advance().await?;
        }
    }
    check.end();
    while p {
        check.orphan_posting(postings.i64(0)?);
        p = postings.advance().await?;
    }
    Ok(check.finish())
}

/// Days from CE of a `YYYY-MM-DD` string, without allocating.
fn sqlite_days(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let y = i32::try_from(num(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(y, num(5..7)?, num(8..10)?).map(|d| d.num_days_from_ce())
}

fn sqlite_micros(s: &str) -> Option<i64> {
    // Fixed width, as written by store::sqlite::ts: 2026-11-26T09:58:49.034121Z
    let b = s.as_bytes();
    if b.len() != 27 || b[10] != b'T' || b[19] != b'.' || b[26] != b'Z' {
        return crate::store::sqlite::parse_ts(s)
            .ok()
            .map(|t| t.timestamp_micros());
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)?;
    let t = date.and_hms_micro_opt(num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?)?;
    Some(t.and_utc().timestamp_micros())
}

fn sqlite_partition(
    path: &std::path::Path,
    lo: i64,
    hi: i64,
    codes: &FxMap<i64, String>,
    progress: &AtomicU64,
) -> Result<Partial> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // One read transaction: the three cursors see one snapshot.
    conn.execute_batch("BEGIN")?;
    let mut es = conn.prepare(&ENTRIES_SQL_PG.replace("$1", "?1").replace("$2", "?2"))?;
    let mut ps = conn.prepare(&POSTINGS_SQL_PG.replace("$1", "?1").replace("$2", "?2"))?;
    let mut cs = conn.prepare(&CHAIN_SQL_PG.replace("$1", "?1").replace("$2", "?2"))?;
    let mut erows = es.query([lo, hi])?;
    let mut prows = ps.query([lo, hi])?;
    let mut crows = cs.query([lo, hi])?;
    let mut check = Checker::new(codes, progress);
    let bad = |what: &str, id: i64| LedgerError::Corrupt(format!("entry {id}: malformed {what}"));
    let mut p = prows.next()?;
    let mut c = crows.next()?;
    while let Some(e) = erows.next()? {
        let id: i64 = e.get(0)?;
        while let Some(row) = c {
            let eid: i64 = row.get(0)?;
            if eid >= id {
                break;
            }
            check.orphan_link(
                eid,
                row.get(1)?,
                row.get_ref(2)?.as_blob()?,
                row.get_ref(3)?.as_blob()?,
            );
            c = crows.next()?;
        }
        while let Some(row) = p {
            let eid: i64 = row.get(0)?;
            if eid >= id {
                break;
            }
            check.orphan_posting(eid);
            p = prows.next()?;
        }
        let date = e.get_ref(3)?.as_str()?;
        let recorded = e.get_ref(4)?.as_str()?;
        let mut linked = false;
        let link = match c {
            Some(row) if row.get::<_, i64>(0)? == id => {
                linked = true;
                Some((
                    row.get::<_, i64>(1)?,
                    row.get_ref(2)?.as_blob()?,
                    row.get_ref(3)?.as_blob()?,
                ))
            }
            _ => None,
        };
        check.begin(
            &HeaderRef {
                id,
                entity: e.get_ref(1)?.as_bytes()?,
                idempotency_key: e.get_ref(2)?.as_bytes()?,
                effective_days: sqlite_days(date).ok_or_else(|| bad("effective_date", id))?,
                recorded_at_micros: sqlite_micros(recorded)
                    .ok_or_else(|| bad("recorded_at", id))?,
                source: e.get_ref(5)?.as_bytes()?,
                external_ref: e.get_ref(6)?.as_bytes_or_null()?,
                memo: e.get_ref(7)?.as_bytes_or_null()?,
                reverses_entry_id: e.get(8)?,
            },
            link,
        );
        if linked {
            c = crows.next()?;
        }
        while let Some(row) = p {
            if row.get::<_, i64>(0)? != id {
                break;
            }
            check.posting(RawPostingRef {
                line: row.get(1)?,
                account_id: row.get(2)?,
                direction: row.get_ref(3)?.as_bytes()?,
                amount_minor: row.get(4)?,
                currency: row.get_ref(5)?.as_bytes()?,
                customer_id: row.get_ref(6)?.as_bytes_or_null()?,
                document_ref: row.get_ref(7)?.as_bytes_or_null()?,
                memo: row.get_ref(8)?.as_bytes_or_null()?,
            });
            p = prows.next()?;
        }
    }
    check.end();
    while let Some(row) = c {
        check.orphan_link(
            row.get(0)?,
            row.get(1)?,
            row.get_ref(2)?.as_blob()?,
            row.get_ref(3)?.as_blob()?,
        );
        c = crows.next()?;
    }
    while let Some(row) = p {
        check.orphan_posting(row.get(0)?);
        p = prows.next()?;
    }
    Ok(check.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_parsers_agree_with_chrono() {
        for d in ["2026-10-31", "2024-02-29", "0001-01-01", "9999-12-31"] {
            let want = NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .unwrap()
                .num_days_from_ce();
            assert_eq!(sqlite_days(d), Some(want), "{d}");
        }
        assert_eq!(sqlite_days("2026-02-30"), None);
        assert_eq!(sqlite_days("2026-1-01"), None);
        for t in ["2026-11-26T09:58:49.034121Z", "2026-01-01T00:00:00.000000Z"] {
            let want = chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_micros();
            assert_eq!(sqlite_micros(t), Some(want), "{t}");
        }
    }
}
