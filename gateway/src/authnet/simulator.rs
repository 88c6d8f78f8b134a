//! A protocol-faithful Authorize.Net simulator: a real HTTP server on loopback answering
//! `POST /xml/v1/request.api` the way the sandbox at `apitest.authorize.net` does, so the
//! connector is tested over a socket, byte for byte as it would talk to Authorize.Net.
//!
//! Faithful in: the JSON envelopes (`{"createTransactionRequest": …}`), merchant authentication
//! (E00007), schema element order (E00003 for an element out of place), the UTF-8 BOM in front
//! of every answer, HTTP 200 for every API-level error, `transactionResponse` codes 1–4 with
//! reason codes and texts, the duplicate-transaction window (reason 11, 120 s, keyed on card or
//! account, amount, type, invoice number and billing zip), refunds only of settled transactions (reason 54)
//! and never above what settled (reason 55), prior-auth capture at most the authorized amount
//! (reason 47), masked card and account numbers in every answer, Transaction Reporting
//! (`getTransactionDetailsRequest`, `getUnsettledTransactionListRequest` with sorting and
//! 1-based paging, `getSettledBatchListRequest`, `getTransactionListRequest`), eCheck returns as
//! `returnedItems` on the settled original, and signed webhooks (`X-ANET-Signature:
//! sha512=<HEX>`, HMAC-SHA512 under the hex-decoded signature key).
//!
//! Triggers: Authorize.Net's own — billing zip 46282 declines (reason 2), card code 901 fails
//! the CVV check (reason 44, CVV filter on), an expiration date in the past is reason 8, a bad
//! Luhn digit reason 6, an invalid ABA routing number reason 9 — plus two of the simulator's:
//! billing zip 99999 processes the transaction and then holds the answer for
//! [`SimulatorConfig::hang_ms`] (a timeout after the charge), and eCheck account numbers ending
//! as in the sandbox processor's table (0001 → R01, 0002 → R02, …) are returned after the batch
//! that settles them. Time moves only when a test says so: [`Simulator::settle`] closes a batch.
//!
//! Held: masked numbers, amounts and statuses; a SHA-256 of card or account number only for
//! the duplicate check. Never a full card number, card code or account number.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256, Sha512};

use super::wire::{
    self, Batch, CreateTransactionResponse, Messages, Notification, NotificationPayload, Order,
    PaymentMasked, ReturnedItem, ReturnedItems, SettledBatchListResponse, TransactionDetails,
    TransactionDetailsResponse, TransactionError, TransactionListResponse, TransactionMessage,
    TransactionResponse, TransactionSummary,
};

/// The path Authorize.Net serves its JSON and XML API on.
pub const API_PATH: &str = "/xml/v1/request.api";
/// Billing zip that makes the answer late (simulator-only trigger).
pub const HANG_ZIP: &str = "99999";
/// Billing zip that Authorize.Net's sandbox declines.
pub const DECLINE_ZIP: &str = "46282";
/// Card code that fails Authorize.Net's sandbox CVV check.
pub const CVV_MISMATCH: &str = "901";
const DUPLICATE_WINDOW_S: i64 = 120;

/// How the simulated merchant account is set up.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    pub api_login_id: String,
    pub transaction_key: String,
    /// 128 hex characters, as Authorize.Net shows it; signs webhooks.
    pub signature_key_hex: String,
    /// Where to POST webhook notifications, if anywhere (loopback only).
    pub webhook_url: Option<String>,
    /// How long a [`HANG_ZIP`] answer is held.
    pub hang_ms: u64,
}

impl Default for SimulatorConfig {
    fn default() -> SimulatorConfig {
        SimulatorConfig {
            api_login_id: "5KP3u95bQpv".into(),
            transaction_key: "346HZ32z3fP4hTG2".into(),
            signature_key_hex: "56E529FE9D2C4F5B8E6F3C1A0B9D8E7F".repeat(4),
            webhook_url: None,
            hang_ms: 10_000,
        }
    }
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Debug)]
struct Shared {
    config: SimulatorConfig,
    state: Mutex<SimState>,
    http: reqwest::Client,
}

