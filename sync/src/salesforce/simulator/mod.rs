//! A protocol-faithful Salesforce simulator: a real HTTP server on loopback with an in-memory
//! org, so [`SalesforceClient`](super::SalesforceClient) is tested over a socket the way it
//! talks to Salesforce.
//!
//! Faithful in:
//! - **OAuth** (`POST /services/oauth2/token`): the JWT bearer grant (RS256 signature checked
//!   against the configured public key; `iss` = consumer key, `sub` = username, `aud`, `exp`
//!   at most 3 minutes ahead) and client credentials; errors as
//!   `{"error":"invalid_grant","error_description":…}`. Tokens expire
//!   ([`SimulatorConfig::session_lifetime_s`], or now: [`Simulator::expire_sessions`]) and
//!   then every call is `401 [{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`.
//! - **SOQL** (`/query`, `/queryAll`, see [`soql`]): 2,000-record pages (or
//!   `Sforce-Query-Options: batchSize=n`) behind `nextRecordsUrl`
//!   (`/services/data/vXX.X/query/01g…-2000`), `queryAll` with deleted records.
//! - **Records**: `attributes {type, url}`, 18-character ids with the real key prefixes,
//!   `CreatedDate`, `LastModifiedDate`, `SystemModstamp`, `CreatedById`, `LastModifiedById`
//!   (the API user, or [`SimulatorConfig::other_user_id`] for changes made through the test
//!   hooks), `IsDeleted`.
//! - **sObject REST**: create (201 `{id, success, errors}`), read, update (204), delete (204),
//!   upsert by external id (201 `created: true` / 200 `created: false` / **300** with the
//!   matching record URLs / 404 for a field that is not an external id), describe.
//! - **sObject Collections**: create, update, upsert, delete, at most 200 records (more:
//!   400 `EXCEEDED_ID_LIMIT`), per-record errors in order (`statusCode`), `allOrNone`
//!   honoured (`ALL_OR_NONE_OPERATION_ROLLED_BACK`).
//! - **Write rules**: `REQUIRED_FIELD_MISSING`, `INVALID_FIELD`,
//!   `INVALID_FIELD_FOR_INSERT_UPDATE`, `STRING_TOO_LONG`, `INVALID_CROSS_REFERENCE_KEY`,
//!   `DUPLICATE_VALUE` on unique external ids, `FIELD_CUSTOM_VALIDATION_EXCEPTION`
//!   ([`ValidationRule`]), `ENTITY_IS_DELETED`.
//! - **Limits**: `Sforce-Limit-Info: api-usage=N/M` on every `/services/data` answer; past
//!   the daily limit, 403 `REQUEST_LIMIT_EXCEEDED`.
//! - **Bulk API 2.0**: ingest jobs (CSV upload, `UploadComplete`, one poll `InProgress`, then
//!   `JobComplete`; `successfulResults` with `sf__Id,sf__Created`, `failedResults` with
//!   `sf__Id,sf__Error`) and query jobs (results paged by `maxRecords` and `Sforce-Locator`,
//!   `null` on the last page).
//!
//! ## Closed Won events
//! When an Opportunity's `StageName` becomes `Closed Won` (insert or update, through the API
//! or a hook), the simulator does what cashloop's Apex trigger callout does: it POSTs
//! `{"event_id","object":"Opportunity","record_id","stage","occurred_at"}` (`occurred_at`
//! RFC 3339 UTC) to [`SimulatorConfig::event_webhook_url`] with the header
//! `X-Cashloop-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">` under the
//! hex-decoded [`SimulatorConfig::event_secret_hex`] — the same scheme as cashloop's own
//! outbound webhooks (`gateway::webhooks::signature`), so `gateway::webhooks::verify` checks
//! it. [`Simulator::events_sent`] lists them with the receiver's status.
//!
//! - **Custom notifications** (`POST /actions/standard/customNotificationAction`, see
//!   [`notifications`]): inputs checked, one result per input, recorded.
//!
//! Test hooks: latency per call, a burst of 500/503 answers, one malformed body, session
//! expiry, API usage and limit, writes as another user, reads, and call counts per endpoint.

mod bulk;
pub mod notifications;
pub mod org;
pub mod schema;
pub mod soql;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde::Serialize;

use self::org::{Org, Upsert, ValidationRule};
use self::schema::{CustomField, Schema};
use super::auth::{Claims, JWT_GRANT_TYPE, pem_decode};
use super::wire::{ApiError, CollectionRequest, QueryPage, Record, RecordError, SaveResult, Value};

