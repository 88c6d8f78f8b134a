//! The hosted payment page: `POST /v1/payment_links` (or the console's form) creates a link for
//! an Opportunity — amount, currency, invoice, expiry — stored in `payment_links` under a
//! random, unguessable id; `/pay/{id}` shows the amount and card or bank-account fields that
//! post straight here. The fields are parsed by the same code as `POST /v1/tokens`, tokenized
//! by the vault and charged by the gateway service in-process, so card data never passes
//! through Salesforce and is never logged or echoed back. A link is paid once: it is claimed
//! (`open` → `paying`, with a lease) before the processor is asked, marked `paid` with the
//! payment, or reopened after a decline so the payer can try another card.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::html::{esc, notice};
use super::{Session, execute, fetch, form, html_response, money, redirect};
use crate::server::{AppError, AppState};

/// How long a claim on a link lasts while the processor is asked (a crashed server's claim
/// expires; the payer can then try again).
const CLAIM_LEASE_MS: i64 = 120_000;
/// Longest invoice reference and description.
const INVOICE_REF_MAX: usize = 64;
/// Declined or refused payments after which a link takes no more: a public page that
/// answers "approved / declined" is otherwise an oracle for testing stolen card numbers.
pub const MAX_FAILED_ATTEMPTS: i64 = 10;
const DESCRIPTION_MAX: usize = 200;

/// A stored link.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Link {
    pub id: String,
    pub opportunity_id: String,
    pub account_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub invoice_ref: Option<String>,
    pub description: Option<String>,
    pub status: String,
    pub payment_id: Option<String>,
    pub expires_at_ms: i64,
    pub paid_at_ms: Option<i64>,
    pub failed_attempts: i64,
}

const LINK_COLUMNS: &str = "SELECT id, opportunity_id, account_id, amount_minor, currency, invoice_ref, description, status, payment_id, expires_at_ms, paid_at_ms, failed_attempts FROM payment_links WHERE id = $1";

async fn load(state: &AppState, id: &str) -> Result<Option<Link>, sqlx::Error> {
    // Ids are ours: anything else is not looked up at all.
    if !valid_link_id(id) {
        return Ok(None);
    }
    fetch!(&state.db, Link, fetch_optional, LINK_COLUMNS, id)
}

