//! A protocol-faithful Sage X3 simulator: one real HTTP server on loopback serving the REST
//! web API and the SOAP web services over the same in-memory folders, so
//! [`X3Client`](super::X3Client) is tested over a socket the way it talks to X3.
//!
//! Faithful in (shapes from protocols.md §3):
//! - **REST** under `/api1/x3/erp/{FOLDER}/{CLASS}`: `?representation=R.$query` with
//!   `count` (default 20, capped at [`SimulatorConfig::max_count`]), `where`, `orderBy`
//!   and key paging (`key=gt.<last>`: the sort values of the last row joined with `~`,
//!   just the key without `orderBy`) answering `$itemsPerPage`, `$resources` (with `$uuid`,
//!   `$key`, `$url`, `$etag`) and `$links.$next.$url` while rows remain;
//!   `CLASS('KEY')?representation=R.$details`; `POST ?representation=R.$create` → 201 +
//!   `Location` + the created resource; `PUT CLASS('KEY')?representation=R.$edit` →
//!   200 + new state (partial payload).
//! - **SOAP** at [`SOAP_PATH`](super::soap::SOAP_PATH): `save`, `read`, `query` (`objectKeys`
//!   equalities, `listSize`), `modify`, `run`, answering a `CAdxResultXml` (`status`,
//!   `messages`, `resultXml` laid out by [`schema`](super::schema)); the pool alias
//!   selects the folder, the public name the class.
//! - **Errors**: HTTP Basic or bearer auth, else 401; unknown folder, class or
//!   representation, or record → 404 with `$diagnoses`; unknown property in `where` /
//!   `orderBy` → 500 with `$diagnoses`; business rules → 400 `$diagnoses`
//!   (`$severity: error`) on REST, `status` 0 with type-3 messages on SOAP; an unreadable
//!   envelope → SOAP Fault (HTTP 500).
//! - **Objects**: BPCUSTOMER (numbered `C00001…` when `BPCNUM` is empty; custom fields
//!   from [`SimulatorConfig::custom_fields`]), SORDER (customer, sites, currency, items and
//!   quantities checked; `ORDNOT` computed), SINVOICE (read only; raised from an order by
//!   the control endpoint, tax at [`SimulatorConfig::tax_rate`]), ITMMASTER, STOCK (read
//!   only, seeded by [`Simulator::add_stock`]), PAYMENTH (lines `PAYD_1` `VCRNUM` /
//!   `AMTLIN` raise the invoices' `PAYCUR`, never above their total).
//! - **Control** (test only, no auth): `POST /sim/{FOLDER}/SORDER/{SOHNUM}/invoice` → 201 +
//!   the SINVOICE resource; `POST /sim/{FOLDER}/SINVOICE/{NUM}/credit` with `{"amount":
//!   "10.00"}` (before tax) → 201 + a credit note (`INVTYP` 2, `SIHORINUM` = the invoice).
//!
//! Not verified against a real X3 (documented guesses): message texts, the SOAP answer to an
//! unknown pool / public name (here `status` 0 and a type-3 message), block ids of SINVOICE,
//! ITMMASTER, STOCK and PAYMENTH, the `PAYCUR` field on SINVOICE (X3 keeps paid amounts on
//! the open items, GACCDUDATE), and the REST status of business errors (400).
//!
//! Test hooks: latency, a queue of HTTP faults (5xx with an HTML body, 429), request
//! counters per operation, seeding and reading records.

pub mod expr;
pub mod folder;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rust_decimal::Decimal;
use serde_json::{Map, Value as Json, json};

use self::folder::{Folder, SimError, SimResult, Stored, schema_of};
use super::client::encode_key;
use super::error::X3Message;
use super::record::X3Record;
use super::schema::{ClassSchema, DEFAULT_PUBLIC_NAMES};
use super::soap::{CAdxResult, SOAP_PATH, SoapCall, SoapRequest, fault_envelope};
use crate::intacct::xml;