#[derive(Debug, Default)]
struct SimState {
    last_trans_id: u64,
    last_batch_id: u64,
    transactions: BTreeMap<String, Tx>,
    batches: Vec<BatchRecord>,
    api_calls: u64,
    /// Every notification sent, in order (what tests replay).
    sent: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct BatchRecord {
    batch_id: String,
    settled_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Tx {
    trans_id: String,
    ref_trans_id: Option<String>,
    transaction_type: &'static str,
    status: &'static str,
    response_code: u8,
    reason_code: u32,
    reason_text: &'static str,
    auth_code: String,
    auth_minor: i64,
    settle_minor: i64,
    refunded_minor: i64,
    order: Order,
    payment: PaymentMasked,
    submitted: DateTime<Utc>,
    batch_id: Option<String>,
    /// For eCheck: the return that follows settlement, and whether it has arrived.
    scheduled_return: Option<(&'static str, &'static str)>,
    returned: bool,
    duplicate_key: Option<String>,
}

/// One transaction as a test sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimTransaction {
    pub trans_id: String,
    pub transaction_type: &'static str,
    pub status: &'static str,
    pub invoice_number: Option<String>,
    pub auth_minor: i64,
    pub settle_minor: i64,
    pub refunded_minor: i64,
    /// `XXXX1111`.
    pub account_number: String,
    pub returned: bool,
}

impl Simulator {
    /// Starts a simulator on `127.0.0.1:0`.
    pub async fn start(config: SimulatorConfig) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(SimState::default()),
            http: crate::http::client_builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(std::io::Error::other)?,
        });
        let app = axum::Router::new()
            .route(API_PATH, post(api))
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Simulator {
            addr,
            shared,
            stop: Some(stop),
        })
    }

    /// The full endpoint URL for the connector's configuration.
    pub fn endpoint(&self) -> String {
        format!("http://{}{API_PATH}", self.addr)
    }

    pub fn config(&self) -> &SimulatorConfig {
        &self.shared.config
    }

    /// API calls answered so far.
    pub fn api_calls(&self) -> u64 {
        self.shared.lock().api_calls
    }

    /// Closes a settlement batch: captured transactions and refunds settle; eCheck debits
    /// settled in an earlier batch whose account triggers a return get their `returnedItems`
    /// (returns arrive a banking day or two after settlement). Returns the batch id.
    pub fn settle(&self) -> String {
        let mut state = self.shared.lock();
        let now = Utc::now();
        // Returns first: only debits that settled in an earlier batch.
        for tx in state.transactions.values_mut() {
            if tx.status == "settledSuccessfully" && tx.scheduled_return.is_some() && !tx.returned {
                tx.returned = true;
            }
        }
        state.last_batch_id += 1;
        let batch_id = format!("{}", 9_000_000 + state.last_batch_id);
        for tx in state.transactions.values_mut() {
            let settled = match tx.status {
                "capturedPendingSettlement" => "settledSuccessfully",
                "refundPendingSettlement" => "refundSettledSuccessfully",
                _ => continue,
            };
            tx.status = settled;
            tx.batch_id = Some(batch_id.clone());
        }
        state.batches.push(BatchRecord {
            batch_id: batch_id.clone(),
            settled_at: now,
        });
        batch_id
    }

    pub fn transaction(&self, trans_id: &str) -> Option<SimTransaction> {
        self.shared
            .lock()
            .transactions
            .get(trans_id)
            .map(Tx::snapshot)
    }

    pub fn transactions(&self) -> Vec<SimTransaction> {
        self.shared
            .lock()
            .transactions
            .values()
            .map(Tx::snapshot)
            .collect()
    }

    /// A signed notification about `trans_id` (body, `X-ANET-Signature` value), as the
    /// simulator would send it: for tests that deliver, replay or tamper with one.
    pub fn notification(&self, trans_id: &str, event_type: &str) -> Option<(String, String)> {
        let state = self.shared.lock();
        let tx = state.transactions.get(trans_id)?;
        Some(self.shared.notification(tx, event_type))
    }

    /// Notifications sent to the webhook URL so far: (body, signature header).
    pub fn sent_notifications(&self) -> Vec<(String, String)> {
        self.shared.lock().sent.clone()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notification(&self, tx: &Tx, event_type: &str) -> (String, String) {
        let n = Notification {
            notification_id: uuid_like(&format!("{}:{event_type}", tx.trans_id)),
            event_type: event_type.to_owned(),
            event_date: Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            webhook_id: "D2C1A6E0-7A1B-4C5D-9E8F-0A1B2C3D4E5F".into(),
            payload: NotificationPayload {
                response_code: Some(tx.response_code),
                auth_amount: Some(wire::amount_raw(tx.auth_minor)),
                invoice_number: tx.order.invoice_number.clone(),
                entity_name: "transaction".into(),
                id: tx.trans_id.clone(),
            },
        };
        let body = serde_json::to_string(&n).unwrap_or_default();
        let signature = sign(&self.config.signature_key_hex, body.as_bytes());
        (body, signature)
    }

    fn notify(self: &Arc<Self>, tx: &Tx, event_type: &'static str) {
        let Some(url) = self.config.webhook_url.clone() else {
            return;
        };
        let (body, signature) = self.notification(tx, event_type);
        self.lock().sent.push((body.clone(), signature.clone()));
        let http = self.http.clone();
        tokio::spawn(async move {
            let _ = http
                .post(url)
                .header("content-type", "application/json")
                .header("X-ANET-Signature", signature)
                .body(body)
                .send()
                .await;
        });
    }
}

/// `sha512=<UPPER HEX>` over `body` under the hex-decoded key, as Authorize.Net signs.
pub fn sign(signature_key_hex: &str, body: &[u8]) -> String {
    let key = hex::decode(signature_key_hex).unwrap_or_default();
    let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha512={}", hex::encode_upper(mac.finalize().into_bytes()))
}