fn valid_link_id(id: &str) -> bool {
    id.len() <= 64 && id.starts_with("pl_") && id[3..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The base URL payers reach this server at.
fn public_base(state: &AppState) -> String {
    state.config.console.public_url.clone().unwrap_or_else(|| {
        let scheme = if state.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", state.config.listen)
    })
}

fn link_json(state: &AppState, l: &Link) -> Value {
    json!({
        "id": l.id,
        "url": format!("{}/pay/{}", public_base(state), l.id),
        "status": l.status,
        "opportunity_id": l.opportunity_id,
        "account_id": l.account_id,
        "amount": ledger::Currency::parse(&l.currency)
            .map(|c| ledger::export::format_minor(i128::from(l.amount_minor), c))
            .unwrap_or_default(),
        "amount_minor": l.amount_minor,
        "currency": l.currency,
        "invoice_ref": l.invoice_ref,
        "description": l.description,
        "expires_at": DateTime::from_timestamp_millis(l.expires_at_ms),
        "payment_id": l.payment_id,
    })
}

fn field_error(field: &str, message: impl Into<String>) -> AppError {
    AppError::Api {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_field",
        field: Some(field.to_owned()),
        message: format!("{field}: {}", message.into()),
    }
}

/// A Salesforce id: 15 or 18 letters and digits.
fn salesforce_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Creates a link from a JSON body `{"opportunity_id", "account_id", "amount", "currency",
/// "invoice_ref"?, "description"?, "expires_in_s"?}`; answers 201 with the link and its URL.
pub(crate) async fn create_link(
    state: &AppState,
    actor: &str,
    body: &[u8],
) -> Result<(StatusCode, Value), AppError> {
    if state.payments.is_none() {
        return Err(AppError::Api {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "payments_not_configured",
            field: None,
            message: "payments are not configured ([gateway] and [vault] in cashloop.toml)".into(),
        });
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| AppError::Api {
        status: StatusCode::BAD_REQUEST,
        code: "malformed_json",
        field: None,
        message: format!("malformed JSON at line {}, column {}", e.line(), e.column()),
    })?;
    let o = v.as_object().ok_or(AppError::Api {
        status: StatusCode::BAD_REQUEST,
        code: "malformed_json",
        field: None,
        message: "the body must be a JSON object".into(),
    })?;
    const FIELDS: &[&str] = &[
        "opportunity_id",
        "account_id",
        "amount",
        "currency",
        "invoice_ref",
        "description",
        "expires_in_s",
    ];
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(AppError::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "unknown_field",
            field: Some(k.clone()),
            message: format!(
                "{k}: unknown field (expected one of: {})",
                FIELDS.join(", ")
            ),
        });
    }
    let text = |k: &str| -> Result<Option<String>, AppError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(_) => Err(field_error(k, "must be a string")),
        }
    };
    let required = |k: &str| -> Result<String, AppError> {
        text(k)?.ok_or_else(|| AppError::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "missing_field",
            field: Some(k.to_owned()),
            message: format!("{k}: is required"),
        })
    };
    let opportunity_id = required("opportunity_id")?;
    if !salesforce_id(&opportunity_id) {
        return Err(field_error(
            "opportunity_id",
            "must be a Salesforce id (15 or 18 letters and digits)",
        ));
    }
    let account_id = required("account_id")?;
    ledger::CustomerId::parse(&account_id, "account_id").map_err(|r| AppError::Ledger(r.into()))?;
    let currency_s = required("currency")?;
    let currency = ledger::Currency::parse(&currency_s).map_err(|e| AppError::Api {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "unknown_currency",
        field: Some("currency".into()),
        message: format!("currency: {e}"),
    })?;
    if state
        .config
        .gateway
        .as_ref()
        .is_none_or(|g| !g.accounts.contains_key(&currency))
    {
        return Err(AppError::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "unsupported_currency",
            field: Some("currency".into()),
            message: format!(
                "currency: no ledger accounts are configured for {}",
                currency.code()
            ),
        });
    }
    let amount = ledger::Money::parse_decimal(&required("amount")?, currency)
        .map_err(|e| AppError::Ledger(ledger::Rejection::money(&e, "amount").into()))?;
    if amount.amount_minor() <= 0 {
        return Err(field_error("amount", "must be greater than zero"));
    }
    let invoice_ref = text("invoice_ref")?;
    if invoice_ref
        .as_deref()
        .is_some_and(|r| r.chars().count() > INVOICE_REF_MAX)
    {
        return Err(field_error("invoice_ref", "must be at most 64 characters"));
    }
    let description = text("description")?;
    if description
        .as_deref()
        .is_some_and(|r| r.chars().count() > DESCRIPTION_MAX)
    {
        return Err(field_error("description", "must be at most 200 characters"));
    }
    let ttl_s = match o.get("expires_in_s") {
        None | Some(Value::Null) => state.config.console.payment_link_ttl_s,
        Some(v) => v
            .as_u64()
            .filter(|s| (60..=366 * 86_400).contains(s))
            .ok_or_else(|| {
                field_error(
                    "expires_in_s",
                    "must be a whole number of seconds from 60 to 31622400",
                )
            })?,
    };
    let id = gateway::crypto::new_token("pl_").map_err(|e| AppError::Internal(e.to_string()))?;
    let now = Utc::now().timestamp_millis();
    let expires = now.saturating_add(i64::try_from(ttl_s).unwrap_or(0).saturating_mul(1000));
    execute!(
        &state.db,
        "INSERT INTO payment_links (id, opportunity_id, account_id, amount_minor, currency, invoice_ref, description, status, created_by, created_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $9, $10)",
        id.as_str(),
        opportunity_id.as_str(),
        account_id.as_str(),
        amount.amount_minor(),
        currency.code(),
        invoice_ref.as_deref(),
        description.as_deref(),
        actor,
        now,
        expires
    )
    .map_err(|e| AppError::Internal(e.to_string()))?;
    crate::server::audit(
        state,
        actor,
        "payment_link.create",
        &id,
        &format!(
            "opportunity={opportunity_id} amount={} {}",
            amount.format_amount(),
            currency.code()
        ),
    )
    .await;
    tracing::info!(link = %id, opportunity = %opportunity_id, actor, "payment link created");
    let link = load(state, &id)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .ok_or_else(|| AppError::Internal("the new link is missing".into()))?;
    Ok((StatusCode::CREATED, link_json(state, &link)))
}

