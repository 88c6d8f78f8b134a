//! The HTTP server: health and readiness probes, `/metrics`, and the `/v1` JSON API (ledger,
//! vault, payments, sync) behind API-key authentication with roles. Errors are mapped to
//! responses in exactly one place ([`AppError`]): `{"error":{"code","message","field"}}` with a
//! 4xx status for the caller's mistakes; a 500 logs its cause and returns an opaque body.
//!
//! Every `/v1` route is declared once, in [`V1_ROUTES`] (built by `v1_routes!`): the router is
//! made from that list and the OpenAPI document (`/v1/openapi.json`) is tested against it.
//! Every request runs in a `request` span with its request id (`x-request-id`, echoed) and is
//! measured by route template, method and status class (see the `metrics` crate).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use db::Db;
use ledger::input::{InputDefaults, parse_entry_json};
use ledger::{
    AccountCode, EntityCode, EntryId, ErrorCode, IdempotencyKey, Ledger, LedgerError, SourceName,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::config::{ApiKey, Config, Role};

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub ledger: Ledger,
    /// The vault, when `[vault]` keys are configured.
    pub vault: Option<gateway::vault::Vault>,
    /// Payments, when `[gateway]` is configured.
    pub payments: Option<gateway::service::Payments>,
    /// Outbound webhooks, when `[[webhooks]]` are configured.
    pub outbox: Option<gateway::webhooks::Outbox>,
    /// The Authorize.Net connector, when it is the processor (inbound webhooks use it).
    pub authnet: Option<gateway::authnet::AuthorizeNet>,
    /// The sync job queue.
    pub jobs: sync::jobs::Jobs,
    pub db: Db,
    pub config: Arc<Config>,
    /// The console's in-process state (metrics samples, last chain verification).
    pub live: Arc<crate::console::Live>,
}

/// The caller, once authenticated.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) role: Role,
}

/// Every error a handler can return, and its one mapping to HTTP.
#[derive(Debug)]
pub enum AppError {
    Ledger(LedgerError),
    Unauthorized(&'static str),
    Forbidden,
    Invalid {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    /// Any other refusal with its own status (gateway input, idempotency conflicts).
    Api {
        status: StatusCode,
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    /// Our fault; logged, answered with an opaque 500.
    Internal(String),
}

impl From<gateway::vault::VaultError> for AppError {
    fn from(e: gateway::vault::VaultError) -> Self {
        match (e.code(), e.field()) {
            (Some(code), field) => AppError::Api {
                status: if code == "payment_method_not_found" {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                },
                code,
                field: field.map(str::to_owned),
                message: e.to_string(),
            },
            (None, _) => AppError::Internal(e.to_string()),
        }
    }
}

impl From<gateway::service::PaymentError> for AppError {
    fn from(e: gateway::service::PaymentError) -> Self {
        use gateway::service::PaymentError as P;
        let api = |status, code, field: Option<&str>, message: String| AppError::Api {
            status,
            code,
            field: field.map(str::to_owned),
            message,
        };
        match e {
            P::Invalid {
                code,
                field,
                message,
            } => api(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                Some(field),
                format!("{field}: {message}"),
            ),
            P::Refused(r) => {
                let status = if r.code == "invalid_state" {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                let field = (r.code != "invalid_state").then_some("amount");
                api(status, r.code, field, r.message)
            }
            P::ProcessorRefused { code, message } => {
                api(StatusCode::PAYMENT_REQUIRED, code, None, message)
            }
            P::NotFound(id) => api(
                StatusCode::NOT_FOUND,
                "payment_not_found",
                Some("id"),
                format!("there is no payment {id}"),
            ),
            P::Conflict(id) => api(
                StatusCode::CONFLICT,
                "payment_modified_concurrently",
                None,
                format!("payment {id} was changed by another request; retry"),
            ),
            P::Vault(v) => v.into(),
            P::Ledger(l) => AppError::Ledger(l),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<gateway::input::InputError> for AppError {
    fn from(e: gateway::input::InputError) -> Self {
        AppError::Api {
            status: if e.code == "malformed_json" {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            },
            code: e.code,
            field: (!e.field.is_empty()).then(|| e.field.clone()),
            message: e.to_string(),
        }
    }
}

impl From<LedgerError> for AppError {
    fn from(e: LedgerError) -> Self {
        AppError::Ledger(e)
    }
}

fn body(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> Response {
    reply(
        status,
        json!({"error": {"code": code, "message": message, "field": field}}),
    )
}

/// The machine-readable code of an error response, for `cashloop_http_errors_total`.
#[derive(Clone, Debug)]
struct ResponseErrorCode(String);

/// A JSON response; an error body (`{"error":{"code":…}}`) also marks the response with its
/// code, which the `observe` middleware counts.
fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    let code = body["error"]["code"]
        .as_str()
        .map(|c| ResponseErrorCode(c.to_owned()));
    let mut resp = (status, Json(body)).into_response();
    if let Some(code) = code {
        resp.extensions_mut().insert(code);
    }
    resp
}

impl AppError {
    /// Status and JSON body: the one mapping from errors to HTTP.
    pub(crate) fn parts(&self) -> (StatusCode, serde_json::Value) {
        let body = |code: &str, message: &str, field: Option<&str>| json!({"error": {"code": code, "message": message, "field": field}});
        match self {
            AppError::Ledger(LedgerError::Rejected(r)) => {
                let status = match r.code {
                    ErrorCode::MalformedJson => StatusCode::BAD_REQUEST,
                    c if c.is_not_found() => StatusCode::NOT_FOUND,
                    c if c.is_conflict() => StatusCode::CONFLICT,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                (
                    status,
                    body(r.code.as_str(), &r.message, r.field.as_deref()),
                )
            }
            AppError::Ledger(LedgerError::WriterStopped) => (
                StatusCode::SERVICE_UNAVAILABLE,
                body(
                    "shutting_down",
                    "the server is shutting down; retry with the same Idempotency-Key",
                    None,
                ),
            ),
            AppError::Ledger(e) => {
                tracing::error!(error = %e, "internal error");
                internal()
            }
            AppError::Internal(what) => {
                tracing::error!(error = %what, "internal error");
                internal()
            }
            AppError::Unauthorized(why) => {
                (StatusCode::UNAUTHORIZED, body("unauthorized", why, None))
            }
            AppError::Forbidden => (
                StatusCode::FORBIDDEN,
                body("forbidden", "this API key's role may not do that", None),
            ),
            AppError::Invalid {
                code,
                field,
                message,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                body(code, message, field.as_deref()),
            ),
            AppError::Api {
                status,
                code,
                field,
                message,
            } => (*status, body(code, message, field.as_deref())),
        }
    }
}

fn internal() -> (StatusCode, serde_json::Value) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"error": {"code": "internal_error", "message": "internal error; it has been logged", "field": null}}),
    )
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        reply(status, body)
    }
}

fn invalid(field: &str, message: String) -> AppError {
    AppError::Invalid {
        code: "invalid_field",
        field: Some(field.to_owned()),
        message,
    }
}

/// Declares the `/v1` routes once: [`V1_ROUTES`] lists them (method, path template, whether an
/// API key is required) and `v1_router` registers exactly those, so the list cannot drift
/// from what is served.
macro_rules! v1_routes {
    ($($auth:ident $method:ident $path:literal => $handler:expr;)*) => {
        /// Every route under `/v1`: (method, path template, API key required).
        pub const V1_ROUTES: &[(&str, &str, bool)] =
            &[$((stringify!($method), $path, v1_routes!(@key $auth)),)*];

        fn v1_router(state: &AppState) -> Router<AppState> {
            let mut keyed = Router::new();
            let mut open = Router::new();
            $(
                let route = axum::routing::on(axum::routing::MethodFilter::$method, $handler);
                if v1_routes!(@key $auth) {
                    keyed = keyed.route($path, route);
                } else {
                    open = open.route($path, route);
                }
            )*
            open.merge(keyed.route_layer(middleware::from_fn_with_state(state.clone(), authenticate)))
        }
    };
    (@key key) => { true };
    (@key open) => { false };
}

v1_routes! {
    key GET "/v1/ledger/accounts" => list_accounts;
    key GET "/v1/ledger/accounts/{entity}/{code}/balance" => balance;
    key POST "/v1/ledger/entries" => post_entry;
    key GET "/v1/ledger/entries/{id}" => get_entry;
    key GET "/v1/ledger/trial-balance" => trial_balance;
    key POST "/v1/tokens" => post_token;
    key GET "/v1/tokens/{token}" => get_token;
    key POST "/v1/payments" => post_payment;
    key GET "/v1/payments" => list_payments;
    key GET "/v1/payments/{id}" => get_payment;
    key POST "/v1/payments/{id}/capture" => capture_payment;
    key POST "/v1/payments/{id}/void" => void_payment;
    key POST "/v1/payments/{id}/refunds" => refund_payment;
    key POST "/v1/payments/{id}/represent" => represent_payment;
    key GET "/v1/webhooks/deliveries" => webhook_deliveries;
    key GET "/v1/sync/status" => sync_status;
    key GET "/v1/sync/jobs" => sync_jobs;
    key POST "/v1/sync/jobs/{id}/retry" => retry_sync_job;
    key POST "/v1/sync/jobs/{id}/resolve" => resolve_sync_job;
    key POST "/v1/sync/intacct/pull" => sync_intacct_pull;
    key POST "/v1/sync/x3/pull" => sync_x3_pull;
    key POST "/v1/sync/sage100/pull" => sync_sage100_pull;
    key POST "/v1/sync/businessworks/pull" => sync_businessworks_pull;
    key GET "/v1/agents/commands" => agent_commands;
    key POST "/v1/payment_links" => post_payment_link;
    // Authenticated by its signature, not an API key: Authorize.Net cannot send one.
    open POST "/v1/processors/authorize_net/webhooks" => authnet_webhook;
    // Signed by the Apex callout / authenticated by the org id and a URL token.
    open POST "/v1/events/salesforce" => salesforce_event;
    open POST "/v1/salesforce/outbound" => salesforce_outbound;
    // The API's description: public, like the API's shape.
    open GET "/v1/openapi.json" => openapi;
}

/// The OpenAPI 3.1 document of the `/v1` API, served at `GET /v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON,
    )
        .into_response()
}

/// The router, without the listener (tests call it with `oneshot`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .merge(v1_router(&state))
        .merge(crate::agent_api::router())
        .merge(crate::console::router())
        .fallback(|| async { body(StatusCode::NOT_FOUND, "not_found", "no such route", None) })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(state.config.request_timeout_ms),
        ))
        .layer(RequestBodyLimitLayer::new(
            state.config.request_body_limit_bytes,
        ))
        // The limit layers answer before any inner layer runs; give their answers our shape.
        .layer(middleware::map_response(json_errors))
        // Outermost: the request id, the request's span, and its metrics see every answer.
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// The longest `x-request-id` taken from a caller; a longer or odd one is replaced.
const REQUEST_ID_MAX_LEN: usize = 128;