pub use self::notifications::SentNotification;
pub use self::schema::FieldType;

/// Salesforce's limit on records per sObject Collections call.
pub const COLLECTION_LIMIT: usize = 200;
/// Default and maximum SOQL page size.
pub const QUERY_PAGE_MAX: usize = 2_000;
/// Smallest `batchSize` Salesforce accepts.
pub const QUERY_PAGE_MIN: usize = 200;

/// The custom notification type the default simulated org has.
pub const SIM_NOTIFICATION_TYPE_ID: &str = "0ML5g0000000SimAAA";

/// How the simulated org is set up.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    pub api_version: String,
    /// JWT bearer: `iss` must be this consumer key, `sub` this username.
    pub consumer_key: String,
    pub username: String,
    /// PKCS#1 PEM (`-----BEGIN RSA PUBLIC KEY-----`) that JWT assertions are verified with;
    /// `None` refuses the JWT grant.
    pub jwt_public_key_pem: Option<String>,
    /// Accepted `aud` values besides the simulator's own URL.
    pub jwt_audiences: Vec<String>,
    /// Client credentials.
    pub client_id: String,
    pub client_secret: String,
    pub session_lifetime_s: u64,
    pub daily_api_limit: u64,
    pub query_page_size: usize,
    /// The integration user's id (every API write is made by it).
    pub api_user_id: String,
    /// The user hook writes are made by (someone editing in Salesforce).
    pub other_user_id: String,
    pub custom_fields: Vec<CustomField>,
    pub validation_rules: Vec<ValidationRule>,
    /// Where Closed Won events are POSTed (loopback in tests); `None`: recorded only.
    pub event_webhook_url: Option<String>,
    /// 64 hex characters: the HMAC key of `X-Cashloop-Signature`.
    pub event_secret_hex: String,
    /// The org's custom notification types (`0ML…` ids) that
    /// `actions/standard/customNotificationAction` accepts.
    pub notification_type_ids: Vec<String>,
}

impl Default for SimulatorConfig {
    fn default() -> SimulatorConfig {
        SimulatorConfig {
            api_version: "62.0".into(),
            consumer_key: "3MVG9sim.consumer.key".into(),
            username: "integration@cashloop.example".into(),
            jwt_public_key_pem: None,
            jwt_audiences: vec![
                "https://login.salesforce.com".into(),
                "https://test.salesforce.com".into(),
            ],
            client_id: "3MVG9sim.client.id".into(),
            client_secret: "sim-client-secret-0123456789".into(),
            session_lifetime_s: 7_200,
            daily_api_limit: 100_000,
            query_page_size: QUERY_PAGE_MAX,
            api_user_id: "0055g00000IntegAAA".into(),
            other_user_id: "0055g00000HumanAAA".into(),
            custom_fields: Vec::new(),
            validation_rules: vec![ValidationRule {
                object: "Opportunity".into(),
                field: "Amount".into(),
                min: rust_decimal::Decimal::ZERO,
                message: "Amount cannot be negative".into(),
            }],
            event_webhook_url: None,
            event_secret_hex: "5f".repeat(32),
            notification_type_ids: vec![SIM_NOTIFICATION_TYPE_ID.into()],
        }
    }
}

/// A Closed Won event the simulator produced, and what the receiver answered.
#[derive(Clone, Debug)]
pub struct SentEvent {
    pub event_id: String,
    pub record_id: String,
    pub body: String,
    pub signature: String,
    /// `None` until delivered (or when there is no webhook URL); the receiver's status.
    pub status: Option<u16>,
}

struct Cursor {
    records: Vec<Record>,
    page_size: usize,
}

pub(crate) struct State {
    org: Org,
    sessions: HashMap<String, Instant>,
    api_used: u64,
    daily_limit: u64,
    latency_ms: u64,
    fail_queue: VecDeque<u16>,
    malformed: u32,
    calls: BTreeMap<String, u64>,
    cursors: HashMap<String, Cursor>,
    jobs: HashMap<String, bulk::Job>,
    events: Vec<SentEvent>,
    notifications: Vec<SentNotification>,
}