/// A stable id in UUID form, from a seed (the simulator is deterministic).
fn uuid_like(seed: &str) -> String {
    let h = hex::encode(Sha256::digest(seed.as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Tx {
    fn snapshot(&self) -> SimTransaction {
        SimTransaction {
            trans_id: self.trans_id.clone(),
            transaction_type: self.transaction_type,
            status: self.status,
            invoice_number: self.order.invoice_number.clone(),
            auth_minor: self.auth_minor,
            settle_minor: self.settle_minor,
            refunded_minor: self.refunded_minor,
            account_number: match &self.payment {
                PaymentMasked::CreditCard { card_number, .. } => card_number.clone(),
                PaymentMasked::BankAccount { account_number, .. } => account_number.clone(),
            },
            returned: self.returned,
        }
    }

    fn details(&self, batches: &[BatchRecord]) -> TransactionDetails {
        TransactionDetails {
            trans_id: self.trans_id.clone(),
            ref_trans_id: self.ref_trans_id.clone(),
            submit_time_utc: self.submitted.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            transaction_type: self.transaction_type.to_owned(),
            transaction_status: self.status.to_owned(),
            response_code: self.response_code,
            response_reason_code: self.reason_code,
            response_reason_description: self.reason_text.to_owned(),
            auth_code: self.auth_code.clone(),
            batch: self.batch_id.as_ref().map(|id| Batch {
                batch_id: id.clone(),
                settlement_time_utc: batches
                    .iter()
                    .find(|b| &b.batch_id == id)
                    .map(|b| b.settled_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    .unwrap_or_default(),
                settlement_state: "settledSuccessfully".into(),
            }),
            order: Some(self.order.clone()),
            auth_amount: wire::amount_raw(self.auth_minor),
            settle_amount: wire::amount_raw(self.settle_minor),
            payment: self.payment.clone(),
            returned_items: match (self.returned, self.scheduled_return) {
                (true, Some((code, description))) => Some(ReturnedItems {
                    returned_item: vec![ReturnedItem {
                        id: format!("{}1", self.trans_id),
                        date_utc: Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                        code: code.to_owned(),
                        description: description.to_owned(),
                    }],
                }),
                _ => None,
            },
        }
    }

    fn summary(&self) -> TransactionSummary {
        let (account_type, account_number) = match &self.payment {
            PaymentMasked::CreditCard {
                card_number,
                card_type,
                ..
            } => (card_type.clone(), card_number.clone()),
            PaymentMasked::BankAccount { account_number, .. } => {
                ("eCheck".to_owned(), account_number.clone())
            }
        };
        TransactionSummary {
            trans_id: self.trans_id.clone(),
            submit_time_utc: self.submitted.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            transaction_status: self.status.to_owned(),
            invoice_number: self.order.invoice_number.clone(),
            account_type,
            account_number,
            settle_amount: wire::amount_raw(self.settle_minor),
        }
    }
}

/// A JSON object with its keys in document order (the schema cares; serde_json's map sorts).
#[derive(Debug)]
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Ordered {
    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Reject> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|e| Reject::schema(format!("The '{key}' element is invalid: {e}"))),
        }
    }

    fn text(&self, key: &str) -> Result<Option<String>, Reject> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => {
                let v: serde_json::Value = serde_json::from_str(raw.get())
                    .map_err(|e| Reject::schema(format!("The '{key}' element is invalid: {e}")))?;
                Ok(match v {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => return Err(Reject::schema(format!("The '{key}' element is invalid."))),
                })
            }
        }
    }

    /// E00003 for an element the schema does not allow here or out of order.
    fn check_order(&self, parent: &str, schema: &[&str]) -> Result<(), Reject> {
        let mut last = None;
        for (k, _) in &self.0 {
            let pos = schema.iter().position(|s| s == k);
            match (pos, last) {
                (Some(p), Some(l)) if p <= l => {}
                (Some(p), _) => {
                    last = Some(p);
                    continue;
                }
                (None, _) => {}
            }
            let expected = schema[last.map_or(0, |l| l + 1)..].join(", ");
            return Err(Reject::schema(format!(
                "The element '{parent}' in namespace 'AnetApi/xml/v1/schema/AnetApiSchema.xsd' has invalid child element '{k}' in namespace 'AnetApi/xml/v1/schema/AnetApiSchema.xsd'. List of possible elements expected: '{expected}' in namespace 'AnetApi/xml/v1/schema/AnetApiSchema.xsd'."
            )));
        }
        Ok(())
    }
}

/// An API-level refusal: `resultCode = Error` with one message.
#[derive(Debug)]
struct Reject {
    code: &'static str,
    text: String,
}

impl Reject {
    fn schema(text: String) -> Reject {
        Reject {
            code: "E00003",
            text,
        }
    }
}