/// Where the REST API is mounted.
pub const API_PREFIX: &str = "/api1/x3/erp/";
/// Where the control endpoints are mounted.
pub const CONTROL_PREFIX: &str = "/sim/";
/// Largest request body accepted.
pub const BODY_MAX_BYTES: usize = 1 << 20;

/// An HTTP-level fault for the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// This status with an HTML body (a proxy or Syracuse in trouble: 500, 502, 503, …).
    Status(u16),
    /// HTTP 429 with `Retry-After`.
    RateLimit,
    /// HTTP 500 with a SOAP `soapenv:Server` Fault (the web-service pool failing).
    SoapServer,
}

/// How the simulated installation is set up.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// `(user, password)` for HTTP Basic.
    pub users: Vec<(String, String)>,
    /// Accepted bearer tokens.
    pub tokens: Vec<String>,
    /// Folders (endpoints); each is also a SOAP pool alias of the same name.
    pub folders: Vec<String>,
    /// Extra pool aliases: `(alias, folder)`.
    pub pools: Vec<(String, String)>,
    /// Sites known in every folder (SALFCY / STOFCY / FCY).
    pub sites: Vec<String>,
    pub currencies: Vec<String>,
    /// Custom BPCUSTOMER fields (the Salesforce id, `YSFID`).
    pub custom_fields: Vec<String>,
    /// SOAP public name → class.
    pub public_names: Vec<(String, String)>,
    /// The SOAP `run` subprogram answering available stock (`ITMREF`, `STOFCY` → `QTYSTU`).
    pub stock_subprogram: String,
    /// Default `count`.
    pub default_count: usize,
    /// The server's cap on `count`.
    pub max_count: usize,
    /// Tax added to invoices raised from orders.
    pub tax_rate: Decimal,
}

