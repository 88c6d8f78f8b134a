//! The vault: card and bank-account numbers in, random tokens out.
//!
//! Each payment method is stored as one row whose secret part (number, expiry, holder name,
//! postcode / routing, account) is sealed with envelope encryption ([`crate::crypto`]): a data
//! key per row, wrapped by the current key-encryption key, whose version is kept on the row.
//! The clear columns hold only what PCI DSS allows in the clear (brand, last four, expiry,
//! account type). A keyed fingerprint recognises the same card tokenized twice. Every
//! tokenization and every reveal is written to the audit log, without the secret.
//!
//! The CVV never reaches this module: it lives only in an authorization request.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use db::Db;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::bank::{AccountNumber, BankAccountType, BankError, RoutingNumber, SecCode};
use crate::card::{CardError, Expiry, Pan};
use crate::crypto::{self, CryptoError, FingerprintKey, KeyRing, Sealed};

/// Rows re-wrapped per transaction by [`Vault::rotate`].
pub const ROTATE_BATCH_ROWS: i64 = 500;
/// Longest holder name / postcode kept (they are PII, so sealed, but still bounded).
const MAX_TEXT_BYTES: usize = 128;

/// The keys the vault runs with; loaded from files or the environment, never the database.
#[derive(Debug)]
pub struct VaultKeys {
    pub ring: KeyRing,
    pub fingerprint: FingerprintKey,
}

/// Vault errors. Messages never contain a card or account number.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Card(#[from] CardError),
    #[error(transparent)]
    Bank(#[from] BankError),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("there is no payment method {0}")]
    NotFound(String),
    #[error("vault cryptography failed: {0}")]
    Crypto(#[from] CryptoError),
    #[error("vault storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("vault data is corrupt: {0}")]
    Corrupt(String),
}

impl VaultError {
    /// A stable code for the caller's mistakes; `None` for internal failures.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            VaultError::Card(e) => Some(e.code()),
            VaultError::Bank(e) => Some(e.code()),
            VaultError::Invalid { .. } => Some("invalid_field"),
            VaultError::NotFound(_) => Some("payment_method_not_found"),
            _ => None,
        }
    }

    pub fn field(&self) -> Option<&'static str> {
        match self {
            VaultError::Card(e) => Some(e.field()),
            VaultError::Bank(e) => Some(e.field()),
            VaultError::Invalid { field, .. } => Some(field),
            VaultError::NotFound(_) => Some("token"),
            _ => None,
        }
    }
}

pub type Result<T, E = VaultError> = std::result::Result<T, E>;

/// A card to tokenize.
#[derive(Debug)]
pub struct NewCard {
    pub number: Pan,
    pub expiry: Expiry,
    pub holder_name: Option<String>,
    pub postal_code: Option<String>,
}

/// A bank account (ACH / eCheck) to tokenize.
#[derive(Debug)]
pub struct NewBankAccount {
    pub routing: RoutingNumber,
    pub account: AccountNumber,
    pub account_type: BankAccountType,
    pub holder_name: String,
    pub sec_code: SecCode,
}

#[derive(Debug)]
pub enum NewPaymentMethod {
    Card(NewCard),
    BankAccount(NewBankAccount),
}

/// What a token stands for, as anyone may see it: no secret in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentMethod {
    pub token: String,
    pub kind: &'static str,
    pub brand: Option<String>,
    pub last4: String,
    pub exp_month: Option<u32>,
    pub exp_year: Option<i32>,
    pub account_type: Option<String>,
    pub sec_code: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    /// Keyed fingerprint (hex): equal for the same card or account, meaningless without the key.
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
}

/// A token's secrets, for the processor call that needs them. Zeroized on drop by its parts.
#[derive(Debug)]
pub enum Revealed {
    Card {
        number: Pan,
        expiry: Expiry,
        holder_name: Option<String>,
        postal_code: Option<String>,
    },
    BankAccount {
        routing: RoutingNumber,
        account: AccountNumber,
        account_type: BankAccountType,
        holder_name: String,
        sec_code: SecCode,
    },
}

