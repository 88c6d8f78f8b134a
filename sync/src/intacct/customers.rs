//! Ensuring a Salesforce Account has its Intacct CUSTOMER, without ever making a second one:
//! the cross-reference first; then a search by the configured natural key (the customer's
//! name — an account that already exists in Intacct under the same name is linked, not
//! duplicated); then a create with a deterministic CUSTOMERID and controlid. If a crash falls
//! between the create and the cross-reference, the retry finds the customer by its key and
//! links it. More than one candidate is never resolved by picking: it goes to the review queue.

use crate::intacct::{Element, IntacctClient, IntacctError};
use crate::review::Review;
use crate::xref::{Link, Linked, Xref};

/// The Salesforce side of a customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub salesforce_id: String,
    pub name: String,
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
    let candidates = client
        .read_by_query_all(
            "CUSTOMER",
            &["CUSTOMERID", "NAME"],
            &format!("NAME = {}", quote(&account.name)),
            100,
        )
        .await?;
    let ids: Vec<String> = candidates
        .iter()
        .filter_map(|c| c.text_at("CUSTOMERID").map(str::to_owned))
        .collect();
    let customer_id = match ids.as_slice() {
        [one] => one.clone(),
        [] => {
            let id = customer_id_for(&account.salesforce_id);
            let record = Element::new("CUSTOMER")
                .with_leaf("CUSTOMERID", id.clone())
                .with_leaf("NAME", account.name.clone())
                .with(Element::new("DISPLAYCONTACT").with_leaf("PRINTAS", account.name.clone()));
            client
                .create(&format!("customer-{}", account.salesforce_id), vec![record])
                .await?;
            found = Found::Created;
            id
        }
        many => {
            let review_id = review
                .open(
                    "multiple_match",
                    "Account",
                    &account.salesforce_id,
                    &serde_json::json!({"sage_system": SAGE_SYSTEM, "object": "CUSTOMER", "name": account.name, "candidates": many}),
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
