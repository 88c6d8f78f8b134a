//! `[sync.x3]`: the Sage X3 connection (REST or SOAP), multi-folder routing and the loop's
//! ledger accounts. One Sage line per installation: refused together with `[sync.intacct]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledger::EntityCode;
use serde::{Deserialize, Serialize};

use super::{ConfigError, RawQ2cLedger, RawSecret, bad, check_endpoint, secret_text};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyncX3 {
    /// Syracuse's address, `https://x3.example.com:8124` (plain http only to loopback).
    pub base_url: String,
    /// The default folder (endpoint), with its sales and shipping sites.
    pub folder: String,
    pub sales_site: String,
    pub shipping_site: String,
    /// HTTP Basic user, with `password`; or a bearer `token` instead of both.
    pub user: Option<String>,
    pub password: Option<RawSecret>,
    pub token: Option<RawSecret>,
    /// `rest` (default) or `soap` (`CAdxWebServiceXmlCC`).
    pub transport: Option<String>,
    /// SOAP pool alias per folder (default: the folder's name).
    #[serde(default)]
    pub pool_aliases: BTreeMap<String, String>,
    /// The BPCUSTOMER custom field holding the Salesforce Account id (default `YSFID`).
    pub sf_id_field: Option<String>,
    /// Per request (default 30000).
    pub timeout_ms: Option<u64>,
    /// Rules choosing another folder and sites per account; first match wins.
    #[serde(default)]
    pub routes: Vec<RawX3Route>,
    /// `SOHTYP` of orders (default `SON`).
    pub order_type: Option<String>,
    /// `PAYTYP` of receipts (default `REC`).
    pub payment_type: Option<String>,
    /// `BAN`: bank account gateway receipts are deposited to.
    pub bank: String,
    /// `BCGCOD` of customers created (default: X3's).
    pub customer_category: Option<String>,
    /// ITMREF ordering a deal without products (its Amount); none: such deals are refused.
    pub amount_item: Option<String>,
    /// Currency of an Opportunity without one (default "EUR").
    pub default_currency: Option<String>,
    /// How often X3 is read for invoices of linked orders (default 300).
    pub poll_interval_s: Option<u64>,
    /// Ledger accounts per currency (`[sync.x3.ledger.EUR]`).
    pub ledger: BTreeMap<String, RawQ2cLedger>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawX3Route {
    #[serde(default)]
    pub billing_countries: Vec<String>,
    #[serde(default)]
    pub currencies: Vec<String>,
    pub folder: String,
    pub sales_site: String,
    pub shipping_site: String,
}

/// Ready X3 clients (one per folder the routing reaches) and the loop's settings.
#[derive(Clone, Debug)]
pub struct X3Settings {
    pub folders: BTreeMap<String, Arc<sync::x3::X3Client>>,
    pub config: sync::x3_loop::X3LoopConfig,
    pub poll_interval_s: u64,
}

pub(super) fn x3_settings(
    c: &RawSyncX3,
    default_entity: &EntityCode,
    gateway_accounts: Option<
        &std::collections::HashMap<ledger::Currency, gateway::service::PostingAccounts>,
    >,
) -> Result<X3Settings, ConfigError> {
    use sync::x3::{
        Route, RouteRule, RouteWhen, Secret, SoapSettings, Transport, X3Auth, X3Client, X3Config,
        X3Routing,
    };
    let k = |f: &str| format!("sync.x3.{f}");
    check_endpoint(&c.base_url, &k("base_url"))?;
    if c.bank.trim().is_empty() {
        return Err(bad(&k("bank"), "must not be empty"));
    }
    let auth = match (&c.user, &c.password, &c.token) {
        (Some(user), Some(p), None) if !user.trim().is_empty() => X3Auth::Basic {
            user: user.clone(),
            password: Secret::new(secret_text(p, &k("password"))?.as_str()),
        },
        (None, None, Some(t)) => X3Auth::Bearer {
            token: Secret::new(secret_text(t, &k("token"))?.as_str()),
        },
        _ => {
            return Err(bad(
                &k("user"),
                "give `user` with `password`, or a bearer `token`",
            ));
        }
    };
    let soap = match c.transport.as_deref().unwrap_or("rest") {
        "rest" => false,
        "soap" => true,
        other => {
            return Err(bad(
                &k("transport"),
                format!("{other:?} is not one of rest, soap"),
            ));
        }
    };
    let rules = c
        .routes
        .iter()
        .map(|r| RouteRule {
            when: RouteWhen {
                billing_countries: r.billing_countries.clone(),
                currencies: r.currencies.clone(),
            },
            route: Route::new(&r.folder, &r.sales_site, &r.shipping_site),
        })
        .collect();
    let routing = X3Routing::new(
        rules,
        Route::new(&c.folder, &c.sales_site, &c.shipping_site),
    )
    .map_err(|e| bad(&k("routes"), e.to_string()))?;
    if let Some(f) = c
        .pool_aliases
        .keys()
        .find(|f| !routing.folders().contains(&f.as_str()))
    {
        return Err(bad(
            &k("pool_aliases"),
            format!("{f:?} is not a folder the routing reaches"),
        ));
    }
    let mut folders = BTreeMap::new();
    for folder in routing.folders() {
        let transport = if soap {
            Transport::Soap(SoapSettings::new(
                c.pool_aliases.get(folder).map_or(folder, String::as_str),
            ))
        } else {
            Transport::Rest
        };
        let mut cfg = X3Config::new(&c.base_url, folder, auth.clone(), transport);
        cfg.timeout_ms = c.timeout_ms.unwrap_or(30_000).max(100);
        if let Some(f) = &c.sf_id_field {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(bad(&k("sf_id_field"), "is not an X3 field name"));
            }
            cfg.sf_id_field = f.clone();
        }
        let client = X3Client::new(cfg).map_err(|e| bad(&k("base_url"), e.to_string()))?;
        folders.insert(folder.to_owned(), Arc::new(client));
    }
    let mut ledger = std::collections::HashMap::new();
    for (code, a) in &c.ledger {
        let lk = |f: &str| k(&format!("ledger.{code}.{f}"));
        let currency = ledger::Currency::parse(code)
            .map_err(|e| bad(&k(&format!("ledger.{code}")), e.to_string()))?;
        let entity = match &a.entity {
            Some(e) => {
                EntityCode::parse(e, &lk("entity")).map_err(|r| bad(&lk("entity"), r.message))?
            }
            None => default_entity.clone(),
        };
        let acct = |v: &str, f: &str| {
            ledger::AccountCode::parse(v, &lk(f)).map_err(|r| bad(&lk(f), r.message))
        };
        let accounts = sync::q2c::LedgerAccounts {
            entity,
            receivable: acct(&a.receivable, "receivable")?,
            revenue: acct(&a.revenue, "revenue")?,
            tax: acct(&a.tax, "tax")?,
            cash: acct(&a.cash, "cash")?,
        };
        // Invoices and gateway payments must meet on one receivable, or AR never nets.
        if let Some(g) = gateway_accounts.and_then(|g| g.get(&currency))
            && (g.entity != accounts.entity || g.receivable != accounts.receivable)
        {
            return Err(bad(
                &lk("receivable"),
                format!(
                    "must be the gateway's receivable for {code} ({}/{}), so payments settle invoices",
                    g.entity, g.receivable
                ),
            ));
        }
        ledger.insert(currency, accounts);
    }
    if ledger.is_empty() {
        return Err(bad(
            &k("ledger"),
            "configure the ledger accounts of at least one currency",
        ));
    }
    let default_currency = c.default_currency.clone().unwrap_or_else(|| "EUR".into());
    ledger::Currency::parse(&default_currency)
        .map_err(|e| bad(&k("default_currency"), e.to_string()))?;
    let non_empty = |v: &Option<String>, d: &str| {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| d.to_owned())
    };
    Ok(X3Settings {
        folders,
        config: sync::x3_loop::X3LoopConfig {
            routing,
            order_type: non_empty(&c.order_type, "SON"),
            payment_type: non_empty(&c.payment_type, "REC"),
            bank: c.bank.clone(),
            customer_category: c.customer_category.clone().filter(|s| !s.is_empty()),
            amount_item: c.amount_item.clone().filter(|s| !s.is_empty()),
            default_currency,
            ledger,
        },
        poll_interval_s: c.poll_interval_s.unwrap_or(300).max(1),
    })
}