/// A request's id: the caller's `x-request-id` when well-formed, else a new random one. In
/// the request's extensions, its log span, and the response's `x-request-id` header.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// A run of this many digits could be a card number (13 to 19 digits): such an id is not
/// taken, so a caller cannot put a card number into the logs through the request id.
const REQUEST_ID_MAX_DIGIT_RUN: usize = 12;

fn well_formed_request_id(s: &str) -> bool {
    let mut run = 0usize;
    !s.is_empty()
        && s.len() <= REQUEST_ID_MAX_LEN
        && s.bytes().all(|b| {
            run = if b.is_ascii_digit() { run + 1 } else { 0 };
            run <= REQUEST_ID_MAX_DIGIT_RUN
                && (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
}

fn new_request_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No randomness: a process-unique sequence still tells requests apart.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        b[..8].copy_from_slice(&n.to_be_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    }
    hex::encode(b)
}

/// Methods outside this set are measured as `other` (a label set must stay small).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Request id, span and metrics for every request. The span names the route template, never
/// the raw URI (a query string can carry a token) and never a body.
async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| well_formed_request_id(s))
        .map_or_else(new_request_id, str::to_owned);
    let method = method_label(req.method());
    // Unmatched paths share one label: raw paths would make a series per probe.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method,
        route = %route,
        caller = tracing::field::Empty,
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let status = resp.status().as_u16();
    span.in_scope(|| tracing::debug!(status, latency_us, "request finished"));
    metrics::record_request(&route, method, status, latency_us);
    if let Some(ResponseErrorCode(code)) = resp.extensions().get::<ResponseErrorCode>() {
        metrics::HTTP_ERRORS.inc(&[code]);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// `GET /metrics`: the process's metrics, then gauges read from the database now (jobs by
/// state, the oldest due job's age, ledger entries and how many await sealing, the newest
/// reconciliation run's outcomes). A database that does not answer leaves
/// those out and sets `cashloop_database_up` to 0; the scrape itself still succeeds.
async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    let mut out = metrics::render();
    let build = metrics::Gauge::new(
        "cashloop_build_info",
        "The running cashloop version (always 1).",
        &["version"],
    );
    build.set(&[env!("CARGO_PKG_VERSION")], 1);
    let up = metrics::Gauge::new(
        "cashloop_database_up",
        "1 when the database answered this scrape's queries, else 0.",
        &[],
    );
    let jobs = metrics::Gauge::new(
        "cashloop_sync_jobs",
        "Sync jobs by state, read from sync_jobs at scrape time.",
        &["state"],
    );
    let oldest = metrics::Gauge::new(
        "cashloop_sync_oldest_pending_age_seconds",
        "Age of the oldest due pending sync job (0 when none is due).",
        &[],
    );
    let entries = metrics::Gauge::new(
        "cashloop_ledger_entries",
        "Entries in the ledger, read at scrape time.",
        &[],
    );
    let unsealed = metrics::Gauge::new(
        "cashloop_ledger_unsealed_entries",
        "Entries written but not yet sealed into the hash chain.",
        &[],
    );
    let recon = metrics::Gauge::new(
        "cashloop_reconcile_last_run_items",
        "Items of the newest stored reconciliation run by kind (payment, item, settlement) and category.",
        &["kind", "category"],
    );
    let recon_run = metrics::Gauge::new(
        "cashloop_reconcile_last_run_id",
        "The newest stored reconciliation run (0 when none).",
        &[],
    );
    let quota = metrics::Gauge::new(
        "cashloop_salesforce_api_requests",
        "The org's daily API requests as Salesforce last reported them (Sforce-Limit-Info).",
        &["kind"],
    );
    if let Some((used, max)) = state
        .config
        .sync
        .salesforce
        .as_ref()
        .and_then(|sf| sf.client.api_usage())
    {
        quota.set(&["used"], i64::try_from(used).unwrap_or(i64::MAX));
        quota.set(&["max"], i64::try_from(max).unwrap_or(i64::MAX));
    }
    let store = reconcile::store::Store::new(state.db.clone());
    let (status, count, totals) = tokio::join!(
        state.jobs.status(),
        ledger_entry_count(&state.db),
        store.latest_totals()
    );
    match totals {
        Ok(Some((id, rows))) => {
            recon_run.set(&[], id);
            for (kind, category, n) in rows {
                recon.set(&[&kind, &category], n);
            }
        }
        Ok(None) => recon_run.set(&[], 0),
        Err(e) => {
            recon_run.set(&[], 0);
            tracing::warn!(error = %e, "metrics: reading the latest reconciliation failed");
        }
    }
    let mut ok = true;
    match status {
        Ok(st) => {
            for s in sync::jobs::STATUSES {
                jobs.set(&[s], st.by_status.get(s).copied().unwrap_or(0));
            }
            oldest.set(&[], st.oldest_pending_age_s.unwrap_or(0));
        }
        Err(e) => {
            ok = false;
            tracing::warn!(error = %e, "metrics: reading sync job counts failed");
        }
    }
    match count {
        Ok((n, u)) => {
            entries.set(&[], n);
            unsealed.set(&[], u);
        }
        Err(e) => {
            ok = false;
            tracing::warn!(error = %e, "metrics: counting ledger entries failed");
        }
    }
    up.set(&[], i64::from(ok));
    use metrics::Family as _;
    for g in [
        &build, &up, &jobs, &oldest, &entries, &unsealed, &recon_run, &recon,
    ] {
        g.render(&mut out);
    }
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        out,
    )
        .into_response()
}

