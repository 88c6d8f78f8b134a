//! Deals as every Sage loop (Intacct, X3, agent-backed) reads them from Salesforce, written
//! once: whether an event or a pulled change is a Closed Won deal still to make, and its
//! product lines — one OpportunityLineItem each, with its Product2 (Name, ProductCode),
//! checked here (quantity positive, unit price not negative, discount between 0 and 100) so
//! every loop refuses bad Salesforce data with the same text naming the field.

use std::collections::HashMap;

use rust_decimal::Decimal;

use crate::flows::SalesforceSync;
use crate::jobs::JobError;
use crate::q2c::{sf_error, sf_id};
use crate::salesforce::Record;
use crate::salesforce::wire::canonical_id;

/// One checked OpportunityLineItem.
#[derive(Clone, Debug)]
pub(crate) struct DealLine {
    /// The OpportunityLineItem id (error texts name it).
    pub line_id: String,
    /// Its Product2 (`Id`, `Name`, `ProductCode`), when it has one.
    pub product: Option<Record>,
    /// Positive.
    pub quantity: Decimal,
    /// The list unit price, not negative.
    pub unit_price: Decimal,
    /// Percent, 0 to 100.
    pub discount: Decimal,
    /// The unit price less the discount, unrounded: quantity × this is the line's exact amount.
    pub net_unit_price: Decimal,
}

impl DealLine {
    /// `OpportunityLineItem {id}: {f}`, for error texts.
    pub fn field(&self, f: &str) -> String {
        format!("OpportunityLineItem {}: {f}", self.line_id)
    }

    /// The product's code (trimmed), when set: the Sage item code.
    pub fn product_code(&self) -> Option<&str> {
        self.product
            .as_ref()
            .and_then(|p| p.get_str("ProductCode"))
            .map(str::trim)
            .filter(|c| !c.is_empty())
    }
}

/// The Opportunity's lines, in id order (none when it has no products).
pub(crate) async fn deal_lines(
    salesforce: &SalesforceSync,
    opp_id: &str,
) -> Result<Vec<DealLine>, JobError> {
    let items = salesforce
        .client()
        .query_collect(&format!(
            "SELECT Id, Product2Id, Quantity, UnitPrice, Discount FROM OpportunityLineItem \
             WHERE OpportunityId = '{opp_id}' ORDER BY Id"
        ))
        .await
        .map_err(|e| sf_error(&e))?;
    let product_ids: Vec<String> = items
        .iter()
        .filter_map(|i| i.get_str("Product2Id"))
        .map(|p| sf_id(p, "Product2Id"))
        .collect::<Result<_, _>>()?;
    let mut products: HashMap<String, Record> = HashMap::new();
    if !product_ids.is_empty() {
        let list = product_ids
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(",");
        for p in salesforce
            .client()
            .query_collect(&format!(
                "SELECT Id, Name, ProductCode FROM Product2 WHERE Id IN ({list})"
            ))
            .await
            .map_err(|e| sf_error(&e))?
        {
            if let Some(id) = p.id() {
                products.insert(canonical_id(id), p.clone());
            }
        }
    }
    let mut lines = Vec::with_capacity(items.len());
    for item in &items {
        let line_id = item.id().unwrap_or("?").to_owned();
        let field = |f: &str| format!("OpportunityLineItem {line_id}: {f}");
        let quantity = item
            .get_decimal("Quantity")
            .filter(|q| *q > Decimal::ZERO)
            .ok_or_else(|| {
                JobError::Permanent(format!("{} must be a positive number", field("Quantity")))
            })?;
        let unit_price = item
            .get_decimal("UnitPrice")
            .filter(|p| *p >= Decimal::ZERO)
            .ok_or_else(|| {
                JobError::Permanent(format!("{} is missing or negative", field("UnitPrice")))
            })?;
        let discount = item.get_decimal("Discount").unwrap_or_default();
        if discount < Decimal::ZERO || discount > Decimal::ONE_HUNDRED {
            return Err(JobError::Permanent(format!(
                "{} must be between 0 and 100",
                field("Discount")
            )));
        }
        let net_unit_price = unit_price
            .checked_mul(Decimal::ONE_HUNDRED - discount)
            .map(|a| a / Decimal::ONE_HUNDRED)
            .ok_or_else(|| {
                JobError::Permanent(format!("{} is out of range", field("UnitPrice")))
            })?;
        let product = item
            .get_str("Product2Id")
            .and_then(|p| products.get(&canonical_id(p)))
            .cloned();
        lines.push(DealLine {
            line_id: line_id.clone(),
            product,
            quantity,
            unit_price,
            discount,
            net_unit_price,
        });
    }
    Ok(lines)
}

/// The Opportunity id of a Salesforce event (`salesforce.event` job) when it says an
/// Opportunity went Closed Won; `None` for any other event.
pub(crate) fn closed_won_event(payload: &serde_json::Value) -> Result<Option<&str>, JobError> {
    use serde_json::Value as Json;
    let object = payload
        .get("object")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let stage = payload
        .get("stage")
        .and_then(Json::as_str)
        .unwrap_or("Closed Won");
    if object != "Opportunity" || stage != "Closed Won" {
        return Ok(None);
    }
    payload
        .get("record_id")
        .and_then(Json::as_str)
        .map(Some)
        .ok_or_else(|| JobError::Permanent("record_id is missing".into()))
}

/// Whether a pulled Opportunity change (`id`) is a won deal that `sage_system` has not made
/// yet (no Opportunity link): then its Closed Won step is queued. The mirror says whether it
/// is won; a linked one was already handled (the Closed Won event got there first).
pub(crate) async fn won_unlinked(
    db: &db::Db,
    xref: &crate::xref::Xref,
    sage_system: &str,
    id: &str,
) -> Result<bool, JobError> {
    use serde_json::Value as Json;
    let won = crate::flows::mirrored(db, "Opportunity", id)
        .await
        .map_err(crate::q2c::storage)?
        .is_some_and(|f| {
            f.get("StageName").and_then(Json::as_str) == Some("Closed Won")
                || f.get("IsWon").and_then(Json::as_bool) == Some(true)
        });
    if !won {
        return Ok(false);
    }
    let linked = xref
        .by_salesforce("Opportunity", &sf_id(id, "id")?, sage_system)
        .await
        .map_err(crate::q2c::storage)?
        .is_some();
    Ok(!linked)
}
