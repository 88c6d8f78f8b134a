//! Inbound Authorize.Net webhooks: `X-ANET-Signature: sha512=<HEX>` is HMAC-SHA512 over the raw
//! body under the merchant's Signature Key (128 hex characters, hex-decoded). Verified before
//! the body is parsed, in constant time (`Mac::verify_slice`); the hex is compared
//! case-insensitively because Authorize.Net sends upper case and libraries differ.

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha512;
use zeroize::Zeroizing;

use super::wire::Notification;

/// Why a notification is refused; `code` is the API's error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("the X-ANET-Signature header is missing")]
    MissingSignature,
    #[error("the X-ANET-Signature header is not sha512=<hex>")]
    MalformedSignature,
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("the notification is not valid JSON of the expected shape: {0}")]
    BadBody(String),
    #[error("eventDate {0:?} is outside the accepted window")]
    Stale(String),
}

impl WebhookError {
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::MissingSignature => "missing_signature",
            WebhookError::MalformedSignature | WebhookError::BadSignature => "invalid_signature",
            WebhookError::BadBody(_) => "invalid_body",
            WebhookError::Stale(_) => "stale_event",
        }
    }
}

/// The merchant's Signature Key, decoded.
pub struct SignatureKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureKey([redacted])")
    }
}

impl SignatureKey {
    /// From the hex text Authorize.Net shows (128 characters; any even length is accepted).
    pub fn from_hex(text: &str) -> Result<SignatureKey, String> {
        let text = text.trim();
        if text.is_empty() || !text.len().is_multiple_of(2) {
            return Err("must be hex digits (Authorize.Net shows 128)".into());
        }
        hex::decode(text)
            .map(|k| SignatureKey(Zeroizing::new(k)))
            .map_err(|_| "must be hex digits (Authorize.Net shows 128)".into())
    }

    /// Checks `X-ANET-Signature` against `body`.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), WebhookError> {
        let header = header.ok_or(WebhookError::MissingSignature)?.trim();
        let (scheme, hex_sig) = header
            .split_once('=')
            .ok_or(WebhookError::MalformedSignature)?;
        if !scheme.eq_ignore_ascii_case("sha512") {
            return Err(WebhookError::MalformedSignature);
        }
        let given = hex::decode(hex_sig.to_ascii_lowercase())
            .map_err(|_| WebhookError::MalformedSignature)?;
        let mut mac =
            <Hmac<Sha512> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(body);
        mac.verify_slice(&given)
            .map_err(|_| WebhookError::BadSignature)
    }
}

/// Parses a verified body and checks its `eventDate` lies within `max_age_s` in the past
/// (Authorize.Net retries for days, so this is wide) and at most `max_skew_s` in the future.
pub fn parse(
    body: &[u8],
    now: DateTime<Utc>,
    max_age_s: i64,
    max_skew_s: i64,
) -> Result<(Notification, DateTime<Utc>), WebhookError> {
    let n: Notification =
        serde_json::from_slice(body).map_err(|e| WebhookError::BadBody(e.to_string()))?;
    if n.notification_id.trim().is_empty() {
        return Err(WebhookError::BadBody("notificationId is empty".into()));
    }
    let at = event_date(&n.event_date).ok_or_else(|| WebhookError::Stale(n.event_date.clone()))?;
    if at < now - chrono::Duration::seconds(max_age_s)
        || at > now + chrono::Duration::seconds(max_skew_s)
    {
        return Err(WebhookError::Stale(n.event_date.clone()));
    }
    Ok((n, at))
}

/// `2026-11-26T12:00:00.123Z`, or without the zone (older notifications; UTC).
fn event_date(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(text) {
        return Some(d.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|d| d.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authnet::simulator::sign;

    const KEY: &str = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF";

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let key = SignatureKey::from_hex(KEY).unwrap();
        let body = br#"{"notificationId":"n1"}"#;
        let sig = sign(KEY, body);
        assert!(sig.starts_with("sha512="));
        assert_eq!(key.verify(Some(&sig), body), Ok(()));
        assert_eq!(
            key.verify(Some(&sig.to_lowercase()), body),
            Ok(()),
            "hex case does not matter"
        );
        assert_eq!(
            key.verify(Some(&sig), br#"{"notificationId":"n2"}"#),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(key.verify(None, body), Err(WebhookError::MissingSignature));
        assert_eq!(
            key.verify(Some("sha256=00"), body),
            Err(WebhookError::MalformedSignature)
        );
        assert_eq!(
            key.verify(Some("sha512=zz"), body),
            Err(WebhookError::MalformedSignature)
        );
        let other = SignatureKey::from_hex(&KEY.replace('0', "1")).unwrap();
        assert_eq!(
            other.verify(Some(&sig), body),
            Err(WebhookError::BadSignature)
        );
        assert!(SignatureKey::from_hex("abc").is_err());
    }

    #[test]
    fn event_dates_in_both_forms_and_the_window() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let body = |date: &str| {
            format!(
                r#"{{"notificationId":"n1","eventType":"net.authorize.payment.authcapture.created","eventDate":"{date}","webhookId":"w","payload":{{"entityName":"transaction","id":"60000000001"}}}}"#
            )
        };
        assert!(parse(body("2026-11-26T11:59:00.123Z").as_bytes(), now, 3600, 300).is_ok());
        assert!(parse(body("2026-11-26T11:59:00.123").as_bytes(), now, 3600, 300).is_ok());
        assert!(matches!(
            parse(body("2026-11-20T11:59:00Z").as_bytes(), now, 3600, 300),
            Err(WebhookError::Stale(_))
        ));
        assert!(matches!(
            parse(body("2026-11-26T13:00:00Z").as_bytes(), now, 3600, 300),
            Err(WebhookError::Stale(_))
        ));
        assert!(matches!(
            parse(b"{}", now, 3600, 300),
            Err(WebhookError::BadBody(_))
        ));
    }
}
