//! `SalesforceClient`: the REST connector. Logs in (JWT bearer or client credentials), keeps
//! the token and its `instance_url`, re-logs in once on `401 INVALID_SESSION_ID`, reads
//! `Sforce-Limit-Info` on every answer and slows down near the daily limit, and counts every
//! call it makes (per kind: `auth`, `query`, `sobject`, `describe`, `collections`, `bulk`).
//!
//! It does not retry on its own (apart from that one re-login): every error says whether
//! it is [`retryable`](SalesforceError::retryable), and the job engine decides when to try
//! again. So call counts are exact and nothing is sent twice behind the caller's back.
//!
//! ## Limit policy ([`LimitPolicy`])
//! The last `api-usage=N/M` seen is kept ([`SalesforceClient::api_usage`]). Below
//! `slow_above_permille` (default 80 %) calls go out at once. Above it, each call first
//! sleeps `max_delay_ms × (usage − threshold) / (100 % − threshold)`: nothing at the
//! threshold, the full delay at the limit. At or above `reserve_permille` (default 100 %:
//! off) calls are refused with [`SalesforceError::LimitReserve`] without being sent, which
//! keeps the rest of the allowance for people and other integrations. Logins are never
//! delayed or refused.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex as AsyncMutex;

use super::auth::{Credentials, Secret};
use super::error::SalesforceError;
use super::wire::{
    self, ApiError, CollectionRequest, Describe, OAuthError, QueryPage, Record, SaveResult,
    TokenResponse,
};

/// Salesforce accepts at most this many records in one sObject Collections call.
pub const COLLECTION_MAX_RECORDS: usize = 200;

/// When to slow down and when to stop spending the daily API allowance.
#[derive(Clone, Debug)]
pub struct LimitPolicy {
    /// Usage (per mille of the daily limit) above which calls are delayed.
    pub slow_above_permille: u64,
    /// The delay at 100 % usage; proportionally less between the threshold and the limit.
    pub max_delay_ms: u64,
    /// Usage at or above which calls are refused before being sent (1000 = never).
    pub reserve_permille: u64,
}

impl Default for LimitPolicy {
    fn default() -> LimitPolicy {
        LimitPolicy {
            slow_above_permille: 800,
            max_delay_ms: 2_000,
            reserve_permille: 1_000,
        }
    }
}

/// Where and how to talk to Salesforce.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://login.salesforce.com`, `https://test.salesforce.com` or the My Domain URL
    /// (client credentials need My Domain). Also the JWT `aud`.
    pub login_url: String,
    /// Overrides the token answer's `instance_url` when set.
    pub instance_url: Option<String>,
    /// REST API version without the `v`, e.g. `62.0`.
    pub api_version: String,
    /// Timeout of each HTTP call.
    pub timeout_ms: u64,
    pub limits: LimitPolicy,
    /// Bulk API 2.0: how often a job is polled, and for how long at most.
    pub bulk_poll_interval_ms: u64,
    pub bulk_timeout_ms: u64,
}

impl ClientConfig {
    pub fn new(login_url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            login_url: login_url.into(),
            instance_url: None,
            api_version: "62.0".into(),
            timeout_ms: 30_000,
            limits: LimitPolicy::default(),
            bulk_poll_interval_ms: 2_000,
            bulk_timeout_ms: 600_000,
        }
    }
}

#[derive(Clone)]
struct Token {
    access: Secret,
    instance_url: String,
    generation: u64,
}

/// A raw answer: status, headers, body.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub endpoint: String,
}

impl Answer {
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, SalesforceError> {
        serde_json::from_slice(&self.body).map_err(|e| self.malformed(e))
    }

    pub(crate) fn malformed(&self, e: impl fmt::Display) -> SalesforceError {
        SalesforceError::MalformedResponse {
            status: self.status,
            endpoint: self.endpoint.clone(),
            detail: e.to_string(),
        }
    }

