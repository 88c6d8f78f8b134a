//! A protocol-faithful Sage Intacct simulator: a real HTTP server on loopback with one
//! in-memory company, so [`IntacctClient`](super::IntacctClient) is tested over a socket the
//! way it talks to Intacct.
//!
//! Faithful in (shapes from protocols.md §1 and the intacct-sdk-php fixtures):
//! - **Transport**: `POST …/ia/xml/xmlgw.phtml` (any path ending so), HTTP 200 for business
//!   failures, `text/xml` answers. `getAPISession` answers with the session's endpoint,
//!   [`SimulatorConfig::session_endpoint_path`] on the simulator's own address (a different
//!   path from the login URL, as `na12.intacct.com` differs from `api.intacct.com`), and
//!   requests are counted per path.
//! - **Control**: a bad sender id / password or an unparsable document is a control failure
//!   (`XL03000006` / `XL03000003`) with `<errormessage>` beside `<control>`.
//! - **Authentication**: login (user, company, password, `locationid` among the configured
//!   entities) or a session id (sliding expiry); failure is `<authentication><status>failure`
//!   with `XL03000006` "Sign-in information is incorrect" inside `<operation>`.
//! - **Functions** (one `<result>` per function, in order, echoing `function` and
//!   `controlid`): `getAPISession`, `readByQuery` (query subset: empty, or `FIELD op value`
//!   with `= != <> < <= > >=` joined with `AND`, compared as numbers, `MM/DD/YYYY[ HH:MM:SS]`
//!   datetimes or text; pagesize ≤ 1000) and `readMore` by `resultId` (unknown / expired:
//!   `readMore failed`), `query` (`equalto`, `notequalto`, `lessthan[orequalto]`,
//!   `greaterthan[orequalto]` filters under `and`, `orderby`, pagesize ≤ 2000,
//!   offset), `read` by RECORDNOs, generic `create` / `update` / `delete`, legacy
//!   `create_invoice` (answers `<key>`).
//! - **Objects**: CUSTOMER, CONTACT, ITEM, ARINVOICE, ARPYMT, CURRENCY (USD, EUR, GBP, CAD
//!   seeded); RECORDNO, WHENCREATED, WHENMODIFIED, MEGAENTITYID stamped; duplicate natural
//!   keys → `BL34000061` "Another Customer with the given value(s) X  already exists" +
//!   `BL01001973`; missing required fields, unknown objects, updates of missing records.
//! - **Operations**: `transaction="false"` lets each function fail alone;
//!   `transaction="true"` rolls every write back and answers the others `aborted` with
//!   `XL03000009`. With `uniqueid=true` a function controlid that already completed is
//!   refused ([`SimulatorConfig::duplicate_controlid_errorno`]: the real errorno is not in
//!   public sources — verify against a sandbox).
//!
//! Not verified against a real tenant (documented guesses): the errornos for a missing
//! required field, an unknown object, a repeated controlid and the bad-sender text.
//!
//! Test hooks: latency, a queue of HTTP faults (5xx, 524, 429 `GW-0010`), session and
//! `resultId` expiry, request / function counters, the largest number of requests in flight,
//! seeding and reading records.

mod company;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use rust_decimal::Decimal;

use self::company::{Company, FnError};
use super::wire::ErrorDetail;
use super::xml::{self, Element};

pub use self::company::{
    DAILY_RATE, DEFAULT_SALES_ACCOUNT, OBJECTS, SALES_DEFINITIONS, cents, default_exchange_rates,
};

/// The endpoint path Intacct serves.
pub const ENDPOINT_PATH: &str = "/ia/xml/xmlgw.phtml";

/// An HTTP-level fault for the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// This status with a non-XML body (502, 503, 524, …).
    Status(u16),
    /// HTTP 429 with a `GW-0010` error body.
    RateLimit,
    /// HTTP 401 with the gateway's `XMLGW_JPP0002` body (intacct-sdk-php
    /// `RequestHandlerTest::testMock400LevelErrorWithXmlResponse`).
    GatewaySignIn,
}