/// (entries, entries not yet sealed), without scanning the journal: the chain's sequence is
/// dense from 1 and every entry is either sealed (in `ledger_chain`) or queued for sealing (in
/// `ledger_unsealed`), never both — the sealer moves it in one transaction, and one statement
/// reads both tables from one snapshot.
pub(crate) async fn ledger_entry_count(db: &Db) -> Result<(i64, i64), sqlx::Error> {
    const SQL: &str = "SELECT (SELECT COALESCE(MAX(seq), 0) FROM ledger_chain), \
                       (SELECT COUNT(*) FROM ledger_unsealed)";
    let (sealed, unsealed): (i64, i64) = match db {
        Db::Postgres(p) => sqlx::query_as(SQL).fetch_one(p).await?,
        Db::Sqlite(s) => sqlx::query_as(SQL).fetch_one(&s.pool).await?,
    };
    Ok((sealed.saturating_add(unsealed), unsealed))
}

/// The body-size and timeout layers answer with empty or plain-text bodies; give those our
/// JSON error shape too, so every error a client sees has a machine-readable code.
async fn json_errors(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (code, message) = match resp.status() {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            "the request body is larger than server.request_body_limit_bytes",
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            "the request took longer than server.request_timeout_ms",
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send application/json"),
        _ => return resp,
    };
    if is_json {
        return resp;
    }
    body(resp.status(), code, message, None)
}

/// Constant-time equality, so response timing says nothing about how much of a key matched.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn find_key<'a>(config: &'a Config, presented: &str) -> Option<&'a ApiKey> {
    let secret = config.api_key_secret.as_ref()?;
    let hash = secret.fingerprint(presented.as_bytes());
    // Compare against every key, always, so timing does not reveal which one matched.
    let mut found = None;
    for k in &config.api_keys {
        if ct_eq(&k.key_hmac, &hash) {
            found = Some(k);
        }
    }
    found
}

async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let from = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "-".to_owned());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let key = presented.and_then(|p| find_key(&state.config, p.trim()));
    let Some(key) = key else {
        // Failed access attempts are audited too (PCI DSS 10.2.1.4); the key itself is not.
        audit(
            &state,
            "-",
            "auth.failed",
            &path,
            &format!("{method} from={from}"),
        )
        .await;
        return Err(AppError::Unauthorized(if presented.is_some() {
            "unknown API key"
        } else {
            "send an API key as `Authorization: Bearer <key>`"
        }));
    };
    let caller = Caller {
        name: key.name.clone(),
        role: key.role,
    };
    req.extensions_mut().insert(caller.clone());
    tracing::Span::current().record("caller", caller.name.as_str());
    let resp = next.run(req).await;
    if method != axum::http::Method::GET {
        let action = format!("{method} {route}");
        audit(
            &state,
            &caller.name,
            &action,
            &path,
            &format!("status={} from={from}", resp.status().as_u16()),
        )
        .await;
    }
    Ok(resp)
}

/// `POST /v1/processors/authorize_net/webhooks`: a notification from Authorize.Net. The
/// signature is checked over the raw bytes before anything is parsed; a notification is acted
/// on once (by `notificationId`); its content is never trusted beyond naming a transaction —
/// the payment is resolved by asking Authorize.Net.
async fn authnet_webhook(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, AppError> {
    let from = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "-".to_owned(), |c| c.0.ip().to_string());
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    // The body-limit layer has already bounded the size.
    let raw = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| AppError::Api {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_body",
            field: None,
            message: format!("cannot read the body: {e}"),
        })?;
    let not_here = || AppError::Api {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        field: None,
        message: "Authorize.Net webhooks are not configured (gateway.authorize_net.signature_key)"
            .into(),
    };
    let (Some(client), Some(payments), Some(gw)) =
        (&state.authnet, &state.payments, &state.config.gateway)
    else {
        return Err(not_here());
    };
    let crate::config::ProcessorConfig::AuthorizeNet {
        signature_key: Some(key),
        webhook_max_age_s,
        ..
    } = &gw.processor
    else {
        return Err(not_here());
    };
    let signature = headers
        .get("x-anet-signature")
        .and_then(|v| v.to_str().ok());
    let refused = |e: gateway::authnet::webhook::WebhookError| AppError::Api {
        status: match e {
            gateway::authnet::webhook::WebhookError::BadBody(_) => StatusCode::BAD_REQUEST,
            gateway::authnet::webhook::WebhookError::Stale(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::UNAUTHORIZED,
        },
        code: e.code(),
        field: None,
        message: e.to_string(),
    };
    if let Err(e) = key.verify(signature, &raw) {
        audit(
            &state,
            "authorize_net",
            "webhook rejected",
            "/v1/processors/authorize_net/webhooks",
            &format!("{} from={from}", e.code()),
        )
        .await;
        return Err(refused(e));
    }
    let (n, at) =
        gateway::authnet::webhook::parse(&raw, chrono::Utc::now(), *webhook_max_age_s, 300)
            .map_err(refused)?;
    let trans_id = (n.payload.entity_name == "transaction" && !n.payload.id.is_empty())
        .then_some(n.payload.id.as_str());
    // The payment this transaction belongs to, from Authorize.Net's own record of it.
    let payment_id = match trans_id {
        Some(t) => client.our_reference(t).await.map_err(|e| AppError::Api {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "processor_unavailable",
            field: None,
            message: format!("cannot read the transaction from Authorize.Net; retry later ({e})"),
        })?,
        None => None,
    };
    let outcome = payments
        .processor_event(&gateway::service::ProcessorEvent {
            processor: "authorize_net",
            event_id: &n.notification_id,
            event_type: &n.event_type,
            processor_ref: trans_id,
            payment_id: payment_id.as_deref(),
            event_at: at,
        })
        .await?;
    let (status_text, detail) = match &outcome {
        Some(o) => ("processed", o.clone()),
        None => ("duplicate", "already processed".to_owned()),
    };
    audit(
        &state,
        "authorize_net",
        &format!("webhook {}", n.event_type),
        &n.notification_id,
        &format!("{status_text}: {detail} from={from}"),
    )
    .await;
    Ok((
        StatusCode::OK,
        Json(json!({"status": status_text, "outcome": detail})),
    )
        .into_response())
}