/// The console's "create a payment link" form (admins).
pub(crate) fn link_form(csrf: &str) -> String {
    format!(
        "<section aria-labelledby=\"h-link\"><h2 id=\"h-link\">Create a payment link</h2>\
         <form method=\"post\" action=\"/console/payment-links\" class=\"grid\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"l-opp\">Opportunity id</label><input id=\"l-opp\" name=\"opportunity_id\" required>\
         <label for=\"l-acc\">Account id</label><input id=\"l-acc\" name=\"account_id\" required>\
         <label for=\"l-amount\">Amount</label><input id=\"l-amount\" name=\"amount\" inputmode=\"decimal\" required>\
         <label for=\"l-cur\">Currency</label><input id=\"l-cur\" name=\"currency\" value=\"USD\" required size=\"4\">\
         <label for=\"l-inv\">Invoice</label><input id=\"l-inv\" name=\"invoice_ref\">\
         <button type=\"submit\" id=\"create-link\">Create link</button></form></section>",
        esc(csrf)
    )
}

/// `POST /console/payment-links`: the form above; shows the new link.
pub(crate) async fn console_create_link(
    State(state): State<AppState>,
    session: Session,
    body: Bytes,
) -> Response {
    let f = form(&body);
    if !session.csrf_ok(&f) {
        return super::error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            "The form expired; reload the page and try again.",
        );
    }
    if !session.may_operate() {
        return super::error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            "Your role may not create payment links.",
        );
    }
    let mut req = serde_json::Map::new();
    for k in [
        "opportunity_id",
        "account_id",
        "amount",
        "currency",
        "invoice_ref",
    ] {
        if let Some(v) = f.get(k) {
            req.insert(k.to_owned(), json!(v));
        }
    }
    let bytes = serde_json::to_vec(&Value::Object(req)).unwrap_or_default();
    let body = match create_link(&state, &format!("console:{}", session.user), &bytes).await {
        Ok((_, link)) => {
            let url = link["url"].as_str().unwrap_or("");
            format!(
                "{}<p>Send this link to the payer: <a id=\"new-link\" href=\"{u}\">{u}</a></p>",
                notice("Payment link created.", false),
                u = esc(url)
            )
        }
        Err(e) => {
            let (_, v) = e.parts();
            notice(v["error"]["message"].as_str().unwrap_or("refused"), true)
        }
    };
    html_response(
        StatusCode::OK,
        super::html::page(
            "Payment link",
            "/console/payments",
            Some(session.viewer()),
            &body,
        ),
    )
}

// ---- the payer's pages ----

fn pay_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{t}</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/console.js\" defer></script></head>\
         <body class=\"pay\"><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <main id=\"main\" tabindex=\"-1\"><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    )
}

fn not_found() -> Response {
    html_response(
        StatusCode::NOT_FOUND,
        pay_page(
            "Payment link not found",
            &notice(
                "This payment link does not exist. Ask the sender for a new one.",
                true,
            ),
        ),
    )
}

fn summary(l: &Link) -> String {
    let mut s = format!(
        "<dl class=\"facts\"><dt>Amount</dt><dd id=\"pay-amount\">{}</dd>",
        esc(&money(l.amount_minor, &l.currency))
    );
    if let Some(inv) = &l.invoice_ref {
        let _ = write!(
            s,
            "<dt>Invoice</dt><dd id=\"pay-invoice\">{}</dd>",
            esc(inv)
        );
    }
    if let Some(d) = &l.description {
        let _ = write!(s, "<dt>For</dt><dd>{}</dd>", esc(d));
    }
    s.push_str("</dl>");
    s
}

/// What the payer typed, minus what must never be echoed (card number, CVV, account number).
#[derive(Default)]
struct Typed {
    method: String,
    exp_month: String,
    exp_year: String,
    name: String,
    postal_code: String,
    routing_number: String,
    account_type: String,
    holder_name: String,
}

