//! The Authorize.Net connector: a [`Processor`] speaking the JSON API (`POST` to
//! `…/xml/v1/request.api`) with `createTransactionRequest` and the Transaction Reporting calls.
//!
//! How our operations map:
//!
//! | Ours                | Authorize.Net                                                          |
//! |---------------------|------------------------------------------------------------------------|
//! | authorize (capture) | `authCaptureTransaction` (cards and eCheck `bankAccount`)              |
//! | authorize only      | `authOnlyTransaction`                                                  |
//! | capture             | `priorAuthCaptureTransaction` with `refTransId` and the amount          |
//! | void                | `voidTransaction`                                                      |
//! | refund              | `refundTransaction` with the masked card / account of the original;    |
//! |                     | before settlement only a full refund is possible, sent as a void       |
//! | lookup(reference)   | unsettled list, then recent settled batches, matched on `invoiceNumber`,|
//! |                     | then `getTransactionDetailsRequest` for its status                     |
//! | ach_status          | `getTransactionDetailsRequest`: status and `returnedItems`             |
//!
//! Our reference (a payment id, ≤ 64 characters) does not fit Authorize.Net's 20-character
//! `invoiceNumber`, and that is the only request field its reports return, so every request
//! carries [`reference_code`] — 20 hex digits of SHA-256 of the reference — as the invoice
//! number (and `refId`): deterministic, so a lookup after a timeout finds the transaction, and
//! distinct per request, so Authorize.Net's duplicate check (same card, amount and invoice
//! number within two minutes) never refuses a second, legitimate payment of the same amount.
//! A true duplicate (our own retry) is answered as `Unknown` and resolved by lookup.
//!
//! Errors: any transport failure, timeout, non-200 status or unreadable body after the request
//! may have been sent is `Unknown` — never guessed; a definite `resultCode = Error` without a
//! transaction (bad credentials, schema error) is a `processing_error` decline.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::wire::{
    self, CreateTransactionResponse, Order, PaymentMasked, SettledBatchListResponse,
    TransactionDetails, TransactionDetailsResponse, TransactionListResponse, TransactionResponse,
};
use crate::bank::BankAccountType;
use crate::processor::{
    AchStatus, AuthorizeRequest, BoxFuture, DeclineCode, Instrument, LookupResult, Outcome,
    Processor,
};

/// Currencies Authorize.Net settles in (all with two decimals, which [`wire::amount_text`]
/// relies on).
pub const CURRENCIES: [&str; 11] = [
    "USD", "CAD", "CHF", "DKK", "EUR", "GBP", "NOK", "PLN", "SEK", "AUD", "NZD",
];

/// Transaction Reporting pages hold at most 1,000 transactions.
const PAGE_LIMIT: u32 = 1000;
/// Lookup gives up after this many pages of one list (20,000 unsettled transactions).
const MAX_PAGES: u32 = 20;

/// Where and as whom to call Authorize.Net.
#[derive(Clone)]
pub struct AuthorizeNetConfig {
    /// The full endpoint, e.g. `https://apitest.authorize.net/xml/v1/request.api`.
    pub endpoint: String,
    pub api_login_id: String,
    pub transaction_key: Zeroizing<String>,
    /// Per call; a call that takes longer is `Unknown`.
    pub timeout_ms: u64,
    /// How many days of settled batches a lookup searches after the unsettled list.
    pub lookup_days: u32,
}

impl fmt::Debug for AuthorizeNetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeNetConfig")
            .field("endpoint", &self.endpoint)
            .field("api_login_id", &self.api_login_id)
            .field("transaction_key", &"[redacted]")
            .field("timeout_ms", &self.timeout_ms)
            .field("lookup_days", &self.lookup_days)
            .finish()
    }
}

/// The connector. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuthorizeNet {
    http: reqwest::Client,
    config: Arc<AuthorizeNetConfig>,
}

/// 20 upper-case hex digits of SHA-256 of our reference: the `invoiceNumber` we send.
pub fn reference_code(reference: &str) -> String {
    let digest = Sha256::digest(reference.as_bytes());
    hex::encode_upper(&digest[..10])
}

