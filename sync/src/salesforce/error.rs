//! What a Salesforce call can fail with, and whether trying again later can help.
//!
//! No variant ever carries a secret: not the private key, the client secret nor an access
//! token (transport errors are stored as text with their URL, which holds no secret).

use super::wire::{ApiError, OAuthError};

/// Error codes that mean "the same request may succeed later".
const RETRYABLE_CODES: &[&str] = &[
    "REQUEST_LIMIT_EXCEEDED",
    "UNABLE_TO_LOCK_ROW",
    "SERVER_UNAVAILABLE",
    "UNKNOWN_EXCEPTION",
    "QUERY_TIMEOUT",
    "TXN_SECURITY_METERING_ERROR",
];

#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    /// No answer (connection refused, reset, timeout, TLS).
    #[error("salesforce transport error: {message}")]
    Transport { message: String },

    /// The token endpoint refused the credentials (`invalid_grant`, `invalid_client_id`, …).
    #[error("salesforce login refused ({status}): {error}: {description}")]
    OAuth {
        status: u16,
        error: String,
        description: String,
    },

    /// A REST error answer: the status and Salesforce's `[{"message","errorCode","fields"}]`.
    #[error("salesforce answered {status}: {}", display_errors(.errors))]
    Api { status: u16, errors: Vec<ApiError> },

    /// An upsert by external id matched several records (HTTP 300). Nothing was written;
    /// the candidates are listed and none is picked.
    #[error("upsert {object}.{field} = {value} matched {} records: {}", .ids.len(), .ids.join(", "))]
    MultipleMatches {
        object: String,
        field: String,
        value: String,
        ids: Vec<String>,
    },

    /// An answer that is not what Salesforce sends (truncated JSON, wrong shape, bad CSV).
    #[error("malformed salesforce response ({status}) from {endpoint}: {detail}")]
    MalformedResponse {
        status: u16,
        endpoint: String,
        detail: String,
    },

    /// The client refused to spend more of the daily API allowance (see `LimitPolicy`).
    #[error("salesforce API usage {used}/{max} is within the reserve; call not made")]
    LimitReserve { used: u64, max: u64 },

    /// A Bulk API 2.0 job ended `Failed` or `Aborted`, or did not finish in time.
    #[error("bulk job {job_id} ended {state}: {message}")]
    BulkJob {
        job_id: String,
        state: String,
        message: String,
    },

    /// Bad input on our side (an empty id, an unparsable key): never sent.
    #[error("invalid salesforce request: {0}")]
    Invalid(String),
}

fn display_errors(errors: &[ApiError]) -> String {
    if errors.is_empty() {
        return "(no error body)".into();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SalesforceError {
    /// Whether the same call may succeed if made again later: transport failures, 5xx,
    /// `REQUEST_LIMIT_EXCEEDED`, `UNABLE_TO_LOCK_ROW`, `SERVER_UNAVAILABLE` and the like.
    /// Validation (`INVALID_FIELD`, `MALFORMED_QUERY`, `REQUIRED_FIELD_MISSING`,
    /// `DUPLICATE_VALUE`, `FIELD_CUSTOM_VALIDATION_EXCEPTION`), 400 and 404 are permanent;
    /// so are multiple matches (a person must choose). A malformed answer is retryable: it
    /// is what a proxy or an interrupted response produces.
    pub fn retryable(&self) -> bool {
        match self {
            SalesforceError::Transport { .. } => true,
            SalesforceError::OAuth { status, .. } => *status >= 500,
            SalesforceError::Api { status, errors } => {
                *status >= 500
                    || *status == 429
                    || errors
                        .iter()
                        .any(|e| RETRYABLE_CODES.contains(&e.error_code.as_str()))
            }
            SalesforceError::MultipleMatches { .. } => false,
            SalesforceError::MalformedResponse { .. } => true,
            SalesforceError::LimitReserve { .. } => true,
            SalesforceError::BulkJob { .. } => false,
            SalesforceError::Invalid(_) => false,
        }
    }

    /// The first Salesforce error code, if the answer carried one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            SalesforceError::Api { errors, .. } => errors.first().map(|e| e.error_code.as_str()),
            SalesforceError::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }

    pub(crate) fn oauth(status: u16, e: OAuthError) -> SalesforceError {
        SalesforceError::OAuth {
            status,
            error: e.error,
            description: e.error_description,
        }
    }
}

/// Whether a per-record error code (inside a collection result) is worth retrying.
pub fn record_error_retryable(status_code: &str) -> bool {
    RETRYABLE_CODES.contains(&status_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> SalesforceError {
        SalesforceError::Api {
            status,
            errors: vec![ApiError::new(code, "m")],
        }
    }

    #[test]
    fn classification() {
        let check = |e: SalesforceError, want: bool| assert_eq!(e.retryable(), want, "{e}");
        check(api(503, "SERVER_UNAVAILABLE"), true);
        check(api(500, "UNKNOWN_EXCEPTION"), true);
        check(api(403, "REQUEST_LIMIT_EXCEEDED"), true);
        check(api(400, "UNABLE_TO_LOCK_ROW"), true);
        check(api(400, "INVALID_FIELD"), false);
        check(api(400, "MALFORMED_QUERY"), false);
        check(api(400, "REQUIRED_FIELD_MISSING"), false);
        check(api(400, "DUPLICATE_VALUE"), false);
        check(api(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION"), false);
        check(api(404, "NOT_FOUND"), false);
        check(
            SalesforceError::Transport {
                message: "reset".into(),
            },
            true,
        );
        check(
            SalesforceError::MalformedResponse {
                status: 200,
                endpoint: "/x".into(),
                detail: "eof".into(),
            },
            true,
        );
        check(
            SalesforceError::MultipleMatches {
                object: "Account".into(),
                field: "X__c".into(),
                value: "1".into(),
                ids: vec![],
            },
            false,
        );
    }
}