    /// `Err(Api)` for a status ≥ 400 (300 is handled by the caller that expects it).
    pub(crate) fn check(self) -> Result<Answer, SalesforceError> {
        if self.status < 300 {
            return Ok(self);
        }
        Err(self.api_error())
    }

    pub(crate) fn api_error(&self) -> SalesforceError {
        let errors = serde_json::from_slice::<Vec<ApiError>>(&self.body).unwrap_or_default();
        SalesforceError::Api {
            status: self.status,
            errors,
        }
    }
}

pub(crate) enum Body {
    Empty,
    Json(Vec<u8>),
    Csv(Vec<u8>),
}

/// Counts of calls made, per kind, and time spent slowing down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    pub total: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub throttled_ms: u64,
    pub logins: u64,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    credentials: Credentials,
    token: AsyncMutex<Option<Token>>,
    generation: AtomicU64,
    usage: Mutex<Option<(u64, u64)>>,
    stats: Mutex<CallStats>,
}

/// The Salesforce REST client. Cheap to clone (shared state).
#[derive(Clone)]
pub struct SalesforceClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for SalesforceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceClient")
            .field("login_url", &self.inner.config.login_url)
            .field("api_version", &self.inner.config.api_version)
            .field("credentials", &self.inner.credentials)
            .field("api_usage", &self.api_usage())
            .finish_non_exhaustive()
    }
}