/// What a key rotation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RotateReport {
    pub rewrapped: u64,
    pub current_version: u32,
}

/// The vault over one database.
#[derive(Clone, Debug)]
pub struct Vault {
    db: Db,
    keys: Arc<VaultKeys>,
}

fn text(field: &'static str, v: Option<&str>) -> Result<()> {
    match v {
        Some(s) if s.len() > MAX_TEXT_BYTES || s.chars().any(char::is_control) => {
            Err(VaultError::Invalid {
                field,
                message: format!("at most {MAX_TEXT_BYTES} bytes of printable text"),
            })
        }
        _ => Ok(()),
    }
}

/// Length-prefixed fields inside the sealed payload; the buffer is zeroized when dropped.
struct Payload(Zeroizing<Vec<u8>>);

impl Payload {
    fn new() -> Self {
        Payload(Zeroizing::new(Vec::with_capacity(128)))
    }
    fn put(&mut self, v: &[u8]) {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&v[..usize::from(len)]);
    }
    fn fields(bytes: &[u8]) -> Result<Vec<&[u8]>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = bytes
                .get(at..at + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .ok_or_else(|| VaultError::Corrupt("truncated payload".into()))?;
            let v = bytes
                .get(at + 2..at + 2 + len)
                .ok_or_else(|| VaultError::Corrupt("truncated payload".into()))?;
            out.push(v);
            at += 2 + len;
        }
        Ok(out)
    }
}

fn aad(kind: &str, token: &str) -> Vec<u8> {
    // Binds the ciphertext to its row: swapping blobs between rows fails to decrypt.
    format!("cashloop-vault-v1:{kind}:{token}").into_bytes()
}

fn utf8(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| VaultError::Corrupt("payload is not UTF-8".into()))
}

fn now() -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(Utc::now(), 6)
}

use db::sqlite_ts as ts;

impl Vault {
    pub fn new(db: Db, keys: Arc<VaultKeys>) -> Vault {
        Vault { db, keys }
    }

    /// Stores a payment method; returns its new token (a new token even for a card seen
    /// before — the equal fingerprint tells that it is the same card).
    pub async fn tokenize(&self, method: NewPaymentMethod, actor: &str) -> Result<PaymentMethod> {
        let token = crypto::new_token("pm_")?;
        let mut payload = Payload::new();
        let at = now();
        let (kind, fingerprint, mut pm) = match &method {
            NewPaymentMethod::Card(c) => {
                text("card.holder_name", c.holder_name.as_deref())?;
                text("card.postal_code", c.postal_code.as_deref())?;
                payload.put(c.number.expose_digits().as_bytes());
                payload.put(&c.expiry.month().to_be_bytes());
                payload.put(&c.expiry.year().to_be_bytes());
                payload.put(c.holder_name.as_deref().unwrap_or("").as_bytes());
                payload.put(c.postal_code.as_deref().unwrap_or("").as_bytes());
                let mut normal = Zeroizing::new(b"card:".to_vec());
                normal.extend_from_slice(c.number.expose_digits().as_bytes());
                let fp = self.keys.fingerprint.fingerprint(&normal);
                (
                    "card",
                    fp,
                    PaymentMethod {
                        token: token.clone(),
                        kind: "card",
                        brand: Some(c.number.brand().as_str().to_owned()),
                        last4: c.number.last4().to_string(),
                        exp_month: Some(c.expiry.month()),
                        exp_year: Some(c.expiry.year()),
                        account_type: None,
                        sec_code: None,
                        status: "active".into(),
                        status_reason: None,
                        fingerprint: String::new(),
                        created_at: at,
                    },
                )
            }
            NewPaymentMethod::BankAccount(b) => {
                text("bank_account.holder_name", Some(&b.holder_name))?;
                if b.holder_name.trim().is_empty() {
                    return Err(VaultError::Invalid {
                        field: "bank_account.holder_name",
                        message: "is required".into(),
                    });
                }
                crate::bank::check_sec_code(b.account_type, b.sec_code)?;
                payload.put(b.routing.as_str().as_bytes());
                payload.put(b.account.expose_digits().as_bytes());
                payload.put(b.account_type.as_str().as_bytes());
                payload.put(b.holder_name.as_bytes());
                payload.put(b.sec_code.as_str().as_bytes());
                let mut normal = Zeroizing::new(b"bank:".to_vec());
                normal.extend_from_slice(b.routing.as_str().as_bytes());
                normal.push(b':');
                normal.extend_from_slice(b.account.expose_digits().as_bytes());
                let fp = self.keys.fingerprint.fingerprint(&normal);
                (
                    "bank_account",
                    fp,
                    PaymentMethod {
                        token: token.clone(),
                        kind: "bank_account",
                        brand: None,
                        last4: b.account.last4().to_string(),
                        exp_month: None,
                        exp_year: None,
                        account_type: Some(b.account_type.as_str().to_owned()),
                        sec_code: Some(b.sec_code.as_str().to_owned()),
                        status: "active".into(),
                        status_reason: None,
                        fingerprint: String::new(),
                        created_at: at,
                    },
                )
            }
        };
        pm.fingerprint = hex::encode(fingerprint);
        let sealed = crypto::seal(&self.keys.ring, &payload.0, &aad(kind, &token))?;
        drop(payload);
        // The row and its audit record commit together: one transaction, one fsync.
        let mut tx = self
            .db
            .begin()
            .await
            .map_err(|e| VaultError::Corrupt(e.to_string()))?;
        self.insert(&mut tx, &pm, &fingerprint, &sealed).await?;
        let detail = format!("{kind} ok");
        let record = db::audit::AuditRecord {
            at: now(),
            actor,
            action: "vault.tokenize",
            subject: &token,
            detail: &detail,
        };
        db::audit::record_in(&mut tx, record).await?;
        tx.commit()
            .await
            .map_err(|e| VaultError::Corrupt(e.to_string()))?;
        Ok(pm)
    }

