//! Vendors and AP bills with Sage Intacct: an optional module, switched on in configuration.
//!
//! - **Intacct → Salesforce** (`intacct.vendors.pull`, per entity, by WHENMODIFIED, a cursor
//!   per entity and object): each changed VENDOR becomes an Account with `Type = Vendor`,
//!   upserted by `Sage_Vendor_Id__c` (the VENDORID), with its phone, e-mail and address from
//!   DISPLAYCONTACT where Intacct has them; new vendors are pushed in the same run and linked
//!   in the cross-reference (`Account` ⇄ VENDOR). Each changed APBILL becomes a
//!   `Cashloop_AP_Bill__c`, upserted by `Sage_Bill_Key__c` (entity `-` RECORDNO), its
//!   `Vendor__c` the vendor's Account; amounts in the bill's own currency (TRX_ fields when
//!   Intacct sends them) as exact decimals, the status Intacct's STATE. A bill whose vendor is
//!   not in Salesforce yet waits (a retryable error naming it); the cursor stays before it.
//! - **Salesforce → Intacct** ([`Vendors::vendor_changed`], for `salesforce.changed:Account`,
//!   which [`account_changed_handler`] shares with the quote-to-cash loop): an Account with
//!   `Type = Vendor` and no VENDOR gets one, with a deterministic VENDORID (`SF` + the
//!   18-character id) and controlid; the VENDORID is looked up before any create, so a crash
//!   between "created in Intacct" and "linked" creates nothing twice. A linked vendor gets the
//!   fields that changed since the last sync (either way), so our own writes echo back as no
//!   change.
//!
//! The boundary second of every pull is read again (Intacct stamps to the second), so every
//! step is idempotent: upserts by external id, the outbox skipping what is already pushed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use db::Db;
use rust_decimal::Decimal;
use serde_json::{Map, Value as Json, json};

use crate::cursor::{Cursors, Position};
use crate::flows::SalesforceSync;
use crate::intacct::customers::{SAGE_SYSTEM, set_path};
use crate::intacct::{Element, IntacctClient, IntacctError};
use crate::jobs::{BoxFuture, Handler, Job, JobError, Jobs, NewJob, Registry};
use crate::salesforce::{Record, SalesforceError};
use crate::xref::{Link, Linked, Xref};

pub const PULL: &str = "intacct.vendors.pull";

/// The cross-reference object of a vendor Account. An Account can be a customer and a vendor
/// at once (a CUSTOMER and a VENDOR in Intacct), so vendor links are kept apart from the
/// `Account` ⇄ CUSTOMER links of the quote-to-cash loop.
pub const VENDOR_XREF_OBJECT: &str = "Account:VENDOR";
/// The Salesforce object of AP bills.
pub const BILL_OBJECT: &str = "Cashloop_AP_Bill__c";
/// The external id of vendor Accounts (the VENDORID).
pub const VENDOR_ID_FIELD: &str = "Sage_Vendor_Id__c";
/// The external id of AP bills (entity `-` RECORDNO).
pub const BILL_KEY_FIELD: &str = "Sage_Bill_Key__c";

/// Intacct VENDOR field (path) ⇄ Salesforce Account field, both ways.
const FIELDS: &[(&str, &str)] = &[
    ("NAME", "Name"),
    ("DISPLAYCONTACT/PHONE1", "Phone"),
    ("DISPLAYCONTACT/EMAIL1", "Vendor_Email__c"),
    ("DISPLAYCONTACT/MAILADDRESS/ADDRESS1", "BillingStreet"),
    ("DISPLAYCONTACT/MAILADDRESS/CITY", "BillingCity"),
    ("DISPLAYCONTACT/MAILADDRESS/STATE", "BillingState"),
    ("DISPLAYCONTACT/MAILADDRESS/ZIP", "BillingPostalCode"),
    ("DISPLAYCONTACT/MAILADDRESS/COUNTRY", "BillingCountry"),
];

/// How the module runs.
#[derive(Clone, Debug)]
pub struct VendorsConfig {
    /// The entity a vendor Account made in Salesforce is created in (one of the entities).
    pub vendor_entity: String,
    /// The Account `Type` that makes an Account a vendor.
    pub account_type: String,
}

impl Default for VendorsConfig {
    fn default() -> VendorsConfig {
        VendorsConfig {
            vendor_entity: String::new(),
            account_type: "Vendor".into(),
        }
    }
}

