//! What an Intacct call can fail with, and whether trying again later can help.
//!
//! No variant carries a secret: not the sender password, the user password nor a session id.

use super::wire::{ErrorDetail, display_errors};

/// Intacct's rate-limit error number (HTTP 429).
pub const RATE_LIMIT_ERRORNO: &str = "GW-0010";
/// "The CDN cut the connection but the system is still processing": never retried blindly.
pub const HTTP_CDN_TIMEOUT: u16 = 524;

#[derive(Debug, thiserror::Error)]
pub enum IntacctError {
    /// No answer (connection refused, reset, timeout).
    #[error("intacct transport error: {message}")]
    Transport { message: String },

    /// An HTTP error status; any `<errormessage>` in the body is kept (`XMLGW_JPP0002` on 401,
    /// `GW-0010` on 429).
    #[error("intacct answered HTTP {status}: {}", display_errors(.errors))]
    Http {
        status: u16,
        errors: Vec<ErrorDetail>,
    },

    /// `<control><status>failure</status>`: the sender credentials, the document, the company.
    #[error("intacct refused the request (control): {}", display_errors(.errors))]
    Control { errors: Vec<ErrorDetail> },

    /// `<authentication><status>failure</status>`: user login or session refused.
    #[error("intacct refused the sign-in: {}", display_errors(.errors))]
    Authentication { errors: Vec<ErrorDetail> },

    /// One function's `<result>` was `failure` or `aborted`.
    #[error("intacct {function} ({controlid}) {status}: {}", display_errors(.errors))]
    Function {
        function: String,
        controlid: String,
        /// `failure` or `aborted`.
        status: String,
        errors: Vec<ErrorDetail>,
    },

    /// An answer that is not what Intacct sends.
    #[error("malformed intacct response (HTTP {status}): {detail}")]
    MalformedResponse { status: u16, detail: String },

    /// Bad input on our side (page size out of range, more than 100 keys): never sent.
    #[error("invalid intacct request: {0}")]
    Invalid(String),
}

impl IntacctError {
    /// Whether the same request may succeed later: transport failures, HTTP 5xx except 524,
    /// 429 and `GW-0010` anywhere. A 524 may have been processed: resend only an idempotent
    /// request (`uniqueid=true`) or look the record up first — the caller decides.
    pub fn retryable(&self) -> bool {
        match self {
            IntacctError::Transport { .. } => true,
            IntacctError::Http { status, errors } => {
                (*status >= 500 && *status != HTTP_CDN_TIMEOUT)
                    || *status == 429
                    || has_rate_limit(errors)
            }
            IntacctError::Control { errors }
            | IntacctError::Authentication { errors }
            | IntacctError::Function { errors, .. } => has_rate_limit(errors),
            IntacctError::MalformedResponse { .. } | IntacctError::Invalid(_) => false,
        }
    }

    /// Whether this is a rate-limit answer (back off before trying again).
    pub fn is_rate_limited(&self) -> bool {
        match self {
            IntacctError::Http { status: 429, .. } => true,
            IntacctError::Http { errors, .. }
            | IntacctError::Control { errors }
            | IntacctError::Authentication { errors }
            | IntacctError::Function { errors, .. } => has_rate_limit(errors),
            _ => false,
        }
    }

    /// Intacct's error list, if the answer had one.
    pub fn errors(&self) -> &[ErrorDetail] {
        match self {
            IntacctError::Http { errors, .. }
            | IntacctError::Control { errors }
            | IntacctError::Authentication { errors }
            | IntacctError::Function { errors, .. } => errors,
            _ => &[],
        }
    }

    /// A `readMore` on a resultId Intacct no longer holds.
    pub fn is_expired_result_id(&self) -> bool {
        matches!(self, IntacctError::Function { function, .. } if function == "readMore")
            && self.errors().iter().any(|e| {
                e.errorno == "readMore failed" || e.description2.contains("expired resultId")
            })
    }

    /// Whether any error has this `errorno`.
    pub fn has_errorno(&self, errorno: &str) -> bool {
        self.errors().iter().any(|e| e.errorno == errorno)
    }
}

fn has_rate_limit(errors: &[ErrorDetail]) -> bool {
    errors.iter().any(|e| {
        e.errorno == RATE_LIMIT_ERRORNO || e.description2.contains("API rate limit exceeded")
    })
}
