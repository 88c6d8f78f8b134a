//! What an X3 call can fail with, and whether trying again later can help.
//!
//! No variant carries a secret: not the password, not the bearer token, not an
//! `Authorization` header.

/// X3 message types (`CAdxMessage.type`, and `$severity` on REST).
pub const MESSAGE_INFO: u8 = 1;
pub const MESSAGE_WARNING: u8 = 2;
pub const MESSAGE_ERROR: u8 = 3;

/// One message X3 sent back: a SOAP `CAdxMessage` or a REST `$diagnoses` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct X3Message {
    /// 1 information, 2 warning, 3 error.
    pub kind: u8,
    pub text: String,
}

impl X3Message {
    pub fn error(text: impl Into<String>) -> X3Message {
        X3Message {
            kind: MESSAGE_ERROR,
            text: text.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.kind >= MESSAGE_ERROR
    }

    /// REST `$severity` → message type (`error`/`fatal` 3, `warning` 2, anything else 1).
    pub fn from_severity(severity: &str, text: impl Into<String>) -> X3Message {
        let kind = match severity.to_ascii_lowercase().as_str() {
            "error" | "fatal" => MESSAGE_ERROR,
            "warning" => MESSAGE_WARNING,
            _ => MESSAGE_INFO,
        };
        X3Message {
            kind,
            text: text.into(),
        }
    }

    /// The REST `$severity` of this message type.
    pub fn severity(&self) -> &'static str {
        match self.kind {
            MESSAGE_INFO => "info",
            MESSAGE_WARNING => "warning",
            _ => "error",
        }
    }
}

/// The texts of the error messages, joined with `; `.
pub fn display_messages(messages: &[X3Message]) -> String {
    let texts: Vec<&str> = messages
        .iter()
        .filter(|m| m.is_error())
        .map(|m| m.text.as_str())
        .collect();
    if texts.is_empty() {
        "(no error message)".into()
    } else {
        texts.join("; ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum X3Error {
    /// No answer: connection refused or reset.
    #[error("x3 transport error: {message}")]
    Transport { message: String },

    /// No answer within `timeout_ms`.
    #[error("x3 did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },

    /// HTTP 401: bad user / password or token (Syracuse).
    #[error("x3 refused the credentials (HTTP 401)")]
    Unauthorized,

    /// X3 refused the document on business grounds: messages of type 3 (SOAP `status` 0,
    /// REST 4xx with `$diagnoses` of severity `error`). X3's text is kept.
    #[error("x3 refused the {operation}: {}", display_messages(.messages))]
    Business {
        operation: String,
        messages: Vec<X3Message>,
    },

    /// HTTP 404: unknown class, representation, folder or record.
    #[error("x3 found nothing at {what} (HTTP 404): {}", display_messages(.messages))]
    NotFound {
        what: String,
        messages: Vec<X3Message>,
    },

    /// Any other HTTP error status; X3's `$diagnoses` if the body had them.
    #[error("x3 answered HTTP {status}: {}", display_messages(.messages))]
    Http {
        status: u16,
        messages: Vec<X3Message>,
        /// Whether X3 itself refused the request — a `$diagnoses` document, or a SOAP
        /// `Client` fault — rather than a proxy / gateway page or a SOAP `Server` fault.
        x3_diagnoses: bool,
    },

    /// A SOAP query answered `listSize` rows: the list may be cut, so it is not returned.
    #[error("x3 SOAP query of {public_name} reached its list size ({limit} rows)")]
    Truncated { public_name: String, limit: u32 },

    /// An answer that is not what X3 sends.
    #[error("malformed x3 response (HTTP {status}): {detail}")]
    MalformedResponse { status: u16, detail: String },

    /// Bad input on our side (never sent).
    #[error("invalid x3 request: {0}")]
    Invalid(String),
}

impl X3Error {
    /// Whether the same request may succeed later: transport failures and timeouts, 429,
    /// 502 / 503 / 504, and a 500 that is not an X3 `$diagnoses` answer (a proxy page, a
    /// crashed session). A 500 carrying X3 diagnoses (unknown property in `where`, …) is
    /// X3 refusing the request itself: permanent, like 4xx and business errors.
    ///
    /// A timeout on a create may have been processed: look the record up (by the
    /// Salesforce id field) before resending — the caller decides.
    pub fn retryable(&self) -> bool {
        match self {
            X3Error::Transport { .. } | X3Error::Timeout { .. } => true,
            X3Error::Http {
                status,
                x3_diagnoses,
                ..
            } => {
                *status == 429 || matches!(*status, 502..=504) || (*status >= 500 && !*x3_diagnoses)
            }
            X3Error::Unauthorized
            | X3Error::Business { .. }
            | X3Error::NotFound { .. }
            | X3Error::Truncated { .. }
            | X3Error::MalformedResponse { .. }
            | X3Error::Invalid(_) => false,
        }
    }

    /// Whether X3 asked us to slow down (HTTP 429).
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, X3Error::Http { status: 429, .. })
    }

    /// X3's messages, if the answer had any.
    pub fn messages(&self) -> &[X3Message] {
        match self {
            X3Error::Business { messages, .. }
            | X3Error::NotFound { messages, .. }
            | X3Error::Http { messages, .. } => messages,
            _ => &[],
        }
    }

    /// Whether any message contains `text` (case-insensitive).
    pub fn mentions(&self, text: &str) -> bool {
        let needle = text.to_lowercase();
        self.messages()
            .iter()
            .any(|m| m.text.to_lowercase().contains(&needle))
    }

    /// The HTTP status, when the failure was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            X3Error::Unauthorized => Some(401),
            X3Error::NotFound { .. } => Some(404),
            X3Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, x3_diagnoses: bool) -> X3Error {
        X3Error::Http {
            status,
            messages: vec![],
            x3_diagnoses,
        }
    }

    #[test]
    fn classification() {
        assert!(http(503, false).retryable());
        assert!(http(502, true).retryable());
        assert!(http(500, false).retryable());
        assert!(
            !http(500, true).retryable(),
            "X3 refused the request itself"
        );
        assert!(http(429, true).retryable());
        assert!(http(429, false).is_rate_limited());
        assert!(!http(400, true).retryable());
        assert!(!X3Error::Unauthorized.retryable());
        assert!(X3Error::Timeout { timeout_ms: 5 }.retryable());
        let business = X3Error::Business {
            operation: "save".into(),
            messages: vec![
                X3Message::from_severity("warning", "just so you know"),
                X3Message::error("Customer C9 does not exist"),
            ],
        };
        assert!(!business.retryable());
        assert!(business.mentions("c9 does not"));
        assert_eq!(
            business.to_string(),
            "x3 refused the save: Customer C9 does not exist"
        );
    }
}