struct Shared {
    config: SimulatorConfig,
    base_url: String,
    state: Mutex<State>,
    http: reqwest::Client,
    event_key: Option<gateway::crypto::FingerprintKey>,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running simulator; stops when dropped.
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Simulator {
    /// Binds 127.0.0.1:0 and serves. Panics on a configuration error (a test bug).
    pub async fn start(config: SimulatorConfig) -> Simulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let mut schema = Schema::default_org();
        for c in &config.custom_fields {
            schema.add_custom(c).expect("custom field");
        }
        let event_key = gateway::crypto::FingerprintKey::from_hex(1, &config.event_secret_hex).ok();
        let state = State {
            org: Org::new(schema, config.validation_rules.clone(), &config.api_version),
            sessions: HashMap::new(),
            api_used: 0,
            daily_limit: config.daily_api_limit,
            latency_ms: 0,
            fail_queue: VecDeque::new(),
            malformed: 0,
            calls: BTreeMap::new(),
            cursors: HashMap::new(),
            jobs: HashMap::new(),
            events: Vec::new(),
            notifications: Vec::new(),
        };
        let shared = Arc::new(Shared {
            config,
            base_url: format!("http://{addr}"),
            state: Mutex::new(state),
            http: gateway::http::client_builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
            event_key,
            runtime: tokio::runtime::Handle::current(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Simulator { shared, addr, task }
    }

    /// `http://127.0.0.1:<port>`: both the login URL and the instance URL.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn config(&self) -> &SimulatorConfig {
        &self.shared.config
    }

    // ---- test hooks ----

    /// Every issued access token stops working now.
    pub fn expire_sessions(&self) {
        self.shared.lock().sessions.clear();
    }

    /// Every call (token endpoint included) waits this long before being answered.
    pub fn set_latency_ms(&self, ms: u64) {
        self.shared.lock().latency_ms = ms;
    }

    /// The next API calls are answered with these statuses (500, 503, …), one each.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.shared
            .lock()
            .fail_queue
            .extend(statuses.iter().copied());
    }

    /// The next API call gets a 200 with a truncated JSON body.
    pub fn malformed_once(&self) {
        self.shared.lock().malformed += 1;
    }

    /// (used, daily limit).
    pub fn api_usage(&self) -> (u64, u64) {
        let s = self.shared.lock();
        (s.api_used, s.daily_limit)
    }

    pub fn set_api_usage(&self, used: u64) {
        self.shared.lock().api_used = used;
    }

    pub fn set_daily_limit(&self, limit: u64) {
        self.shared.lock().daily_limit = limit;
    }

    /// Calls per endpoint (`"GET /query"`, `"PATCH /composite/sobjects/{object}/{field}"`,
    /// `"POST /oauth2/token"`, …).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.shared.lock().calls.clone()
    }

    /// Calls to one endpoint.
    pub fn calls_to(&self, endpoint: &str) -> u64 {
        self.shared.lock().calls.get(endpoint).copied().unwrap_or(0)
    }

    pub fn reset_calls(&self) {
        self.shared.lock().calls.clear();
    }

    /// Inserts records as the other (human) user, in one go; the ids in order.
    pub fn insert_as_user(
        &self,
        object: &str,
        records: &[Record],
    ) -> Result<Vec<String>, ApiError> {
        let user = self.shared.config.other_user_id.clone();
        let ids = {
            let mut s = self.shared.lock();
            records
                .iter()
                .map(|r| s.org.create(object, &r.fields, &user))
                .collect::<Result<Vec<_>, _>>()
        };
        self.shared.dispatch_events();
        ids
    }

    /// Updates a record as the other (human) user.
    pub fn update_as_user(&self, object: &str, id: &str, record: &Record) -> Result<(), ApiError> {
        let user = self.shared.config.other_user_id.clone();
        let r = self
            .shared
            .lock()
            .org
            .update(object, id, &record.fields, &user)
            .map(|_| ());
        self.shared.dispatch_events();
        r
    }

    /// Deletes a record as the other (human) user.
    pub fn delete_as_user(&self, object: &str, id: &str) -> Result<(), ApiError> {
        let user = self.shared.config.other_user_id.clone();
        self.shared.lock().org.delete(object, id, &user)
    }

    /// A record with all its fields (deleted ones too).
    pub fn record(&self, object: &str, id: &str) -> Option<Record> {
        self.shared.lock().org.render(object, id, &[])
    }

    /// Live records of an object.
    pub fn count(&self, object: &str) -> usize {
        self.shared
            .lock()
            .org
            .records
            .get(object)
            .map(|m| m.values().filter(|r| !r.deleted()).count())
            .unwrap_or(0)
    }

    /// Live ids whose `field` equals `value`.
    pub fn find(&self, object: &str, field: &str, value: &str) -> Vec<String> {
        self.shared.lock().org.matching(object, field, value)
    }

