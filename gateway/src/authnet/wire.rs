//! Authorize.Net JSON API shapes (API reference, `AnetApiSchema.xsd`), shared by the client and
//! the simulator. The JSON API is the XML schema rendered as JSON, so element order matters
//! (requests are structs, serialized in declaration order) and amounts are decimals: they are
//! carried here as raw JSON text ([`RawValue`]) and parsed with `rust_decimal`, never as `f64`.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Authorize.Net answers JSON with a UTF-8 byte-order mark in front of the body; a client that
/// hands the body straight to a JSON parser fails on the first byte.
pub const BOM: &str = "\u{feff}";

/// `messages` at the top of every response: `Ok` or `Error`, with `I…` / `E…` codes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Messages {
    pub result_code: String,
    #[serde(default)]
    pub message: Vec<Message>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    pub code: String,
    pub text: String,
}

impl Messages {
    pub fn ok() -> Messages {
        Messages {
            result_code: "Ok".into(),
            message: vec![Message {
                code: "I00001".into(),
                text: "Successful.".into(),
            }],
        }
    }

    pub fn error(code: &str, text: &str) -> Messages {
        Messages {
            result_code: "Error".into(),
            message: vec![Message {
                code: code.into(),
                text: text.into(),
            }],
        }
    }

    pub fn is_ok(&self) -> bool {
        self.result_code.eq_ignore_ascii_case("Ok")
    }

