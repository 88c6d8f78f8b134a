//! Sage 100 eBusiness Web Services (SOAP, IIS-hosted): the wire shapes and a client.
//!
//! Every operation is document/literal: `<Op xmlns="…"><logon><Username/><Password/></logon>
//! <companyCode/>…args</Op>`, answered by `<OpResponse><OpResult>…</OpResult></OpResponse>`
//! (`CreateSalesOrder`, `CreateCustomer` and `UpdateCustomer` answer without a result).
//! Errors are SOAP faults whose `detail/MasFault` carries `ErrorCode` (`CI_NOF`, `CI_NoKey`,
//! `CI_CharLength`, `WS_AlreadyExists`, …) and `ErrorMessage`. Field names follow the Sage 100
//! file layouts without the ProvideX `$` (`ARDivisionNo`, `CustomerNo`, …); user-defined
//! fields travel in `OtherFields/Field{MasFieldName, Value}`. The operation names and shapes are
//! from protocols.md §4.2; the namespace below is nominal (a real site's WSDL names its own).

use crate::intacct::xml::{self, Element};

pub const NS: &str = "http://www.sage.com/sage100/ebusiness";
pub const SOAPENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// Where the simulator serves the web services (a real site: its IIS application's URL).
pub const SOAP_PATH: &str = "/SageWS/eBusinessWebServices.asmx";

/// An AR_Customer record (the fields the loop writes). Identity: (ARDivisionNo, CustomerNo).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Customer {
    pub ar_division_no: String,
    pub customer_no: String,
    pub customer_name: String,
    pub address_line1: String,
    pub city: String,
    pub state: String,
    pub zip_code: String,
    pub country_code: String,
    pub telephone_no: String,
    pub email_address: String,
    /// User-defined fields (`OtherFields`), `MasFieldName` → value.
    pub udfs: Vec<(String, String)>,
}

/// Customer fields and their element names, for both directions.
const CUSTOMER_FIELDS: [&str; 10] = [
    "ARDivisionNo",
    "CustomerNo",
    "CustomerName",
    "AddressLine1",
    "City",
    "State",
    "ZipCode",
    "CountryCode",
    "TelephoneNo",
    "EmailAddress",
];

impl Customer {
    fn fields(&self) -> [&String; 10] {
        [
            &self.ar_division_no,
            &self.customer_no,
            &self.customer_name,
            &self.address_line1,
            &self.city,
            &self.state,
            &self.zip_code,
            &self.country_code,
            &self.telephone_no,
            &self.email_address,
        ]
    }

    fn fields_mut(&mut self) -> [&mut String; 10] {
        [
            &mut self.ar_division_no,
            &mut self.customer_no,
            &mut self.customer_name,
            &mut self.address_line1,
            &mut self.city,
            &mut self.state,
            &mut self.zip_code,
            &mut self.country_code,
            &mut self.telephone_no,
            &mut self.email_address,
        ]
    }

    pub fn udf(&self, name: &str) -> Option<&str> {
        udf(&self.udfs, name)
    }

    pub fn to_element(&self, name: &str) -> Element {
        let mut el = Element::new(name);
        for (tag, v) in CUSTOMER_FIELDS.iter().zip(self.fields()) {
            el = el.with_leaf(*tag, v.as_str());
        }
        el.with(other_fields(&self.udfs))
    }

    pub fn from_element(el: &Element) -> Customer {
        let mut c = Customer::default();
        for (tag, v) in CUSTOMER_FIELDS.iter().zip(c.fields_mut()) {
            *v = el.text_at(tag).unwrap_or_default().to_owned();
        }
        c.udfs = read_other_fields(el);
        c
    }
}

/// A sales order line. Quantities and prices are decimal strings on the wire (Sage 100
/// numeric fields); the loop builds them from integer minor units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SalesOrderLine {
    pub item_code: String,
    pub quantity_ordered: String,
    pub unit_price: String,
}

/// A SO_SalesOrderHeader with its lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SalesOrder {
    pub sales_order_no: String,
    pub ar_division_no: String,
    pub customer_no: String,
    pub customer_po_no: String,
    /// `YYYYMMDD`.
    pub order_date: String,
    pub lines: Vec<SalesOrderLine>,
    pub udfs: Vec<(String, String)>,
}

