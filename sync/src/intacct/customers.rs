//! Ensuring a Salesforce Account has its Intacct CUSTOMER, without ever making a second one:
//! the cross-reference first; then the CUSTOMERID cashloop would have given it (the
//! Salesforce id stored on the Sage record: found even if renamed in Intacct); then the
//! natural keys — the name, narrowed by the billing postcode and the e-mail domain when both
//! sides have them (an account that already exists in Intacct under the same name is linked,
//! not duplicated); then a create with a deterministic CUSTOMERID and controlid. If a crash
//! falls between the create and the cross-reference, the retry finds the customer by its key
//! and links it. More than one candidate is never resolved by picking: it goes to review.

use crate::intacct::{Element, IntacctClient, IntacctError};
use crate::review::Review;
use crate::xref::{Link, Linked, Xref};

/// The Salesforce side of a customer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub salesforce_id: String,
    pub name: String,
    /// Billing address, written to a new customer's MAILADDRESS; the postcode also narrows
    /// a search by name.
    pub street: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    /// The bill-to contact's e-mail: its domain narrows a search by name.
    pub email: Option<String>,
    /// More CUSTOMER fields for a create, from the configured Account ⇄ CUSTOMER mapping:
    /// (path, value), a path such as `CUSTTYPE` or `DISPLAYCONTACT/PHONE1`.
    pub extra: Vec<(String, String)>,
}

/// Sets `value` at `path` (`A/B/C`) under `el`, making the elements on the way.
pub fn set_path(el: &mut Element, path: &str, value: &str) {
    match path.split_once('/') {
        None => el.set_leaf(path, value),
        Some((head, rest)) => {
            if el.child(head).is_none() {
                el.children.push(Element::new(head));
            }
            if let Some(child) = el.child_mut(head) {
                set_path(child, rest, value);
            }
        }
    }
}

fn postcode_key(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

fn email_domain(s: &str) -> Option<String> {
    s.rsplit_once('@')
        .map(|(_, d)| d.trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

/// How the customer was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Linked before.
    Xref,
    /// Existed in Intacct under the same name; now linked.
    Matched,
    /// Created now.
    Created,
}

#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error(transparent)]
    Intacct(#[from] IntacctError),
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    /// Several Intacct customers match; parked in the review queue (item `review_id`).
    #[error(
        "{count} Intacct customers are named {name:?}; review item {review_id} decides which one"
    )]
    Ambiguous {
        name: String,
        count: usize,
        review_id: i64,
    },
    /// The cross-reference already links this account or customer to another record.
    #[error("the cross-reference links {0} to another record")]
    Conflict(String),
}

pub const SAGE_SYSTEM: &str = "intacct";

/// The CUSTOMERID cashloop gives a customer it creates: stable per Salesforce account, so a
/// retried create is refused as a duplicate instead of making a second customer. The 18-
/// character id, because keys compare case-insensitively and 15-character ids differ only
/// in case (`…0000h` and `…0000H` are two accounts); `SF` + 18 fits CUSTOMERID's 20.
pub fn customer_id_for(salesforce_id: &str) -> String {
    format!("SF{}", crate::salesforce::wire::canonical_id(salesforce_id))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "\\'"))
}

