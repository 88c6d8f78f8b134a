//! A Sage 100 eBusiness Web Services simulator (axum on 127.0.0.1:0) for tests and the
//! sandbox: customers keyed by (ARDivisionNo, CustomerNo), sales orders, an item list and the
//! sales order number sequence, answering with the faults a real site sends:
//!
//! | condition                                         | fault              |
//! |---------------------------------------------------|--------------------|
//! | GetCustomer / UpdateCustomer / GetSalesOrder of a missing record | `CI_NoKey` |
//! | CreateSalesOrder for an unknown customer or item  | `CI_NOF`           |
//! | a field longer than its layout (CustomerName 30, CustomerNo 20, ARDivisionNo 2, CustomerPONo 15) | `CI_CharLength` |
//! | CreateCustomer / CreateSalesOrder of an existing key | `WS_AlreadyExists` |
//! | a wrong logon or company                          | `WS_InvalidLogon`  |
//!
//! Faults are HTTP 500 with `detail/MasFault{ErrorCode, ErrorMessage}`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::soap::{self, Customer, NS, SalesOrder};
use crate::intacct::xml::Element;

#[derive(Debug, Default)]
struct Books {
    customers: BTreeMap<(String, String), Customer>,
    orders: BTreeMap<String, SalesOrder>,
    items: BTreeSet<String>,
    next_so: u64,
    calls: Vec<String>,
    /// How long CreateSalesOrder takes (tests hold a command in flight with it).
    create_delay: std::time::Duration,
}

#[derive(Debug)]
struct Shared {
    username: String,
    password: String,
    company: String,
    books: Mutex<Books>,
}

/// A running simulator; stopped when dropped.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Simulator {
    /// Starts with the logon `username`/`password`, company `company` and the given items.
    pub async fn start(username: &str, password: &str, company: &str, items: &[&str]) -> Simulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            username: username.to_owned(),
            password: password.to_owned(),
            company: company.to_owned(),
            books: Mutex::new(Books {
                items: items.iter().map(|s| (*s).to_owned()).collect(),
                next_so: 1,
                ..Books::default()
            }),
        });
        let app = Router::new()
            .route(soap::SOAP_PATH, post(handle))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Simulator { shared, addr, task }
    }

    /// The web services URL.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, soap::SOAP_PATH)
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.shared.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn customers(&self) -> Vec<Customer> {
        self.books().customers.values().cloned().collect()
    }

    pub fn sales_orders(&self) -> Vec<SalesOrder> {
        self.books().orders.values().cloned().collect()
    }

    /// Makes CreateSalesOrder take `delay` before it answers.
    pub fn set_create_delay(&self, delay: std::time::Duration) {
        self.books().create_delay = delay;
    }

    /// Every operation called, in order.
    pub fn calls(&self) -> Vec<String> {
        self.books().calls.clone()
    }
}

fn fault(code: &str, message: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [("content-type", "text/xml; charset=utf-8")],
        soap::fault_envelope(code, message),
    )
        .into_response()
}

fn ok(op: &str, result: Option<Element>) -> Response {
    let mut resp = Element::new(format!("{op}Response")).with_attr("xmlns", NS);
    if let Some(r) = result {
        resp = resp.with(r);
    }
    (
        StatusCode::OK,
        [("content-type", "text/xml; charset=utf-8")],
        soap::envelope(resp),
    )
        .into_response()
}

fn too_long(field: &str, value: &str, max: usize) -> Option<Response> {
    (value.chars().count() > max).then(|| {
        fault(
            "CI_CharLength",
            &format!("The {field} is too long (maximum {max} characters)."),
        )
    })
}

fn check_customer(c: &Customer) -> Option<Response> {
    too_long("ARDivisionNo", &c.ar_division_no, 2)
        .or_else(|| too_long("CustomerNo", &c.customer_no, 20))
        .or_else(|| too_long("CustomerName", &c.customer_name, 30))
        .or_else(|| too_long("AddressLine1", &c.address_line1, 30))
        .or_else(|| too_long("City", &c.city, 20))
        .or_else(|| too_long("EmailAddress", &c.email_address, 250))
}

