//! `X3Client`: one X3 folder, over the REST web API (`/api1/x3/erp/{FOLDER}/{CLASS}`) or
//! the SOAP web services (`CAdxWebServiceXmlCC`), chosen per installation. The operations
//! are the same on both: [`X3Client::query`], [`X3Client::read`], [`X3Client::create`],
//! [`X3Client::update`], and typed ones per object on top.
//!
//! - **REST**: `GET …?representation=R.$query` with `count`, `where`, `orderBy`, following
//!   `$links.$next.$url` (key paging, `key=gt.…`) until there is no `$next`, at most
//!   [`X3Config::max_pages`] pages, only on the configured origin (credentials never go to
//!   another host). `GET …('KEY')?representation=R.$details`, `POST …?representation=R.$create`
//!   (201 + `Location`), `PUT …('KEY')?representation=R.$edit`.
//! - **SOAP**: `read`, `save`, `modify`, `query`, `run` with a `CAdxCallContext`
//!   (language, pool alias, request configuration). SOAP `query` has no paging: it answers at
//!   most `listSize` rows, so the client asks for one more than
//!   [`X3Config::soap_list_size`] and refuses a cut list ([`X3Error::Truncated`]); its
//!   criteria are equalities only and it has no sort.
//! - Auth: HTTP Basic or a bearer token on every request. The client does not retry on its
//!   own: errors say whether they are retryable ([`X3Error::retryable`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value as Json;

use super::error::{X3Error, X3Message};
use super::record::X3Record;
use super::schema::{ObjectName, ObjectNames};
use super::soap::{CAdxResult, CallContext, SOAP_PATH, SoapCall, SoapParseError, SoapRequest};
use super::types::{Customer, Item, Payment, SalesInvoice, SalesOrder, StockLine};
use crate::intacct::xml;

pub use crate::intacct::Secret;

/// Where Syracuse serves the web API.
pub const API_PATH: &str = "/api1/x3/erp";
/// Per-request timeout by default.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// X3's default page.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest `count` we ask for (X3 may cap lower).
pub const PAGE_SIZE_MAX: u32 = 1_000;
/// Pages one query may follow before giving up.
pub const DEFAULT_MAX_PAGES: u32 = 10_000;
/// Rows a SOAP query may answer.
pub const DEFAULT_SOAP_LIST_SIZE: u32 = 1_000;
/// The custom field holding the Salesforce id by default.
pub const DEFAULT_SF_ID_FIELD: &str = "YSFID";
/// Longest error body kept in a message.
const BODY_SNIPPET_MAX: usize = 300;

/// How requests are authenticated.
#[derive(Clone, Debug)]
pub enum X3Auth {
    Basic { user: String, password: Secret },
    Bearer { token: Secret },
}

/// SOAP call context settings.
#[derive(Clone, Debug)]
pub struct SoapSettings {
    /// `poolAlias`: the web-service pool, bound to the folder.
    pub pool_alias: String,
    /// `codeLang` (`ENG`).
    pub language: String,
    /// The request's character set (XML declaration and `Content-Type`), `UTF-8`.
    pub code_page: String,
    /// `requestConfig`.
    pub request_config: String,
}

impl SoapSettings {
    pub fn new(pool_alias: &str) -> SoapSettings {
        SoapSettings {
            pool_alias: pool_alias.into(),
            language: "ENG".into(),
            code_page: "UTF-8".into(),
            request_config: "adxwss.optreturn=XML&adxwss.beautify=false".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Transport {
    Rest,
    Soap(SoapSettings),
}

#[derive(Clone, Debug)]
pub struct X3Config {
    /// `https://x3.example.com:8124` (no trailing path).
    pub base_url: String,
    /// The folder / endpoint (`SEED`).
    pub folder: String,
    pub auth: X3Auth,
    pub transport: Transport,
    pub timeout_ms: u64,
    pub objects: ObjectNames,
    /// The custom BPCUSTOMER field holding the Salesforce Account id.
    pub sf_id_field: String,
    pub max_pages: u32,
    pub soap_list_size: u32,
}

impl X3Config {
    pub fn new(base_url: &str, folder: &str, auth: X3Auth, transport: Transport) -> X3Config {
        X3Config {
            base_url: base_url.trim_end_matches('/').to_owned(),
            folder: folder.into(),
            auth,
            transport,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            objects: ObjectNames::default(),
            sf_id_field: DEFAULT_SF_ID_FIELD.into(),
            max_pages: DEFAULT_MAX_PAGES,
            soap_list_size: DEFAULT_SOAP_LIST_SIZE,
        }
    }
}

/// A comparison in an X3 `where` expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    pub fn keyword(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Ge => "ge",
            Op::Lt => "lt",
            Op::Le => "le",
        }
    }
}