/// How the simulated company is set up.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    pub sender_id: String,
    pub sender_password: String,
    pub company_id: String,
    /// `(userid, password)`.
    pub users: Vec<(String, String)>,
    /// Entity ids accepted as `locationid`.
    pub entities: Vec<String>,
    pub session_lifetime_s: u64,
    pub result_id_lifetime_s: u64,
    pub session_endpoint_path: String,
    pub duplicate_controlid_errorno: String,
    /// The top level's base currency (`USD`).
    pub base_currency: String,
    /// Base currency per entity (`US` → `USD`, `UK` → `GBP`); others use `base_currency`.
    pub entity_base_currencies: Vec<(String, String)>,
    /// The "Intacct Daily Rate" table, `(from, to, rate)`; inverse and via-USD rates are
    /// derived. [`Simulator::set_rate`] changes it while running.
    pub exchange_rates: Vec<(String, String, Decimal)>,
}

impl Default for SimulatorConfig {
    fn default() -> SimulatorConfig {
        SimulatorConfig {
            sender_id: "cashloop_sender".into(),
            sender_password: "sender-pass-0123".into(),
            company_id: "cashloop-sim".into(),
            users: vec![("ws_user".into(), "user-pass-4567".into())],
            entities: vec!["US".into(), "UK".into()],
            session_lifetime_s: 3_600,
            result_id_lifetime_s: 900,
            session_endpoint_path: format!("/na1{ENDPOINT_PATH}"),
            duplicate_controlid_errorno: "XL03000004".into(),
            base_currency: "USD".into(),
            entity_base_currencies: vec![("US".into(), "USD".into()), ("UK".into(), "GBP".into())],
            exchange_rates: default_exchange_rates(),
        }
    }
}

struct SessionInfo {
    userid: String,
    locationid: String,
    expires: Instant,
}

struct Cursor {
    listtype: String,
    remaining: VecDeque<Element>,
    totalcount: usize,
    pagesize: usize,
    expires: Instant,
}

#[derive(Default)]
struct Counters {
    requests: u64,
    functions: u64,
    by_function: BTreeMap<String, u64>,
    by_path: BTreeMap<String, u64>,
    in_flight: u64,
    max_in_flight: u64,
}

struct State {
    company: Company,
    sessions: HashMap<String, SessionInfo>,
    cursors: HashMap<String, Cursor>,
    executed: HashSet<String>,
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
    pub async fn start(config: SimulatorConfig) -> Simulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let mut company = Company::new();
        company.set_base_currencies(&config.base_currency, &config.entity_base_currencies);
        for (from, to, rate) in &config.exchange_rates {
            company.set_rate(from, to, *rate);
        }
        let state = State {
            company,
            sessions: HashMap::new(),
            cursors: HashMap::new(),
            executed: HashSet::new(),
            latency_ms: 0,
            faults: VecDeque::new(),
            counters: Counters::default(),
        };
        let shared = Arc::new(Shared {
            config,
            base_url: format!("http://{addr}"),
            state: Mutex::new(state),
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

    /// The login endpoint (`…/ia/xml/xmlgw.phtml`).
    pub fn endpoint_url(&self) -> String {
        format!("{}{ENDPOINT_PATH}", self.shared.base_url)
    }

    /// The endpoint `getAPISession` hands out.
    pub fn session_endpoint_url(&self) -> String {
        format!(
            "{}{}",
            self.shared.base_url, self.shared.config.session_endpoint_path
        )
    }

    /// Delay every answer by this much.
    pub fn set_latency_ms(&self, ms: u64) {
        self.shared.lock().latency_ms = ms;
    }

    /// The next `n` requests get `fault` instead of being processed.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut st = self.shared.lock();
        st.faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Every session expires now.
    pub fn expire_sessions(&self) {
        self.shared.lock().sessions.clear();
    }

    /// Every `readByQuery` cursor expires now.
    pub fn expire_result_ids(&self) {
        self.shared.lock().cursors.clear();
    }

    /// HTTP requests received (faulted ones included).
    pub fn requests(&self) -> u64 {
        self.shared.lock().counters.requests
    }

    /// Functions executed.
    pub fn functions(&self) -> u64 {
        self.shared.lock().counters.functions
    }

    /// Functions executed with this name (`readByQuery`, `getAPISession`, …).
    pub fn function_count(&self, name: &str) -> u64 {
        self.shared
            .lock()
            .counters
            .by_function
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Requests per URL path.
    pub fn requests_by_path(&self) -> BTreeMap<String, u64> {
        self.shared.lock().counters.by_path.clone()
    }

    /// The most requests ever in flight at once.
    pub fn max_in_flight(&self) -> u64 {
        self.shared.lock().counters.max_in_flight
    }

    /// Seeds records directly (no counters, no idempotency); returns their RECORDNOs.
    pub fn insert(&self, object: &str, records: Vec<Element>) -> Vec<u64> {
        let mut st = self.shared.lock();
        let nos = records
            .into_iter()
            .map(|r| st.company.insert_raw(object, r, ""))
            .collect();
        st.company.commit();
        nos
    }

    /// Sets the "Intacct Daily Rate" from → to (an explicit `exchrate` still wins).
    pub fn set_rate(&self, from: &str, to: &str, rate: Decimal) {
        self.shared.lock().company.set_rate(from, to, rate);
    }

    /// The stored records of an object, in RECORDNO order.
    pub fn records(&self, object: &str) -> Vec<Element> {
        self.shared.lock().company.all(object)
    }
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.counters.in_flight = st.counters.in_flight.saturating_sub(1);
    }
}

fn xml_response(status: StatusCode, root: &Element) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; encoding=\"UTF-8\"")],
        xml::document(root),
    )
        .into_response()
}