/// One input with its label and, when it is the one at fault, its error.
fn input(id: &str, label: &str, attrs: &str, value: &str, error: Option<(&str, &str)>) -> String {
    let err = error.filter(|(f, _)| *f == id).map(|(_, m)| m);
    let (aria, msg) = match err {
        Some(m) => (
            format!(" aria-invalid=\"true\" aria-describedby=\"{id}-error\""),
            format!(
                "<span class=\"field-error\" id=\"{id}-error\">{}</span>",
                esc(m)
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "<div class=\"field\"><label for=\"{id}\">{label}</label>\
         <input id=\"{id}\" name=\"{id}\" {attrs} value=\"{}\"{aria}>{msg}</div>",
        esc(value)
    )
}

fn pay_form(l: &Link, t: &Typed, error: Option<(&str, &str)>, top_error: Option<&str>) -> String {
    let bank = t.method == "bank_account";
    let mut s = summary(l);
    if let Some(e) = top_error {
        let _ = write!(
            s,
            "<p class=\"notice error\" role=\"alert\" id=\"payment-error\">{}</p>",
            esc(e)
        );
    }
    if let Some((_, m)) = error {
        let _ = write!(
            s,
            "<p class=\"notice error\" role=\"alert\" id=\"payment-error\">Please correct the field marked below: {}</p>",
            esc(m)
        );
    }
    let _ = write!(
        s,
        "<form method=\"post\" action=\"/pay/{id}\" class=\"stack narrow\" id=\"pay-form\" autocomplete=\"on\">\
         <fieldset class=\"method\"><legend>Pay by</legend>\
         <label><input type=\"radio\" name=\"method\" value=\"card\" id=\"method-card\"{c}> Card</label>\
         <label><input type=\"radio\" name=\"method\" value=\"bank_account\" id=\"method-bank\"{b}> Bank account (ACH)</label>\
         </fieldset>\
         <fieldset id=\"card-fields\" data-method=\"card\"><legend>Card</legend>{num}{mm}{yy}{cvv}{name}{zip}</fieldset>\
         <fieldset id=\"bank-fields\" data-method=\"bank_account\"><legend>Bank account</legend>{routing}{account}\
         <div class=\"field\"><label for=\"account_type\">Account type</label><select id=\"account_type\" name=\"account_type\">{types}</select></div>{holder}</fieldset>\
         <button type=\"submit\" id=\"pay\">Pay {amount}</button></form>",
        id = esc(&l.id),
        c = if bank { "" } else { " checked" },
        b = if bank { " checked" } else { "" },
        num = input(
            "card_number",
            "Card number",
            "inputmode=\"numeric\" autocomplete=\"cc-number\" maxlength=\"23\"",
            "",
            error
        ),
        mm = input(
            "exp_month",
            "Expiry month (MM)",
            "inputmode=\"numeric\" autocomplete=\"cc-exp-month\" maxlength=\"2\"",
            &t.exp_month,
            error
        ),
        yy = input(
            "exp_year",
            "Expiry year (YYYY)",
            "inputmode=\"numeric\" autocomplete=\"cc-exp-year\" maxlength=\"4\"",
            &t.exp_year,
            error
        ),
        cvv = input(
            "cvv",
            "Security code (CVV)",
            "inputmode=\"numeric\" autocomplete=\"cc-csc\" maxlength=\"4\"",
            "",
            error
        ),
        name = input(
            "name",
            "Name on card",
            "autocomplete=\"cc-name\"",
            &t.name,
            error
        ),
        zip = input(
            "postal_code",
            "Billing postal code",
            "autocomplete=\"postal-code\"",
            &t.postal_code,
            error
        ),
        routing = input(
            "routing_number",
            "Routing number",
            "inputmode=\"numeric\" maxlength=\"9\"",
            &t.routing_number,
            error
        ),
        account = input(
            "account_number",
            "Account number",
            "inputmode=\"numeric\" maxlength=\"17\"",
            "",
            error
        ),
        holder = input(
            "holder_name",
            "Account holder",
            "autocomplete=\"name\"",
            &t.holder_name,
            error
        ),
        types = ["checking", "savings", "business_checking"]
            .iter()
            .map(|v| format!(
                "<option value=\"{v}\"{}>{}</option>",
                if t.account_type == *v {
                    " selected"
                } else {
                    ""
                },
                v.replace('_', " ")
            ))
            .collect::<String>(),
        amount = esc(&money(l.amount_minor, &l.currency)),
    );
    s.push_str("<p class=\"small\">Card and bank details go straight to our payment vault; they are not stored in Salesforce or in this page.</p>");
    s
}

fn closed_reason(l: &Link, now_ms: i64) -> Option<&'static str> {
    if l.status == "paid" {
        Some("paid")
    } else if l.expires_at_ms <= now_ms {
        Some("expired")
    } else if l.failed_attempts >= MAX_FAILED_ATTEMPTS {
        Some("locked")
    } else {
        None
    }
}

/// `GET /pay/{link}`.
pub(crate) async fn page(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let link = match load(&state, &id).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "payment page: reading the link failed");
            return html_response(
                StatusCode::SERVICE_UNAVAILABLE,
                pay_page(
                    "Try again shortly",
                    &notice(
                        "We cannot take payments this minute; please try again shortly.",
                        true,
                    ),
                ),
            );
        }
    };
    match closed_reason(&link, Utc::now().timestamp_millis()) {
        Some("paid") => redirect(&format!("/pay/{}/receipt", link.id)),
        Some("locked") => html_response(
            StatusCode::TOO_MANY_REQUESTS,
            pay_page(
                "Payment link locked",
                &format!(
                    "{}{}",
                    summary(&link),
                    notice(
                        "Too many payments were declined on this link, so it takes no more. Ask the sender for a new one.",
                        true
                    )
                ),
            ),
        ),
        Some(_) => html_response(
            StatusCode::GONE,
            pay_page(
                "Payment link expired",
                &format!(
                    "{}{}",
                    summary(&link),
                    notice("This link has expired. Ask the sender for a new one.", true)
                ),
            ),
        ),
        None => html_response(
            StatusCode::OK,
            pay_page(
                "Pay your invoice",
                &pay_form(&link, &Typed::default(), None, None),
            ),
        ),
    }
}