/// Finds or creates the customer for `account` in `entity`; returns its CUSTOMERID.
pub async fn ensure_customer(
    client: &IntacctClient,
    xref: &Xref,
    review: &Review,
    account: &Account,
    entity: &str,
) -> Result<(String, Found), EnsureError> {
    if let Some(l) = xref
        .by_salesforce("Account", &account.salesforce_id, SAGE_SYSTEM)
        .await?
    {
        return Ok((l.sage_id, Found::Xref));
    }
    let mut found = Found::Matched;
    let own_id = customer_id_for(&account.salesforce_id);
    let mine = client
        .read_by_query_all(
            "CUSTOMER",
            &["CUSTOMERID"],
            &format!("CUSTOMERID = {}", quote(&own_id)),
            10,
        )
        .await?;
    let candidates = if mine.is_empty() {
        client
            .read_by_query_all(
                "CUSTOMER",
                &[],
                &format!("NAME = {}", quote(&account.name)),
                100,
            )
            .await?
    } else {
        mine
    };
    // Narrow same-named customers by postcode, then e-mail domain, where both sides have one.
    let mut candidates: Vec<&Element> = candidates.iter().collect();
    if candidates.len() > 1
        && let Some(pc) = account
            .postal_code
            .as_deref()
            .map(postcode_key)
            .filter(|p| !p.is_empty())
    {
        candidates.retain(|c| {
            c.text_at("DISPLAYCONTACT/MAILADDRESS/ZIP")
                .map(postcode_key)
                .is_none_or(|z| z.is_empty() || z == pc)
        });
    }
    if candidates.len() > 1
        && let Some(domain) = account.email.as_deref().and_then(email_domain)
    {
        candidates.retain(|c| {
            c.text_at("DISPLAYCONTACT/EMAIL1")
                .and_then(email_domain)
                .is_none_or(|d| d == domain)
        });
    }
    let ids: Vec<String> = candidates
        .iter()
        .filter_map(|c| c.text_at("CUSTOMERID").map(str::to_owned))
        .collect();
    let customer_id = match ids.as_slice() {
        [one] => one.clone(),
        [] => {
            let mut address = Element::new("MAILADDRESS");
            for (tag, v) in [
                ("ADDRESS1", &account.street),
                ("CITY", &account.city),
                ("STATE", &account.state),
                ("ZIP", &account.postal_code),
                ("COUNTRY", &account.country),
            ] {
                if let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                    address = address.with_leaf(tag, v);
                }
            }
            let mut contact = Element::new("DISPLAYCONTACT")
                .with_leaf("PRINTAS", account.name.clone())
                .with_leaf("COMPANYNAME", account.name.clone());
            if let Some(e) = &account.email {
                contact = contact.with_leaf("EMAIL1", e);
            }
            if !address.children.is_empty() {
                contact = contact.with(address);
            }
            let mut record = Element::new("CUSTOMER")
                .with_leaf("CUSTOMERID", own_id.clone())
                .with_leaf("NAME", account.name.clone())
                .with(contact);
            for (path, value) in &account.extra {
                set_path(&mut record, path, value);
            }
            match client
                .create(&format!("customer-{}", account.salesforce_id), vec![record])
                .await
            {
                Ok(_) => found = Found::Created,
                // Made by an earlier attempt whose answer was lost: it is ours.
                Err(e) if e.has_errorno("BL34000061") || e.has_errorno("XL03000004") => {}
                Err(e) => return Err(e.into()),
            }
            own_id
        }
        many => {
            let review_id = review
                .open(
                    "multiple_match",
                    "Account",
                    &account.salesforce_id,
                    &serde_json::json!({"sage_system": SAGE_SYSTEM, "object": "CUSTOMER", "name": account.name, "postal_code": account.postal_code, "candidates": many}),
                )
                .await?;
            return Err(EnsureError::Ambiguous {
                name: account.name.clone(),
                count: many.len(),
                review_id,
            });
        }
    };
    let link = Link {
        object: "Account".into(),
        salesforce_id: account.salesforce_id.clone(),
        sage_system: SAGE_SYSTEM.into(),
        sage_entity: entity.into(),
        sage_id: customer_id.clone(),
        last_values: None,
    };
    match xref.link(&link).await? {
        Linked::Created | Linked::Existing => Ok((customer_id, found)),
        Linked::Conflict(other) => Err(EnsureError::Conflict(format!(
            "Account {} / CUSTOMER {} (linked: {} ⇄ {})",
            account.salesforce_id, customer_id, other.salesforce_id, other.sage_id
        ))),
    }
}