fn error_message(errors: &[ErrorDetail]) -> Element {
    let mut em = Element::new("errormessage");
    em.children = errors.iter().map(ErrorDetail::to_element).collect();
    em
}

fn control_failure(senderid: &str, controlid: &str, errors: &[ErrorDetail]) -> Element {
    Element::new("response")
        .with(
            Element::new("control")
                .with_leaf("status", "failure")
                .with_leaf("senderid", senderid)
                .with_leaf("controlid", controlid),
        )
        .with(error_message(errors))
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if method != Method::POST || !path.ends_with(ENDPOINT_PATH) {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let (latency, fault) = {
        let mut st = shared.lock();
        let c = &mut st.counters;
        c.requests += 1;
        *c.by_path.entry(path).or_default() += 1;
        c.in_flight += 1;
        c.max_in_flight = c.max_in_flight.max(c.in_flight);
        (st.latency_ms, st.faults.pop_front())
    };
    let _guard = InFlight(&shared);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match fault {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (status, format!("<html><body>{code}</body></html>")).into_response();
        }
        Some(Fault::RateLimit) => {
            let err = ErrorDetail::new(
                "GW-0010",
                "API rate limit exceeded",
                "Too many concurrent requests for this company. Try again later.",
                "",
            );
            return xml_response(
                StatusCode::TOO_MANY_REQUESTS,
                &control_failure("", "", &[err]),
            );
        }
        Some(Fault::GatewaySignIn) => {
            let err = ErrorDetail::new(
                "XMLGW_JPP0002",
                "Sign-in information is incorrect. Please check your request.",
                "",
                "",
            );
            let body = Element::new("response")
                .with(Element::new("control").with_leaf("status", "failure"))
                .with(error_message(&[err]));
            return xml_response(StatusCode::UNAUTHORIZED, &body);
        }
        None => {}
    }
    let text = String::from_utf8_lossy(&body);
    let root = match xml::parse(&text) {
        Ok(r) if r.is("request") => r,
        Ok(_) | Err(_) => {
            let err = ErrorDetail::new(
                "XL03000003",
                "XML Parse schema error: Error in Request",
                "The request is not a valid XML Web Services request.",
                "",
            );
            return xml_response(StatusCode::OK, &control_failure("", "", &[err]));
        }
    };
    let answer = shared.process(&root);
    xml_response(StatusCode::OK, &answer)
}

