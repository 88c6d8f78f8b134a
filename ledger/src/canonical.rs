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
    pub fn new(tag: &[u8]) -> Self {
        let mut e = Encoder {
            buf: Vec::with_capacity(256),
        };
        e.bytes(tag);
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

    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.byte(0),
            Some(s) => {
                self.byte(1);
                self.str(s);
            }
        }
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
        self.i64(i64::from(d.num_days_from_ce()));
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.buf).into()
    }
}

/// The canonical bytes of a stored entry: header, then every posting in line order,
/// each with the account's code as well as its id (so re-pointing an account is visible).
pub fn entry_bytes(entry: &JournalEntry) -> Vec<u8> {
    let mut e = Encoder::new(b"cashloop-entry-v1");
    e.i64(entry.id.0);
    e.str(entry.entity.as_str());
    e.str(entry.idempotency_key.as_str());
    e.date(entry.effective_date);
    e.i64(entry.recorded_at.timestamp_micros());
    e.str(entry.source.as_str());
    e.opt_str(entry.external_ref.as_ref().map(|t| t.as_str()));
    e.opt_str(entry.memo.as_ref().map(|t| t.as_str()));
    e.opt_i64(entry.reverses_entry_id.map(|id| id.0));
    e.u64(entry.postings.len() as u64);
    for p in &entry.postings {
        e.u64(u64::from(p.line));
        e.i64(p.account_id.0);
        e.str(p.account_code.as_str());
        e.byte(p.direction.as_char() as u8);
        e.i64(p.amount.amount_minor());
        e.str(p.amount.currency().code());
        e.opt_str(p.customer_id.as_ref().map(|c| c.as_str()));
        e.opt_str(p.document_ref.as_ref().map(|t| t.as_str()));
        e.opt_str(p.memo.as_ref().map(|t| t.as_str()));
    }
    e.buf
}

/// `SHA-256(prev_hash ‖ canonical bytes of entry)`.
pub fn chain_hash(prev_hash: &[u8; 32], entry: &JournalEntry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(entry_bytes(entry));
    h.finalize().into()
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