async fn handle(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let call = match soap::body(&body) {
        Ok(c) => c,
        Err(e) => return fault("WS_BadRequest", &e.to_string()),
    };
    let op = call.name.clone();
    let t = |p: &str| call.text_at(p).unwrap_or_default().to_owned();
    if t("logon/Username") != shared.username
        || t("logon/Password") != shared.password
        || !t("companyCode").eq_ignore_ascii_case(&shared.company)
    {
        return fault("WS_InvalidLogon", "The logon or company code is not valid.");
    }
    if op == "CreateSalesOrder" {
        let delay = shared
            .books
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .create_delay;
        tokio::time::sleep(delay).await;
    }
    let mut books = shared.books.lock().unwrap_or_else(|e| e.into_inner());
    books.calls.push(op.clone());
    match op.as_str() {
        "GetCustomer" => {
            let key = (t("arDivisionNo"), t("customerNo"));
            match books.customers.get(&key) {
                Some(c) => ok(&op, Some(c.to_element("GetCustomerResult"))),
                None => fault("CI_NoKey", "The record does not exist."),
            }
        }
        "CreateCustomer" | "UpdateCustomer" => {
            let Some(el) = call.child("customer") else {
                return fault("WS_BadRequest", "customer is required");
            };
            let c = Customer::from_element(el);
            if let Some(f) = check_customer(&c) {
                return f;
            }
            let key = (c.ar_division_no.clone(), c.customer_no.clone());
            let exists = books.customers.contains_key(&key);
            if op == "CreateCustomer" && exists {
                return fault(
                    "WS_AlreadyExists",
                    &format!("Customer {}-{} already exists.", key.0, key.1),
                );
            }
            if op == "UpdateCustomer" && !exists {
                return fault("CI_NoKey", "The record does not exist.");
            }
            books.customers.insert(key, c);
            ok(&op, None)
        }
        "GetNextSalesOrderNo" => {
            // Skip numbers already used (an order created with an explicit number).
            let mut n = books.next_so;
            while books.orders.contains_key(&format!("{n:07}")) {
                n += 1;
            }
            books.next_so = n + 1;
            ok(
                &op,
                Some(Element::leaf(
                    "GetNextSalesOrderNoResult",
                    format!("{n:07}"),
                )),
            )
        }
        "CreateSalesOrder" => {
            let Some(el) = call.child("salesOrder") else {
                return fault("WS_BadRequest", "salesOrder is required");
            };
            let so = SalesOrder::from_element(el);
            if let Some(f) = too_long("SalesOrderNo", &so.sales_order_no, 7)
                .or_else(|| too_long("CustomerPONo", &so.customer_po_no, 15))
            {
                return f;
            }
            if so.sales_order_no.is_empty() {
                return fault("WS_BadRequest", "SalesOrderNo is required");
            }
            if books.orders.contains_key(&so.sales_order_no) {
                return fault(
                    "WS_AlreadyExists",
                    &format!("Sales order {} already exists.", so.sales_order_no),
                );
            }
            let key = (so.ar_division_no.clone(), so.customer_no.clone());
            if !books.customers.contains_key(&key) {
                return fault(
                    "CI_NOF",
                    &format!("Customer {}-{} is not on file.", key.0, key.1),
                );
            }
            if let Some(l) = so
                .lines
                .iter()
                .find(|l| !books.items.contains(&l.item_code))
            {
                return fault("CI_NOF", &format!("Item {} is not on file.", l.item_code));
            }
            books.orders.insert(so.sales_order_no.clone(), so);
            ok(&op, None)
        }
        "GetSalesOrder" => match books.orders.get(&t("salesOrderNo")) {
            Some(so) => ok(&op, Some(so.to_element("GetSalesOrderResult"))),
            None => fault("CI_NoKey", "The record does not exist."),
        },
        other => fault(
            "WS_NotSupported",
            &format!("The operation {other} is not supported."),
        ),
    }
}