/// The form's card or bank fields as the `POST /v1/tokens` body (same parser, same errors).
fn token_body(
    f: &std::collections::HashMap<String, String>,
    method: &str,
) -> zeroize::Zeroizing<String> {
    let get = |k: &str| f.get(k).map(|s| s.trim().to_owned()).unwrap_or_default();
    let num = |k: &str| -> Value {
        let s = get(k);
        s.parse::<i64>().map_or(Value::String(s), |n| json!(n))
    };
    let opt = |k: &str| {
        let s = get(k);
        if s.is_empty() {
            Value::Null
        } else {
            Value::String(s)
        }
    };
    let v = if method == "bank_account" {
        json!({"type": "bank_account", "bank_account": {
            "routing_number": get("routing_number"),
            "account_number": get("account_number"),
            "account_type": get("account_type"),
            "holder_name": get("holder_name"),
            "sec_code": "WEB",
        }})
    } else {
        json!({"type": "card", "card": {
            "number": get("card_number"),
            "exp_month": num("exp_month"),
            "exp_year": num("exp_year"),
            "name": opt("name"),
            "postal_code": opt("postal_code"),
        }})
    };
    zeroize::Zeroizing::new(v.to_string())
}

/// The form field a `POST /v1/tokens` error names (`card.number` → `card_number`).
fn form_field(api_field: &str) -> &'static str {
    match api_field {
        "card.number" | "card" => "card_number",
        "card.exp_month" => "exp_month",
        "card.exp_year" | "card.expiry" => "exp_year",
        "card.name" => "name",
        "card.postal_code" => "postal_code",
        "bank_account.routing_number" => "routing_number",
        "bank_account.account_number" | "bank_account" => "account_number",
        "bank_account.account_type" | "bank_account.sec_code" => "account_type",
        "bank_account.holder_name" => "holder_name",
        "cvv" => "cvv",
        _ => "card_number",
    }
}