/// What a vendors pull did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VendorPullReport {
    /// Vendors queued to Salesforce (new or changed).
    pub vendors: u64,
    /// Vendors linked to their new Account in this run.
    pub linked: u64,
    /// Bills queued to Salesforce (the outbox skips the unchanged ones when pushing).
    pub bills: u64,
}

/// The vendors module.
pub struct Vendors {
    db: Db,
    jobs: Jobs,
    xref: Xref,
    cursors: Cursors,
    salesforce: SalesforceSync,
    entities: BTreeMap<String, Arc<IntacctClient>>,
    config: VendorsConfig,
}

impl std::fmt::Debug for Vendors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vendors")
            .field("entities", &self.entities.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn intacct_error(e: &IntacctError) -> JobError {
    // Intacct's own description and correction reach the error queue verbatim (Display).
    if e.retryable() {
        JobError::Retryable(e.to_string())
    } else {
        JobError::Permanent(e.to_string())
    }
}

fn sf_error(e: &SalesforceError) -> JobError {
    if e.retryable() {
        JobError::Retryable(e.to_string())
    } else {
        JobError::Permanent(e.to_string())
    }
}

fn storage(e: impl std::fmt::Display) -> JobError {
    JobError::Retryable(format!("storage: {e}"))
}

/// The 18-character form of a Salesforce id (15-character ids differ only in case).
fn sf_id(id: &str, field: &str) -> Result<String, JobError> {
    if (id.len() == 15 || id.len() == 18) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(crate::salesforce::wire::canonical_id(id))
    } else {
        Err(JobError::Permanent(format!(
            "{field}: {id:?} is not a Salesforce id"
        )))
    }
}

/// A string literal for readByQuery and SOQL (both escape `'` and `\` with a backslash).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Whether a create failed only because it had happened before (the same VENDORID, or the
/// same function controlid with `uniqueid=true`).
fn already_done(e: &IntacctError) -> bool {
    matches!(e, IntacctError::Function { .. })
        && e.errors().iter().any(|d| {
            d.errorno == "BL34000061"
                || d.errorno == "XL03000004"
                || d.description2.contains("already exists")
                || d.description2.to_ascii_lowercase().contains("controlid")
        })
}

fn text(r: &Element, path: &str) -> Option<String> {
    r.text_at(path)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn dec_at(r: &Element, path: &str) -> Option<Decimal> {
    r.text_at(path).and_then(|v| v.trim().parse().ok())
}

/// Intacct's `MM/DD/YYYY HH:MM:SS` stamp.
fn parse_stamp(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s.trim(), "%m/%d/%Y %H:%M:%S").ok()
}

/// An Intacct date (`MM/DD/YYYY`, possibly with a time) as a Salesforce date.
fn sf_date(r: &Element, path: &str) -> Json {
    r.text_at(path)
        .and_then(|d| d.split_whitespace().next())
        .and_then(|d| NaiveDate::parse_from_str(d, "%m/%d/%Y").ok())
        .map(|d| json!(d.format("%Y-%m-%d").to_string()))
        .unwrap_or(Json::Null)
}

/// The VENDORID cashloop gives a vendor it creates from a Salesforce Account: `SF` + the
/// 18-character id (fits VENDORID's 20), stable, so a retried create is refused as a duplicate.
pub fn vendor_id_for(salesforce_id: &str) -> String {
    format!("SF{}", crate::salesforce::wire::canonical_id(salesforce_id))
}

/// The key of an AP bill in Salesforce: entity and RECORDNO.
pub fn bill_key(entity: &str, recordno: &str) -> String {
    format!("{entity}-{recordno}")
}

/// A vendor's synced values (Intacct path → value), the ones Intacct has.
fn vendor_values(r: &Element) -> Map<String, Json> {
    FIELDS
        .iter()
        .filter_map(|(path, _)| text(r, path).map(|v| ((*path).to_owned(), json!(v))))
        .collect()
}

/// An Account's synced values (Intacct path → value), the ones Salesforce has.
fn account_values(a: &Record) -> Map<String, Json> {
    FIELDS
        .iter()
        .filter_map(|(path, field)| {
            a.get_str(field)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| ((*path).to_owned(), json!(v)))
        })
        .collect()
}