impl Default for SimulatorConfig {
    fn default() -> SimulatorConfig {
        SimulatorConfig {
            users: vec![("admin".into(), "x3-pass-0123".into())],
            tokens: vec!["x3-token-4567".into()],
            folders: vec!["SEED".into(), "UKLIVE".into()],
            pools: vec![],
            sites: ["FR011", "FR012", "GB011", "GB012", "US011", "US012"]
                .map(String::from)
                .to_vec(),
            currencies: ["EUR", "GBP", "USD", "JPY"].map(String::from).to_vec(),
            custom_fields: vec!["YSFID".into()],
            public_names: DEFAULT_PUBLIC_NAMES
                .iter()
                .map(|(c, p)| ((*p).to_owned(), (*c).to_owned()))
                .collect(),
            stock_subprogram: "YSTKAVL".into(),
            default_count: 20,
            max_count: 100,
            tax_rate: Decimal::new(20, 2),
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: u64,
    by_operation: BTreeMap<String, u64>,
}

struct State {
    folders: BTreeMap<String, Folder>,
    latency_ms: u64,
    faults: VecDeque<Fault>,
    counters: Counters,
}

struct Shared {
    config: SimulatorConfig,
    base_url: String,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, op: &str) {
        *self
            .lock()
            .counters
            .by_operation
            .entry(op.to_owned())
            .or_default() += 1;
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
    /// Binds 127.0.0.1 on a free port and serves until dropped.
    pub async fn start(config: SimulatorConfig) -> Simulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let folders = config
            .folders
            .iter()
            .map(|f| {
                (
                    f.clone(),
                    Folder::new(
                        f,
                        &config.sites,
                        &config.currencies,
                        &config.custom_fields,
                        config.tax_rate,
                    ),
                )
            })
            .collect();
        let shared = Arc::new(Shared {
            config,
            base_url: format!("http://{addr}"),
            state: Mutex::new(State {
                folders,
                latency_ms: 0,
                faults: VecDeque::new(),
                counters: Counters::default(),
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Simulator { shared, addr, task }
    }

    pub fn config(&self) -> &SimulatorConfig {
        &self.shared.config
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// Delay every answer by this much.
    pub fn set_latency_ms(&self, ms: u64) {
        self.shared.lock().latency_ms = ms;
    }

    /// The next `n` requests get `fault` instead of being processed.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.shared
            .lock()
            .faults
            .extend(std::iter::repeat_n(fault, n));
    }

    /// HTTP requests received (faulted and refused ones included).
    pub fn requests(&self) -> u64 {
        self.shared.lock().counters.requests
    }

    /// Operations served, by name: REST facets (`$query`, `$details`, `$create`, `$edit`)
    /// and SOAP operations (`soap:save`, `soap:query`, …).
    pub fn operation_count(&self, op: &str) -> u64 {
        self.shared
            .lock()
            .counters
            .by_operation
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// Stores a record as is (no rules); `class` must be one the simulator knows.
    pub fn insert(&self, folder: &str, class: &str, rec: X3Record) {
        let schema = schema_of(class).expect("a simulated class");
        let mut st = self.shared.lock();
        st.folders
            .get_mut(folder)
            .expect("a configured folder")
            .insert_raw(schema, rec);
    }

    /// Adds a STOCK line; answers its `STOCKID`.
    pub fn add_stock(
        &self,
        folder: &str,
        site: &str,
        item: &str,
        status: &str,
        qty: Decimal,
    ) -> String {
        let mut st = self.shared.lock();
        st.folders
            .get_mut(folder)
            .expect("a configured folder")
            .add_stock(site, item, status, qty)
    }

    /// The stored records of a class in a folder, in key order.
    pub fn records(&self, folder: &str, class: &str) -> Vec<X3Record> {
        self.shared
            .lock()
            .folders
            .get(folder)
            .map(|f| f.all(class))
            .unwrap_or_default()
    }

    /// Credits `net` (before tax) of an invoice directly (what the control endpoint does).
    pub fn credit_invoice(
        &self,
        folder: &str,
        invoice: &str,
        net: Decimal,
    ) -> Result<X3Record, String> {
        let mut st = self.shared.lock();
        let f = st.folders.get_mut(folder).ok_or("unknown folder")?;
        f.credit_invoice(invoice, net)
            .map_err(|e| e.message().to_owned())
    }

    /// Invoices an order directly (what the control endpoint does).
    pub fn invoice_order(&self, folder: &str, sohnum: &str) -> Result<X3Record, String> {
        let mut st = self.shared.lock();
        let f = st.folders.get_mut(folder).ok_or("unknown folder")?;
        f.invoice_order(sohnum).map_err(|e| e.message().to_owned())
    }
}

fn diagnoses_body(messages: &[(&str, &str)]) -> Json {
    json!({
        "$diagnoses": messages
            .iter()
            .map(|(sev, msg)| json!({"$severity": sev, "$message": msg}))
            .collect::<Vec<_>>()
    })
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(diagnoses_body(&[("error", message)]))).into_response()
}

fn sim_error(e: &SimError) -> Response {
    let status = match e {
        SimError::Business(_) | SimError::BadRequest(_) => StatusCode::BAD_REQUEST,
        SimError::NotFound(_) => StatusCode::NOT_FOUND,
        SimError::UnknownProperty(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(status, e.message())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Who the `Authorization` header names, if it is valid.
fn authorized(config: &SimulatorConfig, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(b64) = value.strip_prefix("Basic ") {
        let Ok(raw) = STANDARD.decode(b64.trim()) else {
            return false;
        };
        let text = String::from_utf8_lossy(&raw);
        let Some((user, pass)) = text.split_once(':') else {
            return false;
        };
        return config.users.iter().any(|(u, p)| u == user && p == pass);
    }
    if let Some(token) = value.strip_prefix("Bearer ") {
        return config.tokens.iter().any(|t| t == token.trim());
    }
    false
}

fn unauthorized() -> Response {
    let mut r = json_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"Syracuse\""),
    );
    r
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (latency, fault) = {
        let mut st = shared.lock();
        st.counters.requests += 1;
        (st.latency_ms, st.faults.pop_front())
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match fault {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (
                status,
                [(header::CONTENT_TYPE, "text/html")],
                format!("<html><body><h1>{code}</h1>Syracuse is not available</body></html>"),
            )
                .into_response();
        }
        Some(Fault::RateLimit) => {
            let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return r;
        }
        Some(Fault::SoapServer) => {
            return soap_fault("soapenv:Server", "No web service channel available in pool");
        }
        None => {}
    }
    if body.len() > BODY_MAX_BYTES {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
    }
    let path = percent_decode(uri.path());
    if let Some(rest) = path.strip_prefix(CONTROL_PREFIX) {
        return control(&shared, &method, rest, &body);
    }
    if !authorized(&shared.config, &headers) {
        return unauthorized();
    }
    if path == SOAP_PATH && method == Method::POST {
        return soap(&shared, &body);
    }
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return json_error(StatusCode::NOT_FOUND, &format!("{path} : Not found"));
    };
    let params: Vec<(String, String)> = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    rest_api(&shared, &method, rest, &params, &body)
}

// ----- control endpoints -----

fn control(shared: &Shared, method: &Method, rest: &str, body: &[u8]) -> Response {
    let parts: Vec<&str> = rest.split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::POST, [folder, "SORDER", sohnum, "invoice"]) => {
            raised(shared, folder, |f| f.invoice_order(sohnum))
        }
        (&Method::POST, [folder, "SINVOICE", num, "credit"]) => {
            let amount = serde_json::from_slice::<Json>(body)
                .ok()
                .and_then(|b| b["amount"].as_str().and_then(|a| a.parse::<Decimal>().ok()));
            let Some(amount) = amount else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "send {\"amount\": \"10.00\"} (before tax)",
                );
            };
            raised(shared, folder, |f| f.credit_invoice(num, amount))
        }
        _ => json_error(StatusCode::NOT_FOUND, "Unknown control endpoint"),
    }
}

/// 201 + the SINVOICE a control operation raised in `folder`.
fn raised(
    shared: &Shared,
    folder: &str,
    op: impl FnOnce(&mut Folder) -> SimResult<X3Record>,
) -> Response {
    let result = {
        let mut st = shared.lock();
        let Some(f) = st.folders.get_mut(folder) else {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!("Endpoint {folder} not found"),
            );
        };
        op(f).map(|inv| {
            (
                inv.text("NUM").to_owned(),
                f.get("SINVOICE", inv.text("NUM")).cloned(),
            )
        })
    };
    match result {
        Ok((num, Some(stored))) => {
            let body = shared.resource(
                folder,
                schema_of("SINVOICE").expect("SINVOICE"),
                &stored,
                true,
            );
            let location = shared.details_url(folder, "SINVOICE", &num);
            let mut r = (StatusCode::CREATED, axum::Json(Json::Object(body))).into_response();
            if let Ok(v) = header::HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Ok((_, None)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "invoice lost"),
        Err(SimError::Business(m)) => json_error(StatusCode::CONFLICT, &m),
        Err(e) => sim_error(&e),
    }
}

// ----- REST -----

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Shared {
    fn details_url(&self, folder: &str, class: &str, key: &str) -> String {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("representation", &format!("{class}.$details"))
            .finish();
        format!(
            "{}{API_PREFIX}{folder}/{class}('{}')?{query}",
            self.base_url,
            encode_key(key)
        )
    }

    /// A resource: the record (header only for `$query`) plus `$uuid`, `$key`, `$url`,
    /// `$etag`.
    fn resource(
        &self,
        folder: &str,
        schema: &ClassSchema,
        s: &Stored,
        details: bool,
    ) -> Map<String, Json> {
        let rec = if details {
            s.rec.clone()
        } else {
            X3Record {
                fields: s.rec.fields.clone(),
                lists: s.rec.lists.clone(),
                tables: BTreeMap::new(),
            }
        };
        let mut m = Map::new();
        let key = s.rec.text(schema.key).to_owned();
        m.insert("$uuid".into(), Json::String(s.uuid.clone()));
        m.insert("$etag".into(), Json::String(s.etag.clone()));
        m.insert(
            "$url".into(),
            Json::String(self.details_url(folder, schema.class, &key)),
        );
        m.insert("$key".into(), Json::String(key));
        m.extend(rec.to_json());
        m
    }
}

/// `CLASS` or `CLASS('KEY')`.
fn split_class(segment: &str) -> Result<(&str, Option<String>), String> {
    match segment.find('(') {
        None => Ok((segment, None)),
        Some(i) => {
            let inner = segment[i + 1..]
                .strip_suffix(')')
                .ok_or("missing ) after the key")?;
            let key = inner
                .strip_prefix('\'')
                .and_then(|k| k.strip_suffix('\''))
                .ok_or("the key must be quoted")?;
            Ok((&segment[..i], Some(key.replace("''", "'"))))
        }
    }
}

fn rest_api(
    shared: &Shared,
    method: &Method,
    rest: &str,
    params: &[(String, String)],
    body: &[u8],
) -> Response {
    let Some((folder, segment)) = rest.split_once('/') else {
        return json_error(StatusCode::NOT_FOUND, "No class in the URL");
    };
    let (class, key) = match split_class(segment) {
        Ok(x) => x,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    if !shared.lock().folders.contains_key(folder) {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("Endpoint {folder} not found"),
        );
    }
    let Some(schema) = schema_of(class) else {
        return json_error(StatusCode::NOT_FOUND, &format!("Class {class} not found"));
    };
    let Some(representation) = param(params, "representation") else {
        return json_error(StatusCode::BAD_REQUEST, "Missing representation");
    };
    let Some((repr, facet)) = representation.split_once(".$") else {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("Bad representation {representation}"),
        );
    };
    if repr != schema.class {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("Representation {repr} not found"),
        );
    }
    match (method, key, facet) {
        (&Method::GET, None, "query") => {
            shared.count("$query");
            rest_query(shared, folder, schema, params)
        }
        (&Method::GET, Some(key), "details") => {
            shared.count("$details");
            let st = shared.lock();
            match st
                .folders
                .get(folder)
                .and_then(|f| f.get(schema.class, &key))
            {
                Some(s) => {
                    let r = shared.resource(folder, schema, s, true);
                    axum::Json(Json::Object(r)).into_response()
                }
                None => json_error(
                    StatusCode::NOT_FOUND,
                    &format!("{} {key} : Record does not exist", schema.class),
                ),
            }
        }
        (&Method::POST, None, "create") => {
            shared.count("$create");
            let rec = match read_json(body) {
                Ok(r) => r,
                Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
            };
            write(
                shared,
                folder,
                schema,
                |f| f.create(schema, rec),
                StatusCode::CREATED,
            )
        }
        (&Method::PUT, Some(key), "edit") => {
            shared.count("$edit");
            let rec = match read_json(body) {
                Ok(r) => r,
                Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
            };
            write(
                shared,
                folder,
                schema,
                |f| f.update(schema, &key, rec),
                StatusCode::OK,
            )
        }
        _ => json_error(
            StatusCode::BAD_REQUEST,
            &format!("Facet ${facet} is not available for {method} on this URL"),
        ),
    }
}