    /// Closed Won events produced so far.
    pub fn events_sent(&self) -> Vec<SentEvent> {
        self.shared.lock().events.clone()
    }

    /// Custom notifications accepted so far, in order.
    pub fn notifications(&self) -> Vec<SentNotification> {
        self.shared.lock().notifications.clone()
    }
}

// ---- HTTP ----

fn json_response<T: Serialize>(status: u16, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        bytes,
    )
        .into_response()
}

fn errors(status: u16, errs: Vec<ApiError>) -> Response {
    json_response(status, &errs)
}

fn error(status: u16, code: &str, message: &str) -> Response {
    errors(status, vec![ApiError::new(code, message)])
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_params(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The endpoint label calls are counted under.
fn endpoint_label(method: &Method, segs: &[String]) -> String {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let path = match s.as_slice() {
        [q @ ("query" | "queryAll"), _] => format!("/{q}/{{locator}}"),
        ["sobjects", obj, "describe"] => format!("/sobjects/{obj}/describe"),
        ["sobjects", obj, _] => format!("/sobjects/{obj}/{{id}}"),
        ["sobjects", obj, field, _] => format!("/sobjects/{obj}/{field}/{{value}}"),
        ["composite", "sobjects", _, _] => "/composite/sobjects/{object}/{field}".into(),
        ["jobs", kind, _] => format!("/jobs/{kind}/{{id}}"),
        ["jobs", kind, _, rest] => format!("/jobs/{kind}/{{id}}/{rest}"),
        other => format!("/{}", other.join("/")),
    };
    format!("{method} {path}")
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = shared.lock().latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let path = uri.path().to_owned();
    if path == "/services/oauth2/token" {
        *shared
            .lock()
            .calls
            .entry("POST /oauth2/token".into())
            .or_default() += 1;
        if method != Method::POST {
            return error(405, "METHOD_NOT_ALLOWED", "HTTP Method not allowed");
        }
        return shared.token(&body);
    }
    let Some(rest) = path.strip_prefix("/services/data/") else {
        return error(404, "NOT_FOUND", "The requested resource does not exist");
    };
    let mut parts = rest.split('/').filter(|s| !s.is_empty());
    let version_ok = parts
        .next()
        .and_then(|v| v.strip_prefix('v'))
        .is_some_and(|v| v.parse::<u32>().is_ok() || v.split_once('.').is_some());
    if !version_ok {
        return error(404, "NOT_FOUND", "The requested resource does not exist");
    }
    let segs: Vec<String> = parts.map(percent_decode).collect();
    let label = endpoint_label(&method, &segs);

    let mut response = {
        let mut state = shared.lock();
        *state.calls.entry(label).or_default() += 1;
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let now = Instant::now();
        let valid = state.sessions.get(token).is_some_and(|exp| *exp > now);
        if !valid {
            return error(401, "INVALID_SESSION_ID", "Session expired or invalid");
        }
        state.api_used += 1;
        if state.api_used > state.daily_limit {
            let r = error(
                403,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            );
            with_limit(r, &state)
        } else if let Some(status) = state.fail_queue.pop_front() {
            let r = match status {
                503 => error(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable"),
                500 => error(
                    500,
                    "UNKNOWN_EXCEPTION",
                    "An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-1234567890)",
                ),
                s => error(s, "UNKNOWN_EXCEPTION", "injected failure"),
            };
            with_limit(r, &state)
        } else if state.malformed > 0 {
            state.malformed -= 1;
            let r = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
                r#"{"totalSize":1,"done":true,"records":[{"attributes":{"type":"Acc"#,
            )
                .into_response();
            with_limit(r, &state)
        } else {
            let r = shared.route(&mut state, &method, &segs, &uri, &headers, &body);
            with_limit(r, &state)
        }
    };
    shared.dispatch_events();
    if !response.headers().contains_key(header::CONTENT_TYPE)
        && response.status() != StatusCode::NO_CONTENT
    {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
    }
    response
}

fn with_limit(mut r: Response, state: &State) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!(
        "api-usage={}/{}",
        state.api_used, state.daily_limit
    )) {
        r.headers_mut().insert("Sforce-Limit-Info", v);
    }
    r
}

#[derive(Serialize)]
struct TokenOk {
    access_token: String,
    instance_url: String,
    id: String,
    token_type: &'static str,
    scope: &'static str,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    json_response(
        status,
        &serde_json::json!({"error": error, "error_description": description}),
    )
}