/// The Account fields of a vendor's values.
fn account_fields(
    values: &Map<String, Json>,
    vendor_id: &str,
    account_type: &str,
) -> Map<String, Json> {
    let mut fields: Map<String, Json> = FIELDS
        .iter()
        .filter_map(|(path, field)| values.get(*path).map(|v| ((*field).to_owned(), v.clone())))
        .collect();
    fields.insert("Type".into(), json!(account_type));
    fields.insert(VENDOR_ID_FIELD.into(), json!(vendor_id));
    fields
}

/// The DISPLAYCONTACT of a vendor's values: sent whole, PRINTAS and COMPANYNAME the name.
fn display_contact(values: &Map<String, Json>, name: &str) -> Element {
    let mut record = Element::new("VENDOR");
    set_path(&mut record, "DISPLAYCONTACT/PRINTAS", name);
    set_path(&mut record, "DISPLAYCONTACT/COMPANYNAME", name);
    for (path, v) in values {
        if path.starts_with("DISPLAYCONTACT/") {
            set_path(&mut record, path, v.as_str().unwrap_or_default());
        }
    }
    record
        .children
        .into_iter()
        .next()
        .unwrap_or_else(|| Element::new("DISPLAYCONTACT"))
}

fn digest(values: &Map<String, Json>) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(Json::Object(values.clone()).to_string().as_bytes())[..8])
}

impl Vendors {
    pub fn new(
        db: Db,
        jobs: Jobs,
        salesforce: SalesforceSync,
        entities: BTreeMap<String, Arc<IntacctClient>>,
        config: VendorsConfig,
    ) -> Vendors {
        Vendors {
            xref: Xref::new(db.clone()),
            cursors: Cursors::new(db.clone()),
            db,
            jobs,
            salesforce,
            entities,
            config,
        }
    }

    pub fn config(&self) -> &VendorsConfig {
        &self.config
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Handlers: the per-entity pull. `salesforce.changed:Account` is shared with the
    /// quote-to-cash loop: register [`account_changed_handler`] for it.
    pub fn register(self, registry: Registry) -> Registry {
        Vendors::register_shared(Arc::new(self), registry)
    }

    /// [`Vendors::register`] for a module also used elsewhere (its schedule).
    pub fn register_shared(me: Arc<Vendors>, registry: Registry) -> Registry {
        registry.register(PULL, Arc::new(PullHandler(me)))
    }

    fn client(&self, id: &str) -> Result<&Arc<IntacctClient>, JobError> {
        self.entities.get(id).ok_or_else(|| {
            JobError::Permanent(format!(
                "entity {id:?} is not configured under [sync.intacct.entities]"
            ))
        })
    }

    /// Queues a pull of every entity, deduplicated per `slot`.
    pub async fn queue_pulls(&self, slot: i64) -> Result<(), JobError> {
        self.jobs
            .enqueue_tick(
                PULL,
                "entity",
                self.entities.keys().map(String::as_str),
                slot,
            )
            .await
            .map_err(storage)
    }

    /// Queues pulls every `interval` until `stop` turns true.
    pub async fn run_schedule(
        self: Arc<Self>,
        interval: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::jobs::run_on_ticks(interval, stop, |slot| {
            let me = self.clone();
            async move {
                if let Err(e) = me.queue_pulls(slot).await {
                    tracing::warn!(error = ?e, "queueing Intacct vendor pulls failed");
                }
            }
        })
        .await
    }

    async fn queue_push_now(&self, object: &str) -> Result<(), JobError> {
        // A push sends every pending row of the object, so an extra one finds nothing to do.
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| JobError::Retryable(format!("random: {e}")))?;
        self.jobs
            .enqueue(
                NewJob::new(crate::flows::PUSH, json!({"object": object})).dedupe(format!(
                    "{}:{object}:now:{}",
                    crate::flows::PUSH,
                    hex::encode(nonce)
                )),
            )
            .await
            .map_err(storage)?;
        Ok(())
    }