/// `POST /v1/events/salesforce`: an event from a Flow or Apex callout (a Closed Won
/// Opportunity), signed `X-Cashloop-Signature: t=…,v1=…` (HMAC-SHA256 over `t.body`). Becomes
/// one job, deduplicated on `event_id`: a replayed event adds nothing.
async fn salesforce_event(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, AppError> {
    let sync = &state.config.sync;
    let Some(secret) = &sync.event_secret else {
        return Err(AppError::Api {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            field: None,
            message: "Salesforce events are not configured (sync.salesforce.event_secret)".into(),
        });
    };
    let signature = headers
        .get("x-cashloop-signature")
        .and_then(|v| v.to_str().ok());
    let ok = signature.is_some_and(|sig| {
        gateway::webhooks::verify(
            secret,
            sig,
            &raw,
            chrono::Utc::now().timestamp(),
            sync.event_tolerance_s,
        )
    });
    if !ok {
        audit(
            &state,
            "salesforce",
            "sync.event.rejected",
            "/v1/events/salesforce",
            if signature.is_none() {
                "missing signature"
            } else {
                "bad or stale signature"
            },
        )
        .await;
        return Err(AppError::Api {
            status: StatusCode::UNAUTHORIZED,
            code: if signature.is_none() {
                "missing_signature"
            } else {
                "invalid_signature"
            },
            field: None,
            message: "X-Cashloop-Signature is missing, wrong, or outside the time tolerance".into(),
        });
    }
    #[derive(Deserialize)]
    struct Event {
        event_id: String,
        object: String,
        record_id: String,
        #[serde(flatten)]
        rest: serde_json::Map<String, Value>,
    }
    let event: Event = serde_json::from_slice(&raw).map_err(|e| AppError::Api {
        status: StatusCode::BAD_REQUEST,
        code: "malformed_json",
        field: None,
        message: format!("the event is not the expected JSON: {e}"),
    })?;
    let id_ok =
        |s: &str| !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic());
    for (field, value) in [
        ("event_id", &event.event_id),
        ("object", &event.object),
        ("record_id", &event.record_id),
    ] {
        if !id_ok(value) {
            return Err(invalid(
                field,
                format!("{field}: must be 1 to 255 printable characters"),
            ));
        }
    }
    let mut payload = event.rest;
    payload.insert("event_id".into(), json!(event.event_id));
    payload.insert("object".into(), json!(event.object));
    payload.insert("record_id".into(), json!(event.record_id));
    let job = state
        .jobs
        .enqueue(
            sync::jobs::NewJob::new("salesforce.event", Value::Object(payload))
                .dedupe(format!("salesforce.event:{}", event.event_id)),
        )
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    audit(
        &state,
        "salesforce",
        "sync.event",
        &event.event_id,
        &match job {
            Some(id) => format!("queued job {id} for {} {}", event.object, event.record_id),
            None => "duplicate: already queued".to_owned(),
        },
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job_id": job, "duplicate": job.is_none()})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct OutboundQuery {
    token: Option<String>,
}

/// `POST /v1/salesforce/outbound?token=…`: Salesforce Outbound Messages (SOAP). Each
/// notification becomes one job (deduplicated on its Id, as Salesforce resends until it gets
/// the Ack); the Ack is sent only after all are queued.
async fn salesforce_outbound(
    State(state): State<AppState>,
    Query(q): Query<OutboundQuery>,
    raw: axum::body::Bytes,
) -> Response {
    let soap = |status: StatusCode, body: String| {
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            body,
        )
            .into_response()
    };
    let sync = &state.config.sync;
    let (Some(token), Some(org)) = (&sync.outbound_token, &sync.organization_id) else {
        return soap(
            StatusCode::NOT_FOUND,
            sync::outbound::fault("Client", "outbound messages are not configured"),
        );
    };
    if !q.token.as_deref().is_some_and(|t| token.matches(t)) {
        audit(
            &state,
            "salesforce",
            "sync.outbound.rejected",
            "/v1/salesforce/outbound",
            "bad token",
        )
        .await;
        return soap(
            StatusCode::UNAUTHORIZED,
            sync::outbound::fault("Client", "invalid token"),
        );
    }
    let message = match sync::outbound::parse(&raw) {
        Ok(m) => m,
        Err(e) => {
            return soap(
                StatusCode::BAD_REQUEST,
                sync::outbound::fault("Client", &e.to_string()),
            );
        }
    };
    // 15- and 18-character forms of one id share the first 15 characters.
    let same_org = message.organization_id.get(..15) == org.get(..15);
    if !same_org {
        audit(
            &state,
            "salesforce",
            "sync.outbound.rejected",
            &message.organization_id,
            "message from another org",
        )
        .await;
        return soap(
            StatusCode::FORBIDDEN,
            sync::outbound::fault("Client", "this endpoint serves another organization"),
        );
    }
    let mut queued = 0;
    for n in &message.notifications {
        let fields: serde_json::Map<String, Value> = n
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let payload = json!({
            "notification_id": n.id,
            "action_id": message.action_id,
            "object": n.object,
            "record_id": n.field("Id"),
            "fields": fields,
        });
        match state
            .jobs
            .enqueue(
                sync::jobs::NewJob::new("salesforce.outbound", payload)
                    .dedupe(format!("salesforce.outbound:{}", n.id)),
            )
            .await
        {
            Ok(Some(_)) => queued += 1,
            Ok(None) => {}
            // No Ack: Salesforce sends the message again later; nothing is lost.
            Err(e) => {
                tracing::error!(error = %e, "queueing an outbound message failed");
                return soap(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    sync::outbound::fault("Server", "temporarily unable to queue; retry"),
                );
            }
        }
    }
    audit(
        &state,
        "salesforce",
        "sync.outbound",
        &message.action_id,
        &format!(
            "{} notifications, {queued} new",
            message.notifications.len()
        ),
    )
    .await;
    soap(StatusCode::OK, sync::outbound::ACK.to_owned())
}