fn read_json(body: &[u8]) -> Result<X3Record, String> {
    let json: Json = serde_json::from_slice(body).map_err(|e| format!("Invalid JSON: {e}"))?;
    X3Record::from_json(&json)
}

fn write(
    shared: &Shared,
    folder: &str,
    schema: &'static ClassSchema,
    op: impl FnOnce(&mut Folder) -> Result<X3Record, SimError>,
    status: StatusCode,
) -> Response {
    let mut st = shared.lock();
    let Some(f) = st.folders.get_mut(folder) else {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("Endpoint {folder} not found"),
        );
    };
    match op(f) {
        Ok(rec) => {
            let key = rec.text(schema.key).to_owned();
            let Some(stored) = f.get(schema.class, &key) else {
                return json_error(StatusCode::INTERNAL_SERVER_ERROR, "record lost");
            };
            let body = shared.resource(folder, schema, stored, true);
            let mut r = (status, axum::Json(Json::Object(body))).into_response();
            if status == StatusCode::CREATED
                && let Ok(v) =
                    header::HeaderValue::from_str(&shared.details_url(folder, schema.class, &key))
            {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => sim_error(&e),
    }
}

fn rest_query(
    shared: &Shared,
    folder: &str,
    schema: &ClassSchema,
    params: &[(String, String)],
) -> Response {
    let cfg = &shared.config;
    let count = match param(params, "count") {
        None => cfg.default_count,
        Some(c) => match c.parse::<usize>() {
            Ok(n) if n > 0 => n.min(cfg.max_count),
            _ => return json_error(StatusCode::BAD_REQUEST, &format!("Invalid count {c}")),
        },
    };
    let where_text = param(params, "where");
    let filter = match where_text.map(expr::parse_where).transpose() {
        Ok(f) => f,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("Invalid where: {e}")),
    };
    let order_text = param(params, "orderBy");
    let order = match order_text.map(expr::parse_order_by).transpose() {
        Ok(o) => o.unwrap_or_default(),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("Invalid orderBy: {e}")),
    };
    let after: Option<Vec<String>> = match param(params, "key") {
        None => None,
        Some(k) => match k.strip_prefix("gt.") {
            Some(v) => Some(v.split('~').map(str::to_owned).collect()),
            None => return json_error(StatusCode::BAD_REQUEST, &format!("Unsupported key {k}")),
        },
    };
    let st = shared.lock();
    let Some(f) = st.folders.get(folder) else {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("Endpoint {folder} not found"),
        );
    };
    let (rows, more) = match f.query(schema, filter.as_ref(), &order, after.as_deref(), count) {
        Ok(x) => x,
        Err(e) => return sim_error(&e),
    };
    let mut links = Map::new();
    if more && let Some((_, last)) = rows.last() {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("representation", &format!("{}.$query", schema.class));
        q.append_pair("count", &count.to_string());
        if let Some(w) = where_text {
            q.append_pair("where", w);
        }
        if let Some(o) = order_text {
            q.append_pair("orderBy", o);
        }
        q.append_pair("key", &format!("gt.{}", last.join("~")));
        links.insert(
            "$next".into(),
            json!({
                "$url": format!("{}{API_PREFIX}{folder}/{}?{}", shared.base_url, schema.class, q.finish()),
                "$type": "application/json",
                "$method": "GET",
            }),
        );
    }
    let resources: Vec<Json> = rows
        .iter()
        .map(|(s, _)| Json::Object(shared.resource(folder, schema, s, false)))
        .collect();
    axum::Json(json!({
        "$itemsPerPage": count,
        "$resources": resources,
        "$links": links,
    }))
    .into_response()
}