    /// The changed records of `object` since the entity's cursor, oldest first, each with its
    /// position; `None` when the tenant has no such object.
    async fn changed(
        &self,
        client: &IntacctClient,
        system: &str,
        object: &str,
    ) -> Result<Option<(Option<Position>, Vec<(Position, Element)>)>, JobError> {
        let since = self.cursors.get(system, object).await.map_err(storage)?;
        let query = match &since {
            // Seconds resolution: re-read the boundary second.
            Some(p) => format!(
                "WHENMODIFIED >= '{}'",
                p.modified_at.format("%m/%d/%Y %H:%M:%S")
            ),
            None => String::new(),
        };
        let rows = match client.read_by_query_all(object, &[], &query, 1000).await {
            Ok(r) => r,
            // Objects a tenant has not subscribed to are skipped, not fatal.
            Err(e) if e.has_errorno("DL02000001") => return Ok(None),
            Err(e) => return Err(intacct_error(&e)),
        };
        let mut rows: Vec<(Position, Element)> = rows
            .into_iter()
            .filter_map(|r| {
                let modified = r.text_at("WHENMODIFIED").and_then(parse_stamp)?;
                let no = r
                    .text_at("RECORDNO")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                Some((
                    Position {
                        modified_at: modified.and_utc(),
                        last_id: format!("{no:020}"),
                    },
                    r,
                ))
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some((since, rows)))
    }

    async fn advance(
        &self,
        system: &str,
        object: &str,
        since: Option<&Position>,
        last: Option<Position>,
    ) -> Result<(), JobError> {
        if let Some(p) = last.filter(|p| since.is_none_or(|s| p > s)) {
            self.cursors
                .advance(system, object, &p)
                .await
                .map_err(storage)?;
        }
        Ok(())
    }

    /// What changed in one entity since its cursors: vendors, then bills; see the module docs.
    pub async fn pull(&self, entity_id: &str) -> Result<VendorPullReport, JobError> {
        let client = self.client(entity_id)?.clone();
        let system = format!("{SAGE_SYSTEM}:{entity_id}");
        let mut report = VendorPullReport::default();
        // Another entity's records are left to that entity's pull (a top-level session sees all).
        let mine = |r: &Element| {
            r.text_at("MEGAENTITYID")
                .is_none_or(|m| m.is_empty() || m == entity_id)
        };

        if let Some((since, rows)) = self.changed(&client, &system, "VENDOR").await? {
            let mut fresh: Vec<(String, Map<String, Json>)> = Vec::new();
            let mut last = None;
            for (here, r) in &rows {
                let Some(vendor_id) = text(r, "VENDORID").filter(|_| mine(r)) else {
                    last = Some(here.clone());
                    continue;
                };
                let values = vendor_values(r);
                let fields = account_fields(&values, &vendor_id, &self.config.account_type);
                let link = self
                    .xref
                    .by_sage(SAGE_SYSTEM, VENDOR_XREF_OBJECT, entity_id, &vendor_id)
                    .await
                    .map_err(storage)?;
                match link {
                    Some(l) => {
                        // Unchanged since the last sync (either way): our own write echoing.
                        if l.last_values.as_ref().and_then(Json::as_object) != Some(&values) {
                            self.salesforce
                                .queue_push("Account", "Id", &l.salesforce_id, &fields)
                                .await
                                .map_err(storage)?;
                            self.xref
                                .set_last_values(
                                    VENDOR_XREF_OBJECT,
                                    &l.salesforce_id,
                                    SAGE_SYSTEM,
                                    &Json::Object(values),
                                )
                                .await
                                .map_err(storage)?;
                            report.vendors += 1;
                        }
                    }
                    None => {
                        // The outbox skips values already pushed, so a re-read costs nothing.
                        self.salesforce
                            .queue_push("Account", VENDOR_ID_FIELD, &vendor_id, &fields)
                            .await
                            .map_err(storage)?;
                        fresh.push((vendor_id, values));
                        report.vendors += 1;
                    }
                }
                last = Some(here.clone());
            }
            if !fresh.is_empty() {
                // New vendors go to Salesforce now, so their bills find their Account.
                self.salesforce.push("Account", None).await?;
                report.linked = self.link_fresh(entity_id, &fresh).await?;
            } else if report.vendors > 0 {
                self.queue_push_now("Account").await?;
            }
            self.advance(&system, "VENDOR", since.as_ref(), last)
                .await?;
        }

        if let Some((since, rows)) = self.changed(&client, &system, "APBILL").await? {
            let mut last = None;
            let mut failure = None;
            // Vendor → Account id, for the bills of one vendor read in this run.
            let mut accounts = HashMap::new();
            for (here, r) in &rows {
                if mine(r) {
                    match self.bill_changed(entity_id, r, &mut accounts).await {
                        Ok(()) => report.bills += 1,
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                last = Some(here.clone());
            }
            // Up to the bill that waits: the rest is read again next time.
            self.advance(&system, "APBILL", since.as_ref(), last)
                .await?;
            if report.bills > 0 {
                self.queue_push_now(BILL_OBJECT).await?;
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
        Ok(report)
    }

    /// Links vendors just pushed to their Accounts (found by `Sage_Vendor_Id__c`).
    async fn link_fresh(
        &self,
        entity_id: &str,
        fresh: &[(String, Map<String, Json>)],
    ) -> Result<u64, JobError> {
        let mut linked = 0;
        for chunk in fresh.chunks(100) {
            let ids: Vec<String> = chunk.iter().map(|(v, _)| quote(v)).collect();
            let rows = self
                .salesforce
                .client()
                .query_collect(&format!(
                    "SELECT Id, {VENDOR_ID_FIELD} FROM Account WHERE {VENDOR_ID_FIELD} IN ({})",
                    ids.join(", ")
                ))
                .await
                .map_err(|e| sf_error(&e))?;
            for row in rows {
                let (Some(id), Some(vendor_id)) = (row.id(), row.get_str(VENDOR_ID_FIELD)) else {
                    continue;
                };
                let Some((vendor_id, values)) = chunk
                    .iter()
                    .find(|(v, _)| v.eq_ignore_ascii_case(vendor_id))
                else {
                    continue;
                };
                let link = Link {
                    object: VENDOR_XREF_OBJECT.into(),
                    salesforce_id: crate::salesforce::wire::canonical_id(id),
                    sage_system: SAGE_SYSTEM.into(),
                    sage_entity: entity_id.into(),
                    sage_id: vendor_id.clone(),
                    last_values: Some(Json::Object(values.clone())),
                };
                match self.xref.link(&link).await.map_err(storage)? {
                    Linked::Created => linked += 1,
                    Linked::Existing => {}
                    // A top-level vendor another entity's pull linked first: the same pair.
                    Linked::Conflict(other)
                        if other.salesforce_id == link.salesforce_id
                            && other.sage_id == link.sage_id => {}
                    Linked::Conflict(other) => tracing::warn!(
                        vendor = %vendor_id,
                        account = %link.salesforce_id,
                        linked_account = %other.salesforce_id,
                        linked_vendor = %other.sage_id,
                        "vendor link conflicts with an existing one; left as is"
                    ),
                }
            }
        }
        Ok(linked)
    }

    /// The Salesforce Account of a vendor: linked, or carrying its VENDORID.
    async fn vendor_account(
        &self,
        entity_id: &str,
        vendor_id: &str,
    ) -> Result<Option<String>, JobError> {
        if let Some(l) = self
            .xref
            .by_sage(SAGE_SYSTEM, VENDOR_XREF_OBJECT, entity_id, vendor_id)
            .await
            .map_err(storage)?
        {
            return Ok(Some(l.salesforce_id));
        }
        let rows = self
            .salesforce
            .client()
            .query_collect(&format!(
                "SELECT Id FROM Account WHERE {VENDOR_ID_FIELD} = {}",
                quote(vendor_id)
            ))
            .await
            .map_err(|e| sf_error(&e))?;
        Ok(rows
            .first()
            .and_then(Record::id)
            .map(crate::salesforce::wire::canonical_id))
    }

    /// A changed bill to its `Cashloop_AP_Bill__c`.
    async fn bill_changed(
        &self,
        entity_id: &str,
        r: &Element,
        accounts: &mut HashMap<String, String>,
    ) -> Result<(), JobError> {
        let no = text(r, "RECORDNO").unwrap_or_default();
        let vendor_id = text(r, "VENDORID").unwrap_or_default();
        let account = match accounts.get(&vendor_id) {
            Some(a) => a.clone(),
            None => {
                let Some(a) = self.vendor_account(entity_id, &vendor_id).await? else {
                    return Err(JobError::Retryable(format!(
                        "APBILL {no} (entity {entity_id}): vendor {vendor_id:?} is not in Salesforce yet; the bill waits for it"
                    )));
                };
                accounts.insert(vendor_id.clone(), a.clone());
                a
            }
        };
        let number = text(r, "RECORDID");
        let vendor_name = text(r, "VENDORNAME").unwrap_or_else(|| vendor_id.clone());
        let name: String = format!(
            "{vendor_name} {}",
            number.clone().unwrap_or_else(|| format!("#{no}"))
        )
        .chars()
        .take(80)
        .collect();
        // The bill's own currency: TRX_ amounts when Intacct sends them, else the base ones.
        let amount = |trx: &str, base: &str| {
            dec_at(r, trx)
                .or_else(|| dec_at(r, base))
                .map(|d| json!(d.to_string()))
                .unwrap_or(Json::Null)
        };
        let currency = text(r, "CURRENCY").or_else(|| text(r, "BASECURR"));
        let mut fields = Map::new();
        fields.insert("Name".into(), json!(name));
        fields.insert("Vendor__c".into(), json!(account));
        fields.insert("Bill_Number__c".into(), json!(number));
        fields.insert("Bill_Date__c".into(), sf_date(r, "WHENCREATED"));
        fields.insert("Due_Date__c".into(), sf_date(r, "WHENDUE"));
        fields.insert(
            "Amount__c".into(),
            amount("TRX_TOTALENTERED", "TOTALENTERED"),
        );
        fields.insert("Amount_Due__c".into(), amount("TRX_TOTALDUE", "TOTALDUE"));
        fields.insert("Currency__c".into(), json!(currency));
        fields.insert("Status__c".into(), json!(text(r, "STATE")));
        fields.insert("Entity__c".into(), json!(entity_id));
        self.salesforce
            .queue_push(
                BILL_OBJECT,
                BILL_KEY_FIELD,
                &bill_key(entity_id, &no),
                &fields,
            )
            .await
            .map_err(storage)
    }

    /// A Salesforce Account changed: a vendor Account without a VENDOR gets one; a linked one
    /// gets what changed. Returns whether Intacct was written (or linked).
    pub async fn vendor_changed(&self, account_id: &str) -> Result<bool, JobError> {
        let account_id = sf_id(account_id, "Account.Id")?;
        let mut select: Vec<&str> = FIELDS.iter().map(|(_, f)| *f).collect();
        select.extend(["Type", VENDOR_ID_FIELD]);
        let rows = self
            .salesforce
            .client()
            .query_collect(&format!(
                "SELECT Id, {} FROM Account WHERE Id = '{account_id}'",
                select.join(", ")
            ))
            .await
            .map_err(|e| sf_error(&e))?;
        // Deleted meanwhile: nothing to do.
        let Some(account) = rows.into_iter().next() else {
            return Ok(false);
        };
        let is_vendor = account
            .get_str("Type")
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(&self.config.account_type));
        let link = self
            .xref
            .by_salesforce(VENDOR_XREF_OBJECT, &account_id, SAGE_SYSTEM)
            .await
            .map_err(storage)?;
        let next = account_values(&account);
        match link {
            Some(link) => self.update_vendor(&link, &next).await,
            None if !is_vendor => Ok(false),
            None => self.create_vendor(&account_id, &account, next).await,
        }
    }

    /// The changed fields of a linked vendor to Intacct.
    async fn update_vendor(&self, link: &Link, next: &Map<String, Json>) -> Result<bool, JobError> {
        let last = link.last_values.as_ref().and_then(Json::as_object);
        let changed = crate::mapping::changes(next, last);
        if changed.is_empty() {
            return Ok(false);
        }
        let client = self.client(&link.sage_entity)?.clone();
        let mut record = Element::new("VENDOR").with_leaf("VENDORID", &link.sage_id);
        if let Some(name) = changed.get("NAME").and_then(Json::as_str) {
            record = record.with_leaf("NAME", name);
        }
        // DISPLAYCONTACT goes whole (PRINTAS follows the name), so no part of it is lost.
        let name = next
            .get("NAME")
            .and_then(Json::as_str)
            .unwrap_or(&link.sage_id)
            .to_owned();
        record = record.with(display_contact(next, &name));
        // The controlid names this exact change: a resend is refused, a new change is not.
        match client
            .update(
                &format!("vendor-update-{}-{}", link.salesforce_id, digest(next)),
                vec![record],
            )
            .await
        {
            Ok(_) => {}
            Err(e) if already_done(&e) => {}
            Err(e) => return Err(intacct_error(&e)),
        }
        self.xref
            .set_last_values(
                VENDOR_XREF_OBJECT,
                &link.salesforce_id,
                SAGE_SYSTEM,
                &Json::Object(next.clone()),
            )
            .await
            .map_err(storage)?;
        Ok(true)
    }

    /// A vendor Account without a link: its VENDOR found (made before, or the one it came
    /// from) or created, then linked; its VENDORID written back to the Account.
    async fn create_vendor(
        &self,
        account_id: &str,
        account: &Record,
        next: Map<String, Json>,
    ) -> Result<bool, JobError> {
        let entity = self.config.vendor_entity.clone();
        let client = self.client(&entity)?.clone();
        let name = next
            .get("NAME")
            .and_then(Json::as_str)
            .map(str::to_owned)
            .ok_or_else(|| JobError::Permanent(format!("Account {account_id}: Name is empty")))?;
        // An Account that came from Intacct carries its VENDORID; else the one we give it.
        let vendor_id = account
            .get_str(VENDOR_ID_FIELD)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| vendor_id_for(account_id));
        let found = client
            .read_by_query_all(
                "VENDOR",
                &[],
                &format!("VENDORID = {}", quote(&vendor_id)),
                10,
            )
            .await
            .map_err(|e| intacct_error(&e))?;
        let last_values = match found.first() {
            // Created by a run that crashed before linking, or the vendor this Account is:
            // linked with Intacct's values, so what differs is sent as a change below.
            Some(v) => vendor_values(v),
            None => {
                let record = Element::new("VENDOR")
                    .with_leaf("VENDORID", &vendor_id)
                    .with_leaf("NAME", &name)
                    .with(display_contact(&next, &name));
                match client
                    .create(&format!("vendor-{account_id}"), vec![record])
                    .await
                {
                    Ok(_) => {}
                    // Made by an earlier attempt whose answer was lost: it is ours.
                    Err(e) if already_done(&e) => {}
                    Err(e) => return Err(intacct_error(&e)),
                }
                next.clone()
            }
        };
        let link = Link {
            object: VENDOR_XREF_OBJECT.into(),
            salesforce_id: account_id.to_owned(),
            sage_system: SAGE_SYSTEM.into(),
            sage_entity: entity,
            sage_id: vendor_id.clone(),
            last_values: Some(Json::Object(last_values)),
        };
        match self.xref.link(&link).await.map_err(storage)? {
            Linked::Created | Linked::Existing => {}
            Linked::Conflict(other) => {
                return Err(JobError::Permanent(format!(
                    "the cross-reference links Account {account_id} / VENDOR {vendor_id} to another record ({} ⇄ {})",
                    other.salesforce_id, other.sage_id
                )));
            }
        }
        if account.get_str(VENDOR_ID_FIELD) != Some(vendor_id.as_str()) {
            let mut fields = Map::new();
            fields.insert(VENDOR_ID_FIELD.into(), json!(vendor_id));
            self.salesforce
                .queue_push("Account", "Id", account_id, &fields)
                .await
                .map_err(storage)?;
            self.queue_push_now("Account").await?;
        }
        // A found vendor may differ from the Account: the Account's values win once.
        self.update_vendor(&link, &next).await?;
        Ok(true)
    }
}

/// `salesforce.changed:Account` for both the quote-to-cash loop (a linked customer's mapped
/// fields) and the vendors module (vendor Accounts ⇄ VENDOR). Register it after
/// [`crate::q2c::Q2c::register_shared`], which it replaces for that kind.
pub fn account_changed_handler(
    q2c: Option<Arc<crate::q2c::Q2c>>,
    vendors: Arc<Vendors>,
) -> Arc<dyn Handler> {
    Arc::new(AccountChangedHandler { q2c, vendors })
}

struct AccountChangedHandler {
    q2c: Option<Arc<crate::q2c::Q2c>>,
    vendors: Arc<Vendors>,
}

impl Handler for AccountChangedHandler {
    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let Some(id) = job.changed_id()? else {
                return Ok(());
            };
            if let Some(q2c) = &self.q2c {
                q2c.account_changed(id).await?;
            }
            self.vendors.vendor_changed(id).await.map(|_| ())
        })
    }
}

struct PullHandler(Arc<Vendors>);
impl Handler for PullHandler {
    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let e = job.text("entity")?;
            let r = self.0.pull(e).await?;
            tracing::info!(entity = %e, vendors = r.vendors, linked = r.linked, bills = r.bills, "intacct vendors pull done");
            Ok(())
        })
    }
}