    async fn insert(
        &self,
        tx: &mut db::DbTx,
        pm: &PaymentMethod,
        fp: &[u8; 32],
        s: &Sealed,
    ) -> Result<()> {
        const COLS: &str = "token, kind, fingerprint, kek_version, wrapped_dek, dek_nonce, nonce, ciphertext, brand, last4, exp_month, exp_year, account_type, sec_code, status, created_at, updated_at";
        let month = pm.exp_month.map(i64::from);
        let year = pm.exp_year.map(i64::from);
        match tx {
            db::DbTx::Postgres(t) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO vault_payment_methods ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$16)"
                )))
                .bind(&pm.token)
                .bind(pm.kind)
                .bind(fp.as_slice())
                .bind(i64::from(s.kek_version))
                .bind(&s.wrapped_dek)
                .bind(s.dek_nonce.as_slice())
                .bind(s.nonce.as_slice())
                .bind(&s.ciphertext)
                .bind(&pm.brand)
                .bind(&pm.last4)
                .bind(month)
                .bind(year)
                .bind(&pm.account_type)
                .bind(&pm.sec_code)
                .bind(&pm.status)
                .bind(pm.created_at)
                .execute(&mut **t)
                .await?;
            }
            db::DbTx::Sqlite(t) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO vault_payment_methods ({COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?16)"
                )))
                .bind(&pm.token)
                .bind(pm.kind)
                .bind(fp.as_slice())
                .bind(i64::from(s.kek_version))
                .bind(&s.wrapped_dek)
                .bind(s.dek_nonce.as_slice())
                .bind(s.nonce.as_slice())
                .bind(&s.ciphertext)
                .bind(&pm.brand)
                .bind(&pm.last4)
                .bind(month)
                .bind(year)
                .bind(&pm.account_type)
                .bind(&pm.sec_code)
                .bind(&pm.status)
                .bind(ts(pm.created_at))
                .execute(&mut **t)
                .await?;
            }
        }
        Ok(())
    }

    async fn audit(&self, actor: &str, action: &str, subject: &str, detail: &str) -> Result<()> {
        let record = db::audit::AuditRecord {
            at: now(),
            actor,
            action,
            subject,
            detail,
        };
        db::audit::record(&self.db, record).await?;
        Ok(())
    }

    /// The stored row: clear columns and sealed parts.
    async fn row(&self, token: &str) -> Result<(PaymentMethod, Vec<u8>, Sealed)> {
        const SQL_PG: &str = "SELECT token, kind, fingerprint, kek_version, wrapped_dek, dek_nonce, nonce, ciphertext, brand, last4, exp_month, exp_year, account_type, sec_code, status, status_reason, created_at FROM vault_payment_methods WHERE token = $1";
        const SQL_SQLITE: &str = "SELECT token, kind, fingerprint, kek_version, wrapped_dek, dek_nonce, nonce, ciphertext, brand, last4, exp_month, exp_year, account_type, sec_code, status, status_reason, created_at FROM vault_payment_methods WHERE token = ?";
        use sqlx::Row;
        macro_rules! decode {
            ($r:expr, $created:expr) => {{
                let r = $r;
                let kind: String = r.try_get(1)?;
                let kek_version: i64 = r.try_get(3)?;
                let nonce12 = |v: Vec<u8>| {
                    <[u8; 12]>::try_from(v.as_slice())
                        .map_err(|_| VaultError::Corrupt("bad nonce".into()))
                };
                let fp: Vec<u8> = r.try_get(2)?;
                let sealed = Sealed {
                    kek_version: u32::try_from(kek_version)
                        .map_err(|_| VaultError::Corrupt("bad key version".into()))?,
                    wrapped_dek: r.try_get(4)?,
                    dek_nonce: nonce12(r.try_get(5)?)?,
                    nonce: nonce12(r.try_get(6)?)?,
                    ciphertext: r.try_get(7)?,
                };
                let pm = PaymentMethod {
                    token: r.try_get(0)?,
                    kind: if kind == "card" {
                        "card"
                    } else {
                        "bank_account"
                    },
                    brand: r.try_get(8)?,
                    last4: r.try_get(9)?,
                    exp_month: r
                        .try_get::<Option<i64>, _>(10)?
                        .and_then(|m| u32::try_from(m).ok()),
                    exp_year: r
                        .try_get::<Option<i64>, _>(11)?
                        .and_then(|y| i32::try_from(y).ok()),
                    account_type: r.try_get(12)?,
                    sec_code: r.try_get(13)?,
                    status: r.try_get(14)?,
                    status_reason: r.try_get(15)?,
                    fingerprint: hex::encode(&fp),
                    created_at: $created,
                };
                (pm, fp, sealed)
            }};
        }
        match &self.db {
            Db::Postgres(p) => {
                let r = sqlx::query(SQL_PG)
                    .bind(token)
                    .fetch_optional(p)
                    .await?
                    .ok_or_else(|| VaultError::NotFound(token.to_owned()))?;
                let created: DateTime<Utc> = r.try_get(16)?;
                Ok(decode!(&r, created))
            }
            Db::Sqlite(s) => {
                let r = sqlx::query(SQL_SQLITE)
                    .bind(token)
                    .fetch_optional(&s.pool)
                    .await?
                    .ok_or_else(|| VaultError::NotFound(token.to_owned()))?;
                let created: String = r.try_get(16)?;
                let created = DateTime::parse_from_rfc3339(&created)
                    .map_err(|_| VaultError::Corrupt("bad timestamp".into()))?
                    .with_timezone(&Utc);
                Ok(decode!(&r, created))
            }
        }
    }

    /// A keyed hash of a request, for Idempotency-Key comparisons: bodies hold card numbers,
    /// and an unkeyed hash of a PAN is guessable.
    pub fn request_hash(&self, route: &str, body: &[u8]) -> [u8; 32] {
        let mut m = Zeroizing::new(Vec::with_capacity(route.len() + body.len() + 8));
        m.extend_from_slice(b"idem:");
        m.extend_from_slice(route.as_bytes());
        m.push(0);
        m.extend_from_slice(body);
        self.keys.fingerprint.fingerprint(&m)
    }

    /// The token's public description.
    pub async fn get(&self, token: &str) -> Result<PaymentMethod> {
        Ok(self.row(token).await?.0)
    }

    /// The token's secrets, for `purpose` (written to the audit log with `actor`).
    pub async fn reveal(&self, token: &str, purpose: &str, actor: &str) -> Result<Revealed> {
        let (pm, _, sealed) = self.row(token).await?;
        let opened = crypto::open(&self.keys.ring, &sealed, &aad(pm.kind, token));
        let result = if opened.is_ok() { "ok" } else { "failed" };
        self.audit(actor, "vault.reveal", token, &format!("{purpose} {result}"))
            .await?;
        let plain = opened?;
        let f = Payload::fields(&plain)?;
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| VaultError::Corrupt("missing payload field".into()))
        };
        if pm.kind == "card" {
            let digits = Zeroizing::new(utf8(get(0)?)?);
            let month = u32::from_be_bytes(
                get(1)?
                    .try_into()
                    .map_err(|_| VaultError::Corrupt("bad month".into()))?,
            );
            let year = i32::from_be_bytes(
                get(2)?
                    .try_into()
                    .map_err(|_| VaultError::Corrupt("bad year".into()))?,
            );
            let opt = |b: &[u8]| -> Result<Option<String>> {
                let s = utf8(b)?;
                Ok(if s.is_empty() { None } else { Some(s) })
            };
            Ok(Revealed::Card {
                number: Pan::parse(&digits)?,
                expiry: Expiry::stored(month, year).map_err(VaultError::Card)?,
                holder_name: opt(get(3)?)?,
                postal_code: opt(get(4)?)?,
            })
        } else {
            let digits = Zeroizing::new(utf8(get(1)?)?);
            let account_type = match get(2)? {
                b"checking" => BankAccountType::Checking,
                b"savings" => BankAccountType::Savings,
                b"business_checking" => BankAccountType::BusinessChecking,
                _ => return Err(VaultError::Corrupt("bad account type".into())),
            };
            let sec_code = match get(4)? {
                b"PPD" => SecCode::Ppd,
                b"CCD" => SecCode::Ccd,
                b"WEB" => SecCode::Web,
                b"TEL" => SecCode::Tel,
                _ => return Err(VaultError::Corrupt("bad SEC code".into())),
            };
            Ok(Revealed::BankAccount {
                routing: RoutingNumber::parse(&utf8(get(0)?)?)?,
                account: AccountNumber::parse(&digits)?,
                account_type,
                holder_name: utf8(get(3)?)?,
                sec_code,
            })
        }
    }

    /// Sets a token's status (`active`, `disabled` after a return such as R02, `blocked` as
    /// unauthorized after R05/R07/R10/R29), with a reason; audited.
    pub async fn set_status(
        &self,
        token: &str,
        status: &str,
        reason: &str,
        actor: &str,
    ) -> Result<()> {
        if !matches!(status, "active" | "disabled" | "blocked") {
            return Err(VaultError::Invalid {
                field: "status",
                message: "must be active, disabled or blocked".into(),
            });
        }
        let n = match &self.db {
            Db::Postgres(p) => sqlx::query("UPDATE vault_payment_methods SET status = $1, status_reason = $2, updated_at = $3 WHERE token = $4")
                .bind(status)
                .bind(reason)
                .bind(now())
                .bind(token)
                .execute(p)
                .await?
                .rows_affected(),
            Db::Sqlite(s) => sqlx::query("UPDATE vault_payment_methods SET status = ?, status_reason = ?, updated_at = ? WHERE token = ?")
                .bind(status)
                .bind(reason)
                .bind(ts(now()))
                .bind(token)
                .execute(&s.pool)
                .await?
                .rows_affected(),
        };
        if n == 0 {
            return Err(VaultError::NotFound(token.to_owned()));
        }
        self.audit(actor, "vault.status", token, &format!("{status} {reason}"))
            .await
    }

    /// Tokens that hold the same card or account as `token` (by fingerprint), oldest first.
    pub async fn same_as(&self, token: &str) -> Result<Vec<String>> {
        let (_, fp, _) = self.row(token).await?;
        Ok(match &self.db {
            Db::Postgres(p) => {
                sqlx::query_scalar("SELECT token FROM vault_payment_methods WHERE fingerprint = $1 AND token <> $2 ORDER BY created_at, token")
                    .bind(&fp)
                    .bind(token)
                    .fetch_all(p)
                    .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_scalar("SELECT token FROM vault_payment_methods WHERE fingerprint = ? AND token <> ? ORDER BY created_at, token")
                    .bind(&fp)
                    .bind(token)
                    .fetch_all(&s.pool)
                    .await?
            }
        })
    }

    /// Re-wraps every data key not under the current key-encryption key, in small
    /// transactions, while the vault keeps serving: a row is readable throughout, because
    /// readers pick the key by the row's version and hold both keys during a rotation.
    pub async fn rotate(
        &self,
        actor: &str,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<RotateReport> {
        let current = self.keys.ring.current_version();
        let mut report = RotateReport {
            rewrapped: 0,
            current_version: current,
        };
        loop {
            let rows: Vec<(String, i64, Vec<u8>, Vec<u8>)> = match &self.db {
                Db::Postgres(p) => sqlx::query_as(
                    "SELECT token, kek_version, wrapped_dek, dek_nonce FROM vault_payment_methods WHERE kek_version <> $1 ORDER BY token LIMIT $2",
                )
                .bind(i64::from(current))
                .bind(ROTATE_BATCH_ROWS)
                .fetch_all(p)
                .await?,
                Db::Sqlite(s) => sqlx::query_as(
                    "SELECT token, kek_version, wrapped_dek, dek_nonce FROM vault_payment_methods WHERE kek_version <> ? ORDER BY token LIMIT ?",
                )
                .bind(i64::from(current))
                .bind(ROTATE_BATCH_ROWS)
                .fetch_all(&s.pool)
                .await?,
            };
            if rows.is_empty() {
                break;
            }
            let mut tx = self
                .db
                .begin()
                .await
                .map_err(|e| VaultError::Corrupt(e.to_string()))?;
            for (token, version, wrapped, dek_nonce) in rows {
                let old = Sealed {
                    kek_version: u32::try_from(version)
                        .map_err(|_| VaultError::Corrupt("bad key version".into()))?,
                    wrapped_dek: wrapped,
                    dek_nonce: <[u8; 12]>::try_from(dek_nonce.as_slice())
                        .map_err(|_| VaultError::Corrupt("bad nonce".into()))?,
                    nonce: [0; 12],
                    ciphertext: Vec::new(),
                };
                let new = crypto::rewrap(&self.keys.ring, &old)?;
                // Only if nobody rotated the row meanwhile (another `keys rotate` process).
                match &mut tx {
                    db::DbTx::Postgres(t) => {
                        sqlx::query("UPDATE vault_payment_methods SET kek_version = $1, wrapped_dek = $2, dek_nonce = $3, updated_at = now() WHERE token = $4 AND kek_version = $5")
                            .bind(i64::from(new.kek_version))
                            .bind(&new.wrapped_dek)
                            .bind(new.dek_nonce.as_slice())
                            .bind(&token)
                            .bind(version)
                            .execute(&mut **t)
                            .await?;
                    }
                    db::DbTx::Sqlite(t) => {
                        sqlx::query("UPDATE vault_payment_methods SET kek_version = ?, wrapped_dek = ?, dek_nonce = ?, updated_at = ? WHERE token = ? AND kek_version = ?")
                            .bind(i64::from(new.kek_version))
                            .bind(&new.wrapped_dek)
                            .bind(new.dek_nonce.as_slice())
                            .bind(ts(now()))
                            .bind(&token)
                            .bind(version)
                            .execute(&mut **t)
                            .await?;
                    }
                }
                report.rewrapped += 1;
            }
            tx.commit()
                .await
                .map_err(|e| VaultError::Corrupt(e.to_string()))?;
            progress(report.rewrapped);
        }
        self.audit(
            actor,
            "vault.rotate",
            "vault_payment_methods",
            &format!(
                "rewrapped {} rows under key version {current}",
                report.rewrapped
            ),
        )
        .await?;
        Ok(report)
    }
}