    /// `E00007 User authentication failed…`, for error texts.
    pub fn describe(&self) -> String {
        self.message
            .iter()
            .map(|m| format!("{} {}", m.code, m.text))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The body of `createTransactionResponse`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransactionResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_response: Option<TransactionResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<String>,
    pub messages: Messages,
}

/// `transactionResponse`: responseCode 1 approved, 2 declined, 3 error, 4 held for review.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionResponse {
    pub response_code: String,
    #[serde(default)]
    pub auth_code: String,
    #[serde(default)]
    pub avs_result_code: String,
    #[serde(default)]
    pub cvv_result_code: String,
    #[serde(default)]
    pub trans_id: String,
    #[serde(rename = "refTransID", default)]
    pub ref_trans_id: String,
    #[serde(default)]
    pub trans_hash: String,
    #[serde(default)]
    pub test_request: String,
    /// Masked: `XXXX1111`.
    #[serde(default)]
    pub account_number: String,
    /// Card brand (`Visa`) or `eCheck`.
    #[serde(default)]
    pub account_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<TransactionMessage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<TransactionError>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TransactionMessage {
    pub code: String,
    pub description: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionError {
    pub error_code: String,
    pub error_text: String,
}

/// `getTransactionDetailsResponse`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionDetailsResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionDetails>,
    pub messages: Messages,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionDetails {
    pub trans_id: String,
    #[serde(rename = "refTransId", skip_serializing_if = "Option::is_none")]
    pub ref_trans_id: Option<String>,
    #[serde(rename = "submitTimeUTC")]
    pub submit_time_utc: String,
    pub transaction_type: String,
    /// `authorizedPendingCapture`, `capturedPendingSettlement`, `settledSuccessfully`,
    /// `refundPendingSettlement`, `refundSettledSuccessfully`, `voided`, `declined`,
    /// `expired`, `generalError`, `FDSPendingReview`, `returnedItem`, …
    pub transaction_status: String,
    /// A number here, unlike the string in `transactionResponse`.
    pub response_code: u8,
    pub response_reason_code: u32,
    pub response_reason_description: String,
    #[serde(default)]
    pub auth_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    pub auth_amount: Box<RawValue>,
    pub settle_amount: Box<RawValue>,
    pub payment: PaymentMasked,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returned_items: Option<ReturnedItems>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    pub batch_id: String,
    #[serde(rename = "settlementTimeUTC")]
    pub settlement_time_utc: String,
    pub settlement_state: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The payment as reports show it: only masked numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PaymentMasked {
    CreditCard {
        #[serde(rename = "cardNumber")]
        card_number: String,
        #[serde(rename = "expirationDate")]
        expiration_date: String,
        #[serde(rename = "cardType")]
        card_type: String,
    },
    BankAccount {
        #[serde(rename = "accountType")]
        account_type: String,
        #[serde(rename = "routingNumber")]
        routing_number: String,
        #[serde(rename = "accountNumber")]
        account_number: String,
        #[serde(rename = "nameOnAccount")]
        name_on_account: String,
        #[serde(rename = "echeckType")]
        echeck_type: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReturnedItems {
    pub returned_item: Vec<ReturnedItem>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReturnedItem {
    pub id: String,
    #[serde(rename = "dateUTC")]
    pub date_utc: String,
    pub code: String,
    pub description: String,
}

/// `getUnsettledTransactionListResponse` and `getTransactionListResponse`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionListResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transactions: Vec<TransactionSummary>,
    #[serde(default)]
    pub total_num_in_result_set: u32,
    pub messages: Messages,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionSummary {
    pub trans_id: String,
    #[serde(rename = "submitTimeUTC")]
    pub submit_time_utc: String,
    pub transaction_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
    pub account_type: String,
    pub account_number: String,
    pub settle_amount: Box<RawValue>,
}

/// `getSettledBatchListResponse`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettledBatchListResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch_list: Vec<Batch>,
    pub messages: Messages,
}

/// Just the `messages` of any response, to read an error whatever the request was.
#[derive(Debug, Deserialize)]
pub struct AnyResponse {
    pub messages: Messages,
}

/// An answer with only `messages` (errors, `authenticateTestResponse`).
#[derive(Debug, Serialize)]
pub struct AnyResponseOut {
    pub messages: Messages,
}

impl AnyResponseOut {
    pub fn ok() -> AnyResponseOut {
        AnyResponseOut {
            messages: Messages::ok(),
        }
    }
}

/// An Authorize.Net webhook notification (`POST` to the merchant's endpoint).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub notification_id: String,
    pub event_type: String,
    /// UTC, e.g. `2026-11-26T12:00:00.123Z` (older notifications carry no `Z`).
    pub event_date: String,
    pub webhook_id: String,
    pub payload: NotificationPayload,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_amount: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
    pub entity_name: String,
    pub id: String,
}

/// `12.34` from 1234 minor units: every currency Authorize.Net settles in has two decimals.
pub fn amount_text(amount_minor: i64) -> String {
    let sign = if amount_minor < 0 { "-" } else { "" };
    let a = amount_minor.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// Minor units from a decimal JSON value (a number or a string), refusing a third decimal.
pub fn amount_minor(raw: &RawValue) -> Option<i64> {
    let text = raw.get().trim().trim_matches('"');
    let d: Decimal = text.parse().ok()?;
    let cents = d.checked_mul(Decimal::ONE_HUNDRED)?;
    if cents.fract() != Decimal::ZERO {
        return None;
    }
    rust_decimal::prelude::ToPrimitive::to_i64(&cents)
}

/// A raw JSON number for an amount (`12.34`).
pub fn amount_raw(amount_minor: i64) -> Box<RawValue> {
    RawValue::from_string(amount_text(amount_minor)).expect("a decimal number is valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_without_floats() {
        assert_eq!(amount_text(1234), "12.34");
        assert_eq!(amount_text(5), "0.05");
        assert_eq!(amount_text(10_000_000_001), "100000000.01");
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(amount_minor(&raw("1018.88")), Some(101_888));
        assert_eq!(amount_minor(&raw("5")), Some(500));
        assert_eq!(amount_minor(&raw("\"5.00\"")), Some(500));
        assert_eq!(amount_minor(&raw("0.1")), Some(10));
        assert_eq!(
            amount_minor(&raw("1.005")),
            None,
            "a third decimal is refused"
        );
        assert_eq!(amount_minor(&raw("\"abc\"")), None);
        assert_eq!(amount_minor(&amount_raw(99_999)), Some(99_999));
    }
}
