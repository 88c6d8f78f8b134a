//! Canonical byte encoding of entries, for the hash chain and for idempotency hashes.
//!
//! Every field is written with a fixed-width or length-prefixed form, so no two different
//! entries encode to the same bytes (no ambiguity from separators), and the encoding does
//! not depend on the database, the platform or serde. The version tag is part of the bytes:
//! changing the layout means a new tag, never a silent change.

use chrono::{Datelike, NaiveDate};
use sha2::{Digest, Sha256};

use crate::entry::JournalEntry;

/// The hash that precedes the first entry of the chain.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// Appends canonical fields to a buffer.
#[derive(Debug)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// Starts with `tag`, a fixed constant per kind of encoding (domain separation, version).
    pub fn new(tag: &[u8]) -> Self {
        let mut e = Encoder {
            buf: Vec::with_capacity(256),
        };
        e.buf.extend_from_slice(tag);
        e
    }

    pub fn byte(&mut self, b: u8) {
        self.buf.push(b);
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Length-prefixed (u32: every text field is capped far below 4 GiB).
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn opt_bytes(&mut self, s: Option<&[u8]>) {
        match s {
            None => self.byte(0),
            Some(s) => {
                self.byte(1);
                self.bytes(s);
            }
        }
    }

    pub fn opt_str(&mut self, s: Option<&str>) {
        self.opt_bytes(s.map(str::as_bytes));
    }

    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.byte(0),
            Some(v) => {
                self.byte(1);
                self.i64(v);
            }
        }
    }

    pub fn date(&mut self, d: NaiveDate) {
        self.buf
            .extend_from_slice(&d.num_days_from_ce().to_be_bytes());
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.buf).into()
    }
}

/// The header fields of an entry, borrowed (the verifier encodes straight from database rows).
#[derive(Clone, Copy, Debug)]
pub struct HeaderRef<'a> {
    pub id: i64,
    pub entity: &'a [u8],
    pub idempotency_key: &'a [u8],
    /// Days from 0001-01-01 (chrono's `num_days_from_ce`).
    pub effective_days: i32,
    pub recorded_at_micros: i64,
    pub source: &'a [u8],
    pub external_ref: Option<&'a [u8]>,
    pub memo: Option<&'a [u8]>,
    pub reverses_entry_id: Option<i64>,
}

/// One posting's fields, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct PostingRef<'a> {
    pub line: u32,
    pub account_id: i64,
    pub account_code: &'a [u8],
    /// `b'D'` or `b'C'`.
    pub direction: u8,
    pub amount_minor: i64,
    pub currency: &'a [u8],
    pub customer_id: Option<&'a [u8]>,
    pub document_ref: Option<&'a [u8]>,
    pub memo: Option<&'a [u8]>,
}

/// Builds the canonical bytes of one entry incrementally; reusable across entries so a scan
/// of millions of entries allocates nothing per entry.
#[derive(Debug)]
pub struct EntryEncoder {
    head: Encoder,
    postings: Encoder,
    count: u32,
}

impl Default for EntryEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl EntryEncoder {
    /// Version 1 of the entry encoding.
    const TAG: &'static [u8] = b"CLE1";

    pub fn new() -> Self {
        EntryEncoder {
            head: Encoder::new(Self::TAG),
            postings: Encoder {
                buf: Vec::with_capacity(512),
            },
            count: 0,
        }
    }

    /// Starts a new entry (forgets the previous one).
    pub fn header(&mut self, h: &HeaderRef<'_>) {
        self.head.buf.clear();
        self.head.buf.extend_from_slice(Self::TAG);
        self.postings.buf.clear();
        self.count = 0;
        let e = &mut self.head;
        e.i64(h.id);
        e.bytes(h.entity);
        e.bytes(h.idempotency_key);
        e.buf.extend_from_slice(&h.effective_days.to_be_bytes());
        e.i64(h.recorded_at_micros);
        e.bytes(h.source);
        e.opt_bytes(h.external_ref);
        e.opt_bytes(h.memo);
        e.opt_i64(h.reverses_entry_id);
    }

    pub fn posting(&mut self, p: &PostingRef<'_>) {
        self.count += 1;
        let e = &mut self.postings;
        e.u32(p.line);
        e.i64(p.account_id);
        e.bytes(p.account_code);
        e.byte(p.direction);
        e.i64(p.amount_minor);
        e.bytes(p.currency);
        e.opt_bytes(p.customer_id);
        e.opt_bytes(p.document_ref);
        e.opt_bytes(p.memo);
    }

    /// `SHA-256(prev_hash ‖ canonical bytes)`.
    pub fn chain_hash(&self, prev_hash: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(prev_hash);
        h.update(&self.head.buf);
        h.update(self.count.to_be_bytes());
        h.update(&self.postings.buf);
        h.finalize().into()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.head.buf.clone();
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.postings.buf);
        out
    }
}

fn encode(entry: &JournalEntry) -> EntryEncoder {
    let mut enc = EntryEncoder::new();
    enc.header(&HeaderRef {
        id: entry.id.0,
        entity: entry.entity.as_str().as_bytes(),
        idempotency_key: entry.idempotency_key.as_str().as_bytes(),
        effective_days: entry.effective_date.num_days_from_ce(),
        recorded_at_micros: entry.recorded_at.timestamp_micros(),
        source: entry.source.as_str().as_bytes(),
        external_ref: entry.external_ref.as_ref().map(|t| t.as_str().as_bytes()),
        memo: entry.memo.as_ref().map(|t| t.as_str().as_bytes()),
        reverses_entry_id: entry.reverses_entry_id.map(|id| id.0),
    });
    for p in &entry.postings {
        enc.posting(&PostingRef {
            line: p.line,
            account_id: p.account_id.0,
            account_code: p.account_code.as_str().as_bytes(),
            direction: p.direction.as_char() as u8,
            amount_minor: p.amount.amount_minor(),
            currency: p.amount.currency().code().as_bytes(),
            customer_id: p.customer_id.as_ref().map(|c| c.as_str().as_bytes()),
            document_ref: p.document_ref.as_ref().map(|t| t.as_str().as_bytes()),
            memo: p.memo.as_ref().map(|t| t.as_str().as_bytes()),
        });
    }
    enc
}

/// The canonical bytes of a stored entry: header, then every posting in line order,
/// each with the account's code as well as its id (so re-pointing an account is visible).
pub fn entry_bytes(entry: &JournalEntry) -> Vec<u8> {
    encode(entry).to_bytes()
}

/// `SHA-256(prev_hash ‖ canonical bytes of entry)`.
pub fn chain_hash(prev_hash: &[u8; 32], entry: &JournalEntry) -> [u8; 32] {
    encode(entry).chain_hash(prev_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_and_length_prefixed_fields_do_not_collide() {
        let enc = |a: Option<&str>, b: Option<&str>| {
            let mut e = Encoder::new(b"t");
            e.opt_str(a);
            e.opt_str(b);
            e.sha256()
        };
        assert_ne!(enc(Some("ab"), Some("c")), enc(Some("a"), Some("bc")));
        assert_ne!(enc(None, Some("")), enc(Some(""), None));
        assert_ne!(enc(None, None), enc(Some(""), Some("")));
    }
}