/// `GET /v1/sync/status`: jobs by status and the oldest due job's age.
async fn sync_status(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, AppError> {
    require(&caller, &[Role::Admin, Role::Finance, Role::Auditor])?;
    let status = state
        .jobs
        .status()
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Json(json!({"jobs": status})).into_response())
}

/// `POST /v1/sync/intacct/pull`: reads Intacct now (receipts, credit memos, invoice changes)
/// instead of at the next scheduled pull; one job per entity.
async fn sync_intacct_pull(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, AppError> {
    let entities: Option<Vec<String>> =
        (state.config.sync.intacct.as_ref()).map(|ia| ia.entities.keys().cloned().collect());
    queue_pulls(
        &state,
        &caller,
        ("Sage Intacct", "[sync.intacct]", "intacct"),
        (sync::q2c::PULL, "entity"),
        entities,
    )
    .await
}

/// `POST /v1/sync/x3/pull`: reads Sage X3 now (the invoices and credit notes of linked
/// orders) instead of at the next scheduled pull; one job per folder.
async fn sync_x3_pull(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, AppError> {
    let folders: Option<Vec<String>> =
        (state.config.sync.x3.as_ref()).map(|x3| x3.folders.keys().cloned().collect());
    queue_pulls(
        &state,
        &caller,
        ("Sage X3", "[sync.x3]", "x3"),
        (sync::x3_loop::PULL, "folder"),
        folders,
    )
    .await
}

/// `POST /v1/sync/sage100/pull`: asks the agent for Sage 100's changed invoices now instead of
/// at the next scheduled pull (one read in flight: a read already queued is not doubled).
async fn sync_sage100_pull(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, AppError> {
    agent_line_pull(&state, &caller, sync::objects::SageLine::Sage100).await
}

/// `POST /v1/sync/businessworks/pull`: the same for BusinessWorks.
async fn sync_businessworks_pull(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, AppError> {
    agent_line_pull(&state, &caller, sync::objects::SageLine::BusinessWorks).await
}

async fn agent_line_pull(
    state: &AppState,
    caller: &Caller,
    line: sync::objects::SageLine,
) -> Result<Response, AppError> {
    let (label, configured) = match line {
        sync::objects::SageLine::BusinessWorks => (
            "Sage BusinessWorks",
            state.config.sync.businessworks.is_some(),
        ),
        _ => ("Sage 100", state.config.sync.sage100.is_some()),
    };
    let (Some(system), Some(kinds)) = (
        sync::agent_loop::system(line),
        sync::agent_loop::kinds(line),
    ) else {
        return Err(AppError::Internal(format!("{label} has no agent loop")));
    };
    queue_pulls(
        state,
        caller,
        (label, &format!("[sync.{system}]"), system),
        (kinds.pull, "line"),
        configured.then(|| vec![system.to_owned()]),
    )
    .await
}

/// Queues one `kind` pull job per key (`{key_field: key}`), deduplicated per request, and
/// audits it; 404 when the line (`label`, `section`, `audit_name`) is not configured.
async fn queue_pulls(
    state: &AppState,
    caller: &Caller,
    (label, section, audit_name): (&str, &str, &str),
    (kind, key_field): (&str, &str),
    keys: Option<Vec<String>>,
) -> Result<Response, AppError> {
    require(caller, &[Role::Admin, Role::Finance])?;
    let Some(keys) = keys else {
        return Err(AppError::Api {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            field: None,
            message: format!("{label} is not configured ({section})"),
        });
    };
    let slot = chrono::Utc::now().timestamp_millis();
    let mut jobs = Vec::new();
    for key in keys {
        let id = state
            .jobs
            .enqueue(
                sync::jobs::NewJob::new(kind, json!({ key_field: key }))
                    .dedupe(format!("{kind}:{key}:manual:{slot}")),
            )
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        jobs.push(json!({ key_field: key, "job_id": id }));
    }
    audit(
        state,
        &caller.name,
        &format!("sync.{audit_name}.pull"),
        audit_name,
        &format!("queued a pull of every {key_field}"),
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(json!({"jobs": jobs}))).into_response())
}

#[derive(Deserialize)]
struct JobsQuery {
    status: Option<String>,
}

/// `GET /v1/sync/jobs?status=dead`: the error queue (or any status), newest first.
async fn sync_jobs(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<JobsQuery>,
) -> Result<Response, AppError> {
    require(&caller, &[Role::Admin, Role::Finance, Role::Auditor])?;
    if let Some(s) = q.status.as_deref()
        && !sync::jobs::STATUSES.contains(&s)
    {
        return Err(invalid(
            "status",
            "status: must be pending, running, succeeded, dead or resolved".to_owned(),
        ));
    }
    let jobs = state
        .jobs
        .list(q.status.as_deref(), 200)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Json(json!({"data": jobs})).into_response())
}

#[derive(Deserialize)]
struct AgentCommandsQuery {
    agent: Option<String>,
    status: Option<String>,
}

/// `GET /v1/agents/commands?agent=…&status=failed`: what the on-premise agents were asked to
/// do, newest first (at most 200) — pending, leased (with the lease's end), done, or failed
/// with the agent's text. Payloads and results are not shown.
async fn agent_commands(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<AgentCommandsQuery>,
) -> Result<Response, AppError> {
    require(&caller, &[Role::Admin, Role::Finance, Role::Auditor])?;
    if let Some(s) = q.status.as_deref()
        && !sync::agent_queue::STATUSES.contains(&s)
    {
        return Err(invalid(
            "status",
            "status: must be pending, leased, done or failed".to_owned(),
        ));
    }
    let commands = sync::agent_queue::list(&state.db, q.agent.as_deref(), q.status.as_deref(), 200)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Json(json!({"data": commands})).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    note: Option<String>,
}

/// `POST /v1/sync/jobs/{id}/retry` and `/resolve` (`{"note": "…"}`): operator actions on the
/// error queue, audited with the caller's name.
async fn retry_sync_job(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    sync_job_action(state, caller, id, JobAction::Retry, body).await
}

async fn resolve_sync_job(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    sync_job_action(state, caller, id, JobAction::Resolve, body).await
}

/// What an operator does to a dead job.
#[derive(Clone, Copy, Debug)]
enum JobAction {
    Retry,
    Resolve,
}

async fn sync_job_action(
    state: AppState,
    caller: Caller,
    id: String,
    action: JobAction,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    require(&caller, &[Role::Admin])?;
    let id: i64 = id
        .parse()
        .map_err(|_| invalid("id", "id: must be a job number".to_owned()))?;
    let record = match action {
        JobAction::Retry => state.jobs.retry(id, &caller.name).await,
        JobAction::Resolve => {
            let b: ResolveBody = if body.is_empty() {
                ResolveBody::default()
            } else {
                serde_json::from_slice(&body).map_err(|e| AppError::Api {
                    status: StatusCode::BAD_REQUEST,
                    code: "malformed_json",
                    field: None,
                    message: e.to_string(),
                })?
            };
            let note = b.note.unwrap_or_default();
            if note.trim().is_empty() || note.len() > 2000 {
                return Err(AppError::Api {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    code: "missing_field",
                    field: Some("note".into()),
                    message: "note: say why the job is resolved (1 to 2000 characters)".into(),
                });
            }
            state.jobs.resolve(id, &caller.name, note.trim()).await
        }
    };
    match record {
        Ok(r) => Ok(Json(json!(r)).into_response()),
        Err(sync::jobs::JobsError::NotFound(id)) => Err(AppError::Api {
            status: StatusCode::NOT_FOUND,
            code: "job_not_found",
            field: Some("id".into()),
            message: format!("there is no job {id}"),
        }),
        Err(e @ sync::jobs::JobsError::WrongState { .. }) => Err(AppError::Api {
            status: StatusCode::CONFLICT,
            code: "invalid_state",
            field: None,
            message: e.to_string(),
        }),
        Err(e) => Err(AppError::Internal(e.to_string())),
    }
}

/// Appends to the audit log; a failure to audit is logged loudly but does not undo the call.
pub(crate) async fn audit(
    state: &AppState,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) {
    let record = db::audit::AuditRecord {
        at: chrono::Utc::now(),
        actor,
        action,
        subject,
        detail,
    };
    if let Err(e) = db::audit::record(&state.db, record).await {
        tracing::error!(error = %e, action, "audit log write failed");
    }
}

fn require(caller: &Caller, allowed: &[Role]) -> Result<(), AppError> {
    if allowed.contains(&caller.role) {
        Ok(())
    } else {
        Err(AppError::Forbidden)
    }
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let problem = match state.db.ping().await {
        Err(e) => Some(format!("database unreachable: {e}")),
        Ok(()) => match state.db.pending_migrations().await {
            Ok(p) if p.is_empty() => None,
            Ok(p) => Some(format!(
                "migrations not applied: {p:?}; run `cashloop migrate`"
            )),
            Err(e) => Some(format!("cannot read migrations: {e}")),
        },
    };
    match problem {
        None => {
            Json(json!({"status": "ready", "backend": state.db.backend().name()})).into_response()
        }
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": reason})),
        )
            .into_response(),
    }
}

async fn post_entry(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, AppError> {
    require(&caller, &[Role::Admin, Role::Finance])?;
    let header_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                invalid(
                    "Idempotency-Key",
                    "Idempotency-Key: must be ASCII".to_owned(),
                )
            })?;
            Some(
                IdempotencyKey::parse(s, "Idempotency-Key")
                    .map_err(|r| AppError::Ledger(r.into()))?,
            )
        }
    };
    let defaults = InputDefaults {
        entity: state.config.default_entity.clone(),
        source: SourceName::parse("api", "source").map_err(|r| AppError::Ledger(r.into()))?,
        idempotency_key: header_key,
    };
    let entry = parse_entry_json(&bytes, &defaults).map_err(|r| AppError::Ledger(r.into()))?;
    let out = state.ledger.post(entry).await?;
    tracing::info!(entry_id = %out.entry.id, caller = %caller.name, replayed = out.replayed, "ledger entry posted");
    let status = if out.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = (status, Json(out.entry)).into_response();
    if out.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