/// Why a call has no usable answer.
#[derive(Debug)]
enum CallError {
    /// Sent (or maybe sent) and no readable answer: the effect is unknown.
    Unanswered(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Unanswered(d) => f.write_str(d),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MerchantAuthentication<'a> {
    name: &'a str,
    transaction_key: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateTransactionRequest<'a> {
    merchant_authentication: MerchantAuthentication<'a>,
    ref_id: String,
    transaction_request: TransactionRequest<'a>,
}

/// Field order is the schema's (`transactionRequestType`); Authorize.Net rejects others.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TransactionRequest<'a> {
    transaction_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment: Option<PaymentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ref_trans_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<Order>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bill_to: Option<BillTo>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum PaymentOut<'a> {
    CreditCard(CardOut<'a>),
    BankAccount(BankOut<'a>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CardOut<'a> {
    card_number: &'a str,
    /// `YYYY-MM`, or `XXXX` with a masked number in a refund.
    expiration_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    card_code: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BankOut<'a> {
    account_type: &'a str,
    routing_number: &'a str,
    account_number: &'a str,
    name_on_account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    echeck_type: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BillTo {
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zip: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetailsRequest<'a> {
    merchant_authentication: MerchantAuthentication<'a>,
    trans_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Sorting {
    order_by: &'static str,
    order_descending: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Paging {
    limit: u32,
    /// 1-based page number.
    offset: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UnsettledListRequest<'a> {
    merchant_authentication: MerchantAuthentication<'a>,
    sorting: Sorting,
    paging: Paging,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SettledBatchListRequest<'a> {
    merchant_authentication: MerchantAuthentication<'a>,
    include_statistics: bool,
    first_settlement_date: String,
    last_settlement_date: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TransactionListRequest<'a> {
    merchant_authentication: MerchantAuthentication<'a>,
    batch_id: &'a str,
    sorting: Sorting,
    paging: Paging,
}

/// `Jane Q Public` → (`Jane Q`, `Public`), each cut to the schema's 50 characters.
fn split_name(name: &str) -> (Option<String>, Option<String>) {
    let name = name.trim();
    let cut = |s: &str| Some(s.chars().take(50).collect::<String>());
    match name.rsplit_once(' ') {
        Some((first, last)) => (cut(first.trim()), cut(last)),
        None if name.is_empty() => (None, None),
        None => (None, cut(name)),
    }
}

fn account_type_wire(t: BankAccountType) -> &'static str {
    match t {
        BankAccountType::Checking => "checking",
        BankAccountType::Savings => "savings",
        BankAccountType::BusinessChecking => "businessChecking",
    }
}

/// Our decline code for an Authorize.Net response reason code.
fn decline_code(response_code: &str, reason: &str) -> DeclineCode {
    match reason {
        "8" | "317" => DeclineCode::ExpiredCard,
        "44" | "45" | "65" => DeclineCode::IncorrectCvc,
        "9" | "10" => DeclineCode::InvalidAccount,
        "2" | "3" | "4" | "6" | "27" | "37" | "78" => DeclineCode::CardDeclined,
        _ if response_code == "2" => DeclineCode::CardDeclined,
        _ => DeclineCode::ProcessingError,
    }
}

/// Reason code 11: "A duplicate transaction has been submitted."
const DUPLICATE: &str = "11";

fn outcome_of(answer: Result<CreateTransactionResponse, CallError>) -> Outcome {
    let r = match answer {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Unknown {
                detail: e.to_string(),
            };
        }
    };
    let Some(t) = r.transaction_response else {
        return if r.messages.is_ok() {
            Outcome::Unknown {
                detail: "Authorize.Net answered Ok without a transactionResponse".into(),
            }
        } else {
            Outcome::Declined {
                code: DeclineCode::ProcessingError,
                message: format!(
                    "Authorize.Net refused the request: {}",
                    r.messages.describe()
                ),
            }
        };
    };
    transaction_outcome(&t, &r.messages)
}

fn transaction_outcome(t: &TransactionResponse, messages: &wire::Messages) -> Outcome {
    let (reason, text) = t
        .errors
        .as_ref()
        .and_then(|e| e.first())
        .map(|e| (e.error_code.as_str(), e.error_text.as_str()))
        .or_else(|| {
            t.messages
                .as_ref()
                .and_then(|m| m.first())
                .map(|m| (m.code.as_str(), m.description.as_str()))
        })
        .unwrap_or(("", ""));
    match t.response_code.as_str() {
        "1" if !t.trans_id.is_empty() && t.trans_id != "0" => Outcome::Approved {
            processor_ref: t.trans_id.clone(),
        },
        "1" => Outcome::Unknown {
            detail: "approved without a transaction id".into(),
        },
        "3" if reason == DUPLICATE => Outcome::Unknown {
            detail: "Authorize.Net saw this request before (duplicate); looking it up".into(),
        },
        "2" | "3" => Outcome::Declined {
            code: decline_code(&t.response_code, reason),
            message: if text.is_empty() {
                messages.describe()
            } else {
                format!("{text} (Authorize.Net reason {reason})")
            },
        },
        "4" => Outcome::Unknown {
            detail: format!("held for review at Authorize.Net: {text}"),
        },
        other => Outcome::Unknown {
            detail: format!("Authorize.Net responseCode {other:?}"),
        },
    }
}

/// What a lookup concludes from a transaction's status in the reports.
fn lookup_of(d: &TransactionDetails) -> LookupResult {
    let declined = |code, message: String| LookupResult::Declined { code, message };
    match d.transaction_status.as_str() {
        "authorizedPendingCapture" => LookupResult::Approved {
            processor_ref: d.trans_id.clone(),
            captured: false,
        },
        "capturedPendingSettlement"
        | "settledSuccessfully"
        | "pendingSettlement"
        | "returnedItem"
        | "chargeback"
        | "chargebackReversal" => LookupResult::Approved {
            processor_ref: d.trans_id.clone(),
            captured: true,
        },
        "declined" | "expired" | "failedReview" => declined(
            decline_code(
                &d.response_code.to_string(),
                &d.response_reason_code.to_string(),
            ),
            format!(
                "{} (Authorize.Net status {})",
                d.response_reason_description, d.transaction_status
            ),
        ),
        "voided" => declined(
            DeclineCode::ProcessingError,
            "voided at Authorize.Net before it was captured".into(),
        ),
        "generalError" | "communicationError" | "settlementError" => declined(
            DeclineCode::ProcessingError,
            format!("Authorize.Net status {}", d.transaction_status),
        ),
        // FDSPendingReview, FDSAuthorizedPendingReview, underReview, …: a person decides.
        other => LookupResult::Unknown {
            detail: format!("Authorize.Net status {other}"),
        },
    }
}

fn ach_status_of(d: &TransactionDetails) -> AchStatus {
    let first_return = d
        .returned_items
        .as_ref()
        .and_then(|r| r.returned_item.first());
    if let Some(item) = first_return {
        return AchStatus::Returned {
            r_code: item.code.clone(),
            description: item.description.clone(),
        };
    }
    match d.transaction_status.as_str() {
        "capturedPendingSettlement" | "pendingSettlement" => AchStatus::Pending,
        "settledSuccessfully" => AchStatus::Settled,
        other => AchStatus::Unknown {
            detail: format!("Authorize.Net status {other}"),
        },
    }
}

impl AuthorizeNet {
    pub fn new(config: AuthorizeNetConfig) -> Result<AuthorizeNet, reqwest::Error> {
        let http = crate::http::client_builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(5_000)))
            .build()?;
        Ok(AuthorizeNet {
            http,
            config: Arc::new(config),
        })
    }

    fn auth(&self) -> MerchantAuthentication<'_> {
        MerchantAuthentication {
            name: &self.config.api_login_id,
            transaction_key: &self.config.transaction_key,
        }
    }

    /// One API call: `{"<name>": body}` in, the parsed response out (BOM stripped).
    async fn call<T: DeserializeOwned>(
        &self,
        name: &str,
        body: &impl Serialize,
    ) -> Result<T, CallError> {
        // Built by hand: `{"name": …}` keeps the inner struct's field order.
        let inner = Zeroizing::new(
            serde_json::to_vec(body).map_err(|e| CallError::Unanswered(e.to_string()))?,
        );
        let mut request = Vec::with_capacity(inner.len() + name.len() + 8);
        request.extend_from_slice(b"{\"");
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b"\":");
        request.extend_from_slice(&inner);
        request.push(b'}');
        let response = self
            .http
            .post(&self.config.endpoint)
            .header("content-type", "application/json")
            .body(request)
            .send()
            .await
            // reqwest's error text names the URL and the failure, never the body.
            .map_err(|e| CallError::Unanswered(format!("{name}: {e}")))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Unanswered(format!("{name}: reading the answer: {e}")))?;
        if status != reqwest::StatusCode::OK {
            return Err(CallError::Unanswered(format!(
                "{name}: Authorize.Net answered HTTP {status}"
            )));
        }
        let text = bytes
            .strip_prefix(wire::BOM.as_bytes())
            .unwrap_or(&bytes[..]);
        serde_json::from_slice(text).map_err(|e| {
            // An error answer has `messages` even when the rest is not the shape we expect.
            match serde_json::from_slice::<wire::AnyResponse>(text) {
                Ok(any) if !any.messages.is_ok() => CallError::Unanswered(format!(
                    "{name}: Authorize.Net error {}",
                    any.messages.describe()
                )),
                _ => CallError::Unanswered(format!("{name}: unreadable answer: {e}")),
            }
        })
    }

    async fn transaction(
        &self,
        r: TransactionRequest<'_>,
        reference: &str,
    ) -> Result<CreateTransactionResponse, CallError> {
        self.call(
            "createTransactionRequest",
            &CreateTransactionRequest {
                merchant_authentication: self.auth(),
                ref_id: reference_code(reference),
                transaction_request: r,
            },
        )
        .await
    }

    async fn details(&self, trans_id: &str) -> Result<TransactionDetails, String> {
        let r: TransactionDetailsResponse = self
            .call(
                "getTransactionDetailsRequest",
                &DetailsRequest {
                    merchant_authentication: self.auth(),
                    trans_id,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        match r.transaction {
            Some(t) if r.messages.is_ok() => Ok(t),
            _ => Err(format!(
                "getTransactionDetailsRequest: {}",
                r.messages.describe()
            )),
        }
    }

    /// The transaction id whose invoice number is `code`: unsettled first, then settled
    /// batches of the last `lookup_days`. `Ok(None)`: Authorize.Net has no such transaction.
    async fn find(&self, code: &str) -> Result<Option<String>, String> {
        for page in 1..=MAX_PAGES {
            let r: TransactionListResponse = self
                .call(
                    "getUnsettledTransactionListRequest",
                    &UnsettledListRequest {
                        merchant_authentication: self.auth(),
                        sorting: Sorting {
                            order_by: "submitTimeUTC",
                            order_descending: true,
                        },
                        paging: Paging {
                            limit: PAGE_LIMIT,
                            offset: page,
                        },
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            if !r.messages.is_ok() {
                return Err(r.messages.describe());
            }
            if let Some(t) = r
                .transactions
                .iter()
                .find(|t| t.invoice_number.as_deref() == Some(code))
            {
                return Ok(Some(t.trans_id.clone()));
            }
            if (r.transactions.len() as u32) < PAGE_LIMIT {
                break;
            }
        }
        let now = chrono::Utc::now();
        let first = now - chrono::Duration::days(i64::from(self.config.lookup_days.max(1)));
        let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let batches: SettledBatchListResponse = self
            .call(
                "getSettledBatchListRequest",
                &SettledBatchListRequest {
                    merchant_authentication: self.auth(),
                    include_statistics: false,
                    first_settlement_date: fmt(first),
                    last_settlement_date: fmt(now),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        // "No records found" (I00004) is an Ok answer with an empty list.
        if !batches.messages.is_ok() {
            return Err(batches.messages.describe());
        }
        for batch in &batches.batch_list {
            for page in 1..=MAX_PAGES {
                let r: TransactionListResponse = self
                    .call(
                        "getTransactionListRequest",
                        &TransactionListRequest {
                            merchant_authentication: self.auth(),
                            batch_id: &batch.batch_id,
                            sorting: Sorting {
                                order_by: "submitTimeUTC",
                                order_descending: true,
                            },
                            paging: Paging {
                                limit: PAGE_LIMIT,
                                offset: page,
                            },
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.messages.is_ok() {
                    return Err(r.messages.describe());
                }
                if let Some(t) = r
                    .transactions
                    .iter()
                    .find(|t| t.invoice_number.as_deref() == Some(code))
                {
                    return Ok(Some(t.trans_id.clone()));
                }
                if (r.transactions.len() as u32) < PAGE_LIMIT {
                    break;
                }
            }
        }
        Ok(None)
    }

    /// Our reference for the transaction `trans_id`, read back from the order description we
    /// sent (`cashloop <reference>`); `Ok(None)` for a transaction cashloop did not create.
    pub async fn our_reference(&self, trans_id: &str) -> Result<Option<String>, String> {
        let d = self.details(trans_id).await?;
        Ok(d.order
            .and_then(|o| o.description)
            .and_then(|text| text.strip_prefix("cashloop ").map(str::to_owned))
            // A refund's or capture's reference names its payment first: `pay_…:refund:3`.
            .map(|r| r.split(':').next().unwrap_or_default().to_owned())
            .filter(|r| !r.is_empty()))
    }

    async fn authorize_inner(&self, req: &AuthorizeRequest<'_>) -> Outcome {
        if !CURRENCIES.contains(&req.currency) {
            return Outcome::Declined {
                code: DeclineCode::ProcessingError,
                message: format!("Authorize.Net does not settle in {}", req.currency),
            };
        }
        let (payment, bill_to, transaction_type) = match &req.instrument {
            Instrument::Card {
                number,
                expiry,
                cvv,
                holder_name,
                postal_code,
            } => {
                let (first_name, last_name) = holder_name.map(split_name).unwrap_or_default();
                (
                    PaymentOut::CreditCard(CardOut {
                        card_number: number.expose_digits(),
                        expiration_date: format!("{:04}-{:02}", expiry.year(), expiry.month()),
                        card_code: cvv.map(|c| c.expose()),
                    }),
                    BillTo {
                        first_name,
                        last_name,
                        zip: postal_code.map(|z| z.chars().take(20).collect()),
                    },
                    if req.capture {
                        "authCaptureTransaction"
                    } else {
                        "authOnlyTransaction"
                    },
                )
            }
            Instrument::Bank {
                routing,
                account,
                account_type,
                holder_name,
                sec_code,
            } => {
                let (first_name, last_name) = split_name(holder_name);
                (
                    PaymentOut::BankAccount(BankOut {
                        account_type: account_type_wire(*account_type),
                        routing_number: routing.as_str(),
                        account_number: account.expose_digits(),
                        // The schema allows 22 characters here.
                        name_on_account: holder_name.chars().take(22).collect(),
                        echeck_type: Some(sec_code.as_str()),
                    }),
                    BillTo {
                        first_name,
                        last_name,
                        zip: None,
                    },
                    // eCheck has no authorization: a debit is always auth + capture.
                    "authCaptureTransaction",
                )
            }
        };
        let answer = self
            .transaction(
                TransactionRequest {
                    transaction_type,
                    amount: Some(wire::amount_text(req.amount_minor)),
                    currency_code: Some(req.currency),
                    payment: Some(payment),
                    ref_trans_id: None,
                    order: Some(Order {
                        invoice_number: Some(reference_code(req.reference)),
                        description: Some(format!("cashloop {}", req.reference)),
                    }),
                    bill_to: Some(bill_to),
                },
                req.reference,
            )
            .await;
        outcome_of(answer)
    }

    async fn refund_inner(&self, processor_ref: &str, reference: &str, amount: i64) -> Outcome {
        let original = match self.details(processor_ref).await {
            Ok(d) => d,
            // Nothing was sent yet: a definite "not now", safe to retry.
            Err(e) => {
                return Outcome::Declined {
                    code: DeclineCode::ProcessingError,
                    message: format!("cannot read the original transaction: {e}"),
                };
            }
        };
        let settle_minor = wire::amount_minor(&original.settle_amount).unwrap_or(0);
        if original.transaction_status == "capturedPendingSettlement" {
            // Authorize.Net refunds settled transactions only (reason 54); before settlement
            // the money has not moved, so a full refund is a void.
            if amount != settle_minor {
                return Outcome::Declined {
                    code: DeclineCode::ProcessingError,
                    message: "the capture has not settled yet at Authorize.Net: until it does, only a full refund (sent as a void) is possible".into(),
                };
            }
            return self.void_inner(processor_ref, reference).await;
        }
        let payment = match &original.payment {
            PaymentMasked::CreditCard { card_number, .. } => PaymentOut::CreditCard(CardOut {
                card_number,
                expiration_date: "XXXX".into(),
                card_code: None,
            }),
            PaymentMasked::BankAccount {
                account_type,
                routing_number,
                account_number,
                name_on_account,
                ..
            } => PaymentOut::BankAccount(BankOut {
                account_type,
                routing_number,
                account_number,
                name_on_account: name_on_account.clone(),
                echeck_type: None,
            }),
        };
        let answer = self
            .transaction(
                TransactionRequest {
                    transaction_type: "refundTransaction",
                    amount: Some(wire::amount_text(amount)),
                    currency_code: None,
                    payment: Some(payment),
                    ref_trans_id: Some(processor_ref),
                    order: Some(Order {
                        invoice_number: Some(reference_code(reference)),
                        description: Some(format!("cashloop {reference}")),
                    }),
                    bill_to: None,
                },
                reference,
            )
            .await;
        outcome_of(answer)
    }

    async fn void_inner(&self, processor_ref: &str, reference: &str) -> Outcome {
        let answer = self
            .transaction(
                TransactionRequest {
                    transaction_type: "voidTransaction",
                    amount: None,
                    currency_code: None,
                    payment: None,
                    ref_trans_id: Some(processor_ref),
                    order: None,
                    bill_to: None,
                },
                reference,
            )
            .await;
        outcome_of(answer)
    }
}

impl Processor for AuthorizeNet {
    fn name(&self) -> &'static str {
        "authorize_net"
    }

    fn authorize<'a>(&'a self, req: &'a AuthorizeRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.authorize_inner(req))
    }

    fn capture<'a>(&'a self, processor_ref: &'a str, amount_minor: i64) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let reference = format!("{processor_ref}:capture");
            let answer = self
                .transaction(
                    TransactionRequest {
                        transaction_type: "priorAuthCaptureTransaction",
                        amount: Some(wire::amount_text(amount_minor)),
                        currency_code: None,
                        payment: None,
                        ref_trans_id: Some(processor_ref),
                        order: None,
                        bill_to: None,
                    },
                    &reference,
                )
                .await;
            outcome_of(answer)
        })
    }

    fn void<'a>(&'a self, processor_ref: &'a str) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let reference = format!("{processor_ref}:void");
            self.void_inner(processor_ref, &reference).await
        })
    }

    fn refund<'a>(
        &'a self,
        processor_ref: &'a str,
        reference: &'a str,
        amount_minor: i64,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(self.refund_inner(processor_ref, reference, amount_minor))
    }

    fn lookup<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, LookupResult> {
        Box::pin(async move {
            let trans_id = match self.find(&reference_code(reference)).await {
                Ok(Some(id)) => id,
                Ok(None) => return LookupResult::NotFound,
                Err(detail) => return LookupResult::Unknown { detail },
            };
            match self.details(&trans_id).await {
                Ok(d) => lookup_of(&d),
                Err(detail) => LookupResult::Unknown { detail },
            }
        })
    }

    fn ach_status<'a>(&'a self, processor_ref: &'a str) -> BoxFuture<'a, AchStatus> {
        Box::pin(async move {
            match self.details(processor_ref).await {
                Ok(d) => ach_status_of(&d),
                Err(detail) => AchStatus::Unknown { detail },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_codes_fit_the_invoice_number_and_differ() {
        let a = reference_code("pay_01HZXB4Q4Q4Q4Q4Q4Q4Q4Q4Q4Q");
        assert_eq!(a.len(), 20);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
        assert_eq!(a, reference_code("pay_01HZXB4Q4Q4Q4Q4Q4Q4Q4Q4Q4Q"));
        assert_ne!(a, reference_code("pay_01HZXB4Q4Q4Q4Q4Q4Q4Q4Q4Q4R"));
    }

    #[test]
    fn names_split_for_bill_to() {
        assert_eq!(
            split_name("Jane Q Public"),
            (Some("Jane Q".into()), Some("Public".into()))
        );
        assert_eq!(split_name("Cher"), (None, Some("Cher".into())));
        assert_eq!(split_name("  "), (None, None));
    }

    #[test]
    fn reason_codes_map_to_our_decline_codes() {
        assert_eq!(decline_code("2", "2"), DeclineCode::CardDeclined);
        assert_eq!(decline_code("3", "8"), DeclineCode::ExpiredCard);
        assert_eq!(decline_code("2", "44"), DeclineCode::IncorrectCvc);
        assert_eq!(decline_code("3", "9"), DeclineCode::InvalidAccount);
        assert_eq!(decline_code("3", "33"), DeclineCode::ProcessingError);
        assert_eq!(decline_code("2", "250"), DeclineCode::CardDeclined);
    }
}
