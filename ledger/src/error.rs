//! Ledger errors: every rejection carries a stable machine-readable code and, where one
//! field is at fault, its path (`postings[1].amount`), so the HTTP edge and the CLI can
//! say exactly what to fix.

use crate::money::MoneyError;

/// Stable error codes. The HTTP edge maps them to status codes; clients match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    MalformedJson,
    MissingField,
    InvalidField,
    UnknownCurrency,
    InvalidAmount,
    InvalidAmountScale,
    AmountOverflow,
    NonPositiveAmount,
    TooFewPostings,
    TooManyPostings,
    UnbalancedEntry,
    UnknownAccount,
    CurrencyMismatch,
    CustomerRequired,
    PeriodClosed,
    InvalidPeriod,
    IdempotencyKeyReused,
    AlreadyReversed,
    EntryNotFound,
    AccountNotFound,
    AccountExists,
    BatchTooLarge,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::UnknownCurrency => "unknown_currency",
            ErrorCode::InvalidAmount => "invalid_amount",
            ErrorCode::InvalidAmountScale => "invalid_amount_scale",
            ErrorCode::AmountOverflow => "amount_overflow",
            ErrorCode::NonPositiveAmount => "non_positive_amount",
            ErrorCode::TooFewPostings => "too_few_postings",
            ErrorCode::TooManyPostings => "too_many_postings",
            ErrorCode::UnbalancedEntry => "unbalanced_entry",
            ErrorCode::UnknownAccount => "unknown_account",
            ErrorCode::CurrencyMismatch => "currency_mismatch",
            ErrorCode::CustomerRequired => "customer_required",
            ErrorCode::PeriodClosed => "period_closed",
            ErrorCode::InvalidPeriod => "invalid_period",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::AlreadyReversed => "already_reversed",
            ErrorCode::EntryNotFound => "entry_not_found",
            ErrorCode::AccountNotFound => "account_not_found",
            ErrorCode::AccountExists => "account_exists",
            ErrorCode::BatchTooLarge => "batch_too_large",
        }
    }

    /// Whether the caller can do nothing but look elsewhere (404-like).
    pub fn is_not_found(self) -> bool {
        matches!(self, ErrorCode::EntryNotFound | ErrorCode::AccountNotFound)
    }

    /// Whether the request clashes with existing state (409-like) rather than being malformed.
    pub fn is_conflict(self) -> bool {
        matches!(
            self,
            ErrorCode::AccountExists | ErrorCode::AlreadyReversed | ErrorCode::PeriodClosed
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request the ledger refuses: nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub code: ErrorCode,
    /// Path of the offending field in the request, when there is one.
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    pub fn new(
        code: ErrorCode,
        field: impl Into<Option<String>>,
        message: impl Into<String>,
    ) -> Self {
        Rejection {
            code,
            field: field.into(),
            message: message.into(),
        }
    }

    /// A money parsing / arithmetic error, attributed to `field`.
    pub fn money(err: &MoneyError, field: &str) -> Self {
        let code = match err {
            MoneyError::UnknownCurrency(_) | MoneyError::NoMinorUnit(_) => {
                ErrorCode::UnknownCurrency
            }
            MoneyError::InvalidAmount { .. } => ErrorCode::InvalidAmount,
            MoneyError::ScaleTooLarge { .. } => ErrorCode::InvalidAmountScale,
            MoneyError::Overflow => ErrorCode::AmountOverflow,
            MoneyError::CurrencyMismatch { .. } => ErrorCode::CurrencyMismatch,
            MoneyError::InvalidRate(_) => ErrorCode::InvalidField,
        };
        Rejection::new(code, Some(field.to_owned()), format!("{field}: {err}"))
    }
}

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The caller's request is wrong; nothing was written.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The database failed; the operation was rolled back.
    #[error("ledger storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    /// A bulk scan of the SQLite file failed.
    #[error("ledger scan failed: {0}")]
    Scan(#[from] rusqlite::Error),
    /// Stored data breaks an invariant (an entry that does not balance on read, say).
    #[error("ledger data is corrupt: {0}")]
    Corrupt(String),
    /// The writer has stopped (shutdown).
    #[error("the ledger writer is not running")]
    WriterStopped,
    #[error("I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

impl LedgerError {
    pub fn rejected(
        code: ErrorCode,
        field: impl Into<Option<String>>,
        message: impl Into<String>,
    ) -> Self {
        LedgerError::Rejected(Rejection::new(code, field, message))
    }

    /// The rejection, if this is the caller's fault.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            LedgerError::Rejected(r) => Some(r),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        self.rejection().map(|r| r.code)
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

impl From<LedgerError> for std::io::Error {
    fn from(e: LedgerError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

impl From<rusqlite::types::FromSqlError> for LedgerError {
    /// A column holding the wrong type: the data, not the caller, is at fault.
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        LedgerError::Corrupt(format!("unexpected column type: {e}"))
    }
}