/// Reopens a claimed link; `failed` counts the attempt towards [`MAX_FAILED_ATTEMPTS`].
async fn release(state: &AppState, id: &str, failed: bool) {
    if let Err(e) = execute!(
        &state.db,
        "UPDATE payment_links SET status = 'open', claimed_until_ms = NULL, failed_attempts = failed_attempts + $2 \
         WHERE id = $1 AND status = 'paying'",
        id,
        i64::from(failed)
    ) {
        tracing::error!(error = %e, link = id, "payment page: releasing the link failed");
    }
}

/// `POST /pay/{link}`: tokenize, charge, and show the receipt — or the form again with the
/// error next to its field (or the processor's decline above the form).
pub(crate) async fn submit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let link = match load(&state, &id).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "payment page: reading the link failed");
            return html_response(
                StatusCode::SERVICE_UNAVAILABLE,
                pay_page(
                    "Try again shortly",
                    &notice(
                        "We cannot take payments this minute; please try again shortly.",
                        true,
                    ),
                ),
            );
        }
    };
    let now = Utc::now().timestamp_millis();
    if closed_reason(&link, now).is_some() {
        return redirect(&format!("/pay/{}", link.id));
    }
    let (Some(vault), Some(payments)) = (state.vault.clone(), state.payments.clone()) else {
        return html_response(
            StatusCode::SERVICE_UNAVAILABLE,
            pay_page(
                "Payments unavailable",
                &notice("Payments are not configured on this server.", true),
            ),
        );
    };
    let f = form(&body);
    let method = if f.get("method").map(String::as_str) == Some("bank_account") {
        "bank_account"
    } else {
        "card"
    };
    let typed = Typed {
        method: method.to_owned(),
        exp_month: f.get("exp_month").cloned().unwrap_or_default(),
        exp_year: f.get("exp_year").cloned().unwrap_or_default(),
        name: f.get("name").cloned().unwrap_or_default(),
        postal_code: f.get("postal_code").cloned().unwrap_or_default(),
        routing_number: f.get("routing_number").cloned().unwrap_or_default(),
        account_type: f.get("account_type").cloned().unwrap_or_default(),
        holder_name: f.get("holder_name").cloned().unwrap_or_default(),
    };
    let invalid = |field: &str, message: &str| {
        html_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            pay_page(
                "Pay your invoice",
                &pay_form(&link, &typed, Some((field, message)), None),
            ),
        )
    };
    let today = state.ledger.clock().now().date_naive();
    let parsed = gateway::input::parse_token_request(token_body(&f, method).as_bytes(), today);
    let new_method = match parsed {
        Ok(m) => m,
        Err(e) => return invalid(form_field(&e.field), &e.message),
    };
    let cvv = match &new_method {
        gateway::vault::NewPaymentMethod::Card(c) => {
            let raw = zeroize::Zeroizing::new(
                f.get("cvv")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
            );
            match gateway::card::Cvv::parse(&raw, c.number.brand()) {
                Ok(v) => Some(v),
                Err(_) => {
                    return invalid(
                        "cvv",
                        "enter the 3-digit security code (4 digits on American Express)",
                    );
                }
            }
        }
        gateway::vault::NewPaymentMethod::BankAccount(_) => None,
    };
    // Claim the link: only one payment at a time, and none once paid.
    let claimed = execute!(
        &state.db,
        "UPDATE payment_links SET status = 'paying', claimed_until_ms = $2 \
         WHERE id = $1 AND expires_at_ms > $3 AND failed_attempts < $4 \
         AND (status = 'open' OR (status = 'paying' AND claimed_until_ms < $3))",
        link.id.as_str(),
        now.saturating_add(CLAIM_LEASE_MS),
        now,
        MAX_FAILED_ATTEMPTS
    );
    match claimed {
        Ok(1) => {}
        Ok(_) => {
            return match load(&state, &link.id).await {
                Ok(Some(l)) if l.status == "paid" => redirect(&format!("/pay/{}/receipt", l.id)),
                Ok(Some(l)) if closed_reason(&l, now).is_some() => {
                    redirect(&format!("/pay/{}", l.id))
                }
                _ => html_response(
                    StatusCode::CONFLICT,
                    pay_page(
                        "Pay your invoice",
                        &pay_form(
                            &link,
                            &typed,
                            None,
                            Some("A payment for this link is being processed; reload in a minute."),
                        ),
                    ),
                ),
            };
        }
        Err(e) => {
            tracing::error!(error = %e, "payment page: claiming the link failed");
            return html_response(
                StatusCode::SERVICE_UNAVAILABLE,
                pay_page(
                    "Try again shortly",
                    &notice(
                        "We cannot take payments this minute; please try again shortly.",
                        true,
                    ),
                ),
            );
        }
    }
    let actor = format!("payment_link:{}", link.id);
    let pm = match vault.tokenize(new_method, &actor).await {
        Ok(pm) => pm,
        Err(e) => {
            release(&state, &link.id, false).await;
            return match e.code() {
                Some(_) => invalid(form_field(e.field().unwrap_or("")), &e.to_string()),
                None => {
                    tracing::error!(error = %e, "payment page: tokenizing failed");
                    html_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        pay_page(
                            "Pay your invoice",
                            &pay_form(
                                &link,
                                &typed,
                                None,
                                Some(
                                    "Something went wrong on our side; nothing was charged. Please try again.",
                                ),
                            ),
                        ),
                    )
                }
            };
        }
    };
    let currency = match ledger::Currency::parse(&link.currency) {
        Ok(c) => c,
        Err(e) => {
            release(&state, &link.id, false).await;
            tracing::error!(error = %e, "payment page: stored currency unreadable");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response_html();
        }
    };
    let account_id = match ledger::CustomerId::parse(&link.account_id, "account_id") {
        Ok(a) => a,
        Err(_) => {
            release(&state, &link.id, false).await;
            return StatusCode::INTERNAL_SERVER_ERROR.into_response_html();
        }
    };
    let req = gateway::service::NewPayment {
        token: pm.token.clone(),
        amount: ledger::Money::from_minor(link.amount_minor, currency),
        capture: true,
        cvv,
        opportunity_id: Some(link.opportunity_id.clone()),
        account_id: Some(account_id),
        invoice_refs: link.invoice_ref.clone().into_iter().collect(),
        metadata: json!({"payment_link": link.id}),
    };
    let p = match payments.create(req, &actor).await {
        Ok(p) => p,
        Err(e) => {
            release(&state, &link.id, true).await;
            let (_, v) = AppError::from(e).parts();
            let message = v["error"]["message"]
                .as_str()
                .unwrap_or("the payment was refused")
                .to_owned();
            return html_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                pay_page(
                    "Pay your invoice",
                    &pay_form(&link, &typed, None, Some(&message)),
                ),
            );
        }
    };
    if p.status == "failed" {
        release(&state, &link.id, true).await;
        tracing::info!(link = %link.id, payment = %p.id, code = ?p.failure_code, "payment page: declined");
        let message = format!(
            "Your payment was declined: {} Nothing was charged; try another card or a bank account.",
            p.failure_message
                .as_deref()
                .unwrap_or("the processor gave no reason.")
        );
        return html_response(
            StatusCode::PAYMENT_REQUIRED,
            pay_page(
                "Pay your invoice",
                &pay_form(&link, &typed, None, Some(&message)),
            ),
        );
    }
    let paid = execute!(
        &state.db,
        "UPDATE payment_links SET status = 'paid', payment_id = $2, paid_at_ms = $3, claimed_until_ms = NULL WHERE id = $1",
        link.id.as_str(),
        p.id.as_str(),
        Utc::now().timestamp_millis()
    );
    if let Err(e) = paid {
        // The money moved; the receipt shows it once the row can be written. Loud, not lost:
        // the payment carries the link in its metadata.
        tracing::error!(error = %e, link = %link.id, payment = %p.id, "payment page: marking the link paid failed");
    }
    crate::server::audit(
        &state,
        &actor,
        "payment_link.paid",
        &link.id,
        &format!("payment={} status={}", p.id, p.status),
    )
    .await;
    tracing::info!(link = %link.id, payment = %p.id, status = p.status, "payment page: paid");
    redirect(&format!("/pay/{}/receipt", link.id))
}