// ----- SOAP -----

fn soap_response(op: &str, result: &CAdxResult, started: Instant) -> Response {
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        result.to_envelope(op, ms),
    )
        .into_response()
}

fn soap_fault(code: &str, text: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        fault_envelope(code, text),
    )
        .into_response()
}

fn failed(msg: &str) -> CAdxResult {
    CAdxResult {
        status: 0,
        messages: vec![X3Message::error(msg)],
        result_xml: String::new(),
    }
}

fn ok(result: xml::Element) -> CAdxResult {
    CAdxResult {
        status: 1,
        messages: Vec::new(),
        result_xml: result.to_xml(),
    }
}

fn soap(shared: &Shared, body: &[u8]) -> Response {
    let started = Instant::now();
    let text = String::from_utf8_lossy(body);
    let req = match SoapRequest::parse(&text) {
        Ok(r) => r,
        Err(e) => return soap_fault("soapenv:Client", &e),
    };
    let op = req.call.operation();
    shared.count(&format!("soap:{op}"));
    let result = soap_call(shared, &req);
    soap_response(op, &result, started)
}

fn soap_call(shared: &Shared, req: &SoapRequest) -> CAdxResult {
    let cfg = &shared.config;
    let alias = &req.context.pool_alias;
    let folder = cfg
        .pools
        .iter()
        .find(|(a, _)| a == alias)
        .map(|(_, f)| f.clone())
        .or_else(|| cfg.folders.iter().find(|f| *f == alias).cloned());
    let Some(folder) = folder else {
        return failed(&format!("Pool {alias} not found"));
    };
    let public_name = req.call.public_name();
    let mut st = shared.lock();
    let Some(f) = st.folders.get_mut(&folder) else {
        return failed(&format!("Pool {alias} not found"));
    };
    if let SoapCall::Run { input_xml, .. } = &req.call {
        if *public_name != cfg.stock_subprogram {
            return failed(&format!("Web service {public_name} not found"));
        }
        let input = match xml::parse(input_xml).and_then(|e| X3Record::from_block(&e)) {
            Ok(r) => r,
            Err(e) => return failed(&format!("inputXml: {e}")),
        };
        let qty = f.available(input.text("ITMREF"), input.text("STOFCY"));
        let out = input.with("QTYSTU", qty.to_string());
        return ok(out.to_result(None));
    }
    let Some(schema) = cfg
        .public_names
        .iter()
        .find(|(p, _)| p == public_name)
        .and_then(|(_, c)| schema_of(c))
    else {
        return failed(&format!("Web service {public_name} not found"));
    };
    let key_of = |keys: &[(String, String)]| -> Result<String, String> {
        keys.iter()
            .find(|(k, _)| k == schema.key)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("{} : Key missing", schema.key))
    };
    let object = |text: &str| -> Result<X3Record, String> {
        xml::parse(text)
            .and_then(|e| X3Record::from_block(&e))
            .map_err(|e| format!("objectXml: {e}"))
    };
    let answer = |r: Result<X3Record, SimError>| match r {
        Ok(rec) => ok(rec.to_result(Some(schema))),
        Err(e) => failed(e.message()),
    };
    match &req.call {
        SoapCall::Save { object_xml, .. } => match object(object_xml) {
            Ok(rec) => answer(f.create(schema, rec)),
            Err(e) => failed(&e),
        },
        SoapCall::Modify {
            keys, object_xml, ..
        } => match (key_of(keys), object(object_xml)) {
            (Ok(key), Ok(rec)) => answer(f.update(schema, &key, rec)),
            (Err(e), _) | (_, Err(e)) => failed(&e),
        },
        SoapCall::Read { keys, .. } => match key_of(keys) {
            Ok(key) => match f.get(schema.class, &key) {
                Some(s) => ok(s.rec.to_result(Some(schema))),
                None => failed(&format!("{} {key} : Record does not exist", schema.class)),
            },
            Err(e) => failed(&e),
        },
        SoapCall::Query {
            keys, list_size, ..
        } => {
            let filter = keys
                .iter()
                .map(|(k, v)| expr::Expr::Cmp {
                    field: k.clone(),
                    op: expr::CmpOp::Eq,
                    value: v.clone(),
                })
                .reduce(|a, b| expr::Expr::And(Box::new(a), Box::new(b)));
            let limit = usize::try_from(*list_size).unwrap_or(usize::MAX);
            match f.query(schema, filter.as_ref(), &[], None, limit) {
                Ok((rows, _)) => {
                    let mut tab = xml::Element::new("TAB")
                        .with_attr("DIM", list_size.to_string())
                        .with_attr("ID", format!("{public_name}_1"))
                        .with_attr("SIZE", rows.len().to_string());
                    for (i, (s, _)) in rows.iter().enumerate() {
                        let mut line = X3Record::new();
                        line.fields = s.rec.fields.clone();
                        for (k, v) in &s.rec.lists {
                            line.set(k, v.first().cloned().unwrap_or_default());
                        }
                        tab.children.push(line.to_query_line(i + 1));
                    }
                    ok(xml::Element::new("RESULT").with(tab))
                }
                Err(e) => failed(e.message()),
            }
        }
        SoapCall::Run { .. } => failed("unreachable"),
    }
}
