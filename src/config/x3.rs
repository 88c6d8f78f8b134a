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
    #[serde(default)]
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
    let ledger = super::q2c_ledger(&c.ledger, &k, default_entity, gateway_accounts)?;
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{SF, load, refused};

    const X3: &str = "[sync.x3]\nbase_url = \"https://x3.example.com:8124\"\nfolder = \"SEED\"\nsales_site = \"FR011\"\nshipping_site = \"FR012\"\nuser = \"cashloop\"\npassword = { env = \"PATH\" }\nbank = \"BNK01\"\n";
    const ROUTE: &str = "[[sync.x3.routes]]\nbilling_countries = [\"GB\"]\nfolder = \"UKLIVE\"\nsales_site = \"GB011\"\nshipping_site = \"GB012\"\n";
    const LEDGER: &str = "[sync.x3.ledger.EUR]\nentity = \"FR\"\nreceivable = \"1200\"\nrevenue = \"4000\"\ntax = \"2200\"\ncash = \"1010\"\n";

    #[test]
    fn x3_settings_build_a_client_per_folder() {
        let soap = format!(
            "{SF}{X3}transport = \"soap\"\npool_aliases = {{ UKLIVE = \"UKWS\" }}\n{ROUTE}{LEDGER}"
        );
        let c = load(&soap).unwrap();
        let x3 = c.sync.x3.as_ref().unwrap();
        assert_eq!(
            x3.folders.keys().map(String::as_str).collect::<Vec<_>>(),
            ["SEED", "UKLIVE"]
        );
        match &x3.folders["UKLIVE"].config().transport {
            sync::x3::Transport::Soap(s) => assert_eq!(s.pool_alias, "UKWS"),
            other => panic!("{other:?}"),
        }
        match &x3.folders["SEED"].config().transport {
            sync::x3::Transport::Soap(s) => assert_eq!(s.pool_alias, "SEED"),
            other => panic!("{other:?}"),
        }
        assert_eq!(x3.config.order_type, "SON");
        assert_eq!(x3.config.payment_type, "REC");
        assert_eq!(x3.poll_interval_s, 300);
        let route = x3.config.routing.route(sync::x3::AccountFacts {
            billing_country: Some("GB"),
            currency: None,
        });
        assert_eq!(route.sales_site, "GB011");
        // The password is never in the configuration's debug form.
        let path = std::env::var("PATH").unwrap();
        assert!(!format!("{c:?}").contains(&path));
        load(&format!("{SF}{X3}{LEDGER}")).unwrap();
    }

    #[test]
    fn x3_settings_refuse_what_cannot_work() {
        refused(
            &format!("{X3}{LEDGER}"),
            "sync.x3",
            "needs [sync.salesforce]",
        );
        let intacct = "[sync.intacct]\nsender_id = \"s\"\nsender_password = { env = \"PATH\" }\ncompany_id = \"c\"\nuser_id = \"u\"\nuser_password = { env = \"PATH\" }\nrevenue_gl = \"4000\"\nbank_account = \"BOA\"\n[sync.intacct.entities.US]\n[sync.intacct.ledger.USD]\nreceivable = \"1200\"\nrevenue = \"4000\"\ntax = \"2200\"\ncash = \"1010\"\n";
        refused(
            &format!("{SF}{intacct}{X3}{LEDGER}"),
            "sync.x3",
            "one Sage line per installation",
        );
        refused(
            &format!("{SF}{X3}"),
            "sync.x3.ledger",
            "at least one currency",
        );
        refused(
            &format!("{SF}{}transport = \"grpc\"\n{LEDGER}", X3),
            "sync.x3.transport",
            "rest, soap",
        );
        refused(
            &format!("{SF}{}pool_aliases = {{ NOPE = \"X\" }}\n{LEDGER}", X3),
            "sync.x3.pool_aliases",
            "NOPE",
        );
        refused(
            &format!(
                "{SF}{}{LEDGER}",
                X3.replace("https://x3.example.com:8124", "http://x3.example.com")
            ),
            "sync.x3.base_url",
            "https",
        );
        refused(
            &format!(
                "{SF}{}{LEDGER}",
                X3.replace("password = { env = \"PATH\" }\n", "")
            ),
            "sync.x3.user",
            "bearer",
        );
        refused(
            &format!(
                "{SF}{X3}{}{LEDGER}",
                ROUTE.replace("billing_countries = [\"GB\"]\n", "")
            ),
            "sync.x3.routes",
            "no condition",
        );
    }
}