trait HtmlStatus {
    fn into_response_html(self) -> Response;
}

impl HtmlStatus for StatusCode {
    fn into_response_html(self) -> Response {
        html_response(
            self,
            pay_page(
                "Something went wrong",
                &notice(
                    "Something went wrong on our side; nothing was charged.",
                    true,
                ),
            ),
        )
    }
}

/// A card brand as people write it.
fn brand_name(brand: Option<&str>) -> &'static str {
    match brand {
        Some("visa") => "Visa",
        Some("mastercard") => "Mastercard",
        Some("amex") => "American Express",
        Some("discover") => "Discover",
        Some("jcb") => "JCB",
        Some("diners") => "Diners Club",
        _ => "Card",
    }
}

/// `GET /pay/{link}/receipt`.
pub(crate) async fn receipt(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let link = match load(&state, &id).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found(),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response_html(),
    };
    let (Some(pid), Some(payments)) = (link.payment_id.clone(), state.payments.clone()) else {
        return redirect(&format!("/pay/{}", link.id));
    };
    let p = match payments.get(&pid).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "receipt: reading the payment failed");
            return StatusCode::SERVICE_UNAVAILABLE.into_response_html();
        }
    };
    let method = match &state.vault {
        Some(v) => match v.get(&p.token).await {
            Ok(pm) if pm.kind == "card" => {
                format!("{} ending {}", brand_name(pm.brand.as_deref()), pm.last4)
            }
            Ok(pm) => format!("Bank account ending {}", pm.last4),
            Err(_) => p.method_kind.to_owned(),
        },
        None => p.method_kind.to_owned(),
    };
    let status = match p.status {
        "pending" => "Submitted: bank payments take a few days to settle",
        "captured" | "settled" => "Paid",
        "unknown" => "Being confirmed with the processor",
        other => other,
    };
    let body = format!(
        "{}<dl class=\"facts\" id=\"receipt\"><dt>Amount</dt><dd>{}</dd>{}<dt>Paid with</dt><dd>{}</dd>\
         <dt>Status</dt><dd id=\"receipt-status\">{}</dd><dt>Payment reference</dt><dd id=\"receipt-payment\">{}</dd>\
         <dt>Date</dt><dd>{}</dd></dl><p>Keep this page for your records.</p>",
        notice("Thank you — your payment was received.", false),
        esc(&money(p.amount_minor, &p.currency)),
        link.invoice_ref
            .as_deref()
            .map(|i| format!("<dt>Invoice</dt><dd>{}</dd>", esc(i)))
            .unwrap_or_default(),
        esc(&method),
        esc(status),
        esc(&p.id),
        esc(&link
            .paid_at_ms
            .and_then(DateTime::from_timestamp_millis)
            .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M UTC").to_string())),
    );
    html_response(StatusCode::OK, pay_page("Receipt", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_link_ids_are_looked_up() {
        assert!(valid_link_id("pl_abcDEF"));
        assert!(!valid_link_id("pl_abc'--"));
        assert!(!valid_link_id("xx_abc"));
        assert!(!valid_link_id(&format!("pl_{}", "a".repeat(80))));
    }

    #[test]
    fn api_fields_map_to_form_fields() {
        assert_eq!(form_field("card.number"), "card_number");
        assert_eq!(form_field("card.exp_month"), "exp_month");
        assert_eq!(form_field("bank_account.routing_number"), "routing_number");
    }

    #[test]
    fn the_form_never_echoes_card_or_account_numbers() {
        let link = Link {
            id: "pl_x".into(),
            opportunity_id: "006000000000001AAA".into(),
            account_id: "001000000000001AAA".into(),
            amount_minor: 12_345,
            currency: "USD".into(),
            invoice_ref: Some("INV-<1>".into()),
            description: None,
            status: "open".into(),
            payment_id: None,
            expires_at_ms: 0,
            paid_at_ms: None,
            failed_attempts: 0,
        };
        let typed = Typed {
            name: "Ada <b>".into(),
            ..Typed::default()
        };
        let html = pay_form(
            &link,
            &typed,
            Some(("card_number", "not a valid card number")),
            None,
        );
        assert!(
            html.contains("123.45 USD")
                && html.contains("INV-&lt;1&gt;")
                && html.contains("Ada &lt;b&gt;")
        );
        assert!(html.contains("aria-invalid=\"true\" aria-describedby=\"card_number-error\""));
        assert!(html.contains("id=\"card_number\" name=\"card_number\" inputmode=\"numeric\" autocomplete=\"cc-number\" maxlength=\"23\" value=\"\""));
    }
}
