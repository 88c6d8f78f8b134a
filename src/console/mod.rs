//! The operator console at `/console` and the hosted payment page at `/pay/{link}`:
//! server-rendered HTML over the same state as the API (jobs, review queue, payments,
//! reconciliation runs, the ledger, the audit log), with a little progressive JavaScript.
//!
//! Login is by name and password (`[[console.users]]`, PBKDF2 hashes, see [`password`]); a
//! session is a random id in an `HttpOnly; SameSite=Strict` cookie, stored in
//! `console_sessions` only as its SHA-256. Every POST form carries the session's CSRF token
//! (the login form a double-submit cookie). Roles: `admin` (everything), `finance` (read,
//! resolve review items, verify the chain), `viewer` (read only). Every action is audited.
//!
//! CSS and JS are embedded in the binary (`include_str!`); pages send a strict
//! `Content-Security-Policy` (no inline script, no third-party origin).

pub mod html;
pub mod password;
pub mod pay;
pub mod sampler;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::config::ConsoleRole;
use crate::server::AppState;
use html::{Viewer, esc, notice, table, url_part};

/// The session cookie (scoped to `/console`).
const SESSION_COOKIE: &str = "cl_session";
/// The login form's double-submit CSRF cookie.
const LOGIN_CSRF_COOKIE: &str = "cl_login_csrf";
/// Failed logins per user name within [`LOGIN_WINDOW_S`] before further tries are refused.
const LOGIN_MAX_FAILURES: u32 = 5;
const LOGIN_WINDOW_S: i64 = 900;
/// User names tracked for failed logins at most (the map is cleared when full).
const LOGIN_TRACKED_MAX: usize = 10_000;
/// Rows a console table shows at most.
const ROWS_MAX: usize = 500;
/// A resolve comment's length limit, characters.
const COMMENT_MAX: usize = 2_000;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// Console state that lives in the process: the metrics ring buffer, the last chain
/// verification, failed-login counts.
#[derive(Debug, Default)]
pub struct Live {
    pub samples: sampler::Samples,
    last_verify: Mutex<Option<VerifySummary>>,
    failures: Mutex<HashMap<String, (u32, i64)>>,
}

#[derive(Clone, Debug)]
struct VerifySummary {
    at: DateTime<Utc>,
    by: String,
    entries: u64,
    sealed: u64,
    unsealed: u64,
    problems: u64,
    first_break: Option<String>,
    elapsed_ms: u64,
}

/// The console's and the payment page's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(dashboard))
        .route("/console/", get(dashboard))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/jobs", get(jobs_page))
        .route("/console/jobs/{id}", get(job_page))
        .route("/console/jobs/{id}/status", get(job_status))
        .route("/console/jobs/{id}/retry", post(job_retry))
        .route("/console/jobs/{id}/resolve", post(job_resolve))
        .route("/console/review", get(review_page))
        .route("/console/review/{id}/resolve", post(review_resolve))
        .route("/console/payments", get(payments_page))
        .route("/console/payment-links", post(pay::console_create_link))
        .route("/console/reconciliation", get(recon_page))
        .route("/console/reconciliation/{id}", get(recon_run_page))
        .route("/console/ledger", get(ledger_page))
        .route("/console/ledger/verify", post(ledger_verify))
        .route("/console/audit", get(audit_page))
        .route("/pay/{link}", get(pay::page).post(pay::submit))
        .route("/pay/{link}/receipt", get(pay::receipt))
}

// ---- responses ----

/// Headers every console and payment page carries.
pub(crate) fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// 200 with a console page for a signed-in session (`active`: the navigation entry).
fn page_ok(session: &Session, title: &str, active: &str, body: &str) -> Response {
    html_response(
        StatusCode::OK,
        html::page(title, active, Some(session.viewer()), body),
    )
}

pub(crate) fn html_response(status: StatusCode, body: String) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    secure_headers(&mut resp);
    resp
}

pub(crate) fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(&mut resp);
    resp
}

/// An error page inside the console frame.
fn error_page(session: Option<&Session>, status: StatusCode, message: &str) -> Response {
    html_response(
        status,
        html::page(
            "Something went wrong",
            "",
            session.map(Session::viewer),
            &notice(message, true),
        ),
    )
}