impl SalesforceClient {
    pub fn new(
        config: ClientConfig,
        credentials: Credentials,
    ) -> Result<SalesforceClient, SalesforceError> {
        let http = gateway::http::client_builder()
            .build()
            .map_err(|e| SalesforceError::Invalid(format!("http client: {e}")))?;
        Ok(SalesforceClient {
            inner: Arc::new(Inner {
                http,
                config,
                credentials,
                token: AsyncMutex::new(None),
                generation: AtomicU64::new(0),
                usage: Mutex::new(None),
                stats: Mutex::new(CallStats::default()),
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The last `Sforce-Limit-Info: api-usage=used/max` seen.
    pub fn api_usage(&self) -> Option<(u64, u64)> {
        *self
            .inner
            .usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls made so far (logins included in `by_kind["auth"]` and `logins`).
    pub fn stats(&self) -> CallStats {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `/services/data/vXX.X`
    pub fn data_path(&self) -> String {
        format!("/services/data/v{}", self.inner.config.api_version)
    }

    fn count(&self, kind: &'static str) {
        let mut s = self
            .inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.total += 1;
        *s.by_kind.entry(kind).or_default() += 1;
        if kind == "auth" {
            s.logins += 1;
        }
    }

    /// Logs in now (otherwise the first call does).
    pub async fn login(&self) -> Result<(), SalesforceError> {
        let mut guard = self.inner.token.lock().await;
        *guard = Some(self.fetch_token().await?);
        Ok(())
    }

    async fn fetch_token(&self) -> Result<Token, SalesforceError> {
        let config = &self.inner.config;
        let login_url = config.login_url.trim_end_matches('/');
        let form = self
            .inner
            .credentials
            .token_form(login_url, chrono::Utc::now().timestamp())?;
        let endpoint = "/services/oauth2/token".to_owned();
        self.count("auth");
        let resp = self
            .inner
            .http
            .post(format!("{login_url}{endpoint}"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .timeout(Duration::from_millis(config.timeout_ms))
            .body(form)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport)?;
        let answer = Answer {
            status,
            headers,
            body,
            endpoint,
        };
        if status != 200 {
            return Err(match serde_json::from_slice::<OAuthError>(&answer.body) {
                Ok(e) => SalesforceError::oauth(status, e),
                Err(e) => answer.malformed(e),
            });
        }
        let token: TokenResponse = answer.json()?;
        let instance_url = config
            .instance_url
            .clone()
            .unwrap_or(token.instance_url)
            .trim_end_matches('/')
            .to_owned();
        Ok(Token {
            access: Secret::new(token.access_token),
            instance_url,
            generation: self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1,
        })
    }

    async fn current_token(&self) -> Result<Token, SalesforceError> {
        let mut guard = self.inner.token.lock().await;
        if let Some(t) = guard.as_ref() {
            return Ok(t.clone());
        }
        let t = self.fetch_token().await?;
        *guard = Some(t.clone());
        Ok(t)
    }

    /// Replaces the token unless someone already did since `stale` was handed out.
    async fn refresh_token(&self, stale: u64) -> Result<Token, SalesforceError> {
        let mut guard = self.inner.token.lock().await;
        if let Some(t) = guard.as_ref().filter(|t| t.generation != stale) {
            return Ok(t.clone());
        }
        *guard = None;
        let t = self.fetch_token().await?;
        *guard = Some(t.clone());
        Ok(t)
    }

    async fn throttle(&self) -> Result<(), SalesforceError> {
        let Some((used, max)) = self.api_usage() else {
            return Ok(());
        };
        let policy = &self.inner.config.limits;
        let delay_ms =
            limit_delay_ms(policy, used, max).ok_or(SalesforceError::LimitReserve { used, max })?;
        if delay_ms > 0 {
            tracing::debug!(
                used,
                max,
                delay_ms,
                "salesforce api usage high: slowing down"
            );
            self.inner
                .stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .throttled_ms += delay_ms;
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        Ok(())
    }

    /// One API call: throttle, authenticate, send, read the limit header; on 401 log in again
    /// once and resend. `path` is relative to the instance (`/services/data/…`).
    pub(crate) async fn send(
        &self,
        kind: &'static str,
        method: Method,
        path: &str,
        body: Body,
        extra_headers: &[(&str, &str)],
    ) -> Result<Answer, SalesforceError> {
        self.throttle().await?;
        let mut token = self.current_token().await?;
        let mut refreshed = false;
        loop {
            let url = format!("{}{}", token.instance_url, path);
            let mut req = self
                .inner
                .http
                .request(method.clone(), url)
                .header(AUTHORIZATION, format!("Bearer {}", token.access.expose()))
                .header("Accept", "application/json")
                .timeout(Duration::from_millis(self.inner.config.timeout_ms));
            for (k, v) in extra_headers {
                req = req.header(*k, *v);
            }
            req = match &body {
                Body::Empty => req,
                Body::Json(b) => req.header(CONTENT_TYPE, "application/json").body(b.clone()),
                Body::Csv(b) => req.header(CONTENT_TYPE, "text/csv").body(b.clone()),
            };
            self.count(kind);
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            if let Some(usage) = headers
                .get("Sforce-Limit-Info")
                .and_then(|v| v.to_str().ok())
                .and_then(wire::parse_limit_info)
            {
                *self
                    .inner
                    .usage
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(usage);
            }
            let body_bytes = resp.bytes().await.map_err(transport)?;
            if status == 401 && !refreshed {
                tracing::info!(
                    endpoint = path_only(path),
                    "salesforce session expired: logging in again"
                );
                refreshed = true;
                token = self.refresh_token(token.generation).await?;
                continue;
            }
            return Ok(Answer {
                status,
                headers,
                body: body_bytes,
                endpoint: path_only(path).to_owned(),
            });
        }
    }

    async fn send_json<T: serde::Serialize>(
        &self,
        kind: &'static str,
        method: Method,
        path: &str,
        value: &T,
    ) -> Result<Answer, SalesforceError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| SalesforceError::Invalid(format!("request body: {e}")))?;
        self.send(kind, method, path, Body::Json(body), &[]).await
    }

    // ---- SOQL ----

    /// `GET /query?q=…`: the first page (up to 2,000 records).
    pub async fn query(&self, soql: &str) -> Result<QueryPage, SalesforceError> {
        self.query_at("query", soql).await
    }

    /// `GET /queryAll?q=…`: like [`query`](Self::query), deleted and archived records
    /// included (`IsDeleted = true`).
    pub async fn query_all(&self, soql: &str) -> Result<QueryPage, SalesforceError> {
        self.query_at("queryAll", soql).await
    }

    async fn query_at(&self, resource: &str, soql: &str) -> Result<QueryPage, SalesforceError> {
        let q: String = form_urlencoded::byte_serialize(soql.as_bytes()).collect();
        let path = format!("{}/{resource}?q={q}", self.data_path());
        self.send("query", Method::GET, &path, Body::Empty, &[])
            .await?
            .check()?
            .json()
    }

    /// The page at a `nextRecordsUrl`.
    pub async fn query_more(&self, next_records_url: &str) -> Result<QueryPage, SalesforceError> {
        if !next_records_url.starts_with("/services/data/") {
            return Err(SalesforceError::Invalid(format!(
                "nextRecordsUrl {next_records_url:?} is not a /services/data/ path"
            )));
        }
        self.send("query", Method::GET, next_records_url, Body::Empty, &[])
            .await?
            .check()?
            .json()
    }

    /// Page by page: `while let Some(records) = pager.next_page().await? { … }`.
    pub fn query_pages(&self, soql: &str) -> QueryPager {
        QueryPager {
            client: self.clone(),
            state: PagerState::Start {
                soql: soql.to_owned(),
                all: false,
            },
        }
    }

    /// As [`query_pages`](Self::query_pages), through `queryAll`.
    pub fn query_all_pages(&self, soql: &str) -> QueryPager {
        QueryPager {
            client: self.clone(),
            state: PagerState::Start {
                soql: soql.to_owned(),
                all: true,
            },
        }
    }

    /// Every record of a query (all pages) in memory: for small results.
    pub async fn query_collect(&self, soql: &str) -> Result<Vec<Record>, SalesforceError> {
        let mut pager = self.query_pages(soql);
        let mut out = Vec::new();
        while let Some(mut page) = pager.next_page().await? {
            out.append(&mut page);
        }
        Ok(out)
    }

    // ---- single records ----

    fn sobject_path(&self, object: &str) -> Result<String, SalesforceError> {
        check_name(object)?;
        Ok(format!("{}/sobjects/{object}", self.data_path()))
    }

    /// `POST /sobjects/{Obj}` → the new id (201 `{id, success, errors}`).
    pub async fn create(&self, object: &str, record: &Record) -> Result<String, SalesforceError> {
        let path = self.sobject_path(object)?;
        let answer = self
            .send_json("sobject", Method::POST, &path, &record.fields)
            .await?
            .check()?;
        let result: SaveResult = answer.json()?;
        save_result_id(&answer, result)
    }

    /// `GET /sobjects/{Obj}/{Id}?fields=…` (all fields when `fields` is empty).
    pub async fn get(
        &self,
        object: &str,
        id: &str,
        fields: &[&str],
    ) -> Result<Record, SalesforceError> {
        check_id(id)?;
        let mut path = format!("{}/{id}", self.sobject_path(object)?);
        if !fields.is_empty() {
            path.push_str("?fields=");
            path.push_str(&fields.join(","));
        }
        self.send("sobject", Method::GET, &path, Body::Empty, &[])
            .await?
            .check()?
            .json()
    }

    /// `PATCH /sobjects/{Obj}/{Id}` → 204.
    pub async fn update(
        &self,
        object: &str,
        id: &str,
        record: &Record,
    ) -> Result<(), SalesforceError> {
        check_id(id)?;
        let path = format!("{}/{id}", self.sobject_path(object)?);
        self.send_json("sobject", Method::PATCH, &path, &record.fields)
            .await?
            .check()?;
        Ok(())
    }

    /// `DELETE /sobjects/{Obj}/{Id}` → 204.
    pub async fn delete(&self, object: &str, id: &str) -> Result<(), SalesforceError> {
        check_id(id)?;
        let path = format!("{}/{id}", self.sobject_path(object)?);
        self.send("sobject", Method::DELETE, &path, Body::Empty, &[])
            .await?
            .check()?;
        Ok(())
    }

    /// `PATCH /sobjects/{Obj}/{ExtField}/{value}`: 201 created, 200 / 204 updated, 300 →
    /// [`SalesforceError::MultipleMatches`] with the candidate ids (none is picked).
    pub async fn upsert(
        &self,
        object: &str,
        external_id_field: &str,
        value: &str,
        record: &Record,
    ) -> Result<Upserted, SalesforceError> {
        check_name(external_id_field)?;
        if value.is_empty() {
            return Err(SalesforceError::Invalid("empty external id value".into()));
        }
        let path = format!(
            "{}/{external_id_field}/{}",
            self.sobject_path(object)?,
            encode_path_segment(value)
        );
        let mut fields = record.fields.clone();
        fields.remove(external_id_field);
        let answer = self
            .send_json("sobject", Method::PATCH, &path, &fields)
            .await?;
        match answer.status {
            300 => {
                let urls: Vec<String> = answer.json()?;
                Err(SalesforceError::MultipleMatches {
                    object: object.to_owned(),
                    field: external_id_field.to_owned(),
                    value: value.to_owned(),
                    ids: urls
                        .iter()
                        .map(|u| u.rsplit('/').next().unwrap_or(u).to_owned())
                        .collect(),
                })
            }
            204 => Ok(Upserted {
                id: None,
                created: false,
            }),
            200 | 201 => {
                let result: SaveResult = answer.json()?;
                let created = result.created.unwrap_or(answer.status == 201);
                let id = save_result_id(&answer, result)?;
                Ok(Upserted {
                    id: Some(id),
                    created,
                })
            }
            _ => Err(answer
                .check()
                .err()
                .unwrap_or_else(|| SalesforceError::MalformedResponse {
                    status: 0,
                    endpoint: path_only(&path).to_owned(),
                    detail: "unexpected status".into(),
                })),
        }
    }

    /// `GET /sobjects/{Obj}/describe`.
    pub async fn describe(&self, object: &str) -> Result<Describe, SalesforceError> {
        let path = format!("{}/describe", self.sobject_path(object)?);
        self.send("describe", Method::GET, &path, Body::Empty, &[])
            .await?
            .check()?
            .json()
    }

    // ---- sObject Collections ----

    /// `POST /composite/sobjects`, ⌈n/200⌉ calls, `allOrNone=false`; every record needs
    /// `attributes.type` (see [`Record::new`]). One result per record, in input order.
    pub async fn create_many(
        &self,
        records: &[Record],
    ) -> Result<Vec<SaveResult>, SalesforceError> {
        let path = format!("{}/composite/sobjects", self.data_path());
        self.collection_calls(Method::POST, &path, records).await
    }

    /// `PATCH /composite/sobjects`; every record needs `attributes.type` and `Id`.
    pub async fn update_many(
        &self,
        records: &[Record],
    ) -> Result<Vec<SaveResult>, SalesforceError> {
        let path = format!("{}/composite/sobjects", self.data_path());
        self.collection_calls(Method::PATCH, &path, records).await
    }

    /// `PATCH /composite/sobjects/{Obj}/{ExtField}`: upsert by external id, ⌈n/200⌉ calls.
    /// Results carry `created`.
    pub async fn upsert_many(
        &self,
        object: &str,
        external_id_field: &str,
        records: &[Record],
    ) -> Result<Vec<SaveResult>, SalesforceError> {
        check_name(object)?;
        check_name(external_id_field)?;
        let path = format!(
            "{}/composite/sobjects/{object}/{external_id_field}",
            self.data_path()
        );
        let typed: Vec<Record> = records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r.attributes.is_none() {
                    r.attributes = Record::new(object).attributes;
                }
                r
            })
            .collect();
        self.collection_calls(Method::PATCH, &path, &typed).await
    }

    async fn collection_calls(
        &self,
        method: Method,
        path: &str,
        records: &[Record],
    ) -> Result<Vec<SaveResult>, SalesforceError> {
        let mut out = Vec::with_capacity(records.len());
        for chunk in records.chunks(COLLECTION_MAX_RECORDS) {
            let request = CollectionRequest {
                all_or_none: false,
                records: chunk.to_vec(),
            };
            let answer = self
                .send_json("collections", method.clone(), path, &request)
                .await?
                .check()?;
            let results: Vec<SaveResult> = answer.json()?;
            if results.len() != chunk.len() {
                return Err(answer.malformed(format!(
                    "{} results for {} records",
                    results.len(),
                    chunk.len()
                )));
            }
            out.extend(results);
        }
        Ok(out)
    }
}

/// The outcome of a single upsert. `id` is `None` when Salesforce answered 204 (older API
/// versions on update).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upserted {
    pub id: Option<String>,
    pub created: bool,
}

enum PagerState {
    Start { soql: String, all: bool },
    Next(String),
    Done,
}

/// Pages of a query, following `nextRecordsUrl` until `done`.
pub struct QueryPager {
    client: SalesforceClient,
    state: PagerState,
}

impl fmt::Debug for QueryPager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryPager").finish_non_exhaustive()
    }
}

impl QueryPager {
    /// The next page's records, or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Record>>, SalesforceError> {
        let page = match &self.state {
            PagerState::Done => return Ok(None),
            PagerState::Start { soql, all: false } => self.client.query(soql).await?,
            PagerState::Start { soql, all: true } => self.client.query_all(soql).await?,
            PagerState::Next(url) => self.client.query_more(url).await?,
        };
        self.state = match (page.done, page.next_records_url) {
            (false, Some(url)) => PagerState::Next(url),
            _ => PagerState::Done,
        };
        Ok(Some(page.records))
    }
}

/// How long to wait before a call at `used/max`, or `None` when the call must not be made.
pub fn limit_delay_ms(policy: &LimitPolicy, used: u64, max: u64) -> Option<u64> {
    if max == 0 {
        return Some(0);
    }
    let permille = used.saturating_mul(1000) / max;
    if policy.reserve_permille < 1000 && permille >= policy.reserve_permille {
        return None;
    }
    if permille <= policy.slow_above_permille || policy.slow_above_permille >= 1000 {
        return Some(0);
    }
    let span = 1000 - policy.slow_above_permille;
    let over = permille.min(1000) - policy.slow_above_permille;
    Some(policy.max_delay_ms.saturating_mul(over) / span)
}

fn save_result_id(answer: &Answer, result: SaveResult) -> Result<String, SalesforceError> {
    if !result.success {
        return Err(SalesforceError::Api {
            status: answer.status,
            errors: result
                .errors
                .into_iter()
                .map(|e| ApiError {
                    error_code: e.status_code,
                    message: e.message,
                    fields: e.fields,
                })
                .collect(),
        });
    }
    result
        .id
        .ok_or_else(|| answer.malformed("success without an id"))
}

fn transport(e: reqwest::Error) -> SalesforceError {
    SalesforceError::Transport {
        message: e.to_string(),
    }
}

fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

fn check_name(name: &str) -> Result<(), SalesforceError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(SalesforceError::Invalid(format!(
            "not an API name: {name:?}"
        )));
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), SalesforceError> {
    if !(id.len() == 15 || id.len() == 18) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(SalesforceError::Invalid(format!(
            "not a Salesforce id: {id:?}"
        )));
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for a path segment).
pub fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_policy() {
        let p = LimitPolicy {
            slow_above_permille: 800,
            max_delay_ms: 1000,
            reserve_permille: 950,
        };
        let check = |used: u64, want: Option<u64>| {
            assert_eq!(limit_delay_ms(&p, used, 1000), want, "{used}")
        };
        check(0, Some(0));
        check(800, Some(0));
        check(900, Some(500));
        check(949, Some(745));
        check(950, None);
        check(2000, None);
        let off = LimitPolicy::default();
        assert_eq!(limit_delay_ms(&off, 1000, 1000), Some(2000));
        assert_eq!(limit_delay_ms(&off, 5, 0), Some(0));
    }

    #[test]
    fn path_segments() {
        assert_eq!(encode_path_segment("C-100/a b"), "C-100%2Fa%20b");
    }
}