impl Shared {
    fn process(&self, req: &Element) -> Element {
        let cfg = &self.config;
        let control = req.child("control").cloned().unwrap_or_default();
        let senderid = control.text_at("senderid").unwrap_or_default();
        let controlid = control.text_at("controlid").unwrap_or_default();
        if senderid != cfg.sender_id || control.text_at("password") != Some(&cfg.sender_password) {
            let err = ErrorDetail::new(
                "XL03000006",
                "",
                "Incorrect Intacct XML Partner ID or password.",
                "",
            );
            return control_failure(senderid, controlid, &[err]);
        }
        let uniqueid = control
            .text_at("uniqueid")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let control_echo = Element::new("control")
            .with_leaf("status", "success")
            .with_leaf("senderid", senderid)
            .with_leaf("controlid", controlid)
            .with_leaf("uniqueid", uniqueid.to_string())
            .with_leaf("dtdversion", "3.0");
        let Some(operation) = req.child("operation") else {
            let err = ErrorDetail::new(
                "XL03000003",
                "XML Parse schema error: Error in Request",
                "Missing <operation>.",
                "",
            );
            return control_failure(senderid, controlid, &[err]);
        };
        let transaction = operation
            .attr("transaction")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut st = self.lock();
        let now = Instant::now();
        let auth = operation
            .child("authentication")
            .cloned()
            .unwrap_or_default();
        let signed_in = st.authenticate(cfg, &auth, now);
        let mut auth_echo = Element::new("authentication");
        let (userid, locationid) = match signed_in {
            Some(who) => who,
            None => {
                auth_echo = auth_echo
                    .with_leaf("status", "failure")
                    .with_leaf("userid", auth.text_at("login/userid").unwrap_or_default())
                    .with_leaf(
                        "companyid",
                        auth.text_at("login/companyid").unwrap_or(&cfg.company_id),
                    )
                    .with_leaf(
                        "locationid",
                        auth.text_at("login/locationid").unwrap_or_default(),
                    );
                let err =
                    ErrorDetail::new("XL03000006", "", "Sign-in information is incorrect", "");
                return Element::new("response").with(control_echo).with(
                    Element::new("operation")
                        .with(auth_echo)
                        .with(error_message(&[err])),
                );
            }
        };
        let stamp = Utc::now();
        let timeout = stamp
            + chrono::Duration::seconds(i64::try_from(cfg.session_lifetime_s).unwrap_or(i64::MAX));
        auth_echo = auth_echo
            .with_leaf("status", "success")
            .with_leaf("userid", &userid)
            .with_leaf("companyid", &cfg.company_id)
            .with_leaf("locationid", &locationid)
            .with_leaf("sessiontimestamp", stamp.to_rfc3339())
            .with_leaf("sessiontimeout", timeout.to_rfc3339());

        let functions: Vec<&Element> = operation
            .child("content")
            .map(|c| c.children_named("function").collect())
            .unwrap_or_default();
        // Every change of this request is in the company's undo log from here: a function's
        // own failure rolls back to its mark, a failed transaction to this one.
        st.company.commit();
        let request_mark = st.company.mark();
        let mut results: Vec<(Element, Result<FnOutput, Vec<ErrorDetail>>)> = Vec::new();
        for f in &functions {
            let fcontrolid = f.attr("controlid").unwrap_or_default().to_owned();
            let body = f.children.first().cloned().unwrap_or_default();
            st.counters.functions += 1;
            *st.counters
                .by_function
                .entry(body.name.clone())
                .or_default() += 1;
            let head = Element::new("result");
            let outcome = if uniqueid && st.executed.contains(&fcontrolid) {
                Err(vec![ErrorDetail::new(
                    &cfg.duplicate_controlid_errorno,
                    "",
                    &format!(
                        "A successful transaction has already been recorded with the control id {fcontrolid}."
                    ),
                    "Use a unique control id.",
                )])
            } else {
                st.run(self, &body, &userid, &locationid, now)
                    .map_err(|FnError(errors)| errors)
            };
            results.push((
                head.with_leaf("status", "")
                    .with_leaf("function", &body.name)
                    .with_leaf("controlid", &fcontrolid),
                outcome,
            ));
        }
        let failed = results.iter().any(|(_, r)| r.is_err());
        let rolled_back = transaction && failed;
        if rolled_back {
            st.company.rollback(request_mark);
        }
        st.company.commit();
        if uniqueid && !rolled_back {
            for (head, r) in &results {
                if r.is_ok() {
                    st.executed
                        .insert(head.text_at("controlid").unwrap_or_default().to_owned());
                }
            }
        }
        drop(st);
        let rollback = ErrorDetail::new(
            "XL03000009",
            "",
            "The entire transaction in this operation has been rolled back due to an error.",
            "",
        );
        let mut op = Element::new("operation").with(auth_echo);
        for (mut head, outcome) in results {
            match outcome {
                Ok(out) if !rolled_back => {
                    head.set_leaf("status", "success");
                    match out {
                        FnOutput::Data(d) => head = head.with(d),
                        FnOutput::Key(k) => head = head.with_leaf("key", k),
                        FnOutput::Nothing => {}
                    }
                }
                Ok(_) => {
                    head.set_leaf("status", "aborted");
                    head = head.with(error_message(std::slice::from_ref(&rollback)));
                }
                Err(mut errors) => {
                    head.set_leaf("status", "failure");
                    if rolled_back {
                        errors.push(rollback.clone());
                    }
                    head = head.with(error_message(&errors));
                }
            }
            op = op.with(head);
        }
        Element::new("response").with(control_echo).with(op)
    }
}