async fn get_entry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let id: i64 = id
        .parse()
        .map_err(|_| invalid("id", format!("id: {id:?} is not an entry id")))?;
    Ok(Json(state.ledger.entry(EntryId(id)).await?).into_response())
}

#[derive(Deserialize)]
struct EntityQuery {
    entity: Option<String>,
    as_of: Option<String>,
}

fn parse_as_of(s: Option<&str>) -> Result<Option<NaiveDate>, AppError> {
    s.map(|s| ledger::input::parse_date(s, "as_of").map_err(|r| AppError::Ledger(r.into())))
        .transpose()
}

fn parse_entity(s: Option<&str>) -> Result<Option<EntityCode>, AppError> {
    s.map(|s| EntityCode::parse(s, "entity").map_err(|r| AppError::Ledger(r.into())))
        .transpose()
}

async fn list_accounts(
    State(state): State<AppState>,
    Query(q): Query<EntityQuery>,
) -> Result<Response, AppError> {
    let entity = parse_entity(q.entity.as_deref())?;
    Ok(Json(state.ledger.accounts(entity.as_ref()).await?).into_response())
}

async fn balance(
    State(state): State<AppState>,
    Path((entity, code)): Path<(String, String)>,
    Query(q): Query<EntityQuery>,
) -> Result<Response, AppError> {
    let entity = EntityCode::parse(&entity, "entity").map_err(|r| AppError::Ledger(r.into()))?;
    let code = AccountCode::parse(&code, "code").map_err(|r| AppError::Ledger(r.into()))?;
    let as_of = parse_as_of(q.as_of.as_deref())?;
    Ok(Json(state.ledger.balance(&entity, &code, as_of).await?).into_response())
}

async fn trial_balance(
    State(state): State<AppState>,
    Query(q): Query<EntityQuery>,
) -> Result<Response, AppError> {
    let entity = parse_entity(q.entity.as_deref())?;
    let as_of = parse_as_of(q.as_of.as_deref())?;
    let tb = state.ledger.trial_balance(entity.as_ref(), as_of).await?;
    let totals: serde_json::Map<String, serde_json::Value> = tb
        .totals
        .iter()
        .map(|(c, (d, cr))| {
            (
                c.code().to_owned(),
                json!({"debits": ledger::export::format_minor(*d, *c), "credits": ledger::export::format_minor(*cr, *c)}),
            )
        })
        .collect();
    Ok(
        Json(json!({"as_of": tb.as_of, "entity": tb.entity, "rows": tb.rows, "totals": totals}))
            .into_response(),
    )
}

fn vault(state: &AppState) -> Result<gateway::vault::Vault, AppError> {
    state.vault.clone().ok_or(AppError::Api {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "vault_not_configured",
        field: None,
        message: "the vault has no keys configured ([vault] in cashloop.toml)".to_owned(),
    })
}