/// `FIELD op 'value'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub field: String,
    pub op: Op,
    pub value: String,
}

impl Filter {
    pub fn new(field: &str, op: Op, value: impl Into<String>) -> Filter {
        Filter {
            field: field.into(),
            op,
            value: value.into(),
        }
    }

    pub fn eq(field: &str, value: impl Into<String>) -> Filter {
        Filter::new(field, Op::Eq, value)
    }

    /// The X3 expression (quotes in the value doubled).
    pub fn to_expression(&self) -> String {
        format!(
            "{} {} '{}'",
            self.field,
            self.op.keyword(),
            self.value.replace('\'', "''")
        )
    }
}

/// The filters joined with `and`.
pub fn where_expression(filters: &[Filter]) -> String {
    filters
        .iter()
        .map(Filter::to_expression)
        .collect::<Vec<_>>()
        .join(" and ")
}

/// A query over one class.
#[derive(Clone, Debug, Default)]
pub struct X3Query {
    /// All must hold.
    pub filters: Vec<Filter>,
    /// `(field, ascending)`.
    pub order_by: Vec<(String, bool)>,
    /// `count` per page (REST); `None`: X3's default (20).
    pub page_size: Option<u32>,
}

impl X3Query {
    pub fn filter(filters: Vec<Filter>) -> X3Query {
        X3Query {
            filters,
            ..X3Query::default()
        }
    }
}

/// A page of a REST query.
#[derive(Clone, Debug)]
pub struct Page {
    pub records: Vec<X3Record>,
    /// `$links.$next.$url`.
    pub next: Option<String>,
}

/// A created record.
#[derive(Clone, Debug)]
pub struct Created {
    /// The key X3 gave it (or we sent).
    pub key: String,
    /// REST `Location` header.
    pub location: Option<String>,
    pub record: X3Record,
}

pub struct X3Client {
    config: X3Config,
    http: reqwest::Client,
    requests_sent: AtomicU64,
}

impl std::fmt::Debug for X3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X3Client")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn diagnoses(body: &str) -> Option<Vec<X3Message>> {
    let json: Json = serde_json::from_str(body).ok()?;
    let list = json.get("$diagnoses")?.as_array()?;
    Some(
        list.iter()
            .map(|d| {
                X3Message::from_severity(
                    d.get("$severity").and_then(Json::as_str).unwrap_or("error"),
                    d.get("$message").and_then(Json::as_str).unwrap_or_default(),
                )
            })
            .collect(),
    )
}

fn snippet(body: &str) -> String {
    body.chars().take(BODY_SNIPPET_MAX).collect()
}