/// What a successful function answers besides its status.
enum FnOutput {
    Data(Element),
    Key(String),
    Nothing,
}

fn new_id() -> String {
    super::client::random_controlid()
}

impl State {
    /// `Some((userid, locationid))` when the login or session is good.
    fn authenticate(
        &mut self,
        cfg: &SimulatorConfig,
        auth: &Element,
        now: Instant,
    ) -> Option<(String, String)> {
        let lifetime = Duration::from_secs(cfg.session_lifetime_s);
        if let Some(id) = auth.text_at("sessionid") {
            let s = self.sessions.get_mut(id)?;
            if s.expires <= now {
                self.sessions.remove(id);
                return None;
            }
            s.expires = now + lifetime;
            return Some((s.userid.clone(), s.locationid.clone()));
        }
        let login = auth.child("login")?;
        let userid = login.text_at("userid")?;
        let password = login.text_at("password")?;
        let location = login.text_at("locationid").unwrap_or_default();
        let user_ok = cfg.users.iter().any(|(u, p)| u == userid && p == password);
        let company_ok = login.text_at("companyid") == Some(&cfg.company_id);
        let location_ok = location.is_empty() || cfg.entities.iter().any(|e| e == location);
        (user_ok && company_ok && location_ok).then(|| (userid.to_owned(), location.to_owned()))
    }

    fn run(
        &mut self,
        shared: &Shared,
        body: &Element,
        userid: &str,
        locationid: &str,
        now: Instant,
    ) -> Result<FnOutput, FnError> {
        let mark = self.company.mark();
        let result = self.run_inner(shared, body, userid, locationid, now);
        if result.is_err() {
            self.company.rollback(mark);
        }
        result
    }