/// Runs `work` under the request's `Idempotency-Key` (if any): a replay gets the stored
/// response, a reused key with another body 422, a duplicate still in flight 409.
async fn idempotent<F>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    route: &'static str,
    request_hash: [u8; 32],
    work: F,
) -> Result<Response, AppError>
where
    F: std::future::Future<Output = Result<(StatusCode, serde_json::Value), AppError>>,
{
    let Some(key) = headers.get("idempotency-key") else {
        let (status, body) = work.await?;
        return Ok(reply(status, body));
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            invalid(
                "Idempotency-Key",
                "Idempotency-Key: 1 to 255 ASCII characters".to_owned(),
            )
        })?
        .to_owned();
    let db = &state.db;
    match gateway::idempotency::claim(db, &caller.name, &key, route, &request_hash)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
    {
        gateway::idempotency::Claim::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (status, [("content-type", "application/json")], body).into_response();
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(resp)
        }
        gateway::idempotency::Claim::Mismatch => Err(AppError::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "idempotency_key_reused",
            field: Some("Idempotency-Key".to_owned()),
            message: "Idempotency-Key: already used for a different request".to_owned(),
        }),
        gateway::idempotency::Claim::InProgress => Err(AppError::Api {
            status: StatusCode::CONFLICT,
            code: "idempotency_key_in_use",
            field: Some("Idempotency-Key".to_owned()),
            message:
                "Idempotency-Key: a request with this key is still being processed; retry shortly"
                    .to_owned(),
        }),
        gateway::idempotency::Claim::New => {
            let (status, body) = match work.await {
                Ok(ok) => ok,
                Err(e) => e.parts(),
            };
            let text = body.to_string();
            let stored = if status.is_server_error() {
                gateway::idempotency::release(db, &caller.name, &key).await
            } else {
                gateway::idempotency::finish(db, &caller.name, &key, status.as_u16(), &text).await
            };
            stored.map_err(|e| AppError::Internal(e.to_string()))?;
            let code = body["error"]["code"]
                .as_str()
                .map(|c| ResponseErrorCode(c.to_owned()));
            let mut resp = (status, [("content-type", "application/json")], text).into_response();
            if let Some(code) = code {
                resp.extensions_mut().insert(code);
            }
            Ok(resp)
        }
    }
}

async fn post_token(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, AppError> {
    require(&caller, &[Role::Admin, Role::Payments])?;
    let vault = vault(&state)?;
    const ROUTE: &str = "POST /v1/tokens";
    let hash = vault.request_hash(ROUTE, &bytes);
    idempotent(&state, &caller, &headers, ROUTE, hash, async {
        let method = gateway::input::parse_token_request(&bytes, state.ledger.clock().now().date_naive())?;
        let pm = vault.tokenize(method, &caller.name).await?;
        tracing::info!(token = %pm.token, kind = pm.kind, caller = %caller.name, "payment method tokenized");
        Ok((StatusCode::CREATED, serde_json::to_value(&pm).map_err(|e| AppError::Internal(e.to_string()))?))
    })
    .await
}

async fn get_token(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    require(
        &caller,
        &[Role::Admin, Role::Payments, Role::Finance, Role::Auditor],
    )?;
    Ok(Json(vault(&state)?.get(&token).await?).into_response())
}

fn payments(state: &AppState) -> Result<gateway::service::Payments, AppError> {
    state.payments.clone().ok_or(AppError::Api {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "payments_not_configured",
        field: None,
        message: "payments are not configured ([gateway] and [vault] in cashloop.toml)".to_owned(),
    })
}

fn json_value(v: &impl serde::Serialize) -> Result<serde_json::Value, AppError> {
    serde_json::to_value(v).map_err(|e| AppError::Internal(e.to_string()))
}

/// A payment's response: 201 when it went through (or is pending), 202 while its outcome
/// is unknown, 402 with the failure code when the processor declined.
fn payment_reply(
    p: &gateway::service::Payment,
) -> Result<(StatusCode, serde_json::Value), AppError> {
    let body = json_value(p)?;
    Ok(match p.status {
        "failed" => (
            StatusCode::PAYMENT_REQUIRED,
            json!({"error": {"code": p.failure_code, "message": p.failure_message, "field": null}, "payment": body}),
        ),
        "unknown" => (StatusCode::ACCEPTED, body),
        _ => (StatusCode::CREATED, body),
    })
}

/// The body of a payment request, parsed with field-named errors.
fn parse_payment(bytes: &[u8]) -> Result<gateway::service::NewPayment, AppError> {
    let bad = |code: &'static str, field: &str, message: &str| AppError::Api {
        status: if code == "malformed_json" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        },
        code,
        field: (!field.is_empty()).then(|| field.to_owned()),
        message: if field.is_empty() {
            message.to_owned()
        } else {
            format!("{field}: {message}")
        },
    };
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        bad(
            "malformed_json",
            "",
            &format!("malformed JSON at line {}, column {}", e.line(), e.column()),
        )
    })?;
    let o = v
        .as_object()
        .ok_or_else(|| bad("malformed_json", "", "the body must be a JSON object"))?;
    const FIELDS: &[&str] = &[
        "amount",
        "currency",
        "payment_method",
        "capture",
        "cvv",
        "opportunity_id",
        "account_id",
        "invoice_refs",
        "metadata",
    ];
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(
            "unknown_field",
            k,
            &format!("unknown field (expected one of: {})", FIELDS.join(", ")),
        ));
    }
    let text = |k: &str| -> Result<Option<String>, AppError> {
        match o.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad("invalid_field", k, "must be a string")),
        }
    };
    let currency_s =
        text("currency")?.ok_or_else(|| bad("missing_field", "currency", "is required"))?;
    let currency = ledger::Currency::parse(&currency_s)
        .map_err(|e| bad("unknown_currency", "currency", &e.to_string()))?;
    let amount_s = text("amount")?.ok_or_else(|| {
        bad(
            "missing_field",
            "amount",
            "is required (a decimal string such as \"100.00\")",
        )
    })?;
    let amount = ledger::Money::parse_decimal(&amount_s, currency).map_err(|e| {
        let r = ledger::Rejection::money(&e, "amount");
        AppError::Ledger(r.into())
    })?;
    let token = text("payment_method")?.ok_or_else(|| {
        bad(
            "missing_field",
            "payment_method",
            "is required (a token from POST /v1/tokens)",
        )
    })?;
    let capture = match o.get("capture") {
        None => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(bad("invalid_field", "capture", "must be true or false")),
    };
    let account_id = text("account_id")?
        .map(|a| {
            ledger::CustomerId::parse(&a, "account_id").map_err(|r| AppError::Ledger(r.into()))
        })
        .transpose()?;
    let invoice_refs = match o.get("invoice_refs") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .filter(|s| !s.is_empty() && s.len() <= 64)
                    .map(str::to_owned)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                bad(
                    "invalid_field",
                    "invoice_refs",
                    "must be an array of invoice numbers (1 to 64 characters)",
                )
            })?,
        Some(_) => return Err(bad("invalid_field", "invoice_refs", "must be an array")),
    };
    let metadata = match o.get("metadata") {
        None | Some(serde_json::Value::Null) => json!({}),
        Some(m @ serde_json::Value::Object(_)) if m.to_string().len() <= 4096 => m.clone(),
        Some(_) => {
            return Err(bad(
                "invalid_field",
                "metadata",
                "must be a JSON object of at most 4 KiB",
            ));
        }
    };
    // The CVV is parsed against the card's brand by the service; here only its shape.
    let cvv = match text("cvv")? {
        None => None,
        Some(c) => Some(
            gateway::card::Cvv::parse(
                &c,
                if c.len() == 4 {
                    gateway::card::CardBrand::Amex
                } else {
                    gateway::card::CardBrand::Visa
                },
            )
            .map_err(|e| bad(e.code(), "cvv", "must be 3 digits (4 for American Express)"))?,
        ),
    };
    Ok(gateway::service::NewPayment {
        token,
        amount,
        capture,
        cvv,
        opportunity_id: text("opportunity_id")?,
        account_id,
        invoice_refs,
        metadata,
    })
}