fn internal(session: &Session, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console: internal error");
    error_page(
        Some(session),
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error; it has been logged.",
    )
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

// ---- small SQL helpers over both backends ($N placeholders work on both) ----

macro_rules! fetch {
    ($db:expr, $ty:ty, $how:ident, $sql:expr $(, $b:expr)* $(,)?) => {
        db::on_pool!($db, |c| sqlx::query_as::<_, $ty>($sql)$(.bind($b))*.$how(c).await)
    };
}

macro_rules! execute {
    ($db:expr, $sql:expr $(, $b:expr)* $(,)?) => {
        db::on_pool!($db, |c| sqlx::query($sql)$(.bind($b))*.execute(c).await.map(|r| r.rows_affected()))
    };
}
pub(crate) use {execute, fetch};

/// A timestamp read as text: SQLite's RFC 3339 or PostgreSQL's `timestamptz::text`.
pub(crate) fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn show_ts(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "—".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    Ok(hex::encode(b))
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Secure` when the browser reaches us over TLS (directly or through a proxy).
fn secure_flag(state: &AppState) -> &'static str {
    if state.config.tls.is_some() || state.config.behind_tls_proxy {
        "; Secure"
    } else {
        ""
    }
}

/// Form fields (`application/x-www-form-urlencoded`); a repeated field keeps its first value.
pub(crate) fn form(body: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

// ---- sessions ----

/// A logged-in console user (the extractor redirects to the login page otherwise).
#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub role: ConsoleRole,
    pub csrf: String,
}

impl Session {
    fn viewer(&self) -> Viewer<'_> {
        Viewer {
            name: &self.user,
            role: self.role.as_str(),
            csrf: &self.csrf,
        }
    }

    fn may_operate(&self) -> bool {
        self.role == ConsoleRole::Admin
    }

    fn may_resolve_review(&self) -> bool {
        matches!(self.role, ConsoleRole::Admin | ConsoleRole::Finance)
    }

    /// The POST's CSRF field matches this session's token.
    fn csrf_ok(&self, fields: &HashMap<String, String>) -> bool {
        fields.get("csrf").is_some_and(|t| ct_eq(t, &self.csrf))
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Session, Response> {
        let to_login = || {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/console", |p| p.as_str());
            let next = if parts.method == axum::http::Method::GET {
                next
            } else {
                "/console"
            };
            redirect(&format!("/console/login?next={}", url_part(next)))
        };
        if state.config.console.users.is_empty() {
            return Err(error_page(
                None,
                StatusCode::NOT_FOUND,
                "The console has no users: add [[console.users]] to cashloop.toml (see `cashloop console hash-password`).",
            ));
        }
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login());
        };
        let now = Utc::now().timestamp_millis();
        let row = fetch!(
            &state.db,
            (String, String, String, i64),
            fetch_optional,
            "SELECT user_name, role, csrf_token, expires_at_ms FROM console_sessions WHERE id_sha256 = $1",
            sha256_hex(id)
        );
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "console: reading the session failed");
                return Err(error_page(
                    None,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is not answering; try again shortly.",
                ));
            }
        };
        let Some((user, role, csrf, expires)) = row else {
            return Err(to_login());
        };
        // A user removed from the configuration, or given another role, is logged out.
        let current = state
            .config
            .console
            .users
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.role);
        match current {
            Some(r) if expires > now && r.as_str() == role => Ok(Session {
                user,
                role: r,
                csrf,
            }),
            _ => {
                let _ = execute!(
                    &state.db,
                    "DELETE FROM console_sessions WHERE id_sha256 = $1",
                    sha256_hex(id)
                );
                Err(to_login())
            }
        }
    }
}

async fn audit(state: &AppState, actor: &str, action: &str, subject: &str, detail: &str) {
    crate::server::audit(state, actor, action, subject, detail).await;
}

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

/// Only a path inside the console is a place to go after login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == "/console" || n.starts_with("/console/") || n.starts_with("/console?"))
                && !n.contains('\\')
                && !n.starts_with("/console/login") =>
        {
            n.to_owned()
        }
        _ => "/console".to_owned(),
    }
}

fn login_body(csrf: &str, next: &str, user: &str, error: Option<&str>) -> String {
    format!(
        "{err}<form method=\"post\" action=\"/console/login\" class=\"stack narrow\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label for=\"user\">User name</label>\
         <input id=\"user\" name=\"user\" autocomplete=\"username\" required value=\"{user}\" autofocus>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\" id=\"login\">Log in</button></form>",
        err = error.map(|e| notice(e, true)).unwrap_or_default(),
        csrf = esc(csrf),
        next = esc(next),
        user = esc(user),
    )
}

fn login_page(
    state: &AppState,
    status: StatusCode,
    next: &str,
    user: &str,
    error: Option<&str>,
) -> Response {
    let csrf = match random_hex(16) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "console: no randomness");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut resp = html_response(
        status,
        html::page("Log in", "", None, &login_body(&csrf, next, user, error)),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LOGIN_CSRF_COOKIE}={csrf}; Path=/console/login; HttpOnly; SameSite=Strict; Max-Age=1800{}",
        secure_flag(state)
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn login_form(State(state): State<AppState>, Query(q): Query<NextQuery>) -> Response {
    login_page(
        &state,
        StatusCode::OK,
        &safe_next(q.next.as_deref()),
        "",
        None,
    )
}

impl Live {
    /// Whether `user` may try to log in now (not locked out by recent failures).
    fn may_try(&self, user: &str, now_s: i64) -> bool {
        let m = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        !m.get(user)
            .is_some_and(|(n, first)| *n >= LOGIN_MAX_FAILURES && now_s - first < LOGIN_WINDOW_S)
    }

    fn failed(&self, user: &str, now_s: i64) {
        let mut m = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if m.len() >= LOGIN_TRACKED_MAX {
            m.clear();
        }
        let e = m.entry(user.to_owned()).or_insert((0, now_s));
        if now_s - e.1 >= LOGIN_WINDOW_S {
            *e = (0, now_s);
        }
        e.0 += 1;
    }

    fn succeeded(&self, user: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(user);
    }
}

/// A hash of nothing in particular, checked when the user name is unknown so the answer takes
/// as long as for a known one.
fn dummy_hash() -> &'static password::PasswordHash {
    static H: std::sync::OnceLock<password::PasswordHash> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        password::PasswordHash::new("no such user", password::DEFAULT_ITERATIONS)
            .unwrap_or_else(|_| {
                password::PasswordHash::parse(
                    "$pbkdf2-sha256$i=600000$c2FsdHNhbHQ$VazARW7jCJ+/FpHCJUS2BflBhSFt3gRl5oudV8INrLw",
                )
                .expect("a well-formed constant")
            })
    })
}

async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let next = safe_next(f.get("next").map(String::as_str));
    let user = f
        .get("user")
        .map(|u| u.trim().to_owned())
        .unwrap_or_default();
    let csrf_ok = match (cookie(&headers, LOGIN_CSRF_COOKIE), f.get("csrf")) {
        (Some(c), Some(t)) => ct_eq(c, t),
        _ => false,
    };
    if !csrf_ok {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            &next,
            &user,
            Some("The form expired; please log in again."),
        );
    }
    let now_s = Utc::now().timestamp();
    let live = state.live.clone();
    if user.len() > 64 || !live.may_try(&user, now_s) {
        audit(
            &state,
            &user,
            "console.login.refused",
            "console",
            "too many failed attempts",
        )
        .await;
        return login_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            &user,
            Some("Too many failed attempts; wait 15 minutes and try again."),
        );
    }
    let found = state
        .config
        .console
        .users
        .iter()
        .find(|u| u.name == user)
        .cloned();
    let password = zeroize::Zeroizing::new(f.get("password").cloned().unwrap_or_default());
    let hash = found
        .as_ref()
        .map_or_else(|| dummy_hash().clone(), |u| u.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || hash.verify(&password))
        .await
        .unwrap_or(false);
    let Some(u) = found.filter(|_| ok) else {
        live.failed(&user, now_s);
        audit(
            &state,
            &user,
            "console.login.failed",
            "console",
            "wrong user name or password",
        )
        .await;
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            &next,
            &user,
            Some("Wrong user name or password."),
        );
    };
    live.succeeded(&user);
    let (id, csrf) = match (random_hex(32), random_hex(32)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let now = Utc::now().timestamp_millis();
    let ttl_s = state.config.console.session_ttl_s;
    let expires = now.saturating_add(i64::try_from(ttl_s).unwrap_or(0).saturating_mul(1000));
    // Expired sessions go as new ones come.
    let _ = execute!(
        &state.db,
        "DELETE FROM console_sessions WHERE expires_at_ms < $1",
        now
    );
    if let Err(e) = execute!(
        &state.db,
        "INSERT INTO console_sessions (id_sha256, user_name, role, csrf_token, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        sha256_hex(&id),
        u.name.as_str(),
        u.role.as_str(),
        csrf.as_str(),
        now,
        expires
    ) {
        tracing::error!(error = %e, "console: storing the session failed");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    audit(
        &state,
        &u.name,
        "console.login",
        "console",
        &format!("role={}", u.role.as_str()),
    )
    .await;
    let mut resp = redirect(&next);
    let secure = secure_flag(&state);
    for c in [
        format!(
            "{SESSION_COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={ttl_s}{secure}"
        ),
        format!(
            "{LOGIN_CSRF_COOKIE}=; Path=/console/login; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

async fn logout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    if !session.csrf_ok(&f) {
        return error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            "The form expired; reload the page and try again.",
        );
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        let _ = execute!(
            &state.db,
            "DELETE FROM console_sessions WHERE id_sha256 = $1",
            sha256_hex(id)
        );
    }
    audit(&state, &session.user, "console.logout", "console", "").await;
    let mut resp = redirect("/console/login");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure_flag(&state)
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

// ---- dashboard ----

/// Sync status of one job kind (one object and direction).
#[derive(Debug, sqlx::FromRow)]
struct KindStatus {
    kind: String,
    pending: i64,
    running: i64,
    dead: i64,
    oldest_pending: Option<String>,
    last_success: Option<String>,
}

async fn dashboard(State(state): State<AppState>, session: Session) -> Response {
    let samples = state.live.samples.all();
    let now_sample = sampler::take();
    let mut body = String::new();

    // Headline figures.
    let status = state.jobs.status().await;
    let review = sync::review::Review::new(state.db.clone())
        .open_items(1_000)
        .await;
    let (entries, unsealed) = crate::server::ledger_entry_count(&state.db)
        .await
        .unwrap_or((0, 0));
    let dead = status
        .as_ref()
        .ok()
        .and_then(|s| s.by_status.get("dead").copied())
        .unwrap_or(0);
    let pending = status
        .as_ref()
        .ok()
        .and_then(|s| s.by_status.get("pending").copied())
        .unwrap_or(0);
    let _ = write!(
        body,
        "<ul class=\"figures\" aria-label=\"At a glance\">\
         <li><a href=\"/console/jobs\"><span class=\"figure\" id=\"dead-jobs\">{dead}</span> dead jobs</a></li>\
         <li><span class=\"figure\">{pending}</span> pending jobs</li>\
         <li><a href=\"/console/review\"><span class=\"figure\">{}</span> open review items</a></li>\
         <li><a href=\"/console/ledger\"><span class=\"figure\">{entries}</span> ledger entries ({unsealed} unsealed)</a></li></ul>",
        review.as_ref().map_or(0, Vec::len)
    );

    // Throughput and latency over time, for the busiest flows.
    let mut totals: Vec<(&String, u64)> =
        now_sample.flows.iter().map(|(k, v)| (k, v.count)).collect();
    totals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = totals.iter().take(6).map(|(k, _)| (*k).clone()).collect();
    body.push_str("<section aria-labelledby=\"h-throughput\"><h2 id=\"h-throughput\">Throughput and latency</h2>");
    if samples.len() >= 2 {
        let interval_s = (samples[samples.len() - 1].at - samples[samples.len() - 2].at)
            .num_seconds()
            .max(1);
        let span_s = (samples[samples.len() - 1].at - samples[0].at).num_seconds();
        let mut throughput = Vec::new();
        let mut latency = Vec::new();
        for flow in &top {
            let mut t = Vec::new();
            let mut l = Vec::new();
            for w in samples.windows(2) {
                let d = w[1].flows.get(flow).map(|c| c.since(w[0].flows.get(flow)));
                t.push(d.as_ref().map_or(0, |d| d.count));
                l.push(d.and_then(|d| d.quantile_us(950)).unwrap_or(0) / 1_000);
            }
            throughput.push((flow.clone(), t));
            latency.push((flow.clone(), l));
        }
        let start = format!("-{}", html::age_s(span_s));
        body.push_str(&html::line_chart(
            "chart-throughput",
            "Throughput",
            &format!("per {interval_s} s"),
            &throughput,
            (&start, "now"),
        ));
        body.push_str(&html::line_chart(
            "chart-latency",
            "Latency p95",
            "ms, bucket upper bound",
            &latency,
            (&start, "now"),
        ));
    } else {
        body.push_str(&notice(
            "The charts fill in as the server samples its metrics (every few seconds).",
            false,
        ));
    }
    let last_minute = samples
        .iter()
        .rev()
        .find(|s| (now_sample.at - s.at).num_seconds() >= 60)
        .or(samples.first());
    let mut rows = Vec::new();
    for (flow, _) in &totals {
        let c = &now_sample.flows[*flow];
        let recent = last_minute.map(|s| c.since(s.flows.get(*flow)).count);
        let q = |pm| {
            c.quantile_us(pm)
                .map_or_else(|| "—".to_owned(), html::duration_us)
        };
        rows.push(vec![
            esc(flow),
            c.count.to_string(),
            recent.map_or_else(|| "—".to_owned(), |n| n.to_string()),
            esc(&q(500)),
            esc(&q(950)),
            esc(&q(990)),
        ]);
    }
    body.push_str(&table(
        "Flows since the server started (latency: upper bound of the histogram bucket)",
        &["Flow", "Count", "Last minute", "p50", "p95", "p99"],
        &rows,
        "flows",
    ));
    body.push_str("</section>");

    // Sync status per object.
    body.push_str("<section aria-labelledby=\"h-sync\"><h2 id=\"h-sync\">Sync status</h2>");
    let kinds = fetch!(
        &state.db,
        KindStatus,
        fetch_all,
        "SELECT kind, \
         SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending, \
         SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS running, \
         SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END) AS dead, \
         CAST(MIN(CASE WHEN status = 'pending' THEN run_at END) AS TEXT) AS oldest_pending, \
         CAST(MAX(CASE WHEN status = 'succeeded' THEN finished_at END) AS TEXT) AS last_success \
         FROM sync_jobs GROUP BY kind ORDER BY kind"
    );
    match kinds {
        Ok(kinds) => {
            let now = Utc::now();
            let rows: Vec<Vec<String>> = kinds
                .iter()
                .map(|k| {
                    let oldest = k.oldest_pending.as_deref().and_then(parse_ts);
                    vec![
                        format!(
                            "<a href=\"/console/jobs?status=all&amp;kind={}\">{}</a>",
                            esc(&url_part(&k.kind)),
                            esc(&k.kind)
                        ),
                        k.pending.to_string(),
                        k.running.to_string(),
                        if k.dead > 0 {
                            format!("<strong>{}</strong>", k.dead)
                        } else {
                            "0".to_owned()
                        },
                        oldest.map_or_else(
                            || "—".to_owned(),
                            |t| esc(&html::age_s((now - t).num_seconds().max(0))),
                        ),
                        esc(&show_ts(k.last_success.as_deref().and_then(parse_ts))),
                    ]
                })
                .collect();
            body.push_str(&table(
                "Jobs per object and direction",
                &[
                    "Job kind",
                    "Queue depth",
                    "Running",
                    "Dead",
                    "Oldest pending",
                    "Last success",
                ],
                &rows,
                "sync-status",
            ));
        }
        Err(e) => body.push_str(&notice(&format!("Sync status unavailable: {e}"), true)),
    }
    if let Ok(cursors) = fetch!(
        &state.db,
        (String, String, String, String),
        fetch_all,
        "SELECT system, object, CAST(modified_at AS TEXT), CAST(updated_at AS TEXT) FROM sync_cursors ORDER BY system, object"
    ) {
        let now = Utc::now();
        let rows: Vec<Vec<String>> = cursors
            .iter()
            .map(|(system, object, modified, updated)| {
                let m = parse_ts(modified);
                vec![
                    esc(&format!("{system} {object}")),
                    esc(&show_ts(m)),
                    m.map_or_else(
                        || "—".to_owned(),
                        |m| esc(&html::age_s((now - m).num_seconds().max(0))),
                    ),
                    esc(&show_ts(parse_ts(updated))),
                ]
            })
            .collect();
        body.push_str(&table(
            "Change-capture cursors",
            &["Object", "Read up to", "Lag", "Moved"],
            &rows,
            "cursors",
        ));
    }
    // API quota: Salesforce reports the org's daily use on every answer.
    if let Some(sf) = &state.config.sync.salesforce {
        let quota = match sf.client.api_usage() {
            Some((used, max)) => format!(
                "Salesforce API requests today: {used} of {max} used, {} left.",
                max.saturating_sub(used)
            ),
            None => "Salesforce API quota: not reported yet (no call made since start).".to_owned(),
        };
        body.push_str(&format!("<p id=\"api-quota\">{}</p>", esc(&quota)));
    }
    body.push_str("</section>");
    html_response(
        StatusCode::OK,
        html::page("Dashboard", "/console", Some(session.viewer()), &body),
    )
}

// ---- error queue ----

#[derive(Deserialize, Default)]
struct JobsFilter {
    status: Option<String>,
    kind: Option<String>,
    q: Option<String>,
    done: Option<String>,
}

/// Salesforce ids a job's payload names (record, Opportunity, Account).
fn salesforce_ids(payload: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for k in [
        "record_id",
        "opportunity_id",
        "account_id",
        "Id",
        "salesforce_id",
    ] {
        if let Some(s) = payload.get(k).and_then(|v| v.as_str())
            && (s.len() == 15 || s.len() == 18)
            && s.bytes().all(|b| b.is_ascii_alphanumeric())
            && !out.iter().any(|x| x == s)
        {
            out.push(s.to_owned());
        }
    }
    out
}

/// Links to a Salesforce record and, through the cross-reference, its Sage twin.
async fn record_links(state: &AppState, sf_ids: &[String]) -> String {
    let c = &state.config.console;
    let mut out = Vec::new();
    for id in sf_ids {
        match &c.salesforce_url {
            Some(base) => out.push(format!(
                "<a href=\"{}/{}\" rel=\"noreferrer\">Salesforce {}</a>",
                esc(base),
                esc(&url_part(id)),
                esc(id)
            )),
            None => out.push(format!("Salesforce {}", esc(id))),
        }
        let xref = fetch!(
            &state.db,
            (String, String, String, String),
            fetch_all,
            "SELECT object, sage_system, sage_entity, sage_id FROM sync_xref WHERE salesforce_id = $1 ORDER BY object",
            id.as_str()
        )
        .unwrap_or_default();
        for (object, system, entity, sage_id) in xref {
            let label = format!("{system} {object} {entity}/{sage_id}");
            match &c.sage_record_url {
                Some(t) => out.push(format!(
                    "<a href=\"{}\" rel=\"noreferrer\">{}</a>",
                    esc(&t
                        .replace("{id}", &url_part(&sage_id))
                        .replace("{entity}", &url_part(&entity))
                        .replace("{object}", &url_part(&object))),
                    esc(&label)
                )),
                None => out.push(esc(&label)),
            }
        }
    }
    if out.is_empty() {
        "—".to_owned()
    } else {
        out.join("<br>")
    }
}

async fn jobs_page(
    State(state): State<AppState>,
    session: Session,
    Query(f): Query<JobsFilter>,
) -> Response {
    let status = f.status.clone().unwrap_or_else(|| "dead".to_owned());
    let status_filter = match status.as_str() {
        "all" => None,
        s if sync::jobs::STATUSES.contains(&s) => Some(s),
        _ => {
            return error_page(
                Some(&session),
                StatusCode::UNPROCESSABLE_ENTITY,
                "status: must be all, pending, running, succeeded, dead or resolved",
            );
        }
    };
    let jobs = match state.jobs.list(status_filter, ROWS_MAX as i64).await {
        Ok(j) => j,
        Err(e) => return internal(&session, e),
    };
    let kinds = fetch!(
        &state.db,
        (String,),
        fetch_all,
        "SELECT DISTINCT kind FROM sync_jobs ORDER BY kind"
    )
    .unwrap_or_default();
    let kind = f.kind.clone().filter(|k| !k.is_empty());
    let q =
        f.q.clone()
            .filter(|q| !q.trim().is_empty())
            .map(|q| q.to_lowercase());
    let shown: Vec<&sync::jobs::JobRecord> = jobs
        .iter()
        .filter(|j| kind.as_deref().is_none_or(|k| j.kind == k))
        .filter(|j| {
            q.as_deref().is_none_or(|q| {
                j.last_error
                    .as_deref()
                    .is_some_and(|e| e.to_lowercase().contains(q))
                    || j.payload.to_string().to_lowercase().contains(q)
                    || j.id.to_string() == q
            })
        })
        .collect();
    let mut body = String::new();
    if let Some(d) = f.done.as_deref() {
        body.push_str(&notice(d, false));
    }
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/console/jobs\" class=\"filters\" role=\"search\">\
         <label for=\"f-status\">Status</label><select id=\"f-status\" name=\"status\">"
    );
    for s in ["dead", "pending", "running", "succeeded", "resolved", "all"] {
        let sel = if s == status { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{s}\"{sel}>{s}</option>");
    }
    body.push_str("</select><label for=\"f-kind\">Kind</label><select id=\"f-kind\" name=\"kind\"><option value=\"\">any</option>");
    for (k,) in &kinds {
        let sel = if kind.as_deref() == Some(k) {
            " selected"
        } else {
            ""
        };
        let _ = write!(body, "<option value=\"{0}\"{sel}>{0}</option>", esc(k));
    }
    let _ = write!(
        body,
        "</select><label for=\"f-q\">Text</label><input id=\"f-q\" name=\"q\" value=\"{}\">\
         <button type=\"submit\">Filter</button></form>",
        esc(f.q.as_deref().unwrap_or(""))
    );
    let mut rows = Vec::new();
    for j in &shown {
        let mut actions = String::new();
        if j.status == "dead" && session.may_operate() {
            let _ = write!(
                actions,
                "<form method=\"post\" action=\"/console/jobs/{id}/retry\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\" id=\"retry-{id}\">Retry</button></form>\
                 <form method=\"post\" action=\"/console/jobs/{id}/resolve\" class=\"inline resolve\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <label for=\"note-{id}\">Comment</label>\
                 <input id=\"note-{id}\" name=\"note\" required maxlength=\"{COMMENT_MAX}\" placeholder=\"Why it is resolved\">\
                 <button type=\"submit\" id=\"resolve-{id}\">Resolve</button></form>",
                id = j.id,
                csrf = esc(&session.csrf)
            );
        }
        rows.push(vec![
            format!("<a href=\"/console/jobs/{0}\">{0}</a>", j.id),
            esc(&j.kind),
            format!(
                "<span class=\"status status-{0}\">{0}</span>",
                esc(&j.status)
            ),
            format!("{}/{}", j.attempts, j.max_attempts),
            esc(j.last_error.as_deref().unwrap_or("")),
            record_links(&state, &salesforce_ids(&j.payload)).await,
            esc(&show_ts(Some(j.updated_at))),
            actions,
        ]);
    }
    body.push_str(&table(
        &format!("{} jobs ({} shown)", status, shown.len()),
        &[
            "Job",
            "Kind",
            "Status",
            "Attempts",
            "Last error",
            "Records",
            "Updated",
            "Actions",
        ],
        &rows,
        "jobs",
    ));
    page_ok(&session, "Error queue", "/console/jobs", &body)
}

fn parse_id(s: &str) -> Option<i64> {
    s.parse().ok().filter(|n| *n > 0)
}

async fn job_page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return error_page(
            Some(&session),
            StatusCode::NOT_FOUND,
            "There is no such job.",
        );
    };
    let j = match state.jobs.get(id).await {
        Ok(j) => j,
        Err(sync::jobs::JobsError::NotFound(_)) => {
            return error_page(
                Some(&session),
                StatusCode::NOT_FOUND,
                "There is no such job.",
            );
        }
        Err(e) => return internal(&session, e),
    };
    let live = matches!(j.status.as_str(), "pending" | "running");
    let mut body = format!(
        "<dl class=\"facts\"><dt>Kind</dt><dd>{}</dd><dt>Status</dt><dd><span id=\"job-status\" class=\"status status-{s}\" aria-live=\"polite\"{poll}>{s}</span></dd>\
         <dt>Attempts</dt><dd>{}/{}</dd><dt>Last error</dt><dd>{}</dd><dt>Resolution</dt><dd>{}</dd>\
         <dt>Records</dt><dd>{}</dd><dt>Created</dt><dd>{}</dd><dt>Updated</dt><dd>{}</dd></dl>\
         <h2>Payload</h2><pre>{}</pre>",
        esc(&j.kind),
        j.attempts,
        j.max_attempts,
        esc(j.last_error.as_deref().unwrap_or("—")),
        esc(j.resolution.as_deref().unwrap_or("—")),
        record_links(&state, &salesforce_ids(&j.payload)).await,
        esc(&show_ts(Some(j.created_at))),
        esc(&show_ts(Some(j.updated_at))),
        esc(&serde_json::to_string_pretty(&j.payload).unwrap_or_default()),
        s = esc(&j.status),
        poll = if live {
            format!(" data-poll=\"/console/jobs/{id}/status\"")
        } else {
            String::new()
        },
    );
    body.push_str("<p><a href=\"/console/jobs\">Back to the error queue</a></p>");
    page_ok(&session, &format!("Job {id}"), "/console/jobs", &body)
}

/// `GET /console/jobs/{id}/status`: `{"status": …}` for the job page's live update.
async fn job_status(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match state.jobs.get(id).await {
        Ok(j) => {
            Json(json!({"status": j.status, "attempts": j.attempts, "last_error": j.last_error}))
                .into_response()
        }
        Err(sync::jobs::JobsError::NotFound(_)) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => internal(&session, e),
    }
}

async fn job_action(
    state: AppState,
    session: Session,
    id: String,
    body: Bytes,
    resolve: bool,
) -> Response {
    let f = form(&body);
    if !session.csrf_ok(&f) {
        return error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            "The form expired; reload the page and try again.",
        );
    }
    if !session.may_operate() {
        audit(
            &state,
            &session.user,
            "console.forbidden",
            &format!("job {id}"),
            if resolve { "resolve" } else { "retry" },
        )
        .await;
        return error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            "Your role may not retry or resolve jobs.",
        );
    }
    let Some(id) = parse_id(&id) else {
        return error_page(
            Some(&session),
            StatusCode::NOT_FOUND,
            "There is no such job.",
        );
    };
    let actor = format!("console:{}", session.user);
    let result = if resolve {
        let note = f
            .get("note")
            .map(|n| n.trim().to_owned())
            .unwrap_or_default();
        if note.is_empty() || note.chars().count() > COMMENT_MAX {
            return error_page(
                Some(&session),
                StatusCode::UNPROCESSABLE_ENTITY,
                "Say why the job is resolved (a comment of 1 to 2000 characters).",
            );
        }
        state.jobs.resolve(id, &actor, &note).await
    } else {
        state.jobs.retry(id, &actor).await
    };
    match result {
        Ok(_) if resolve => redirect(&format!(
            "/console/jobs?done={}",
            url_part(&format!("Job {id} resolved."))
        )),
        Ok(_) => redirect(&format!("/console/jobs/{id}")),
        Err(sync::jobs::JobsError::NotFound(_)) => error_page(
            Some(&session),
            StatusCode::NOT_FOUND,
            "There is no such job.",
        ),
        Err(e @ sync::jobs::JobsError::WrongState { .. }) => {
            error_page(Some(&session), StatusCode::CONFLICT, &e.to_string())
        }
        Err(e) => internal(&session, e),
    }
}

async fn job_retry(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    job_action(state, session, id, body, false).await
}

async fn job_resolve(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    job_action(state, session, id, body, true).await
}

// ---- review queue ----

#[derive(Deserialize, Default)]
struct DoneQuery {
    done: Option<String>,
}

async fn review_page(
    State(state): State<AppState>,
    session: Session,
    Query(d): Query<DoneQuery>,
) -> Response {
    let items = match sync::review::Review::new(state.db.clone())
        .open_items(ROWS_MAX as i64)
        .await
    {
        Ok(i) => i,
        Err(e) => return internal(&session, e),
    };
    let mut body = d
        .done
        .as_deref()
        .map(|t| notice(t, false))
        .unwrap_or_default();
    let mut rows = Vec::new();
    for i in &items {
        let action = if session.may_resolve_review() {
            format!(
                "<form method=\"post\" action=\"/console/review/{id}/resolve\" class=\"inline resolve\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <label for=\"decision-{id}\">Decision</label>\
                 <input id=\"decision-{id}\" name=\"resolution\" required maxlength=\"{COMMENT_MAX}\" placeholder=\"The decision taken\">\
                 <button type=\"submit\">Resolve</button></form>",
                esc(&session.csrf),
                id = i.id
            )
        } else {
            String::new()
        };
        let links =
            record_links(&state, &salesforce_ids(&json!({"record_id": i.record_key}))).await;
        rows.push(vec![
            i.id.to_string(),
            esc(&i.kind),
            esc(&i.object),
            format!("{}<br>{}", esc(&i.record_key), links),
            format!(
                "<pre>{}</pre>",
                esc(&serde_json::to_string_pretty(&i.detail).unwrap_or_default())
            ),
            action,
        ]);
    }
    body.push_str(&table(
        &format!("{} open items", items.len()),
        &["Item", "Kind", "Object", "Record", "Detail", "Decision"],
        &rows,
        "review",
    ));
    page_ok(&session, "Review queue", "/console/review", &body)
}

async fn review_resolve(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    if !session.csrf_ok(&f) {
        return error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            "The form expired; reload the page and try again.",
        );
    }
    if !session.may_resolve_review() {
        return error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            "Your role may not resolve review items.",
        );
    }
    let Some(id) = parse_id(&id) else {
        return error_page(
            Some(&session),
            StatusCode::NOT_FOUND,
            "There is no such item.",
        );
    };
    let resolution = f
        .get("resolution")
        .map(|n| n.trim().to_owned())
        .unwrap_or_default();
    if resolution.is_empty() || resolution.chars().count() > COMMENT_MAX {
        return error_page(
            Some(&session),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Describe the decision (1 to 2000 characters).",
        );
    }
    match sync::review::Review::new(state.db.clone())
        .resolve(id, &format!("console:{}", session.user), &resolution)
        .await
    {
        Ok(true) => redirect(&format!(
            "/console/review?done={}",
            url_part(&format!("Item {id} resolved."))
        )),
        Ok(false) => error_page(
            Some(&session),
            StatusCode::CONFLICT,
            "That item is not open (resolved already?).",
        ),
        Err(e) => internal(&session, e),
    }
}

// ---- payments ----

#[derive(Deserialize, Default)]
struct PaymentFilter {
    opportunity: Option<String>,
    status: Option<String>,
    amount: Option<String>,
    currency: Option<String>,
}

/// `12.34` in `currency` (2 decimals when none is given) as minor units.
fn parse_amount_minor(amount: &str, currency: Option<&str>) -> Result<i64, String> {
    let c = ledger::Currency::parse(currency.unwrap_or("USD")).map_err(|e| e.to_string())?;
    ledger::Money::parse_decimal(amount.trim(), c)
        .map(|m| m.amount_minor())
        .map_err(|e| e.to_string())
}

pub(crate) fn money(minor: i64, currency: &str) -> String {
    match ledger::Currency::parse(currency) {
        Ok(c) => format!(
            "{} {}",
            ledger::export::format_minor(i128::from(minor), c),
            c.code()
        ),
        Err(_) => format!("{minor} (minor units) {currency}"),
    }
}

const PAYMENT_STATUSES: &[&str] = &[
    "captured",
    "requires_capture",
    "pending",
    "settled",
    "failed",
    "unknown",
    "voided",
    "refunded",
    "partially_refunded",
    "returned",
];

async fn payments_page(
    State(state): State<AppState>,
    session: Session,
    Query(f): Query<PaymentFilter>,
) -> Response {
    let Some(payments) = state.payments.clone() else {
        return error_page(
            Some(&session),
            StatusCode::NOT_FOUND,
            "Payments are not configured ([gateway] and [vault]).",
        );
    };
    let opp = f
        .opportunity
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let status = f.status.as_deref().filter(|s| !s.is_empty());
    let currency = f
        .currency
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let mut body = String::new();
    let amount = match f.amount.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(a) => match parse_amount_minor(a, currency) {
            Ok(m) => Some(m),
            Err(e) => {
                body.push_str(&notice(&format!("Amount: {e}"), true));
                None
            }
        },
    };
    let found = match payments.search(opp, status, amount, ROWS_MAX as i64).await {
        Ok(p) => p,
        Err(e) => return internal(&session, e),
    };
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/console/payments\" class=\"filters\" role=\"search\">\
         <label for=\"p-opp\">Opportunity</label><input id=\"p-opp\" name=\"opportunity\" value=\"{}\">\
         <label for=\"p-status\">Status</label><select id=\"p-status\" name=\"status\"><option value=\"\">any</option>",
        esc(opp.unwrap_or(""))
    );
    for s in PAYMENT_STATUSES {
        let sel = if status == Some(*s) { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{s}\"{sel}>{s}</option>");
    }
    let _ = write!(
        body,
        "</select><label for=\"p-amount\">Amount</label><input id=\"p-amount\" name=\"amount\" inputmode=\"decimal\" value=\"{}\">\
         <label for=\"p-currency\">Currency</label><input id=\"p-currency\" name=\"currency\" size=\"4\" value=\"{}\">\
         <button type=\"submit\">Search</button></form>",
        esc(f.amount.as_deref().unwrap_or("")),
        esc(currency.unwrap_or(""))
    );
    let mut rows = Vec::new();
    for p in &found {
        let opp_link = match &p.opportunity_id {
            Some(o) => record_links(&state, std::slice::from_ref(o)).await,
            None => "—".to_owned(),
        };
        rows.push(vec![
            esc(&p.id),
            esc(&show_ts(Some(p.created_at))),
            opp_link,
            esc(p.account_id.as_deref().unwrap_or("—")),
            esc(&money(p.amount_minor, &p.currency)),
            esc(p.method_kind),
            format!(
                "<span class=\"status status-{0}\">{0}</span>",
                esc(p.status)
            ),
            esc(&p.invoice_refs.join(", ")),
            esc(p.failure_message.as_deref().unwrap_or("")),
        ]);
    }
    body.push_str(&table(
        &format!("{} payments", found.len()),
        &[
            "Payment",
            "Created",
            "Opportunity",
            "Account",
            "Amount",
            "Method",
            "Status",
            "Invoices",
            "Failure",
        ],
        &rows,
        "payments",
    ));
    if session.may_operate() {
        body.push_str(&pay::link_form(&session.csrf));
    }
    page_ok(&session, "Payments", "/console/payments", &body)
}

// ---- reconciliation ----

async fn recon_page(State(state): State<AppState>, session: Session) -> Response {
    let store = reconcile::store::Store::new(state.db.clone());
    let runs = match store.runs(50).await {
        Ok(r) => r,
        Err(e) => return internal(&session, e),
    };
    let mut body = String::new();
    let mut bars = Vec::new();
    let mut rows = Vec::new();
    for r in &runs {
        let Some(id) = r.id else { continue };
        // Category counts per run, for the outcome chart (the latest 12 runs).
        if bars.len() < 12
            && let Ok(report) = store.report(id).await
        {
            let mut by_cat: std::collections::BTreeMap<String, u64> =
                std::collections::BTreeMap::new();
            for cats in report.totals.values() {
                for (c, t) in cats {
                    *by_cat.entry(c.clone()).or_default() += t.count;
                }
            }
            bars.push((format!("run {id}"), by_cat.into_iter().collect::<Vec<_>>()));
        }
        rows.push(vec![
            format!("<a href=\"/console/reconciliation/{id}\">Run {id}</a>"),
            esc(&r.period),
            esc(&r.entity),
            esc(&r.actor),
            esc(&show_ts(DateTime::from_timestamp_millis(r.finished_at_ms))),
            format!(
                "<code>{}</code>",
                esc(r.digest.get(..16).unwrap_or(&r.digest))
            ),
        ]);
    }
    if !bars.is_empty() {
        body.push_str(&html::stacked_bars(
            "chart-recon",
            "Outcomes per run (items by category)",
            &bars,
        ));
    }
    body.push_str(&table(
        "Reconciliation runs, newest first",
        &["Run", "Period", "Entity", "By", "Finished", "Digest"],
        &rows,
        "runs",
    ));
    page_ok(&session, "Reconciliation", "/console/reconciliation", &body)
}

#[derive(Deserialize, Default)]
struct RunFilter {
    kind: Option<String>,
    category: Option<String>,
}

async fn recon_run_page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(f): Query<RunFilter>,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return error_page(
            Some(&session),
            StatusCode::NOT_FOUND,
            "There is no such run.",
        );
    };
    let store = reconcile::store::Store::new(state.db.clone());
    let report = match store.report(id).await {
        Ok(r) => r,
        Err(e) => {
            let text = e.to_string();
            if text.contains("no run") || text.contains("not found") {
                return error_page(
                    Some(&session),
                    StatusCode::NOT_FOUND,
                    "There is no such run.",
                );
            }
            return internal(&session, e);
        }
    };
    let mut body = format!(
        "<dl class=\"facts\"><dt>Period</dt><dd>{}</dd><dt>Entity</dt><dd>{}</dd><dt>By</dt><dd>{}</dd><dt>Digest</dt><dd><code>{}</code></dd></dl>",
        esc(&report.run.period),
        esc(&report.run.entity),
        esc(&report.run.actor),
        esc(&report.run.digest)
    );
    // Category totals, each a link to its drill-down.
    let mut rows = Vec::new();
    for (kind, cats) in &report.totals {
        for (cat, t) in cats {
            let amounts: Vec<String> = t.amount_minor.iter().map(|(c, m)| money(*m, c)).collect();
            rows.push(vec![
                esc(kind),
                format!(
                    "<a href=\"/console/reconciliation/{id}?kind={}&amp;category={}#items\">{}</a>",
                    esc(&url_part(kind)),
                    esc(&url_part(cat)),
                    esc(cat)
                ),
                t.count.to_string(),
                esc(&amounts.join(", ")),
            ]);
        }
    }
    body.push_str(&table(
        "Totals by category",
        &["Kind", "Category", "Count", "Amount"],
        &rows,
        "totals",
    ));
    let kind = f.kind.as_deref().filter(|s| !s.is_empty());
    let cat = f.category.as_deref().filter(|s| !s.is_empty());
    let items: Vec<&reconcile::store::ResultRow> = report
        .results
        .iter()
        .filter(|r| kind.is_none_or(|k| r.kind == k) && cat.is_none_or(|c| r.category == c))
        .take(ROWS_MAX)
        .collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            vec![
                esc(&r.item_key),
                esc(&r.kind),
                esc(&r.category),
                esc(r.rule.as_deref().unwrap_or("—")),
                format!("{}%", r.confidence),
                esc(&r.entity),
                esc(&r.customer),
                esc(&money(r.amount_minor, &r.currency)),
                esc(&money(r.applied_minor, &r.currency)),
                esc(&money(r.open_minor, &r.currency)),
                esc(r.related.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    let caption = match (kind, cat) {
        (None, None) => format!("All {} items", items.len()),
        _ => format!(
            "{} items: {} {}",
            items.len(),
            kind.unwrap_or("any kind"),
            cat.unwrap_or("any category")
        ),
    };
    body.push_str("<section id=\"items\" aria-label=\"Items\">");
    body.push_str(&table(
        &caption,
        &[
            "Item",
            "Kind",
            "Category",
            "Rule",
            "Confidence",
            "Entity",
            "Customer",
            "Amount",
            "Applied",
            "Open",
            "Related",
        ],
        &rows,
        "items-table",
    ));
    body.push_str("</section>");
    let apps: Vec<Vec<String>> = report
        .applications
        .iter()
        .take(ROWS_MAX)
        .map(|a| {
            vec![
                esc(&a.payment_key),
                esc(&a.document),
                esc(&a.rule),
                esc(&money(a.payment_amount_minor, &a.payment_currency)),
                esc(&money(a.item_amount_minor, &a.item_currency)),
                a.sage_job_id.map_or_else(
                    || "—".to_owned(),
                    |j| format!("<a href=\"/console/jobs/{j}\">{j}</a>"),
                ),
            ]
        })
        .collect();
    body.push_str(&table(
        "Applications (payment → document)",
        &[
            "Payment",
            "Document",
            "Rule",
            "Payment amount",
            "Applied to item",
            "Sage job",
        ],
        &apps,
        "applications",
    ));
    body.push_str("<p><a href=\"/console/reconciliation\">All runs</a></p>");
    page_ok(
        &session,
        &format!("Reconciliation run {id}"),
        "/console/reconciliation",
        &body,
    )
}

// ---- ledger ----

async fn ledger_page(
    State(state): State<AppState>,
    session: Session,
    Query(d): Query<DoneQuery>,
) -> Response {
    let tb = match state.ledger.trial_balance(None, None).await {
        Ok(t) => t,
        Err(e) => return internal(&session, e),
    };
    let mut body = d
        .done
        .as_deref()
        .map(|t| notice(t, false))
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = tb
        .rows
        .iter()
        .map(|r| {
            let c = r.account.currency;
            let f = |m: i64| {
                if m == 0 {
                    String::new()
                } else {
                    ledger::export::format_minor(i128::from(m), c)
                }
            };
            vec![
                esc(&format!("{} {}", r.account.entity, r.account.code)),
                esc(&r.account.name),
                esc(c.code()),
                esc(&f(r.debit_minor)),
                esc(&f(r.credit_minor)),
            ]
        })
        .collect();
    body.push_str(&table(
        "Trial balance (all entities, today)",
        &["Account", "Name", "Currency", "Debit", "Credit"],
        &rows,
        "trial-balance",
    ));
    let totals: Vec<Vec<String>> = tb
        .totals
        .iter()
        .map(|(c, (d, cr))| {
            vec![
                esc(c.code()),
                esc(&ledger::export::format_minor(*d, *c)),
                esc(&ledger::export::format_minor(*cr, *c)),
                if d == cr {
                    "balanced".to_owned()
                } else {
                    "<strong>NOT balanced</strong>".to_owned()
                },
            ]
        })
        .collect();
    body.push_str(&table(
        "Totals per currency",
        &["Currency", "Debits", "Credits", "Check"],
        &totals,
        "tb-totals",
    ));
    body.push_str("<section aria-labelledby=\"h-chain\"><h2 id=\"h-chain\">Hash chain</h2>");
    let head = state.ledger.chain_head().await;
    let (entries, unsealed) = crate::server::ledger_entry_count(&state.db)
        .await
        .unwrap_or((0, 0));
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>Entries</dt><dd>{entries}</dd><dt>Awaiting sealing</dt><dd>{unsealed}</dd><dt>Chain head</dt><dd>{}</dd>",
        match head {
            Ok(Some((seq, hash))) => format!("#{seq} <code>{}</code>", hex::encode(hash)),
            Ok(None) => "empty".to_owned(),
            Err(e) => esc(&format!("unavailable: {e}")),
        }
    );
    let last = state
        .live
        .last_verify
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match last {
        Some(v) => {
            let verdict = if v.problems == 0 {
                "<span id=\"chain-verdict\" class=\"status status-succeeded\">intact</span>".to_owned()
            } else {
                format!(
                    "<span id=\"chain-verdict\" class=\"status status-dead\">{} problems</span> — first: {}",
                    v.problems,
                    esc(v.first_break.as_deref().unwrap_or(""))
                )
            };
            let _ = write!(
                body,
                "<dt>Last verification</dt><dd>{verdict}: {} entries, {} sealed, {} unsealed, in {} ms — {} by {}</dd>",
                v.entries,
                v.sealed,
                v.unsealed,
                v.elapsed_ms,
                esc(&show_ts(Some(v.at))),
                esc(&v.by)
            );
        }
        None => body.push_str("<dt>Last verification</dt><dd><span id=\"chain-verdict\">not run since the server started</span></dd>"),
    }
    body.push_str("</dl>");
    if session.may_resolve_review() {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/console/ledger/verify\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"verify\">Verify the chain now</button></form>",
            esc(&session.csrf)
        );
    }
    body.push_str("</section>");
    html_response(
        StatusCode::OK,
        html::page("Ledger", "/console/ledger", Some(session.viewer()), &body),
    )
}

async fn ledger_verify(State(state): State<AppState>, session: Session, body: Bytes) -> Response {
    let f = form(&body);
    if !session.csrf_ok(&f) {
        return error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            "The form expired; reload the page and try again.",
        );
    }
    if !session.may_resolve_review() {
        return error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            "Your role may not run the verification.",
        );
    }
    let report = match state.ledger.verify(&|_| {}).await {
        Ok(r) => r,
        Err(e) => return internal(&session, e),
    };
    let summary = VerifySummary {
        at: Utc::now(),
        by: session.user.clone(),
        entries: report.entries,
        sealed: report.sealed,
        unsealed: report.unsealed,
        problems: report.problems,
        first_break: report.first_break.as_ref().map(|b| b.reason.clone()),
        elapsed_ms: report.elapsed_ms,
    };
    audit(
        &state,
        &format!("console:{}", session.user),
        "ledger.verify",
        "ledger",
        &format!("entries={} problems={}", summary.entries, summary.problems),
    )
    .await;
    *state
        .live
        .last_verify
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(summary);
    redirect(&format!(
        "/console/ledger?done={}",
        url_part("Chain verified.")
    ))
}

// ---- audit trail ----

#[derive(Deserialize, Default)]
struct AuditFilter {
    actor: Option<String>,
    action: Option<String>,
}

async fn audit_page(
    State(state): State<AppState>,
    session: Session,
    Query(f): Query<AuditFilter>,
) -> Response {
    let actor = f.actor.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let action = f.action.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let like = action.map(|a| format!("{}%", a.replace(['%', '_'], "")));
    let rows = fetch!(
        &state.db,
        (i64, String, String, String, String, String),
        fetch_all,
        "SELECT id, CAST(at AS TEXT), actor, action, subject, detail FROM audit_log \
         WHERE (CAST($1 AS TEXT) IS NULL OR actor = $1) AND (CAST($2 AS TEXT) IS NULL OR action LIKE $2) \
         ORDER BY id DESC LIMIT $3",
        actor,
        like.as_deref(),
        ROWS_MAX as i64
    );
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return internal(&session, e),
    };
    let mut body = format!(
        "<form method=\"get\" action=\"/console/audit\" class=\"filters\" role=\"search\">\
         <label for=\"a-actor\">Actor</label><input id=\"a-actor\" name=\"actor\" value=\"{}\">\
         <label for=\"a-action\">Action starts with</label><input id=\"a-action\" name=\"action\" value=\"{}\">\
         <button type=\"submit\">Filter</button></form>",
        esc(actor.unwrap_or("")),
        esc(action.unwrap_or(""))
    );
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(id, at, actor, action, subject, detail)| {
            vec![
                id.to_string(),
                esc(&show_ts(parse_ts(at))),
                esc(actor),
                esc(action),
                esc(subject),
                esc(detail),
            ]
        })
        .collect();
    body.push_str(&table(
        &format!("Latest {} records", cells.len()),
        &["#", "At", "Actor", "Action", "Subject", "Detail"],
        &cells,
        "audit",
    ));
    page_ok(&session, "Audit trail", "/console/audit", &body)
}

/// The [`Live`] state for a new server.
pub fn live() -> Arc<Live> {
    Arc::new(Live::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_login_only_console_paths_are_followed() {
        for (next, want) in [
            (
                Some("/console/jobs?status=dead"),
                "/console/jobs?status=dead",
            ),
            (Some("/console"), "/console"),
            (Some("https://evil.example/console"), "/console"),
            (Some("//evil.example/console"), "/console"),
            (Some("/console\\..\\evil"), "/console"),
            (Some("/consolex"), "/console"),
            (Some("/console/login?next=/x"), "/console"),
            (Some("/pay/x"), "/console"),
            (None, "/console"),
        ] {
            assert_eq!(safe_next(next), want, "{next:?}");
        }
    }

    #[test]
    fn logins_lock_after_repeated_failures_per_name() {
        let live = Live::default();
        for _ in 0..LOGIN_MAX_FAILURES {
            assert!(live.may_try("ada", 1_000));
            live.failed("ada", 1_000);
        }
        assert!(!live.may_try("ada", 1_000 + LOGIN_WINDOW_S - 1));
        assert!(live.may_try("bob", 1_000), "per name");
        assert!(
            live.may_try("ada", 1_000 + LOGIN_WINDOW_S),
            "the window passes"
        );
        live.succeeded("ada");
        assert!(live.may_try("ada", 1_001));
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("xcl_session=no; cl_session=yes; other=1"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("yes"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn timestamps_read_from_both_backends() {
        let a = parse_ts("2026-11-26T18:00:00.123456Z").unwrap();
        let b = parse_ts("2026-11-26 18:00:00.123456+00").unwrap();
        assert_eq!(a, b);
        assert!(parse_ts("yesterday").is_none());
    }
}