    fn run_inner(
        &mut self,
        shared: &Shared,
        body: &Element,
        userid: &str,
        locationid: &str,
        now: Instant,
    ) -> Result<FnOutput, FnError> {
        let name = body.name.as_str();
        match name {
            "getAPISession" => {
                let location = body
                    .text_at("locationid")
                    .filter(|l| !l.is_empty())
                    .unwrap_or(locationid)
                    .to_owned();
                if !location.is_empty() && !shared.config.entities.contains(&location) {
                    return Err(FnError::one(
                        "Get API Session Failed",
                        &format!("Invalid location {location}"),
                    ));
                }
                let id = format!("{}..", new_id());
                self.sessions.insert(
                    id.clone(),
                    SessionInfo {
                        userid: userid.to_owned(),
                        locationid: location.clone(),
                        expires: now + Duration::from_secs(shared.config.session_lifetime_s),
                    },
                );
                let api = Element::new("api")
                    .with_leaf("sessionid", id)
                    .with_leaf(
                        "endpoint",
                        format!("{}{}", shared.base_url, shared.config.session_endpoint_path),
                    )
                    .with_leaf("locationid", location);
                Ok(FnOutput::Data(Element::new("data").with(api)))
            }
            "readByQuery" => {
                let object = body.text_at("object").unwrap_or_default();
                let fields = body.text_at("fields").unwrap_or("*");
                let query = body.text_at("query").unwrap_or_default();
                let pagesize: usize = body
                    .text_at("pagesize")
                    .unwrap_or("100")
                    .parse()
                    .map_err(|_| FnError::one("Query Failed", "Invalid pagesize"))?;
                if !(1..=1_000).contains(&pagesize) {
                    return Err(FnError::one(
                        "Query Failed",
                        "pagesize must be between 1 and 1000",
                    ));
                }
                let rows = self.company.select(object, query, fields, true)?;
                let listtype = object.to_ascii_lowercase();
                let cursor = Cursor {
                    listtype,
                    totalcount: rows.len(),
                    remaining: rows.into(),
                    pagesize,
                    expires: now + Duration::from_secs(shared.config.result_id_lifetime_s),
                };
                Ok(FnOutput::Data(self.page(new_id(), cursor)))
            }
            "readMore" => {
                let id = body.text_at("resultId").unwrap_or_default().to_owned();
                let cursor = self.cursors.remove(&id).filter(|c| c.expires > now);
                let Some(cursor) = cursor else {
                    return Err(FnError::one(
                        "readMore failed",
                        &format!("Attempt to readMore with an invalid or expired resultId: {id}"),
                    ));
                };
                Ok(FnOutput::Data(self.page(id, cursor)))
            }
            "query" => self.company.query(body).map(FnOutput::Data),
            "read" => {
                let object = body.text_at("object").unwrap_or_default();
                let keys = body.text_at("keys").unwrap_or_default();
                let fields = body.text_at("fields").unwrap_or("*");
                let rows = self.company.read(object, keys, fields)?;
                let mut data = Element::new("data")
                    .with_attr("listtype", object.to_ascii_uppercase())
                    .with_attr("count", rows.len().to_string());
                data.children = rows;
                Ok(FnOutput::Data(data))
            }
            "create" | "update" => {
                let written = self
                    .company
                    .write(name == "create", &body.children, locationid)?;
                let mut data = Element::new("data")
                    .with_attr("listtype", "objects")
                    .with_attr("count", written.len().to_string());
                data.children = written;
                Ok(FnOutput::Data(data))
            }
            "delete" => {
                let object = body.text_at("object").unwrap_or_default();
                let keys = body.text_at("keys").unwrap_or_default();
                self.company.delete(object, keys)?;
                Ok(FnOutput::Nothing)
            }
            "create_invoice" => self
                .company
                .create_invoice(body, locationid)
                .map(|k| FnOutput::Key(k.to_string())),
            "create_sotransaction" => self
                .company
                .create_sotransaction(body, locationid)
                .map(FnOutput::Key),
            "create_arpayment" => self
                .company
                .create_arpayment(body, locationid)
                .map(|k| FnOutput::Key(k.to_string())),
            "create_aradjustment" => self
                .company
                .create_aradjustment(body, locationid)
                .map(|k| FnOutput::Key(k.to_string())),
            "create_bill" => self
                .company
                .create_bill(body, locationid)
                .map(|k| FnOutput::Key(k.to_string())),
            other => Err(FnError::one(
                "XL03000003",
                &format!("Unsupported function {other}"),
            )),
        }
    }

    /// The next page of a cursor; the cursor is kept under `id` while rows remain.
    fn page(&mut self, id: String, mut cursor: Cursor) -> Element {
        let n = cursor.pagesize.min(cursor.remaining.len());
        let rows: Vec<Element> = cursor.remaining.drain(..n).collect();
        let remaining = cursor.remaining.len();
        let mut data = Element::new("data")
            .with_attr("listtype", &cursor.listtype)
            .with_attr("count", rows.len().to_string())
            .with_attr("totalcount", cursor.totalcount.to_string())
            .with_attr("numremaining", remaining.to_string())
            .with_attr(
                "resultId",
                if remaining == 0 {
                    String::new()
                } else {
                    id.clone()
                },
            );
        data.children = rows;
        if remaining > 0 {
            self.cursors.insert(id, cursor);
        }
        data
    }
}