impl SalesOrder {
    pub fn udf(&self, name: &str) -> Option<&str> {
        udf(&self.udfs, name)
    }

    pub fn to_element(&self, name: &str) -> Element {
        let mut lines = Element::new("Lines");
        for l in &self.lines {
            lines = lines.with(
                Element::new("SalesOrderLine")
                    .with_leaf("ItemCode", l.item_code.as_str())
                    .with_leaf("QuantityOrdered", l.quantity_ordered.as_str())
                    .with_leaf("UnitPrice", l.unit_price.as_str()),
            );
        }
        Element::new(name)
            .with_leaf("SalesOrderNo", self.sales_order_no.as_str())
            .with_leaf("ARDivisionNo", self.ar_division_no.as_str())
            .with_leaf("CustomerNo", self.customer_no.as_str())
            .with_leaf("CustomerPONo", self.customer_po_no.as_str())
            .with_leaf("OrderDate", self.order_date.as_str())
            .with(lines)
            .with(other_fields(&self.udfs))
    }

    pub fn from_element(el: &Element) -> SalesOrder {
        let t = |p: &str| el.text_at(p).unwrap_or_default().to_owned();
        SalesOrder {
            sales_order_no: t("SalesOrderNo"),
            ar_division_no: t("ARDivisionNo"),
            customer_no: t("CustomerNo"),
            customer_po_no: t("CustomerPONo"),
            order_date: t("OrderDate"),
            lines: el
                .child("Lines")
                .map(|ls| {
                    ls.children
                        .iter()
                        .map(|l| SalesOrderLine {
                            item_code: l.text_at("ItemCode").unwrap_or_default().to_owned(),
                            quantity_ordered: l
                                .text_at("QuantityOrdered")
                                .unwrap_or_default()
                                .to_owned(),
                            unit_price: l.text_at("UnitPrice").unwrap_or_default().to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            udfs: read_other_fields(el),
        }
    }
}

fn udf<'a>(udfs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    udfs.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn other_fields(udfs: &[(String, String)]) -> Element {
    let mut el = Element::new("OtherFields");
    for (k, v) in udfs {
        el = el.with(
            Element::new("Field")
                .with_leaf("MasFieldName", k.as_str())
                .with_leaf("Value", v.as_str()),
        );
    }
    el
}

fn read_other_fields(el: &Element) -> Vec<(String, String)> {
    // A single field may come back as one object rather than a list: both are `Field` children.
    el.child("OtherFields")
        .map(|o| {
            o.children_named("Field")
                .map(|f| {
                    (
                        f.text_at("MasFieldName").unwrap_or_default().to_owned(),
                        f.text_at("Value").unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A `MasFault`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Sage100Error {
    #[error("Sage 100 fault {}: {}", .0.code, .0.message)]
    Fault(Fault),
    /// The web services could not be reached (worth retrying).
    #[error("Sage 100 web services unreachable: {0}")]
    Transport(String),
    #[error("Sage 100 answer not understood: {0}")]
    Protocol(String),
}

impl Sage100Error {
    pub fn fault_code(&self) -> Option<&str> {
        match self {
            Sage100Error::Fault(f) => Some(&f.code),
            _ => None,
        }
    }
}

/// A request envelope for `op` with the logon, company and the operation's arguments.
pub fn request(
    op: &str,
    username: &str,
    password: &str,
    company: &str,
    args: Vec<Element>,
) -> String {
    let mut call = Element::new(op).with_attr("xmlns", NS).with(
        Element::new("logon")
            .with_leaf("Username", username)
            .with_leaf("Password", password),
    );
    call = call.with_leaf("companyCode", company);
    for a in args {
        call = call.with(a);
    }
    envelope(call)
}

/// `<soap:Envelope><soap:Body>{body}</soap:Body></soap:Envelope>`.
pub fn envelope(body: Element) -> String {
    xml::document(
        &Element::new("soap:Envelope")
            .with_attr("xmlns:soap", SOAPENV_NS)
            .with(Element::new("soap:Body").with(body)),
    )
}

/// A fault envelope.
pub fn fault_envelope(code: &str, message: &str) -> String {
    envelope(
        Element::new("soap:Fault")
            .with_leaf("faultcode", "soap:Server")
            .with_leaf("faultstring", message)
            .with(
                Element::new("detail").with(
                    Element::new("MasFault")
                        .with_leaf("ErrorCode", code)
                        .with_leaf("ErrorMessage", message),
                ),
            ),
    )
}

/// The body's first element (the operation call or its response, or a fault).
pub fn body(text: &str) -> Result<Element, Sage100Error> {
    let root = xml::parse(text).map_err(Sage100Error::Protocol)?;
    let body = root
        .child("Body")
        .and_then(|b| b.children.first())
        .ok_or_else(|| Sage100Error::Protocol("no SOAP Body".into()))?;
    if body.is("Fault") {
        let code = body
            .text_at("detail/MasFault/ErrorCode")
            .or_else(|| body.text_at("faultcode"))
            .unwrap_or("unknown");
        let message = body
            .text_at("detail/MasFault/ErrorMessage")
            .or_else(|| body.text_at("faultstring"))
            .unwrap_or_default();
        return Err(Sage100Error::Fault(Fault {
            code: code.to_owned(),
            message: message.to_owned(),
        }));
    }
    Ok(body.clone())
}

/// The web services client for one company.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    username: String,
    password: String,
    company: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("company", &self.company)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(url: &str, username: &str, password: &str, company: &str) -> Client {
        Client {
            http: gateway::http::client_builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap_or_else(|_| gateway::http::client()),
            url: url.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            company: company.to_owned(),
        }
    }

    /// Calls `op`; its `<OpResult>` element when the answer has one.
    async fn call(&self, op: &str, args: Vec<Element>) -> Result<Option<Element>, Sage100Error> {
        let req = request(op, &self.username, &self.password, &self.company, args);
        let resp = self
            .http
            .post(&self.url)
            .header("content-type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{NS}/{op}\""))
            .body(req)
            .send()
            .await
            .map_err(|e| Sage100Error::Transport(e.without_url().to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Sage100Error::Transport(e.without_url().to_string()))?;
        if status.is_server_error() && !text.contains("Fault") {
            return Err(Sage100Error::Transport(format!("HTTP {status}")));
        }
        let body = body(&text)?;
        if !body.is(&format!("{op}Response")) {
            return Err(Sage100Error::Protocol(format!(
                "expected {op}Response, got {}",
                body.name
            )));
        }
        Ok(body.child(&format!("{op}Result")).cloned())
    }

    pub async fn get_customer(
        &self,
        division: &str,
        customer_no: &str,
    ) -> Result<Customer, Sage100Error> {
        let r = self
            .call(
                "GetCustomer",
                vec![
                    Element::leaf("customerNo", customer_no),
                    Element::leaf("arDivisionNo", division),
                ],
            )
            .await?
            .ok_or_else(|| Sage100Error::Protocol("GetCustomer answered no customer".into()))?;
        Ok(Customer::from_element(&r))
    }

    pub async fn create_customer(&self, c: &Customer) -> Result<(), Sage100Error> {
        self.call("CreateCustomer", vec![c.to_element("customer")])
            .await?;
        Ok(())
    }

    pub async fn update_customer(&self, c: &Customer) -> Result<(), Sage100Error> {
        self.call("UpdateCustomer", vec![c.to_element("customer")])
            .await?;
        Ok(())
    }

    /// Advances the company's sales order number (a number taken and not used is burnt).
    pub async fn get_next_sales_order_no(&self) -> Result<String, Sage100Error> {
        let r = self
            .call("GetNextSalesOrderNo", vec![])
            .await?
            .ok_or_else(|| {
                Sage100Error::Protocol("GetNextSalesOrderNo answered no number".into())
            })?;
        if r.text.is_empty() {
            return Err(Sage100Error::Protocol("empty sales order number".into()));
        }
        Ok(r.text)
    }

    pub async fn create_sales_order(&self, so: &SalesOrder) -> Result<(), Sage100Error> {
        self.call("CreateSalesOrder", vec![so.to_element("salesOrder")])
            .await?;
        Ok(())
    }

    pub async fn get_sales_order(&self, sales_order_no: &str) -> Result<SalesOrder, Sage100Error> {
        let r = self
            .call(
                "GetSalesOrder",
                vec![Element::leaf("salesOrderNo", sales_order_no)],
            )
            .await?
            .ok_or_else(|| Sage100Error::Protocol("GetSalesOrder answered no order".into()))?;
        Ok(SalesOrder::from_element(&r))
    }
}