const CREATE_ORDER: [&str; 4] = [
    "merchantAuthentication",
    "clientId",
    "refId",
    "transactionRequest",
];
const TRANSACTION_ORDER: [&str; 27] = [
    "transactionType",
    "amount",
    "currencyCode",
    "payment",
    "profile",
    "solution",
    "callId",
    "terminalNumber",
    "authCode",
    "refTransId",
    "splitTenderId",
    "order",
    "lineItems",
    "tax",
    "duty",
    "shipping",
    "taxExempt",
    "poNumber",
    "customer",
    "billTo",
    "shipTo",
    "customerIP",
    "cardholderAuthentication",
    "retail",
    "employeeId",
    "transactionSettings",
    "userFields",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MerchantAuthIn {
    name: String,
    transaction_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CardIn {
    card_number: String,
    expiration_date: String,
    card_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BankIn {
    account_type: Option<String>,
    routing_number: String,
    account_number: String,
    name_on_account: String,
    echeck_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BillToIn {
    zip: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PagingIn {
    limit: serde_json::Value,
    offset: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SortingIn {
    order_by: String,
    order_descending: serde_json::Value,
}

/// Answers one API call.
async fn api(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let (json, hang) = match handle(&shared, &body) {
        Ok(answer) => answer,
        Err(r) => (
            serde_json::to_string(&wire::AnyResponseOut {
                messages: Messages::error(r.code, &r.text),
            })
            .unwrap_or_default(),
            false,
        ),
    };
    if hang {
        tokio::time::sleep(Duration::from_millis(shared.config.hang_ms)).await;
    }
    let mut response = (StatusCode::OK, format!("{}{json}", wire::BOM)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn handle(shared: &Arc<Shared>, body: &[u8]) -> Result<(String, bool), Reject> {
    let body = body.strip_prefix(wire::BOM.as_bytes()).unwrap_or(body);
    let top: Ordered = serde_json::from_slice(body).map_err(|e| Reject {
        code: "E00001",
        text: format!("An error occurred during processing. Please try again. ({e})"),
    })?;
    let [(name, inner)] = &top.0[..] else {
        return Err(Reject::schema(
            "The request must hold exactly one root element.".into(),
        ));
    };
    let inner: Ordered = serde_json::from_str(inner.get())
        .map_err(|e| Reject::schema(format!("The '{name}' element is invalid: {e}")))?;
    let auth: MerchantAuthIn = inner.decode("merchantAuthentication")?.ok_or_else(|| {
        Reject::schema(format!(
            "The element '{name}' has incomplete content. List of possible elements expected: 'merchantAuthentication'."
        ))
    })?;
    if inner.0.first().map(|(k, _)| k.as_str()) != Some("merchantAuthentication") {
        return Err(Reject::schema(format!(
            "The element '{name}' has invalid child element '{}'. List of possible elements expected: 'merchantAuthentication'.",
            inner.0.first().map(|(k, _)| k.as_str()).unwrap_or("")
        )));
    }
    // Constant-time is the real service's business; equality is enough for a simulator.
    if auth.name != shared.config.api_login_id
        || auth.transaction_key != shared.config.transaction_key
    {
        return Err(Reject {
            code: "E00007",
            text: "User authentication failed due to invalid authentication values.".into(),
        });
    }
    shared.lock().api_calls += 1;
    match name.as_str() {
        "authenticateTestRequest" => Ok((json(&wire::AnyResponseOut::ok()), false)),
        "createTransactionRequest" => {
            inner.check_order(name, &CREATE_ORDER)?;
            let ref_id = inner.text("refId")?;
            let tr: Ordered = inner.decode("transactionRequest")?.ok_or_else(|| {
                Reject::schema("The element 'createTransactionRequest' has incomplete content. List of possible elements expected: 'transactionRequest'.".into())
            })?;
            tr.check_order("transactionRequest", &TRANSACTION_ORDER)?;
            let (response, hang) = create_transaction(shared, &tr)?;
            let out = CreateTransactionResponse {
                messages: if response.response_code == "1" {
                    Messages::ok()
                } else {
                    Messages::error("E00027", "The transaction was unsuccessful.")
                },
                transaction_response: Some(response),
                ref_id,
            };
            Ok((json(&out), hang))
        }
        "getTransactionDetailsRequest" => {
            let trans_id = inner.text("transId")?.unwrap_or_default();
            let state = shared.lock();
            let out = match state.transactions.get(&trans_id) {
                Some(tx) => TransactionDetailsResponse {
                    transaction: Some(tx.details(&state.batches)),
                    messages: Messages::ok(),
                },
                None => TransactionDetailsResponse {
                    transaction: None,
                    messages: Messages::error("E00040", "The record cannot be found."),
                },
            };
            Ok((json(&out), false))
        }
        "getUnsettledTransactionListRequest" => {
            let state = shared.lock();
            let txs: Vec<&Tx> = state
                .transactions
                .values()
                .filter(|t| {
                    matches!(
                        t.status,
                        "authorizedPendingCapture"
                            | "capturedPendingSettlement"
                            | "refundPendingSettlement"
                            | "FDSPendingReview"
                            | "FDSAuthorizedPendingReview"
                    )
                })
                .collect();
            Ok((json(&list(&inner, txs)?), false))
        }
        "getTransactionListRequest" => {
            let batch_id = inner.text("batchId")?.unwrap_or_default();
            let state = shared.lock();
            if !state.batches.iter().any(|b| b.batch_id == batch_id) {
                return Err(Reject {
                    code: "E00040",
                    text: "The record cannot be found.".into(),
                });
            }
            let txs: Vec<&Tx> = state
                .transactions
                .values()
                .filter(|t| t.batch_id.as_deref() == Some(batch_id.as_str()))
                .collect();
            Ok((json(&list(&inner, txs)?), false))
        }
        "getSettledBatchListRequest" => {
            let parse = |key: &str| -> Result<Option<DateTime<Utc>>, Reject> {
                match inner.text(key)? {
                    None => Ok(None),
                    Some(t) => DateTime::parse_from_rfc3339(&t)
                        .map(|d| Some(d.with_timezone(&Utc)))
                        .map_err(|_| Reject::schema(format!("The '{key}' element is invalid."))),
                }
            };
            let now = Utc::now();
            let first = parse("firstSettlementDate")?.unwrap_or(now - chrono::Duration::days(1));
            let last = parse("lastSettlementDate")?.unwrap_or(now);
            if last - first > chrono::Duration::days(31) {
                return Err(Reject {
                    code: "E00012",
                    text: "The date range cannot exceed 31 days.".into(),
                });
            }
            let state = shared.lock();
            let batch_list: Vec<Batch> = state
                .batches
                .iter()
                .filter(|b| {
                    b.settled_at >= first && b.settled_at <= last + chrono::Duration::seconds(1)
                })
                .map(|b| Batch {
                    batch_id: b.batch_id.clone(),
                    settlement_time_utc: b.settled_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    settlement_state: "settledSuccessfully".into(),
                })
                .collect();
            let messages = if batch_list.is_empty() {
                no_records()
            } else {
                Messages::ok()
            };
            Ok((
                json(&SettledBatchListResponse {
                    batch_list,
                    messages,
                }),
                false,
            ))
        }
        other => Err(Reject::schema(format!(
            "The element '{other}' is not a supported API request."
        ))),
    }
}

fn no_records() -> Messages {
    Messages {
        result_code: "Ok".into(),
        message: vec![wire::Message {
            code: "I00004".into(),
            text: "No records found.".into(),
        }],
    }
}

/// A page of transactions, sorted and paged as asked (1-based `offset`, `limit` ≤ 1000).
fn list(req: &Ordered, mut txs: Vec<&Tx>) -> Result<TransactionListResponse, Reject> {
    if let Some(s) = req.decode::<SortingIn>("sorting")? {
        let descending = matches!(&s.order_descending, serde_json::Value::Bool(true))
            || s.order_descending.as_str() == Some("true");
        match s.order_by.as_str() {
            "id" => txs.sort_by_key(|t| t.trans_id.parse::<u64>().unwrap_or(0)),
            "submitTimeUTC" => txs.sort_by_key(|t| (t.submitted, t.trans_id.clone())),
            other => {
                return Err(Reject::schema(format!(
                    "The 'orderBy' element is invalid - The value '{other}' is invalid according to its datatype."
                )));
            }
        }
        if descending {
            txs.reverse();
        }
    }
    let total = txs.len() as u32;
    let (limit, offset) = match req.decode::<PagingIn>("paging")? {
        Some(p) => {
            let num = |v: &serde_json::Value| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            };
            match (num(&p.limit), num(&p.offset)) {
                (Some(l @ 1..=1000), Some(o @ 1..=100_000)) => (l as usize, o as usize),
                _ => {
                    return Err(Reject {
                        code: "E00104",
                        text: "Paging limit must be between 1 and 1000; offset from 1.".into(),
                    });
                }
            }
        }
        None => (1000, 1),
    };
    let transactions: Vec<TransactionSummary> = txs
        .into_iter()
        .skip(limit * (offset - 1))
        .take(limit)
        .map(Tx::summary)
        .collect();
    Ok(TransactionListResponse {
        messages: if transactions.is_empty() {
            no_records()
        } else {
            Messages::ok()
        },
        transactions,
        total_num_in_result_set: total,
    })
}

fn card_type(number: &str) -> &'static str {
    let p2: u32 = number.get(..2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let p4: u32 = number.get(..4).and_then(|s| s.parse().ok()).unwrap_or(0);
    match () {
        _ if number.starts_with('4') => "Visa",
        _ if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) => "MasterCard",
        _ if p2 == 34 || p2 == 37 => "AmericanExpress",
        _ if number.starts_with("6011") || number.starts_with("65") => "Discover",
        _ if (3528..=3589).contains(&p4) => "JCB",
        _ if p2 == 36 || p2 == 38 || (300..=305).contains(&(p4 / 10)) => "DinersClub",
        _ => "Unknown",
    }
}

/// `YYYY-MM`, `MMYY`, `MMYYYY` or `YYYYMM` → (year, month).
fn parse_expiry(s: &str) -> Option<(i32, u32)> {
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let (y, m) = match (s.len(), s.contains('-')) {
        (7, true) => (
            digits.get(..4)?.parse().ok()?,
            digits.get(4..)?.parse().ok()?,
        ),
        (4, false) => (
            2000 + digits.get(2..)?.parse::<i32>().ok()?,
            digits.get(..2)?.parse().ok()?,
        ),
        (6, false) if digits.starts_with("20") => (
            digits.get(..4)?.parse().ok()?,
            digits.get(4..)?.parse().ok()?,
        ),
        (6, false) => (
            digits.get(2..)?.parse().ok()?,
            digits.get(..2)?.parse().ok()?,
        ),
        _ => return None,
    };
    (1..=12).contains(&m).then_some((y, m))
}

fn masked(number: &str) -> String {
    let last4 = number.get(number.len().saturating_sub(4)..).unwrap_or("");
    format!("XXXX{last4}")
}

fn last4_of(masked_or_full: &str) -> &str {
    masked_or_full
        .get(masked_or_full.len().saturating_sub(4)..)
        .unwrap_or("")
}

/// A declined / error `transactionResponse` (no transaction is recorded).
fn refusal(
    code: u8,
    reason: u32,
    text: &str,
    account: &str,
    account_type: &str,
) -> TransactionResponse {
    TransactionResponse {
        response_code: code.to_string(),
        trans_id: "0".into(),
        account_number: account.to_owned(),
        account_type: account_type.to_owned(),
        test_request: "0".into(),
        errors: Some(vec![TransactionError {
            error_code: reason.to_string(),
            error_text: text.to_owned(),
        }]),
        ..TransactionResponse::default()
    }
}

fn error3(reason: u32, text: &str) -> TransactionResponse {
    refusal(3, reason, text, "", "")
}

fn approved(tx: &Tx, cvv: &str) -> TransactionResponse {
    let (account_number, account_type) = match &tx.payment {
        PaymentMasked::CreditCard {
            card_number,
            card_type,
            ..
        } => (card_number.clone(), card_type.clone()),
        PaymentMasked::BankAccount { account_number, .. } => {
            (account_number.clone(), "eCheck".to_owned())
        }
    };
    TransactionResponse {
        response_code: "1".into(),
        auth_code: tx.auth_code.clone(),
        avs_result_code: if matches!(tx.payment, PaymentMasked::CreditCard { .. }) {
            "Y".into()
        } else {
            "P".into()
        },
        cvv_result_code: cvv.to_owned(),
        trans_id: tx.trans_id.clone(),
        ref_trans_id: tx.ref_trans_id.clone().unwrap_or_default(),
        trans_hash: String::new(),
        test_request: "0".into(),
        account_number,
        account_type,
        messages: Some(vec![TransactionMessage {
            code: "1".into(),
            description: "This transaction has been approved.".into(),
        }]),
        errors: None,
    }
}

fn create_transaction(
    shared: &Arc<Shared>,
    tr: &Ordered,
) -> Result<(TransactionResponse, bool), Reject> {
    let kind = tr.text("transactionType")?.unwrap_or_default();
    let amount = tr
        .get("amount")
        .map(|raw| wire::amount_minor(raw).filter(|a| *a > 0));
    let order: Order = tr.decode("order")?.unwrap_or_default();
    if order
        .invoice_number
        .as_ref()
        .is_some_and(|i| i.chars().count() > 20)
    {
        return Err(Reject::schema(
            "The 'invoiceNumber' element is invalid - The actual length is greater than the MaxLength value.".into(),
        ));
    }
    let ref_trans_id = tr.text("refTransId")?;
    let now = Utc::now();
    match kind.as_str() {
        "authCaptureTransaction" | "authOnlyTransaction" => {
            let Some(amount) = amount.flatten() else {
                return Ok((error3(5, "A valid amount is required."), false));
            };
            if let Some(c) = tr.text("currencyCode")?
                && !super::client::CURRENCIES.contains(&c.as_str())
            {
                return Ok((
                    error3(
                        39,
                        "The supplied currency code is either invalid, not supported, not allowed for this merchant or doesn't have an exchange rate.",
                    ),
                    false,
                ));
            }
            let payment: Ordered = tr
                .decode("payment")?
                .ok_or_else(|| Reject::schema("The 'payment' element is required.".into()))?;
            let zip = tr
                .decode::<BillToIn>("billTo")?
                .unwrap_or_default()
                .zip
                .unwrap_or_default();
            let capture = kind == "authCaptureTransaction";
            let (masked_payment, cvv, duplicate_basis, scheduled_return) = if let Some(card) =
                payment.decode::<CardIn>("creditCard")?
            {
                let n = card.card_number;
                let account = masked(&n);
                if !(13..=16).contains(&n.len())
                    || !n.bytes().all(|b| b.is_ascii_digit())
                    || !crate::card::luhn_valid(&n)
                {
                    return Ok((
                        refusal(3, 6, "The credit card number is invalid.", &account, ""),
                        false,
                    ));
                }
                let brand = card_type(&n);
                let Some((y, m)) = parse_expiry(&card.expiration_date) else {
                    return Ok((
                        refusal(
                            3,
                            7,
                            "Credit card expiration date is invalid.",
                            &account,
                            brand,
                        ),
                        false,
                    ));
                };
                let today = now.date_naive();
                use chrono::Datelike;
                if (y, m) < (today.year(), today.month()) {
                    return Ok((
                        refusal(3, 8, "The credit card has expired.", &account, brand),
                        false,
                    ));
                }
                if zip == DECLINE_ZIP {
                    return Ok((
                        refusal(2, 2, "This transaction has been declined.", &account, brand),
                        false,
                    ));
                }
                let cvv = match card.card_code.as_deref() {
                    Some(CVV_MISMATCH) => {
                        let mut r = refusal(
                            2,
                            44,
                            "This transaction has been declined.",
                            &account,
                            brand,
                        );
                        r.cvv_result_code = "N".into();
                        return Ok((r, false));
                    }
                    Some(_) => "M",
                    None => "",
                };
                (
                    PaymentMasked::CreditCard {
                        card_number: account,
                        expiration_date: "XXXX".into(),
                        card_type: brand.to_owned(),
                    },
                    cvv,
                    n,
                    None,
                )
            } else if let Some(bank) = payment.decode::<BankIn>("bankAccount")? {
                let account = masked(&bank.account_number);
                if !crate::bank::aba_checksum_valid(&bank.routing_number) {
                    return Ok((
                        refusal(3, 9, "The ABA code is invalid", &account, "eCheck"),
                        false,
                    ));
                }
                let len = bank.account_number.len();
                if !(4..=17).contains(&len)
                    || !bank.account_number.bytes().all(|b| b.is_ascii_digit())
                {
                    return Ok((
                        refusal(3, 10, "The account number is invalid", &account, "eCheck"),
                        false,
                    ));
                }
                let account_type = bank.account_type.unwrap_or_else(|| "checking".into());
                let echeck = bank.echeck_type.unwrap_or_else(|| "WEB".into());
                let business = account_type == "businessChecking";
                let fits = match echeck.as_str() {
                    "CCD" => business,
                    "PPD" | "WEB" | "TEL" => !business,
                    _ => false,
                };
                if !fits || !capture {
                    return Ok((
                        refusal(
                            3,
                            100,
                            "The value submitted in echeckType is invalid.",
                            &account,
                            "eCheck",
                        ),
                        false,
                    ));
                }
                (
                    PaymentMasked::BankAccount {
                        account_type,
                        routing_number: masked(&bank.routing_number),
                        account_number: account,
                        name_on_account: bank.name_on_account.chars().take(22).collect(),
                        echeck_type: echeck,
                    },
                    "",
                    format!("{}:{}", bank.routing_number, bank.account_number),
                    crate::sandbox::scheduled_return(last4_of(&bank.account_number)),
                )
            } else {
                return Err(Reject::schema(
                        "The element 'payment' has incomplete content. List of possible elements expected: 'creditCard, bankAccount'.".into(),
                    ));
            };
            let duplicate_key = hex::encode(Sha256::digest(
                format!(
                    "{kind}|{duplicate_basis}|{amount}|{}|{zip}",
                    order.invoice_number.as_deref().unwrap_or("")
                )
                .as_bytes(),
            ));
            let mut state = shared.lock();
            let window = now - chrono::Duration::seconds(DUPLICATE_WINDOW_S);
            if let Some(original) = state.transactions.values().find(|t| {
                t.duplicate_key.as_deref() == Some(&duplicate_key) && t.submitted > window
            }) {
                let mut r = error3(11, "A duplicate transaction has been submitted.");
                r.account_number = original.snapshot().account_number;
                return Ok((r, false));
            }
            state.last_trans_id += 1;
            let trans_id = format!("{}", 60_000_000_000u64 + state.last_trans_id);
            let tx = Tx {
                auth_code: format!("{:06X}", (state.last_trans_id * 7919) % 0xFF_FFFF),
                trans_id: trans_id.clone(),
                ref_trans_id: None,
                transaction_type: if capture {
                    "authCaptureTransaction"
                } else {
                    "authOnlyTransaction"
                },
                status: if capture {
                    "capturedPendingSettlement"
                } else {
                    "authorizedPendingCapture"
                },
                response_code: 1,
                reason_code: 1,
                reason_text: "Approval",
                auth_minor: amount,
                settle_minor: if capture { amount } else { 0 },
                refunded_minor: 0,
                order,
                payment: masked_payment,
                submitted: now,
                batch_id: None,
                scheduled_return,
                returned: false,
                duplicate_key: Some(duplicate_key),
            };
            let response = approved(&tx, cvv);
            state.transactions.insert(trans_id, tx.clone());
            drop(state);
            shared.notify(
                &tx,
                if capture {
                    "net.authorize.payment.authcapture.created"
                } else {
                    "net.authorize.payment.authorization.created"
                },
            );
            Ok((response, zip == HANG_ZIP))
        }
        "priorAuthCaptureTransaction" => {
            let mut state = shared.lock();
            let Some(tx) = ref_trans_id
                .as_deref()
                .and_then(|id| state.transactions.get_mut(id))
            else {
                return Ok((error3(16, "The transaction cannot be found."), false));
            };
            match tx.status {
                "authorizedPendingCapture" => {}
                "capturedPendingSettlement" | "settledSuccessfully" => {
                    return Ok((
                        error3(311, "This transaction has already been captured."),
                        false,
                    ));
                }
                "voided" => {
                    return Ok((
                        error3(310, "This transaction has already been voided."),
                        false,
                    ));
                }
                _ => return Ok((error3(16, "The transaction cannot be found."), false)),
            }
            let amount = match amount {
                None => tx.auth_minor,
                Some(None) => return Ok((error3(5, "A valid amount is required."), false)),
                Some(Some(a)) => a,
            };
            if amount > tx.auth_minor {
                return Ok((
                    error3(
                        47,
                        "The amount requested for settlement cannot be greater than the original amount authorized.",
                    ),
                    false,
                ));
            }
            tx.status = "capturedPendingSettlement";
            tx.transaction_type = "authCaptureTransaction";
            tx.settle_minor = amount;
            let snapshot = tx.clone();
            drop(state);
            let mut response = approved(&snapshot, "");
            response.ref_trans_id = snapshot.trans_id.clone();
            shared.notify(&snapshot, "net.authorize.payment.priorAuthCapture.created");
            Ok((response, false))
        }
        "voidTransaction" => {
            let mut state = shared.lock();
            let Some(tx) = ref_trans_id
                .as_deref()
                .and_then(|id| state.transactions.get_mut(id))
            else {
                return Ok((error3(16, "The transaction cannot be found."), false));
            };
            match tx.status {
                "authorizedPendingCapture"
                | "capturedPendingSettlement"
                | "refundPendingSettlement" => {}
                "voided" => {
                    return Ok((
                        error3(310, "This transaction has already been voided."),
                        false,
                    ));
                }
                _ => return Ok((error3(16, "The transaction cannot be found."), false)),
            }
            tx.status = "voided";
            let snapshot = tx.clone();
            drop(state);
            let mut response = approved(&snapshot, "");
            response.ref_trans_id = snapshot.trans_id.clone();
            shared.notify(&snapshot, "net.authorize.payment.void.created");
            Ok((response, false))
        }
        "refundTransaction" => {
            let Some(amount) = amount.flatten() else {
                return Ok((error3(5, "A valid amount is required."), false));
            };
            let payment: Option<Ordered> = tr.decode("payment")?;
            let given_last4 = payment.as_ref().and_then(|p| {
                p.decode::<CardIn>("creditCard")
                    .ok()
                    .flatten()
                    .map(|c| last4_of(&c.card_number).to_owned())
                    .or_else(|| {
                        p.decode::<BankIn>("bankAccount")
                            .ok()
                            .flatten()
                            .map(|b| last4_of(&b.account_number).to_owned())
                    })
            });
            let mut state = shared.lock();
            let criteria =
                "The referenced transaction does not meet the criteria for issuing a credit.";
            let Some(original) = ref_trans_id
                .as_deref()
                .and_then(|id| state.transactions.get_mut(id))
            else {
                return Ok((error3(54, criteria), false));
            };
            let original_last4 = last4_of(&original.snapshot().account_number).to_owned();
            if original.status != "settledSuccessfully"
                || original.returned
                || given_last4.as_deref() != Some(original_last4.as_str())
            {
                return Ok((error3(54, criteria), false));
            }
            if original.refunded_minor + amount > original.settle_minor {
                return Ok((
                    error3(
                        55,
                        "The sum of credits against the referenced transaction would exceed original debit amount.",
                    ),
                    false,
                ));
            }
            original.refunded_minor += amount;
            let payment = original.payment.clone();
            let original_id = original.trans_id.clone();
            state.last_trans_id += 1;
            let trans_id = format!("{}", 60_000_000_000u64 + state.last_trans_id);
            let tx = Tx {
                trans_id: trans_id.clone(),
                ref_trans_id: Some(original_id.clone()),
                transaction_type: "refundTransaction",
                status: "refundPendingSettlement",
                response_code: 1,
                reason_code: 1,
                reason_text: "Approval",
                auth_code: String::new(),
                auth_minor: amount,
                settle_minor: amount,
                refunded_minor: 0,
                order,
                payment,
                submitted: now,
                batch_id: None,
                scheduled_return: None,
                returned: false,
                duplicate_key: None,
            };
            state.transactions.insert(trans_id, tx.clone());
            drop(state);
            let mut response = approved(&tx, "");
            response.ref_trans_id = original_id;
            shared.notify(&tx, "net.authorize.payment.refund.created");
            Ok((response, false))
        }
        other => Err(Reject::schema(format!(
            "The 'transactionType' element is invalid - The value '{other}' is invalid according to its datatype."
        ))),
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
