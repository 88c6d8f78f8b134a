//! The response envelope: control status, authentication status and one result per function,
//! each with Intacct's `<errormessage><error>` list kept verbatim.

use super::xml::{self, Element};

/// One `<error>`: Intacct's fields exactly as sent (empty when absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorDetail {
    pub errorno: String,
    pub description: String,
    pub description2: String,
    pub correction: String,
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.errorno)?;
        for part in [&self.description, &self.description2, &self.correction] {
            if !part.is_empty() {
                write!(f, " {part}")?;
            }
        }
        Ok(())
    }
}

impl ErrorDetail {
    pub fn new(errorno: &str, description: &str, description2: &str, correction: &str) -> Self {
        ErrorDetail {
            errorno: errorno.into(),
            description: description.into(),
            description2: description2.into(),
            correction: correction.into(),
        }
    }

    /// The `<error>` element.
    pub fn to_element(&self) -> Element {
        Element::new("error")
            .with_leaf("errorno", &self.errorno)
            .with_leaf("description", &self.description)
            .with_leaf("description2", &self.description2)
            .with_leaf("correction", &self.correction)
    }
}

/// Joins a list of errors for messages.
pub fn display_errors(errors: &[ErrorDetail]) -> String {
    if errors.is_empty() {
        return "(no error detail)".into();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// `<errormessage>` → its errors.
pub fn errors_of(errormessage: Option<&Element>) -> Vec<ErrorDetail> {
    let Some(em) = errormessage else {
        return Vec::new();
    };
    em.children_named("error")
        .map(|e| ErrorDetail {
            errorno: e.text_at("errorno").unwrap_or_default().to_owned(),
            description: e.text_at("description").unwrap_or_default().to_owned(),
            description2: e.text_at("description2").unwrap_or_default().to_owned(),
            correction: e.text_at("correction").unwrap_or_default().to_owned(),
        })
        .collect()
}

/// A result's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultStatus {
    Success,
    Failure,
    /// Rolled back because another function of a `transaction="true"` operation failed.
    Aborted,
}

/// One `<result>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionResult {
    pub status: ResultStatus,
    pub function: String,
    pub controlid: String,
    /// `<data>` with its attributes (`listtype`, `count`, `totalcount`, `numremaining`,
    /// `resultId`, `offset`) and records.
    pub data: Option<Element>,
    /// Legacy functions' `<key>`.
    pub key: Option<String>,
    pub errors: Vec<ErrorDetail>,
}

impl FunctionResult {
    /// The records in `<data>` (any element name: `customer`, `CUSTOMER`, …).
    pub fn records(&self) -> &[Element] {
        self.data.as_ref().map_or(&[], |d| d.children.as_slice())
    }

    /// A numeric `<data>` attribute (`count`, `totalcount`, `numremaining`, `offset`).
    pub fn data_count(&self, attr: &str) -> Option<u64> {
        self.data.as_ref()?.attr(attr)?.trim().parse().ok()
    }
}

/// The `<authentication>` block of a successful operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authentication {
    pub userid: String,
    pub companyid: String,
    pub locationid: String,
    pub sessiontimestamp: String,
    pub sessiontimeout: String,
}

/// What a response says, level by level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `<control><status>failure</status>` + `<errormessage>` beside it (bad sender, parse
    /// error, expired company, gateway sign-in).
    ControlFailure(Vec<ErrorDetail>),
    /// `<operation><authentication><status>failure</status>` + `<errormessage>`.
    AuthenticationFailure(Vec<ErrorDetail>),
    /// An offline request's `<acknowledgement>` (no operation).
    Acknowledged,
    /// Authentication succeeded; one result per function, in order.
    Operation {
        authentication: Authentication,
        results: Vec<FunctionResult>,
    },
}

/// Parses a response document; `Err` describes what is malformed.
pub fn parse_response(body: &str) -> Result<Response, String> {
    let root = xml::parse(body)?;
    if !root.is("response") {
        return Err(format!("root element is <{}>, not <response>", root.name));
    }
    if root.child("acknowledgement").is_some() {
        return Ok(Response::Acknowledged);
    }
    let control = root
        .child("control")
        .ok_or("response has no <control> block")?;
    let status = control
        .text_at("status")
        .ok_or("<control> has no <status>")?;
    if !status.eq_ignore_ascii_case("success") {
        return Ok(Response::ControlFailure(errors_of(
            root.child("errormessage"),
        )));
    }
    let operation = root
        .child("operation")
        .ok_or("response has no <operation> block")?;
    let auth = operation
        .child("authentication")
        .ok_or("<operation> has no <authentication> block")?;
    let auth_status = auth
        .text_at("status")
        .ok_or("<authentication> has no <status>")?;
    if !auth_status.eq_ignore_ascii_case("success") {
        return Ok(Response::AuthenticationFailure(errors_of(
            operation.child("errormessage"),
        )));
    }
    let text = |name: &str| auth.text_at(name).unwrap_or_default().to_owned();
    let authentication = Authentication {
        userid: text("userid"),
        companyid: text("companyid"),
        locationid: text("locationid"),
        sessiontimestamp: text("sessiontimestamp"),
        sessiontimeout: text("sessiontimeout"),
    };
    let mut results = Vec::new();
    for r in operation.children_named("result") {
        let status = match r.text_at("status").ok_or("<result> has no <status>")? {
            s if s.eq_ignore_ascii_case("success") => ResultStatus::Success,
            s if s.eq_ignore_ascii_case("aborted") => ResultStatus::Aborted,
            s if s.eq_ignore_ascii_case("failure") => ResultStatus::Failure,
            s => return Err(format!("unknown result status {s:?}")),
        };
        results.push(FunctionResult {
            status,
            function: r
                .text_at("function")
                .ok_or("<result> has no <function>")?
                .to_owned(),
            controlid: r
                .text_at("controlid")
                .ok_or("<result> has no <controlid>")?
                .to_owned(),
            data: r.child("data").cloned(),
            key: r.text_at("key").map(str::to_owned),
            errors: errors_of(r.child("errormessage")),
        });
    }
    if results.is_empty() {
        return Err("<operation> has no <result>".into());
    }
    Ok(Response::Operation {
        authentication,
        results,
    })
}