/// `{"amount": "40.00"}` or `{}` (everything), in the payment's currency.
fn parse_amount(bytes: &[u8], currency: &str) -> Result<Option<i64>, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| AppError::Api {
        status: StatusCode::BAD_REQUEST,
        code: "malformed_json",
        field: None,
        message: format!("malformed JSON at line {}, column {}", e.line(), e.column()),
    })?;
    match v.get("amount") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => {
            let c =
                ledger::Currency::parse(currency).map_err(|e| AppError::Internal(e.to_string()))?;
            ledger::Money::parse_decimal(s, c)
                .map(|m| Some(m.amount_minor()))
                .map_err(|e| AppError::Ledger(ledger::Rejection::money(&e, "amount").into()))
        }
        Some(_) => Err(invalid(
            "amount",
            "amount: must be a decimal string such as \"40.00\"".to_owned(),
        )),
    }
}

async fn post_payment(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, AppError> {
    require(&caller, &[Role::Admin, Role::Payments])?;
    let payments = payments(&state)?;
    const ROUTE: &str = "POST /v1/payments";
    let hash = vault(&state)?.request_hash(ROUTE, &bytes);
    idempotent(&state, &caller, &headers, ROUTE, hash, async {
        let req = parse_payment(&bytes)?;
        let p = payments.create(req, &caller.name).await?;
        tracing::info!(payment = %p.id, status = p.status, caller = %caller.name, "payment created");
        payment_reply(&p)
    })
    .await
}

async fn payment_action(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    bytes: Bytes,
    id: String,
    route: &'static str,
) -> Result<Response, AppError> {
    require(&caller, &[Role::Admin, Role::Payments])?;
    let payments = payments(&state)?;
    let mut keyed = id.clone().into_bytes();
    keyed.push(0);
    keyed.extend_from_slice(&bytes);
    let hash = vault(&state)?.request_hash(route, &keyed);
    idempotent(&state, &caller, &headers, route, hash, async {
        let current = payments.get(&id).await?;
        let p = match route {
            "POST /v1/payments/{id}/capture" => payments.capture(&id, parse_amount(&bytes, &current.currency)?).await?,
            "POST /v1/payments/{id}/void" => payments.void(&id).await?,
            "POST /v1/payments/{id}/represent" => payments.represent(&id, &caller.name).await?,
            _ => payments.refund(&id, parse_amount(&bytes, &current.currency)?).await?,
        };
        tracing::info!(payment = %p.id, status = p.status, caller = %caller.name, route, "payment updated");
        Ok((StatusCode::OK, json_value(&p)?))
    })
    .await
}

/// `POST /v1/payments/{id}/{capture|void|refunds|represent}`: one handler per route, the
/// shared work in [`payment_action`].
macro_rules! payment_action_handlers {
    ($($name:ident => $route:literal;)*) => {$(
        async fn $name(
            State(state): State<AppState>,
            axum::Extension(caller): axum::Extension<Caller>,
            Path(id): Path<String>,
            headers: HeaderMap,
            bytes: Bytes,
        ) -> Result<Response, AppError> {
            payment_action(state, caller, headers, bytes, id, $route).await
        }
    )*};
}

payment_action_handlers! {
    capture_payment => "POST /v1/payments/{id}/capture";
    void_payment => "POST /v1/payments/{id}/void";
    refund_payment => "POST /v1/payments/{id}/refunds";
    represent_payment => "POST /v1/payments/{id}/represent";
}

/// `POST /v1/payment_links`: a hosted payment page for an Opportunity (see `console::pay`).
async fn post_payment_link(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, AppError> {
    require(&caller, &[Role::Admin, Role::Payments])?;
    const ROUTE: &str = "POST /v1/payment_links";
    let hash = vault(&state)?.request_hash(ROUTE, &bytes);
    idempotent(&state, &caller, &headers, ROUTE, hash, async {
        crate::console::pay::create_link(&state, &caller.name, &bytes).await
    })
    .await
}

async fn get_payment(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    require(
        &caller,
        &[Role::Admin, Role::Payments, Role::Finance, Role::Auditor],
    )?;
    Ok(Json(payments(&state)?.get(&id).await?).into_response())
}

#[derive(Deserialize)]
struct DeliveryQuery {
    status: Option<String>,
}

async fn webhook_deliveries(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Response, AppError> {
    require(
        &caller,
        &[Role::Admin, Role::Finance, Role::Auditor, Role::Payments],
    )?;
    if let Some(s) = q.status.as_deref()
        && !matches!(s, "pending" | "delivered" | "failed")
    {
        return Err(invalid(
            "status",
            "status: must be pending, delivered or failed".to_owned(),
        ));
    }
    let Some(outbox) = &state.outbox else {
        return Ok(Json(json!({"data": []})).into_response());
    };
    let rows = outbox
        .deliveries(q.status.as_deref(), 100)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Json(json!({"data": rows})).into_response())
}

#[derive(Deserialize)]
struct PaymentQuery {
    opportunity_id: Option<String>,
}

async fn list_payments(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<PaymentQuery>,
) -> Result<Response, AppError> {
    require(
        &caller,
        &[Role::Admin, Role::Payments, Role::Finance, Role::Auditor],
    )?;
    let opp = q
        .opportunity_id
        .ok_or_else(|| invalid("opportunity_id", "opportunity_id: is required".to_owned()))?;
    Ok(Json(json!({"data": payments(&state)?.by_opportunity(&opp).await?})).into_response())
}

/// Serves `router` on `listener` (over TLS when `server.tls` is configured) until `shutdown`
/// resolves, then drains in-flight requests for at most `shutdown_grace_ms`.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    use std::future::IntoFuture;

    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    let tls = state.config.tls.clone();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopped_tx.send(());
    };
    // The caller's address reaches the handlers (and the audit log) as ConnectInfo.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server: futures_util::future::BoxFuture<'static, std::io::Result<()>> = match tls {
        None => Box::pin(
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .into_future(),
        ),
        Some(tls) => {
            // axum derives `ConnectInfo<SocketAddr>` from a listener's address only for
            // `TcpListener` and for `TapIo`, so the TLS listener goes through a no-op tap.
            let listener =
                crate::tls::TlsListener::new(listener, tls.server_config)?.tap_io(|_| {});
            Box::pin(
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .into_future(),
            )
        }
    };
    let server = tokio::spawn(server);
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => { res??; return Ok(()); }
        _ = stopped_rx => {}
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining requests"
    );
    match tokio::time::timeout(grace, &mut server).await {
        Ok(res) => res??,
        Err(_) => {
            tracing::warn!("grace period over; closing remaining connections");
            server.abort();
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