impl Shared {
    fn token(&self, body: &[u8]) -> Response {
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
        let signature = match grant {
            JWT_GRANT_TYPE => {
                let assertion = form.get("assertion").map(String::as_str).unwrap_or("");
                if let Err((error, description)) = self.verify_jwt(assertion) {
                    return oauth_error(400, error, description);
                }
                None
            }
            "client_credentials" => {
                let id_ok = form.get("client_id") == Some(&self.config.client_id);
                let secret_ok = form.get("client_secret").is_some_and(|s| {
                    gateway::crypto::ct_eq(s.as_bytes(), self.config.client_secret.as_bytes())
                });
                if !id_ok {
                    return oauth_error(400, "invalid_client_id", "client identifier invalid");
                }
                if !secret_ok {
                    return oauth_error(400, "invalid_client", "invalid client credentials");
                }
                Some(URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
            }
            "" => return oauth_error(400, "invalid_request", "grant type not specified"),
            _ => return oauth_error(400, "unsupported_grant_type", "grant type not supported"),
        };
        let access_token = format!("00D5g000004SimAA!{}", hex::encode(random_bytes::<24>()));
        let mut state = self.lock();
        state.sessions.insert(
            access_token.clone(),
            Instant::now() + Duration::from_secs(self.config.session_lifetime_s),
        );
        drop(state);
        json_response(
            200,
            &TokenOk {
                access_token,
                instance_url: self.base_url.clone(),
                id: format!(
                    "{}/id/00D5g000004SimAA/{}",
                    self.base_url, self.config.api_user_id
                ),
                token_type: "Bearer",
                scope: "api",
                issued_at: Utc::now().timestamp_millis().to_string(),
                signature,
            },
        )
    }

    fn verify_jwt(&self, assertion: &str) -> Result<(), (&'static str, &'static str)> {
        const INVALID: (&str, &str) = ("invalid_grant", "invalid assertion");
        let key = self
            .config
            .jwt_public_key_pem
            .as_deref()
            .and_then(|pem| pem_decode(pem, "RSA PUBLIC KEY"))
            .ok_or((
                "invalid_grant",
                "no certificate is configured for this connected app",
            ))?;
        let parts: Vec<&str> = assertion.split('.').collect();
        let [h, c, s] = parts.as_slice() else {
            return Err(INVALID);
        };
        let header: serde_json::Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(INVALID)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("RS256") {
            return Err(INVALID);
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| INVALID)?;
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key)
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| INVALID)?;
        let claims: Claims<String> = URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(INVALID)?;
        if claims.iss != self.config.consumer_key {
            return Err(("invalid_client_id", "client identifier invalid"));
        }
        if claims.sub != self.config.username {
            return Err(("invalid_grant", "user hasn't approved this consumer"));
        }
        let aud_ok = claims.aud.trim_end_matches('/') == self.base_url
            || self.config.jwt_audiences.iter().any(|a| a == &claims.aud);
        if !aud_ok {
            return Err(("invalid_grant", "audience is invalid"));
        }
        let now = Utc::now().timestamp();
        if claims.exp <= now {
            return Err(("invalid_grant", "expired authorization code"));
        }
        if claims.exp > now + 300 {
            return Err((
                "invalid_grant",
                "invalid assertion: exp too far in the future",
            ));
        }
        Ok(())
    }

    fn route(
        &self,
        state: &mut State,
        method: &Method,
        segs: &[String],
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Response {
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let params = query_params(uri);
        let user = self.config.api_user_id.clone();
        match (method.clone(), s.as_slice()) {
            (Method::GET, [q @ ("query" | "queryAll")]) => {
                let Some(soql) = params.get("q") else {
                    return error(400, "MALFORMED_QUERY", "A query string has to be specified");
                };
                let page_size = headers
                    .get("Sforce-Query-Options")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split_once("batchSize=").map(|(_, n)| n.trim().to_owned()))
                    .and_then(|n| n.parse::<usize>().ok())
                    .map(|n| n.clamp(QUERY_PAGE_MIN, QUERY_PAGE_MAX))
                    .unwrap_or(self.config.query_page_size);
                match self.run_query(state, soql, *q == "queryAll", page_size) {
                    Ok(page) => json_response(200, &page),
                    Err(e) => errors(400, vec![e]),
                }
            }
            (Method::GET, [q @ ("query" | "queryAll"), locator]) => {
                self.query_more(state, q, locator)
            }
            (Method::GET, ["limits"]) => json_response(
                200,
                &serde_json::json!({"DailyApiRequests": {"Max": state.daily_limit, "Remaining": state.daily_limit.saturating_sub(state.api_used)}}),
            ),
            (Method::POST, ["sobjects", obj]) => match parse_fields(body) {
                Err(r) => *r,
                Ok(fields) => match state.org.create(obj, &fields, &user) {
                    Ok(id) => json_response(
                        201,
                        &SaveResult {
                            id: Some(id),
                            success: true,
                            errors: vec![],
                            created: None,
                        },
                    ),
                    Err(e) => errors(status_of(&e), vec![e]),
                },
            },
            (Method::GET, ["sobjects", obj, "describe"]) => match state.org.schema.object(obj) {
                Some(def) => json_response(200, &def.describe()),
                None => error(404, "NOT_FOUND", "The requested resource does not exist"),
            },
            (Method::GET, ["sobjects", obj, id]) => {
                let fields: Vec<String> = params
                    .get("fields")
                    .map(|f| {
                        f.split(',')
                            .map(|x| x.trim().to_owned())
                            .filter(|x| !x.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                let found = state
                    .org
                    .find(id)
                    .filter(|(o, r)| o.eq_ignore_ascii_case(obj) && !r.deleted())
                    .map(|(o, r)| {
                        (
                            o.to_owned(),
                            r.fields
                                .get("Id")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                        )
                    });
                match found.and_then(|(o, id)| state.org.render(&o, &id, &fields)) {
                    Some(r) => json_response(200, &r),
                    None => error(404, "NOT_FOUND", "The requested resource does not exist"),
                }
            }
            (Method::PATCH, ["sobjects", obj, id]) => match parse_fields(body) {
                Err(r) => *r,
                Ok(fields) => match state.org.update(obj, id, &fields, &user) {
                    Ok(_) => no_content(),
                    Err(e) => errors(status_of(&e), vec![e]),
                },
            },
            (Method::DELETE, ["sobjects", obj, id]) => match state.org.delete(obj, id, &user) {
                Ok(()) => no_content(),
                Err(e) => errors(status_of(&e), vec![e]),
            },
            (Method::PATCH, ["sobjects", obj, field, value]) => match parse_fields(body) {
                Err(r) => *r,
                Ok(fields) => match state.org.upsert(obj, field, value, &fields, &user) {
                    Ok(Upsert::Created(id)) => json_response(
                        201,
                        &SaveResult {
                            id: Some(id),
                            success: true,
                            errors: vec![],
                            created: Some(true),
                        },
                    ),
                    Ok(Upsert::Updated(id)) => json_response(
                        200,
                        &SaveResult {
                            id: Some(id),
                            success: true,
                            errors: vec![],
                            created: Some(false),
                        },
                    ),
                    Ok(Upsert::Multiple(ids)) => {
                        let object = state
                            .org
                            .schema
                            .object(obj)
                            .map(|o| o.name.clone())
                            .unwrap_or_default();
                        let urls: Vec<String> = ids
                            .iter()
                            .map(|id| {
                                format!(
                                    "/services/data/v{}/sobjects/{object}/{id}",
                                    self.config.api_version
                                )
                            })
                            .collect();
                        json_response(300, &urls)
                    }
                    Err(e) => errors(status_of(&e), vec![e]),
                },
            },
            (Method::POST | Method::PATCH, ["composite", "sobjects"]) => {
                self.collection(state, method, None, body)
            }
            (Method::PATCH, ["composite", "sobjects", obj, field]) => {
                self.collection(state, method, Some((obj, field)), body)
            }
            (Method::DELETE, ["composite", "sobjects"]) => {
                let ids: Vec<String> = params
                    .get("ids")
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                if ids.len() > COLLECTION_LIMIT {
                    return exceeded_id_limit();
                }
                let all_or_none = params.get("allOrNone").is_some_and(|v| v == "true");
                let snapshot = all_or_none.then(|| state.org.clone());
                let results: Vec<SaveResult> = ids
                    .iter()
                    .map(|id| {
                        let object = state
                            .org
                            .schema
                            .object_of_id(id)
                            .map(|o| o.name.clone())
                            .unwrap_or_default();
                        save(
                            state
                                .org
                                .delete(&object, id, &user)
                                .map(|()| (id.clone(), None)),
                        )
                    })
                    .collect();
                json_response(200, &finish_all_or_none(state, snapshot, results))
            }
            (_, ["jobs", ..]) => bulk::route(self, state, method, &s[1..], &params, body),
            (_, ["actions", "standard", notifications::ACTION]) => {
                notifications::route(self, state, method, body)
            }
            _ => error(404, "NOT_FOUND", "The requested resource does not exist"),
        }
    }

    fn collection(
        &self,
        state: &mut State,
        method: &Method,
        upsert: Option<(&str, &str)>,
        body: &Bytes,
    ) -> Response {
        let request: CollectionRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(400, "JSON_PARSER_ERROR", &e.to_string()),
        };
        if request.records.len() > COLLECTION_LIMIT {
            return exceeded_id_limit();
        }
        let user = self.config.api_user_id.clone();
        let snapshot = request.all_or_none.then(|| state.org.clone());
        let mut results = Vec::with_capacity(request.records.len());
        for record in &request.records {
            let object = record.object().map(str::to_owned);
            let result = match (method.clone(), upsert) {
                (_, Some((obj, field))) => {
                    let value = record
                        .fields
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(field))
                        .and_then(|(_, v)| v.as_str().map(str::to_owned));
                    match value {
                        None => Err(ApiError::new("INVALID_FIELD", format!("Unable to find the external id field {field} in the record")).with_fields(&[field])),
                        Some(value) => match state.org.upsert(obj, field, &value, &record.fields, &user) {
                            Ok(Upsert::Created(id)) => Ok((id, Some(true))),
                            Ok(Upsert::Updated(id)) => Ok((id, Some(false))),
                            Ok(Upsert::Multiple(ids)) => Err(ApiError::new(
                                "DUPLICATE_EXTERNAL_ID",
                                format!("{field}: more than one record found for external id field: [{}]", ids.join(", ")),
                            )
                            .with_fields(&[field])),
                            Err(e) => Err(e),
                        },
                    }
                }
                (Method::POST, None) => match object {
                    None => Err(ApiError::new(
                        "INVALID_TYPE",
                        "The 'attributes' field is missing or has no 'type'",
                    )),
                    Some(o) => state
                        .org
                        .create(&o, &record.fields, &user)
                        .map(|id| (id, None)),
                },
                (_, None) => match record.id() {
                    None => Err(ApiError::new(
                        "MISSING_ARGUMENT",
                        "Id not specified in an update call",
                    )
                    .with_fields(&["Id"])),
                    Some(id) => {
                        let o = object
                            .or_else(|| state.org.schema.object_of_id(id).map(|o| o.name.clone()))
                            .unwrap_or_default();
                        state
                            .org
                            .update(&o, id, &record.fields, &user)
                            .map(|id| (id, None))
                    }
                },
            };
            results.push(save(result));
        }
        json_response(200, &finish_all_or_none(state, snapshot, results))
    }

    fn run_query(
        &self,
        state: &mut State,
        soql: &str,
        all: bool,
        page_size: usize,
    ) -> Result<QueryPage, ApiError> {
        let q = soql::parse(soql, &state.org.schema)?;
        let mut rows: Vec<&BTreeMap<String, Value>> = state
            .org
            .records
            .get(&q.object)
            .map(|m| {
                m.values()
                    .filter(|r| all || !r.deleted())
                    .map(|r| &r.fields)
                    .filter(|f| q.filter.as_ref().is_none_or(|c| c.matches(f)))
                    .collect()
            })
            .unwrap_or_default();
        q.sort(&mut rows);
        let rows: Vec<&BTreeMap<String, Value>> = rows
            .into_iter()
            .skip(q.offset)
            .take(q.limit.unwrap_or(usize::MAX))
            .collect();
        if q.count {
            return Ok(QueryPage {
                total_size: rows.len() as u64,
                done: true,
                next_records_url: None,
                records: vec![],
            });
        }
        let records: Vec<Record> = rows
            .into_iter()
            .filter_map(|f| {
                let id = f.get("Id").and_then(Value::as_str)?;
                state.org.render(&q.object, id, &q.fields)
            })
            .collect();
        let total = records.len();
        if total <= page_size {
            return Ok(QueryPage {
                total_size: total as u64,
                done: true,
                next_records_url: None,
                records,
            });
        }
        let first: Vec<Record> = records[..page_size].to_vec();
        let cursor_id = state.org.new_id("01g");
        let next = format!(
            "/services/data/v{}/query/{cursor_id}-{page_size}",
            self.config.api_version
        );
        state
            .cursors
            .insert(cursor_id, Cursor { records, page_size });
        Ok(QueryPage {
            total_size: total as u64,
            done: false,
            next_records_url: Some(next),
            records: first,
        })
    }

    fn query_more(&self, state: &mut State, resource: &str, locator: &str) -> Response {
        let invalid = || error(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
        let Some((cursor_id, offset)) = locator.rsplit_once('-') else {
            return invalid();
        };
        let Ok(offset) = offset.parse::<usize>() else {
            return invalid();
        };
        let Some(cursor) = state.cursors.get(cursor_id) else {
            return invalid();
        };
        let total = cursor.records.len();
        if offset >= total {
            return invalid();
        }
        let end = (offset + cursor.page_size).min(total);
        let records = cursor.records[offset..end].to_vec();
        let next = (end < total).then(|| {
            format!(
                "/services/data/v{}/{resource}/{cursor_id}-{end}",
                self.config.api_version
            )
        });
        if next.is_none() {
            state.cursors.remove(cursor_id);
        }
        json_response(
            200,
            &QueryPage {
                total_size: total as u64,
                done: next.is_none(),
                next_records_url: next,
                records,
            },
        )
    }

    /// Sends the Closed Won events the last writes produced (outside the state lock).
    fn dispatch_events(self: &Arc<Self>) {
        let pending: Vec<SentEvent> = {
            let mut state = self.lock();
            let won = std::mem::take(&mut state.org.closed_won);
            let mut out = Vec::new();
            for w in won {
                let event_id = format!("evt_{}", hex::encode(random_bytes::<12>()));
                let body = serde_json::json!({
                    "event_id": event_id,
                    "object": "Opportunity",
                    "record_id": w.record_id,
                    "stage": w.stage,
                    "occurred_at": w.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                })
                .to_string();
                let t = Utc::now().timestamp();
                let signature = match &self.event_key {
                    Some(k) => gateway::webhooks::signature(k, t, body.as_bytes()),
                    None => String::new(),
                };
                let e = SentEvent {
                    event_id,
                    record_id: w.record_id,
                    body,
                    signature,
                    status: None,
                };
                state.events.push(e.clone());
                out.push(e);
            }
            out
        };
        let Some(url) = self.config.event_webhook_url.clone() else {
            return;
        };
        for e in pending {
            let shared = self.clone();
            let url = url.clone();
            self.runtime.spawn(async move {
                let status = shared
                    .http
                    .post(&url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header("X-Cashloop-Signature", &e.signature)
                    .body(e.body.clone())
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                let mut state = shared.lock();
                if let Some(x) = state.events.iter_mut().find(|x| x.event_id == e.event_id) {
                    x.status = Some(status);
                }
            });
        }
    }
}

fn exceeded_id_limit() -> Response {
    error(
        400,
        "EXCEEDED_ID_LIMIT",
        "record limit reached. cannot submit more than 200 records into this call",
    )
}

fn status_of(e: &ApiError) -> u16 {
    if e.error_code == "NOT_FOUND" {
        404
    } else {
        400
    }
}

fn save(r: Result<(String, Option<bool>), ApiError>) -> SaveResult {
    match r {
        Ok((id, created)) => SaveResult {
            id: Some(id),
            success: true,
            errors: vec![],
            created,
        },
        Err(e) => SaveResult {
            id: None,
            success: false,
            errors: vec![RecordError::from(e)],
            created: None,
        },
    }
}

/// With `allOrNone`, one failure rolls back every write of the call.
fn finish_all_or_none(
    state: &mut State,
    snapshot: Option<Org>,
    results: Vec<SaveResult>,
) -> Vec<SaveResult> {
    let Some(snapshot) = snapshot else {
        return results;
    };
    if results.iter().all(|r| r.success) {
        return results;
    }
    state.org = snapshot;
    results
        .into_iter()
        .map(|r| {
            if r.success {
                SaveResult {
                    id: None,
                    success: false,
                    errors: vec![RecordError {
                        status_code: "ALL_OR_NONE_OPERATION_ROLLED_BACK".into(),
                        message: "Record rolled back because not all records were valid and the request was using AllOrNone header".into(),
                        fields: vec![],
                    }],
                    created: None,
                }
            } else {
                r
            }
        })
        .collect()
}

fn parse_fields(body: &[u8]) -> Result<BTreeMap<String, Value>, Box<Response>> {
    serde_json::from_slice::<Record>(body)
        .map(|r| r.fields)
        .map_err(|e| {
            Box::new(error(
                400,
                "JSON_PARSER_ERROR",
                &format!("Unexpected character: {e}"),
            ))
        })
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("OS randomness");
    b
}