/// Percent-encodes a key for `CLASS('KEY')` (quotes doubled first).
pub(crate) fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.replace('\'', "''").bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~'".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl X3Client {
    pub fn new(config: X3Config) -> Result<X3Client, X3Error> {
        if config.folder.trim().is_empty() {
            return Err(X3Error::Invalid("empty folder".into()));
        }
        if config.max_pages == 0 || config.soap_list_size == 0 {
            return Err(X3Error::Invalid(
                "max_pages and soap_list_size must be ≥ 1".into(),
            ));
        }
        reqwest::Url::parse(&config.base_url)
            .map_err(|e| X3Error::Invalid(format!("base_url: {e}")))?;
        let http = gateway::http::client_builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| X3Error::Transport {
                message: e.to_string(),
            })?;
        Ok(X3Client {
            config,
            http,
            requests_sent: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &X3Config {
        &self.config
    }

    pub fn objects(&self) -> &ObjectNames {
        &self.config.objects
    }

    /// HTTP requests sent so far.
    pub fn requests_sent(&self) -> u64 {
        self.requests_sent.load(Ordering::Relaxed)
    }

    fn is_soap(&self) -> bool {
        matches!(self.config.transport, Transport::Soap(_))
    }

    fn class_url(&self, object: &ObjectName) -> String {
        format!(
            "{}{API_PATH}/{}/{}",
            self.config.base_url, self.config.folder, object.class
        )
    }

    fn url(&self, base: &str, params: &[(&str, &str)]) -> Result<reqwest::Url, X3Error> {
        let mut url =
            reqwest::Url::parse(base).map_err(|e| X3Error::Invalid(format!("url {base}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.auth {
            X3Auth::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
            X3Auth::Bearer { token } => req.bearer_auth(token.expose()),
        }
    }

    /// Sends one request; answers status, `Location` and body.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<String>, String), X3Error> {
        self.requests_sent.fetch_add(1, Ordering::Relaxed);
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                X3Error::Timeout {
                    timeout_ms: self.config.timeout_ms,
                }
            } else {
                X3Error::Transport {
                    message: e.without_url().to_string(),
                }
            }
        };
        let resp = self.authorize(req).send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await.map_err(transport)?;
        Ok((status, location, body))
    }

    /// A REST call: JSON answer on 2xx, typed errors otherwise.
    async fn rest(
        &self,
        operation: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<String>, Json), X3Error> {
        let (status, location, body) = self.send(req).await?;
        tracing::debug!(folder = %self.config.folder, operation, status, "x3 rest call");
        if (200..300).contains(&status) {
            let json = serde_json::from_str(&body).map_err(|e| X3Error::MalformedResponse {
                status,
                detail: format!("not JSON ({e}): {}", snippet(&body)),
            })?;
            return Ok((status, location, json));
        }
        let diag = diagnoses(&body);
        let x3_diagnoses = diag.is_some();
        let messages = diag.unwrap_or_else(|| {
            if body.trim().is_empty() {
                Vec::new()
            } else {
                vec![X3Message::error(snippet(&body))]
            }
        });
        Err(match status {
            401 => X3Error::Unauthorized,
            404 => X3Error::NotFound {
                what: operation.to_owned(),
                messages,
            },
            400 | 409 | 422 if messages.iter().any(X3Message::is_error) && x3_diagnoses => {
                X3Error::Business {
                    operation: operation.to_owned(),
                    messages,
                }
            }
            _ => X3Error::Http {
                status,
                messages,
                x3_diagnoses,
            },
        })
    }

    /// A SOAP call; `status` ≠ 1 is a business error with X3's messages.
    pub async fn soap(&self, call: SoapCall) -> Result<CAdxResult, X3Error> {
        let Transport::Soap(settings) = &self.config.transport else {
            return Err(X3Error::Invalid("SOAP call on a REST installation".into()));
        };
        let operation = format!("{} {}", call.operation(), call.public_name());
        let request = SoapRequest {
            context: CallContext {
                code_lang: settings.language.clone(),
                pool_alias: settings.pool_alias.clone(),
                pool_id: String::new(),
                request_config: settings.request_config.clone(),
            },
            call,
        };
        let body = request.to_envelope(&settings.code_page);
        let req = self
            .http
            .post(format!("{}{SOAP_PATH}", self.config.base_url))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("text/xml; charset={}", settings.code_page),
            )
            .header("SOAPAction", "\"\"")
            .body(body);
        let (status, _, text) = self.send(req).await?;
        tracing::debug!(folder = %self.config.folder, %operation, status, "x3 soap call");
        if status == 401 {
            return Err(X3Error::Unauthorized);
        }
        match CAdxResult::parse(&text) {
            Ok(result) if status < 300 => {
                if result.status == 1 {
                    Ok(result)
                } else {
                    Err(X3Error::Business {
                        operation,
                        messages: result.messages,
                    })
                }
            }
            // A Client fault is X3 refusing what we sent (permanent); a Server fault is the
            // web-service layer failing (pool, session), treated like any 5xx.
            Err(SoapParseError::Fault { code, text }) => Err(X3Error::Http {
                status,
                x3_diagnoses: !code.ends_with("Server"),
                messages: vec![X3Message::error(format!("{code}: {text}"))],
            }),
            Ok(_) | Err(SoapParseError::Malformed(_)) if status >= 300 => Err(X3Error::Http {
                status,
                messages: if text.trim().is_empty() {
                    Vec::new()
                } else {
                    vec![X3Message::error(snippet(&text))]
                },
                x3_diagnoses: false,
            }),
            Ok(_) => Err(X3Error::MalformedResponse {
                status,
                detail: "unexpected status".into(),
            }),
            Err(SoapParseError::Malformed(detail)) => {
                Err(X3Error::MalformedResponse { status, detail })
            }
        }
    }

    fn result_record(result: &CAdxResult) -> Result<X3Record, X3Error> {
        let block = xml::parse(&result.result_xml).map_err(|e| X3Error::MalformedResponse {
            status: 200,
            detail: format!("resultXml: {e}"),
        })?;
        X3Record::from_block(&block).map_err(|e| X3Error::MalformedResponse {
            status: 200,
            detail: format!("resultXml: {e}"),
        })
    }

    // ----- generic operations -----

    /// One REST page: the first (`next` = `None`) or the one at a `$next` URL.
    pub async fn query_page(
        &self,
        object: &ObjectName,
        query: &X3Query,
        next: Option<&str>,
    ) -> Result<Page, X3Error> {
        let url = match next {
            Some(n) => {
                if !n.starts_with(&format!("{}/", self.config.base_url)) {
                    return Err(X3Error::MalformedResponse {
                        status: 200,
                        detail: format!("$next points off the configured origin: {n}"),
                    });
                }
                reqwest::Url::parse(n).map_err(|e| X3Error::MalformedResponse {
                    status: 200,
                    detail: format!("$next {n}: {e}"),
                })?
            }
            None => {
                let repr = format!("{}.$query", object.representation);
                let mut params: Vec<(&str, String)> = vec![("representation", repr)];
                if let Some(n) = query.page_size {
                    if n == 0 || n > PAGE_SIZE_MAX {
                        return Err(X3Error::Invalid(format!(
                            "page size {n} not in 1..={PAGE_SIZE_MAX}"
                        )));
                    }
                    params.push(("count", n.to_string()));
                }
                if !query.filters.is_empty() {
                    params.push(("where", where_expression(&query.filters)));
                }
                if !query.order_by.is_empty() {
                    let order = query
                        .order_by
                        .iter()
                        .map(|(f, asc)| format!("{f} {}", if *asc { "asc" } else { "desc" }))
                        .collect::<Vec<_>>()
                        .join(", ");
                    params.push(("orderBy", order));
                }
                let pairs: Vec<(&str, &str)> =
                    params.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.url(&self.class_url(object), &pairs)?
            }
        };
        let (_, _, json) = self
            .rest(&format!("query {}", object.class), self.http.get(url))
            .await?;
        let resources = json
            .get("$resources")
            .and_then(Json::as_array)
            .ok_or_else(|| X3Error::MalformedResponse {
                status: 200,
                detail: "query feed without $resources".into(),
            })?;
        let records = resources
            .iter()
            .map(X3Record::from_json)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|detail| X3Error::MalformedResponse {
                status: 200,
                detail,
            })?;
        let next = json
            .pointer("/$links/$next/$url")
            .and_then(Json::as_str)
            .map(str::to_owned);
        Ok(Page { records, next })
    }

    /// Every record matching `query`: REST pages followed to the end, or one SOAP `query`.
    pub async fn query(
        &self,
        object: &ObjectName,
        query: &X3Query,
    ) -> Result<Vec<X3Record>, X3Error> {
        if self.is_soap() {
            return self.soap_query(object, query).await;
        }
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..self.config.max_pages {
            let page = self.query_page(object, query, next.as_deref()).await?;
            out.extend(page.records);
            match page.next {
                None => return Ok(out),
                Some(n) if Some(&n) == next.as_ref() => {
                    return Err(X3Error::MalformedResponse {
                        status: 200,
                        detail: format!("$next repeats itself: {n}"),
                    });
                }
                Some(n) => next = Some(n),
            }
        }
        Err(X3Error::Invalid(format!(
            "query of {} did not end within {} pages",
            object.class, self.config.max_pages
        )))
    }

    async fn soap_query(
        &self,
        object: &ObjectName,
        query: &X3Query,
    ) -> Result<Vec<X3Record>, X3Error> {
        if !query.order_by.is_empty() {
            return Err(X3Error::Invalid("SOAP query has no sort".into()));
        }
        let keys = query
            .filters
            .iter()
            .map(|f| {
                if f.op == Op::Eq {
                    Ok((f.field.clone(), f.value.clone()))
                } else {
                    Err(X3Error::Invalid(format!(
                        "SOAP query criteria are equalities; got {}",
                        f.to_expression()
                    )))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limit = self.config.soap_list_size;
        let result = self
            .soap(SoapCall::Query {
                public_name: object.public_name.clone(),
                keys,
                list_size: limit.saturating_add(1),
            })
            .await?;
        let block = xml::parse(&result.result_xml).map_err(|e| X3Error::MalformedResponse {
            status: 200,
            detail: format!("resultXml: {e}"),
        })?;
        let rows =
            X3Record::from_query_result(&block).map_err(|detail| X3Error::MalformedResponse {
                status: 200,
                detail,
            })?;
        if rows.len() > limit as usize {
            return Err(X3Error::Truncated {
                public_name: object.public_name.clone(),
                limit,
            });
        }
        Ok(rows)
    }

    /// One record by key (`$details` / SOAP `read`).
    pub async fn read(&self, object: &ObjectName, key: &str) -> Result<X3Record, X3Error> {
        if self.is_soap() {
            let result = self
                .soap(SoapCall::Read {
                    public_name: object.public_name.clone(),
                    keys: vec![(key_field(object)?.to_owned(), key.to_owned())],
                })
                .await?;
            return Self::result_record(&result);
        }
        let base = format!("{}('{}')", self.class_url(object), encode_key(key));
        let repr = format!("{}.$details", object.representation);
        let url = self.url(&base, &[("representation", &repr)])?;
        let (_, _, json) = self
            .rest(&format!("read {} {key}", object.class), self.http.get(url))
            .await?;
        X3Record::from_json(&json).map_err(|detail| X3Error::MalformedResponse {
            status: 200,
            detail,
        })
    }

    /// Creates a record (`$create` → 201 + `Location` / SOAP `save`).
    pub async fn create(&self, object: &ObjectName, rec: &X3Record) -> Result<Created, X3Error> {
        let key_field = key_field(object)?;
        let (record, location) = if self.is_soap() {
            let object_xml = rec.to_param(object.schema()).to_xml();
            let result = self
                .soap(SoapCall::Save {
                    public_name: object.public_name.clone(),
                    object_xml,
                })
                .await?;
            (Self::result_record(&result)?, None)
        } else {
            let repr = format!("{}.$create", object.representation);
            let url = self.url(&self.class_url(object), &[("representation", &repr)])?;
            let (status, location, json) = self
                .rest(
                    &format!("create {}", object.class),
                    self.http.post(url).json(&Json::Object(rec.to_json())),
                )
                .await?;
            if status != 201 {
                return Err(X3Error::MalformedResponse {
                    status,
                    detail: "a create must answer 201 Created".into(),
                });
            }
            let record = X3Record::from_json(&json)
                .map_err(|detail| X3Error::MalformedResponse { status, detail })?;
            (record, location)
        };
        let key = record.text(key_field).to_owned();
        if key.is_empty() {
            return Err(X3Error::MalformedResponse {
                status: 200,
                detail: format!("created {} without {key_field}", object.class),
            });
        }
        Ok(Created {
            key,
            location,
            record,
        })
    }

    /// Updates a record; `rec` may be partial. Answers the new state.
    pub async fn update(
        &self,
        object: &ObjectName,
        key: &str,
        rec: &X3Record,
    ) -> Result<X3Record, X3Error> {
        if self.is_soap() {
            let result = self
                .soap(SoapCall::Modify {
                    public_name: object.public_name.clone(),
                    keys: vec![(key_field(object)?.to_owned(), key.to_owned())],
                    object_xml: rec.to_param(object.schema()).to_xml(),
                })
                .await?;
            return Self::result_record(&result);
        }
        let base = format!("{}('{}')", self.class_url(object), encode_key(key));
        let repr = format!("{}.$edit", object.representation);
        let url = self.url(&base, &[("representation", &repr)])?;
        let (_, _, json) = self
            .rest(
                &format!("update {} {key}", object.class),
                self.http.put(url).json(&Json::Object(rec.to_json())),
            )
            .await?;
        X3Record::from_json(&json).map_err(|detail| X3Error::MalformedResponse {
            status: 200,
            detail,
        })
    }

    /// Runs a published subprogram (SOAP `run`): `inputXml` in, `<RESULT>` out.
    pub async fn run(&self, public_name: &str, input: &X3Record) -> Result<X3Record, X3Error> {
        let result = self
            .soap(SoapCall::Run {
                public_name: public_name.into(),
                input_xml: input.to_param(None).to_xml(),
            })
            .await?;
        Self::result_record(&result)
    }

    // ----- typed operations -----

    pub async fn create_customer(&self, customer: &Customer) -> Result<Customer, X3Error> {
        let rec = customer.to_record(&self.config.sf_id_field);
        let created = self.create(&self.config.objects.customer, &rec).await?;
        Customer::from_record(&created.record, &self.config.sf_id_field)
    }

    pub async fn read_customer(&self, code: &str) -> Result<Customer, X3Error> {
        let rec = self.read(&self.config.objects.customer, code).await?;
        Customer::from_record(&rec, &self.config.sf_id_field)
    }

    /// Customers matching `query` (header fields only: the address is not in query lists).
    pub async fn query_customers(&self, query: &X3Query) -> Result<Vec<Customer>, X3Error> {
        self.query(&self.config.objects.customer, query)
            .await?
            .iter()
            .map(|r| Customer::from_record(r, &self.config.sf_id_field))
            .collect()
    }

    /// The customer carrying this Salesforce id in the custom field, if any (more than
    /// one is an error: the id must be unique).
    pub async fn find_customer_by_sf_id(&self, sf_id: &str) -> Result<Option<Customer>, X3Error> {
        let q = X3Query::filter(vec![Filter::eq(&self.config.sf_id_field, sf_id)]);
        let mut found = self.query_customers(&q).await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(X3Error::Invalid(format!(
                "{n} customers carry Salesforce id {sf_id}"
            ))),
        }
    }

    /// Partial update of a customer (only the fields of `changes`).
    pub async fn update_customer(
        &self,
        code: &str,
        changes: &X3Record,
    ) -> Result<Customer, X3Error> {
        let rec = self
            .update(&self.config.objects.customer, code, changes)
            .await?;
        Customer::from_record(&rec, &self.config.sf_id_field)
    }

    pub async fn create_item(&self, item: &Item) -> Result<Item, X3Error> {
        let created = self
            .create(&self.config.objects.item, &item.to_record())
            .await?;
        Ok(Item::from_record(&created.record))
    }

    pub async fn read_item(&self, code: &str) -> Result<Item, X3Error> {
        let rec = self.read(&self.config.objects.item, code).await?;
        Ok(Item::from_record(&rec))
    }

    pub async fn create_order(&self, order: &SalesOrder) -> Result<SalesOrder, X3Error> {
        let created = self
            .create(&self.config.objects.order, &order.to_record()?)
            .await?;
        SalesOrder::from_record(&created.record)
    }

    pub async fn read_order(&self, number: &str) -> Result<SalesOrder, X3Error> {
        let rec = self.read(&self.config.objects.order, number).await?;
        SalesOrder::from_record(&rec)
    }

    pub async fn read_invoice(&self, number: &str) -> Result<SalesInvoice, X3Error> {
        let rec = self.read(&self.config.objects.invoice, number).await?;
        SalesInvoice::from_record(&rec)
    }

    /// The invoices raised from a sales order.
    pub async fn invoices_for_order(&self, order: &str) -> Result<Vec<SalesInvoice>, X3Error> {
        let q = X3Query::filter(vec![Filter::eq("SOHNUM", order)]);
        self.query(&self.config.objects.invoice, &q)
            .await?
            .iter()
            .map(SalesInvoice::from_record)
            .collect()
    }

    /// The sales orders carrying this customer reference (`CUSORDREF`) for a customer: how
    /// the loop finds an order it made before a crash (the Opportunity id is the reference).
    pub async fn find_orders_by_customer_ref(
        &self,
        customer: &str,
        reference: &str,
    ) -> Result<Vec<SalesOrder>, X3Error> {
        let q = X3Query::filter(vec![
            Filter::eq("BPCORD", customer),
            Filter::eq("CUSORDREF", reference),
        ]);
        let found = self.query(&self.config.objects.order, &q).await?;
        // Query lists carry header fields only: read each in full (lines included).
        let mut out = Vec::with_capacity(found.len());
        for rec in &found {
            out.push(self.read_order(rec.text("SOHNUM")).await?);
        }
        Ok(out)
    }

    /// The stock lines of an item at a site.
    pub async fn read_stock(&self, item: &str, site: &str) -> Result<Vec<StockLine>, X3Error> {
        let q = X3Query::filter(vec![Filter::eq("ITMREF", item), Filter::eq("STOFCY", site)]);
        self.query(&self.config.objects.stock, &q)
            .await?
            .iter()
            .map(StockLine::from_record)
            .collect()
    }

    pub async fn create_payment(&self, payment: &Payment) -> Result<Payment, X3Error> {
        let created = self
            .create(&self.config.objects.payment, &payment.to_record()?)
            .await?;
        Payment::from_record(&created.record)
    }

    /// The receipts carrying our reference (`REF`, the gateway payment id): how a payment
    /// is found before it is created, so it is never applied twice.
    pub async fn find_payments_by_ref(&self, reference: &str) -> Result<Vec<Payment>, X3Error> {
        let q = X3Query::filter(vec![Filter::eq("REF", reference)]);
        let found = self.query(&self.config.objects.payment, &q).await?;
        let mut out = Vec::with_capacity(found.len());
        for rec in &found {
            out.push(self.read_payment(rec.text("NUM")).await?);
        }
        Ok(out)
    }

    /// A customer's receipts (`BPR`), header fields only (no allocation lines): what the
    /// pull needs to book receipts entered in X3 by hand.
    pub async fn payments_of_customer(&self, customer: &str) -> Result<Vec<Payment>, X3Error> {
        let q = X3Query::filter(vec![Filter::eq("BPR", customer)]);
        self.query(&self.config.objects.payment, &q)
            .await?
            .iter()
            .map(Payment::from_record)
            .collect()
    }

    pub async fn read_payment(&self, number: &str) -> Result<Payment, X3Error> {
        let rec = self.read(&self.config.objects.payment, number).await?;
        Payment::from_record(&rec)
    }
}

fn key_field(object: &ObjectName) -> Result<&'static str, X3Error> {
    object
        .schema()
        .map(|s| s.key)
        .ok_or_else(|| X3Error::Invalid(format!("no key known for class {}", object.class)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_expressions_quote_values() {
        let w = where_expression(&[
            Filter::eq("BPCNUM", "O'Brien"),
            Filter::new("ORDDAT", Op::Gt, "20260101"),
        ]);
        assert_eq!(w, "BPCNUM eq 'O''Brien' and ORDDAT gt '20260101'");
        assert_eq!(encode_key("C 1/'x"), "C%201%2F''x");
    }
}
