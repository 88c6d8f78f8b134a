//! Configuration: `cashloop.toml`, then `CASHLOOP_*` environment variables (`__` separates
//! sections: `CASHLOOP_SERVER__LISTEN`), then command-line flags. Everything is parsed and
//! checked before any work starts; an error names the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use ledger::EntityCode;

mod agents;
mod alerts;
mod sage100;
mod x3;

pub use agents::{AgentKey, RawAgent};
pub use alerts::{RawAlertRule, RawAlerts, RawAlertsSalesforce, RawSmtp};
pub use sage100::{AgentLineSettings, RawSyncAgentLine};
pub use x3::{RawSyncX3, RawX3Route, X3Settings};

/// Environment variables with the `CASHLOOP_` prefix that are not configuration keys (tests,
/// benchmarks, the log filter): read as configuration they would be refused as unknown keys.
const NON_CONFIG_ENV: &[&str] = &[
    "config",
    "test_postgres_url",
    "bench_postgres_url",
    "skip_browser_tests",
    "log",
];

/// The configuration as written (all optional fields have defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub database_url: String,
    pub database: RawDatabase,
    pub server: RawServer,
    pub log: RawLog,
    pub ledger: RawLedger,
    pub vault: Option<RawVault>,
    pub gateway: Option<RawGateway>,
    pub webhooks: Vec<RawWebhook>,
    pub sync: RawSync,
    pub reconcile: RawReconcile,
    /// `[alerts]` (see `crate::alerts`); absent: no alerts.
    pub alerts: Option<RawAlerts>,
    pub console: RawConsole,
    /// `[[agents]]`: on-premise agents allowed to poll the command queue (see `agents`).
    pub agents: Vec<RawAgent>,
}

/// `[console]`: the operator console's users and sessions, and where record links point.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConsole {
    /// `[[console.users]]`: name, role (`admin`, `finance`, `viewer`), password_hash (from
    /// `cashloop console hash-password`). No users: the console answers that it is not set up.
    pub users: Vec<RawConsoleUser>,
    /// How long a login lasts without activity limits, seconds (default 8 hours).
    pub session_ttl_s: u64,
    /// The address people reach this server at (payment links are built on it); default
    /// `http(s)://<server.listen>`.
    pub public_url: Option<String>,
    /// Lightning base URL of the org (`https://acme.lightning.force.com`): record links.
    pub salesforce_url: Option<String>,
    /// A Sage record link with `{id}` for the Sage id, when the ERP has one.
    pub sage_record_url: Option<String>,
    /// How long a payment link stays payable unless the request says, seconds (default 30 days).
    pub payment_link_ttl_s: u64,
}

impl Default for RawConsole {
    fn default() -> RawConsole {
        RawConsole {
            users: Vec::new(),
            session_ttl_s: 8 * 3_600,
            public_url: None,
            salesforce_url: None,
            sage_record_url: None,
            payment_link_ttl_s: 30 * 86_400,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsoleUser {
    pub name: String,
    pub role: String,
    pub password_hash: String,
}

/// What a console user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleRole {
    /// Everything: retry and resolve jobs, resolve review items, create payment links.
    Admin,
    /// Read everything, resolve review items.
    Finance,
    /// Read only.
    Viewer,
}

impl ConsoleRole {
    pub fn parse(s: &str) -> Option<ConsoleRole> {
        Some(match s {
            "admin" => ConsoleRole::Admin,
            "finance" => ConsoleRole::Finance,
            "viewer" => ConsoleRole::Viewer,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleRole::Admin => "admin",
            ConsoleRole::Finance => "finance",
            ConsoleRole::Viewer => "viewer",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConsoleUser {
    pub name: String,
    pub role: ConsoleRole,
    pub password_hash: crate::console::password::PasswordHash,
}

#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    pub users: Vec<ConsoleUser>,
    pub session_ttl_s: u64,
    pub public_url: Option<String>,
    pub salesforce_url: Option<String>,
    pub sage_record_url: Option<String>,
    pub payment_link_ttl_s: u64,
}

fn console_settings(c: &RawConsole) -> Result<ConsoleConfig, ConfigError> {
    let mut users: Vec<ConsoleUser> = Vec::new();
    for (i, u) in c.users.iter().enumerate() {
        let key = |f: &str| format!("console.users[{i}].{f}");
        let name = u.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        {
            return Err(bad(
                &key("name"),
                "must be 1 to 64 letters, digits, '.', '_', '-' or '@'",
            ));
        }
        if users.iter().any(|x| x.name == name) {
            return Err(bad(&key("name"), format!("{name:?} is listed twice")));
        }
        let role = ConsoleRole::parse(&u.role)
            .ok_or_else(|| bad(&key("role"), "must be one of admin, finance, viewer"))?;
        let password_hash = crate::console::password::PasswordHash::parse(&u.password_hash)
            .map_err(|e| bad(&key("password_hash"), e))?;
        users.push(ConsoleUser {
            name: name.to_owned(),
            role,
            password_hash,
        });
    }
    if !(60..=7 * 86_400).contains(&c.session_ttl_s) {
        return Err(bad(
            "console.session_ttl_s",
            "must be 60 to 604800 (a week)",
        ));
    }
    if !(60..=366 * 86_400).contains(&c.payment_link_ttl_s) {
        return Err(bad(
            "console.payment_link_ttl_s",
            "must be 60 to 31622400 (a year)",
        ));
    }
    let url = |v: &Option<String>, k: &str| -> Result<Option<String>, ConfigError> {
        match v {
            None => Ok(None),
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                Ok(Some(u.trim_end_matches('/').to_owned()))
            }
            Some(_) => Err(bad(k, "must be an http:// or https:// URL")),
        }
    };
    let sage_record_url = url(&c.sage_record_url, "console.sage_record_url")?;
    if sage_record_url
        .as_deref()
        .is_some_and(|u| !u.contains("{id}"))
    {
        return Err(bad("console.sage_record_url", "must contain {id}"));
    }
    Ok(ConsoleConfig {
        users,
        session_ttl_s: c.session_ttl_s,
        public_url: url(&c.public_url, "console.public_url")?,
        salesforce_url: url(&c.salesforce_url, "console.salesforce_url")?,
        sage_record_url,
        payment_link_ttl_s: c.payment_link_ttl_s,
    })
}

/// `[reconcile]`: matching tolerances, the period lease, and the accounts approved
/// adjustments post to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReconcile {
    /// A short payment within this many minor units (or `tolerance_bp` basis points) closes
    /// its invoice with a proposed write-off.
    pub tolerance_minor: i64,
    pub tolerance_bp: u32,
    /// How long a run's period lease lasts without renewal (it is renewed while running).
    pub lease_ms: i64,
    /// Whether `reconcile run` first takes in the gateway's captured payments (off by default:
    /// the loop already applies payments on linked Opportunities in Sage, so they only belong
    /// in a run whose AR export predates them).
    pub collect_gateway: bool,
    /// Per currency code: `{ entity?, receivable, write_off, fx_gain_loss, unapplied_cash }`.
    pub accounts: std::collections::BTreeMap<String, RawReconcileAccounts>,
}

impl Default for RawReconcile {
    fn default() -> RawReconcile {
        let t = reconcile::MatchConfig::default().tolerance;
        RawReconcile {
            tolerance_minor: t.absolute_minor,
            tolerance_bp: t.percent_bp,
            lease_ms: 60_000,
            collect_gateway: false,
            accounts: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReconcileAccounts {
    pub entity: Option<String>,
    pub receivable: String,
    pub write_off: String,
    pub fx_gain_loss: String,
    pub unapplied_cash: String,
}

/// Reconciliation settings, checked.
#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    pub tolerance: reconcile::Tolerance,
    pub lease_ms: i64,
    pub collect_gateway: bool,
    pub accounts:
        std::collections::BTreeMap<ledger::Currency, reconcile::store::AdjustmentAccounts>,
}

impl ReconcileConfig {
    /// The engine's configuration with these tolerances.
    pub fn match_config(&self) -> reconcile::MatchConfig {
        reconcile::MatchConfig {
            tolerance: self.tolerance,
            ..reconcile::MatchConfig::default()
        }
    }
}

fn reconcile_settings(
    r: &RawReconcile,
    default_entity: &EntityCode,
    gateway: Option<&GatewayConfig>,
) -> Result<ReconcileConfig, ConfigError> {
    if r.tolerance_minor < 0 {
        return Err(bad("reconcile.tolerance_minor", "must be 0 or more"));
    }
    if r.lease_ms < 1_000 {
        return Err(bad("reconcile.lease_ms", "must be at least 1000"));
    }
    let mut accounts = std::collections::BTreeMap::new();
    for (code, a) in &r.accounts {
        let k = |f: &str| format!("reconcile.accounts.{code}.{f}");
        let currency = ledger::Currency::parse(code)
            .map_err(|e| bad(&format!("reconcile.accounts.{code}"), e.to_string()))?;
        let entity = match &a.entity {
            Some(e) => {
                EntityCode::parse(e, &k("entity")).map_err(|r| bad(&k("entity"), r.message))?
            }
            None => default_entity.clone(),
        };
        let acct = |v: &str, f: &str| {
            ledger::AccountCode::parse(v, &k(f)).map_err(|r| bad(&k(f), r.message))
        };
        let set = reconcile::store::AdjustmentAccounts {
            entity,
            receivable: acct(&a.receivable, "receivable")?,
            write_off: acct(&a.write_off, "write_off")?,
            fx_gain_loss: acct(&a.fx_gain_loss, "fx_gain_loss")?,
            unapplied_cash: acct(&a.unapplied_cash, "unapplied_cash")?,
        };
        // Adjustments close AR items, so they must hit the receivable payments credit.
        if let Some(g) = gateway.and_then(|g| g.accounts.get(&currency))
            && (g.entity != set.entity || g.receivable != set.receivable)
        {
            return Err(bad(
                &k("receivable"),
                format!(
                    "must be the gateway's receivable for {code} ({}/{})",
                    g.entity, g.receivable
                ),
            ));
        }
        accounts.insert(currency, set);
    }
    Ok(ReconcileConfig {
        tolerance: reconcile::Tolerance {
            absolute_minor: r.tolerance_minor,
            percent_bp: r.tolerance_bp,
        },
        lease_ms: r.lease_ms,
        collect_gateway: r.collect_gateway,
        accounts,
    })
}

/// `[sync]`: the job worker, and how Salesforce reaches cashloop.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSync {
    /// Jobs run at once by each `cashloop serve`.
    pub worker_concurrency: usize,
    /// A claimed job not finished within this is taken by another worker.
    pub lease_ms: u64,
    /// How often an idle worker looks for due jobs.
    pub idle_poll_ms: u64,
    /// Finished jobs (succeeded, resolved) are deleted after this many days; 0 keeps them.
    /// The error queue and the attempt history are kept.
    pub retention_days: u32,
    pub salesforce: Option<RawSyncSalesforce>,
    /// Sage Intacct and the quote-to-cash loop (needs `[sync.salesforce]` with `auth`).
    pub intacct: Option<RawSyncIntacct>,
    /// Sage X3 and the quote-to-cash loop on it (needs `[sync.salesforce]`; not with
    /// `[sync.intacct]`: one Sage line per installation).
    pub x3: Option<RawSyncX3>,
    /// Sage 100 through an on-premise agent (`[[agents]]`); one Sage line per installation.
    pub sage100: Option<RawSyncAgentLine>,
    /// Sage BusinessWorks through an on-premise agent; one Sage line per installation.
    pub businessworks: Option<RawSyncAgentLine>,
    /// Field mappings per object pair (see `sync::mapping`).
    pub mappings: Vec<sync::mapping::ObjectMapping>,
}

impl Default for RawSync {
    fn default() -> RawSync {
        RawSync {
            worker_concurrency: 4,
            lease_ms: 60_000,
            idle_poll_ms: 1_000,
            retention_days: 30,
            salesforce: None,
            intacct: None,
            x3: None,
            sage100: None,
            businessworks: None,
            mappings: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyncSalesforce {
    /// 64 hex characters: the HMAC-SHA256 key of `POST /v1/events/salesforce` (the Apex
    /// callout signs with it). Without it that route answers 404.
    pub event_secret: Option<RawSecret>,
    /// Accepted clock difference for a signed event (default 300).
    pub event_tolerance_s: Option<i64>,
    /// The secret `?token=` of `POST /v1/salesforce/outbound` (Salesforce cannot sign outbound
    /// messages). Without it that route answers 404.
    pub outbound_token: Option<RawSecret>,
    /// The 15- or 18-character org id outbound messages must come from (required with
    /// `outbound_token`).
    pub organization_id: Option<String>,
    /// The integration user's id: changes it made are our own writes echoed back, not synced.
    pub integration_user_id: Option<String>,
    /// `https://login.salesforce.com`, `https://test.salesforce.com` or the My Domain URL.
    /// With `auth`, cashloop pulls and pushes through the REST API.
    pub login_url: Option<String>,
    /// Overrides the instance URL the token answer names.
    pub instance_url: Option<String>,
    /// REST API version (default "62.0").
    pub api_version: Option<String>,
    pub auth: Option<RawSalesforceAuth>,
    /// Each object to pull, with the fields to read.
    #[serde(default)]
    pub objects: Vec<RawPullObject>,
    /// How often each object is pulled (default 300).
    pub poll_interval_s: Option<u64>,
    /// How far before the cursor each pull starts reading again (default 60).
    pub look_back_s: Option<i64>,
}

/// `[sync.intacct]`: the Web Services sender, the user, the entities and the loop's accounts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyncIntacct {
    /// Default `https://api.intacct.com/ia/xml/xmlgw.phtml`.
    pub endpoint: Option<String>,
    pub sender_id: String,
    pub sender_password: RawSecret,
    pub company_id: String,
    pub user_id: String,
    pub user_password: RawSecret,
    /// Per request (default 30000).
    pub timeout_ms: Option<u64>,
    /// Requests in flight per company (default 2, Intacct's usual limit).
    pub max_concurrent: Option<usize>,
    /// Entity id (`locationid`) → its settings; at least one.
    pub entities: std::collections::BTreeMap<String, RawIntacctEntity>,
    /// Which Account field picks the entity (default: every account in the first entity).
    pub entity_rule: Option<RawEntityRule>,
    /// What a Closed Won deal becomes: `ar_invoice` (default; `create_invoice` with GL lines)
    /// or `order_entry` (`create_sotransaction` with item lines).
    pub document: Option<String>,
    /// The Order Entry transaction definition (default "Sales Invoice"; it must post to AR).
    pub order_entry_definition: Option<String>,
    /// Intacct GL account of invoice revenue lines.
    pub revenue_gl: String,
    /// Intacct GL account of tax lines (required when an entity has a tax rate).
    pub tax_gl: Option<String>,
    /// Intacct bank account (FINANCIALENTITY) gateway receipts are deposited to.
    pub bank_account: String,
    /// Invoice numbers are this prefix and the Opportunity id (default "SF-").
    pub invoice_prefix: Option<String>,
    /// Default "Intacct Daily Rate".
    pub exchange_rate_type: Option<String>,
    /// Invoice due date after the close date (default 30).
    pub due_days: Option<i64>,
    /// Currency of an Opportunity without one (default "USD").
    pub default_currency: Option<String>,
    /// How often Intacct is read for receipts, credit memos and invoice changes (default 300).
    pub poll_interval_s: Option<u64>,
    /// Ledger accounts per currency (`[sync.intacct.ledger.USD]`).
    pub ledger: std::collections::BTreeMap<String, RawQ2cLedger>,
    /// The optional vendors and AP bills module (`[sync.intacct.vendors]`); off when absent.
    pub vendors: Option<RawIntacctVendors>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntacctVendors {
    /// Default true when the table is present.
    pub enabled: Option<bool>,
    /// Entity new vendors from Salesforce are created in (default: the first entity).
    pub vendor_entity: Option<String>,
    /// Account Type that marks a vendor (default "Vendor").
    pub account_type: Option<String>,
    /// How often vendors and bills are read (default: sync.intacct.poll_interval_s).
    pub poll_interval_s: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntacctEntity {
    /// Sales tax added to every invoice, in percent as a decimal string (default "0").
    pub tax_rate_percent: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntityRule {
    /// An Account field, e.g. `BillingCountry`.
    pub field: String,
    /// Field value → entity id.
    #[serde(default)]
    pub map: std::collections::BTreeMap<String, String>,
    pub default: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQ2cLedger {
    pub entity: Option<String>,
    pub receivable: String,
    pub revenue: String,
    pub tax: String,
    /// Receipts recorded in Intacct (undeposited funds).
    pub cash: String,
}

/// How cashloop logs in to Salesforce.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawSalesforceAuth {
    /// OAuth 2.0 JWT bearer: the connected app's consumer key, the integration username, and
    /// the PKCS#8 PEM private key whose certificate the connected app holds.
    Jwt {
        consumer_key: String,
        username: String,
        private_key: RawSecret,
    },
    /// OAuth 2.0 client credentials (needs the My Domain login URL).
    ClientCredentials {
        client_id: String,
        client_secret: RawSecret,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPullObject {
    pub name: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

/// An outbound webhook subscriber: payment events are POSTed to `url`, signed with `secret`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub name: String,
    pub url: String,
    pub secret: RawSecret,
}

/// Payments: which processor, and the ledger accounts each currency posts to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// `sandbox` (deterministic test processor) or `authorize_net`.
    pub processor: String,
    /// Per currency code: `{ entity = "MAIN", clearing = "1100", receivable = "1200" }`.
    pub accounts: std::collections::BTreeMap<String, RawPostingAccounts>,
    /// How often `unknown` payments are looked up and ACH debits polled (default 5000).
    pub resolver_interval_ms: Option<u64>,
    /// How long before an ACH debit's status is asked again (default 900).
    pub ach_poll_interval_s: Option<u64>,
    pub sandbox: Option<RawSandbox>,
    pub authorize_net: Option<RawAuthorizeNet>,
}

/// The sandbox processor's clock for ACH.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    /// A debit settles this long after submission; a scheduled return arrives after twice
    /// this (default 60000).
    pub ach_settle_after_ms: Option<u64>,
}

/// The Authorize.Net connector.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorizeNet {
    /// `https://api.authorize.net/xml/v1/request.api` (production) or
    /// `https://apitest.authorize.net/xml/v1/request.api` (sandbox); `http://` only to loopback.
    pub endpoint: String,
    pub api_login_id: String,
    pub transaction_key: RawSecret,
    /// The Signature Key (128 hex characters) that signs webhooks; without it
    /// `POST /v1/processors/authorize_net/webhooks` answers 404.
    pub signature_key: Option<RawSecret>,
    /// Per call (default 30000).
    pub timeout_ms: Option<u64>,
    /// Days of settled batches a lookup searches (default 2).
    pub lookup_days: Option<u32>,
    /// Oldest notification accepted, by its eventDate (default 259200 = 3 days).
    pub webhook_max_age_s: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostingAccounts {
    pub entity: Option<String>,
    pub clearing: String,
    pub receivable: String,
}

/// The vault's keys: each from a file (64 hex characters) or an environment variable.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    pub kek: RawKey,
    #[serde(default)]
    pub previous_keks: Vec<RawKey>,
    pub fingerprint_key: RawKey,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub version: u32,
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// `full` (fsync every commit; the default, money wants it) or `normal`.
    pub sqlite_synchronous: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub shutdown_grace_ms: u64,
    pub request_timeout_ms: u64,
    pub request_body_limit_bytes: usize,
    /// Set when a TLS-terminating proxy sits in front: only then may plain HTTP listen on a
    /// non-loopback address (card data must not cross a network in the clear).
    pub behind_tls_proxy: bool,
    /// TLS terminated by cashloop itself; then any listen address is allowed.
    pub tls: Option<RawTls>,
    pub api_keys: Vec<RawApiKey>,
    /// The secret API keys are hashed with (HMAC-SHA256): a file or an environment variable
    /// holding 64 hex characters. Required when `api_keys` is not empty.
    pub api_key_secret: Option<RawSecret>,
}

/// `[server.tls]`: PEM files, the certificate chain (leaf first) and its private key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub name: String,
    pub role: String,
    /// Hex HMAC-SHA256 of the key under `server.api_key_secret`; the key itself is never stored.
    pub key_hmac: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter: `info`, `cashloop=debug,sqlx=warn`…
    pub level: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLedger {
    pub default_entity: String,
    /// Writer tasks; 0 picks the backend's default (1 on SQLite, 2 on PostgreSQL).
    pub writers: usize,
    pub max_batch_entries: usize,
    pub seal_interval_ms: u64,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            database_url: db::DEFAULT_DATABASE_URL.to_owned(),
            database: RawDatabase::default(),
            server: RawServer::default(),
            log: RawLog::default(),
            ledger: RawLedger::default(),
            vault: None,
            gateway: None,
            webhooks: Vec::new(),
            sync: RawSync::default(),
            reconcile: RawReconcile::default(),
            alerts: None,
            console: RawConsole::default(),
            agents: Vec::new(),
        }
    }
}

impl Default for RawDatabase {
    fn default() -> Self {
        let d = db::DbOptions::default();
        RawDatabase {
            max_connections: d.max_connections,
            acquire_timeout_ms: d.acquire_timeout_ms,
            sqlite_synchronous: "full".to_owned(),
        }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".to_owned(),
            shutdown_grace_ms: 10_000,
            request_timeout_ms: 30_000,
            request_body_limit_bytes: 1024 * 1024,
            behind_tls_proxy: false,
            tls: None,
            api_keys: Vec::new(),
            api_key_secret: None,
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".to_owned(),
            level: "info".to_owned(),
        }
    }
}

impl Default for RawLedger {
    fn default() -> Self {
        RawLedger {
            default_entity: "MAIN".to_owned(),
            writers: 0,
            max_batch_entries: 1000,
            seal_interval_ms: 1000,
        }
    }
}

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Roles an API key can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Finance,
    Payments,
    Auditor,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "finance" => Role::Finance,
            "payments" => Role::Payments,
            "auditor" => Role::Auditor,
            _ => return None,
        })
    }
}

/// A configured API key.
#[derive(Clone, Debug)]
pub struct ApiKey {
    pub name: String,
    pub role: Role,
    pub key_hmac: [u8; 32],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub db: db::DbOptions,
    pub listen: SocketAddr,
    pub shutdown_grace_ms: u64,
    pub request_timeout_ms: u64,
    pub request_body_limit_bytes: usize,
    /// Plain HTTP may listen beyond loopback only behind a TLS-terminating proxy.
    pub behind_tls_proxy: bool,
    /// TLS terminated by `cashloop serve` (certificate and key loaded and checked); `None`
    /// serves plain HTTP.
    pub tls: Option<crate::tls::TlsSettings>,
    pub api_keys: Vec<ApiKey>,
    /// The key API keys are hashed with (an HMAC-SHA256 key, redacted in Debug).
    pub api_key_secret: Option<std::sync::Arc<gateway::crypto::FingerprintKey>>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub default_entity: EntityCode,
    pub ledger_writers: usize,
    pub ledger_max_batch_entries: usize,
    pub seal_interval_ms: u64,
    /// Where the vault's keys come from; `None` when the vault is not set up.
    pub vault: Option<VaultKeySources>,
    /// Payments; `None` when not set up (needs the vault too).
    pub gateway: Option<GatewayConfig>,
    pub webhooks: Vec<gateway::webhooks::Subscriber>,
    pub sync: SyncConfig,
    pub reconcile: ReconcileConfig,
    /// Alert rules and where notices go; `None` without `[alerts]`.
    pub alerts: Option<crate::alerts::AlertsConfig>,
    pub console: ConsoleConfig,
    /// The on-premise agents (`[[agents]]`).
    pub agents: Vec<AgentKey>,
}

/// The sync worker and Salesforce's ways in.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    pub worker_concurrency: usize,
    /// 0: finished jobs are kept.
    pub retention_days: u32,
    pub lease_ms: u64,
    pub idle_poll_ms: u64,
    /// Verifies `POST /v1/events/salesforce` (HMAC-SHA256 over `t.body`).
    pub event_secret: Option<std::sync::Arc<gateway::crypto::FingerprintKey>>,
    pub event_tolerance_s: i64,
    pub outbound_token: Option<std::sync::Arc<OutboundToken>>,
    pub organization_id: Option<String>,
    pub integration_user_id: Option<String>,
    pub mappings: Vec<sync::mapping::ObjectMapping>,
    /// The Salesforce connection, when configured.
    pub salesforce: Option<SalesforceSettings>,
    /// Sage Intacct and the quote-to-cash loop, when configured.
    pub intacct: Option<IntacctSettings>,
    /// Sage X3 and the loop on it, when configured (never with `intacct`).
    pub x3: Option<X3Settings>,
    /// Sage 100 and the loop on it through an agent, when configured.
    pub sage100: Option<AgentLineSettings>,
    /// Sage BusinessWorks and the loop on it through an agent, when configured.
    pub businessworks: Option<AgentLineSettings>,
}

impl SyncConfig {
    /// The agent-backed Sage line, when one is configured (at most one is).
    pub fn agent_line(&self) -> Option<&AgentLineSettings> {
        self.sage100.as_ref().or(self.businessworks.as_ref())
    }
}

/// Ready Intacct clients (one per entity, sharing the company's request limit) and the
/// loop's settings.
#[derive(Clone, Debug)]
pub struct IntacctSettings {
    pub entities: std::collections::BTreeMap<String, sync::q2c::EntitySettings>,
    pub q2c: sync::q2c::Q2cConfig,
    pub poll_interval_s: u64,
    /// The vendors and AP bills module, when switched on.
    pub vendors: Option<sync::vendors::VendorsConfig>,
    pub vendors_poll_interval_s: u64,
}

/// A ready Salesforce client and what to pull with it.
#[derive(Clone, Debug)]
pub struct SalesforceSettings {
    pub client: sync::salesforce::SalesforceClient,
    pub objects: Vec<sync::flows::PullObject>,
    pub poll_interval_s: u64,
    pub look_back_s: i64,
}

/// The outbound-message token, compared in constant time and never printed.
pub struct OutboundToken(zeroize::Zeroizing<String>);

impl std::fmt::Debug for OutboundToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboundToken([redacted])")
    }
}

impl OutboundToken {
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::Digest;
        // Compare digests: constant time whatever the lengths.
        let a = sha2::Sha256::digest(self.0.as_bytes());
        let b = sha2::Sha256::digest(presented.as_bytes());
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub processor: ProcessorConfig,
    pub accounts: std::collections::HashMap<ledger::Currency, gateway::service::PostingAccounts>,
    pub resolver_interval_ms: u64,
    pub ach_poll_interval_s: u64,
}

/// The processor payments go to.
#[derive(Clone, Debug)]
pub enum ProcessorConfig {
    Sandbox {
        ach_settle_after_ms: u64,
    },
    AuthorizeNet {
        client: std::sync::Arc<gateway::authnet::AuthorizeNetConfig>,
        signature_key: Option<std::sync::Arc<gateway::authnet::webhook::SignatureKey>>,
        webhook_max_age_s: i64,
    },
}

/// An HMAC-SHA256 key (64 hex characters) from a file or an environment variable.
fn hmac_key(src: &RawSecret, key: &str) -> Result<gateway::crypto::FingerprintKey, ConfigError> {
    match (&src.file, &src.env) {
        (Some(f), None) => gateway::crypto::FingerprintKey::from_file(1, f),
        (None, Some(e)) => gateway::crypto::FingerprintKey::from_env(1, e),
        _ => return Err(bad(key, "give exactly one of `file` or `env`")),
    }
    .map_err(|e| bad(key, e.to_string()))
}

/// The `ledger` table of a Sage line (`[sync.intacct.ledger.USD]`, `[sync.x3.ledger.EUR]`):
/// accounts per currency, each currency's receivable the gateway's, at least one currency.
pub(crate) fn q2c_ledger(
    raw: &std::collections::BTreeMap<String, RawQ2cLedger>,
    k: &dyn Fn(&str) -> String,
    default_entity: &EntityCode,
    gateway_accounts: Option<
        &std::collections::HashMap<ledger::Currency, gateway::service::PostingAccounts>,
    >,
) -> Result<std::collections::HashMap<ledger::Currency, sync::q2c::LedgerAccounts>, ConfigError> {
    let mut ledger = std::collections::HashMap::new();
    for (code, a) in raw {
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
    Ok(ledger)
}

fn intacct_settings(
    c: &RawSyncIntacct,
    default_entity: &EntityCode,
    gateway_accounts: Option<
        &std::collections::HashMap<ledger::Currency, gateway::service::PostingAccounts>,
    >,
    mappings: &[sync::mapping::ObjectMapping],
) -> Result<IntacctSettings, ConfigError> {
    use sync::intacct::{IntacctClient, IntacctConfig, Secret, UserAuth};
    let k = |f: &str| format!("sync.intacct.{f}");
    let endpoint = c
        .endpoint
        .clone()
        .unwrap_or_else(|| sync::intacct::DEFAULT_ENDPOINT.to_owned());
    check_endpoint(&endpoint, &k("endpoint"))?;
    for (f, v) in [
        ("sender_id", &c.sender_id),
        ("company_id", &c.company_id),
        ("user_id", &c.user_id),
        ("revenue_gl", &c.revenue_gl),
        ("bank_account", &c.bank_account),
    ] {
        if v.trim().is_empty() {
            return Err(bad(&k(f), "must not be empty"));
        }
    }
    let sender_password = secret_text(&c.sender_password, &k("sender_password"))?;
    let user_password = secret_text(&c.user_password, &k("user_password"))?;
    if c.entities.is_empty() {
        return Err(bad(
            &k("entities"),
            "name at least one entity ([sync.intacct.entities.US])",
        ));
    }
    let max_concurrent = c.max_concurrent.unwrap_or(2);
    if max_concurrent == 0 || max_concurrent > 16 {
        return Err(bad(&k("max_concurrent"), "must be 1 to 16"));
    }
    let mut base = IntacctConfig::new(
        c.sender_id.clone(),
        Secret::new(sender_password.as_str()),
        c.company_id.clone(),
        UserAuth::Login {
            user_id: c.user_id.clone(),
            password: Secret::new(user_password.as_str()),
        },
    );
    base.endpoint_url = endpoint;
    base.timeout_ms = c.timeout_ms.unwrap_or(30_000).max(100);
    base.max_concurrent = max_concurrent;
    let company = IntacctClient::new(base).map_err(|e| bad(&k("endpoint"), e.to_string()))?;
    let mut entities = std::collections::BTreeMap::new();
    for (id, e) in &c.entities {
        let ek = |f: &str| k(&format!("entities.{id}.{f}"));
        if id.is_empty() || id.len() > 40 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(&k(&format!("entities.{id}")), "is not an entity id"));
        }
        let tax: rust_decimal::Decimal = match &e.tax_rate_percent {
            None => rust_decimal::Decimal::ZERO,
            Some(t) => t
                .parse()
                .ok()
                .filter(|t: &rust_decimal::Decimal| {
                    *t >= rust_decimal::Decimal::ZERO && *t < rust_decimal::Decimal::ONE_HUNDRED
                })
                .ok_or_else(|| bad(&ek("tax_rate_percent"), "must be a decimal from 0 to 100"))?,
        };
        if !tax.is_zero() && c.tax_gl.is_none() {
            return Err(bad(
                &k("tax_gl"),
                format!("is required: entity {id} charges tax"),
            ));
        }
        entities.insert(
            id.clone(),
            sync::q2c::EntitySettings {
                client: std::sync::Arc::new(company.for_entity(Some(id))),
                tax_rate_percent: tax,
            },
        );
    }
    let first = c.entities.keys().next().cloned().unwrap_or_default();
    let poll_interval_s = c.poll_interval_s.unwrap_or(300).max(1);
    let vendors = match &c.vendors {
        Some(v) if v.enabled.unwrap_or(true) => {
            let vendor_entity = v.vendor_entity.clone().unwrap_or_else(|| first.clone());
            if !c.entities.contains_key(&vendor_entity) {
                return Err(bad(
                    &k("vendors.vendor_entity"),
                    format!("{vendor_entity:?}: not an entity under [sync.intacct.entities]"),
                ));
            }
            Some(sync::vendors::VendorsConfig {
                vendor_entity,
                account_type: v.account_type.clone().unwrap_or_else(|| "Vendor".into()),
            })
        }
        _ => None,
    };
    let vendors_poll_interval_s = c
        .vendors
        .as_ref()
        .and_then(|v| v.poll_interval_s)
        .unwrap_or(poll_interval_s)
        .max(1);
    let entity_rule = match &c.entity_rule {
        None => sync::q2c::EntityRule {
            field: "BillingCountry".into(),
            map: Default::default(),
            default: first,
        },
        Some(r) => {
            for (v, e) in r.map.iter().chain([(&"default".to_owned(), &r.default)]) {
                if !c.entities.contains_key(e) {
                    return Err(bad(
                        &k("entity_rule"),
                        format!("{v} → {e:?}: not an entity under [sync.intacct.entities]"),
                    ));
                }
            }
            sync::q2c::EntityRule {
                field: r.field.clone(),
                map: r.map.clone(),
                default: r.default.clone(),
            }
        }
    };
    let ledger = q2c_ledger(&c.ledger, &k, default_entity, gateway_accounts)?;
    let default_currency = c.default_currency.clone().unwrap_or_else(|| "USD".into());
    ledger::Currency::parse(&default_currency)
        .map_err(|e| bad(&k("default_currency"), e.to_string()))?;
    let document = match c.document.as_deref().unwrap_or("ar_invoice") {
        "ar_invoice" => sync::q2c::Document::ArInvoice,
        "order_entry" => sync::q2c::Document::OrderEntry {
            definition: c
                .order_entry_definition
                .clone()
                .filter(|d| !d.trim().is_empty())
                .unwrap_or_else(|| "Sales Invoice".into()),
        },
        other => {
            return Err(bad(
                &k("document"),
                format!("{other:?} is not one of ar_invoice, order_entry"),
            ));
        }
    };
    let due_days = c.due_days.unwrap_or(30);
    if !(0..=3650).contains(&due_days) {
        return Err(bad(&k("due_days"), "must be 0 to 3650"));
    }
    Ok(IntacctSettings {
        entities,
        q2c: sync::q2c::Q2cConfig {
            document,
            entity_rule,
            revenue_gl: c.revenue_gl.clone(),
            tax_gl: c.tax_gl.clone().unwrap_or_default(),
            bank_account: c.bank_account.clone(),
            invoice_prefix: c.invoice_prefix.clone().unwrap_or_else(|| "SF-".into()),
            exchange_rate_type: c
                .exchange_rate_type
                .clone()
                .unwrap_or_else(|| "Intacct Daily Rate".into()),
            due_days,
            default_currency,
            ledger,
            mappings: mappings.to_vec(),
        },
        poll_interval_s,
        vendors,
        vendors_poll_interval_s,
    })
}

/// A secret's text from a file (trimmed) or an environment variable.
fn secret_text(src: &RawSecret, key: &str) -> Result<zeroize::Zeroizing<String>, ConfigError> {
    let text = match (&src.file, &src.env) {
        (Some(f), None) => std::fs::read_to_string(f)
            .map_err(|e| bad(key, format!("cannot read {}: {e}", f.display())))?,
        (None, Some(e)) => std::env::var(e)
            .map_err(|_| bad(key, format!("environment variable {e} is not set")))?,
        _ => return Err(bad(key, "give exactly one of `file` or `env`")),
    };
    let text = zeroize::Zeroizing::new(text);
    let trimmed = zeroize::Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(bad(key, "is empty"));
    }
    Ok(trimmed)
}

/// `https://…`, or `http://` to a loopback host (a local simulator).
fn check_endpoint(url: &str, key: &str) -> Result<(), ConfigError> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(bad(key, "must be an https:// URL"));
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(bad(
            key,
            "must be https:// (plain http only to a loopback address)",
        ))
    }
}

/// Where one key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
}

/// A key's version and source (the key itself is read only when the vault opens).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef {
    pub version: u32,
    pub source: KeySource,
    /// The configuration key, for error messages.
    pub config_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultKeySources {
    pub kek: KeyRef,
    pub previous_keks: Vec<KeyRef>,
    pub fingerprint_key: KeyRef,
}

fn key_ref(raw: &RawKey, config_key: &str) -> Result<KeyRef, ConfigError> {
    let source = match (&raw.file, &raw.env) {
        (Some(f), None) => KeySource::File(f.clone()),
        (None, Some(e)) => KeySource::Env(e.clone()),
        _ => return Err(bad(config_key, "give exactly one of `file` or `env`")),
    };
    Ok(KeyRef {
        version: raw.version,
        source,
        config_key: config_key.to_owned(),
    })
}

impl Config {
    /// Loads `path` (if it exists; a path given explicitly must exist), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let default_path = PathBuf::from("cashloop.toml");
        let (file, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (default_path, false),
        };
        if required && !file.exists() {
            return Err(bad(
                "--config",
                format!("file {} does not exist", file.display()),
            ));
        }
        let mut fig = Figment::from(Serialized::defaults(RawConfig::default()));
        if file.exists() {
            fig = fig.merge(Toml::file(&file));
        }
        if let Ok(url) = std::env::var("DATABASE_URL") {
            fig = fig.merge(Serialized::default("database_url", url));
        }
        fig = fig.merge(
            Env::prefixed("CASHLOOP_")
                .filter(|k| {
                    !NON_CONFIG_ENV
                        .iter()
                        .any(|n| k.as_str().eq_ignore_ascii_case(n))
                })
                .split("__"),
        );
        Self::from_figment(fig)
    }

    /// Parses and validates a figment (tests build one directly).
    pub fn from_figment(fig: Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = fig.extract().map_err(|e| {
            // figment's path already ends with the unknown field's name.
            let key = match (&e.kind, e.path.is_empty()) {
                (figment::error::Kind::UnknownField(f, _), true) => f.clone(),
                (_, true) => "(root)".to_owned(),
                (_, false) => e.path.join("."),
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            bad(&key, format!("{}{source}", e.kind))
        })?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let url = raw.database_url.trim().to_owned();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(bad(
                "database_url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if raw.database.max_connections < 2 {
            return Err(bad("database.max_connections", "must be at least 2"));
        }
        let sqlite_synchronous_full = match raw.database.sqlite_synchronous.as_str() {
            "full" => true,
            "normal" => false,
            other => {
                return Err(bad(
                    "database.sqlite_synchronous",
                    format!("must be \"full\" or \"normal\", got {other:?}"),
                ));
            }
        };
        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            bad(
                "server.listen",
                format!(
                    "{:?} is not an address:port such as 127.0.0.1:8080",
                    raw.server.listen
                ),
            )
        })?;
        let tls = match &raw.server.tls {
            None => None,
            Some(t) => {
                let cert_file = t
                    .cert_file
                    .as_deref()
                    .ok_or_else(|| bad("server.tls.cert_file", "is required in [server.tls]"))?;
                let key_file = t
                    .key_file
                    .as_deref()
                    .ok_or_else(|| bad("server.tls.key_file", "is required in [server.tls]"))?;
                let settings = crate::tls::TlsSettings::load(cert_file, key_file).map_err(|e| {
                    let key = match e.file {
                        crate::tls::PemFile::Cert => "server.tls.cert_file",
                        crate::tls::PemFile::Key => "server.tls.key_file",
                    };
                    bad(key, e.message)
                })?;
                Some(settings)
            }
        };
        if !listen.ip().is_loopback() && tls.is_none() && !raw.server.behind_tls_proxy {
            return Err(bad(
                "server.listen",
                format!(
                    "{listen} is not a loopback address: without [server.tls] cashloop serves plain HTTP, so configure \
                     [server.tls], or set server.behind_tls_proxy = true when a TLS-terminating proxy sits in front"
                ),
            ));
        }
        if raw.server.request_body_limit_bytes < 1024 {
            return Err(bad(
                "server.request_body_limit_bytes",
                "must be at least 1024",
            ));
        }
        if raw.server.request_timeout_ms == 0 {
            return Err(bad("server.request_timeout_ms", "must be greater than 0"));
        }
        let mut api_keys = Vec::new();
        for (i, k) in raw.server.api_keys.iter().enumerate() {
            let key = |f: &str| format!("server.api_keys[{i}].{f}");
            let role = Role::parse(&k.role).ok_or_else(|| {
                bad(
                    &key("role"),
                    "must be one of admin, finance, payments, auditor",
                )
            })?;
            let hash = hex::decode(&k.key_hmac)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
                .ok_or_else(|| {
                    bad(
                        &key("key_hmac"),
                        "must be 64 hex digits (the SHA-256 of the key)",
                    )
                })?;
            if k.name.trim().is_empty() {
                return Err(bad(&key("name"), "must not be empty"));
            }
            api_keys.push(ApiKey {
                name: k.name.clone(),
                role,
                key_hmac: hash,
            });
        }
        let api_key_secret = match &raw.server.api_key_secret {
            None if !api_keys.is_empty() => {
                return Err(bad(
                    "server.api_key_secret",
                    "is required to check API keys (they are stored as keyed hashes); see `cashloop api-key secret`",
                ));
            }
            None => None,
            Some(sec) => Some(std::sync::Arc::new(hmac_key(sec, "server.api_key_secret")?)),
        };
        let log_format = match raw.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(bad(
                    "log.format",
                    format!("must be \"text\" or \"json\", got {other:?}"),
                ));
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_err() {
            return Err(bad(
                "log.level",
                format!("{:?} is not a log filter (try \"info\")", raw.log.level),
            ));
        }
        let default_entity = EntityCode::parse(&raw.ledger.default_entity, "ledger.default_entity")
            .map_err(|e| bad("ledger.default_entity", e.message))?;
        if !(1..=10_000).contains(&raw.ledger.max_batch_entries) {
            return Err(bad(
                "ledger.max_batch_entries",
                "must be between 1 and 10000",
            ));
        }
        if raw.ledger.writers > 16 {
            return Err(bad(
                "ledger.writers",
                "must be between 0 (automatic) and 16",
            ));
        }
        if raw.ledger.seal_interval_ms == 0 {
            return Err(bad("ledger.seal_interval_ms", "must be greater than 0"));
        }
        let vault = match &raw.vault {
            None => None,
            Some(v) => {
                let kek = key_ref(&v.kek, "vault.kek")?;
                let mut previous = Vec::new();
                for (i, k) in v.previous_keks.iter().enumerate() {
                    let r = key_ref(k, &format!("vault.previous_keks[{i}]"))?;
                    if r.version == kek.version
                        || previous.iter().any(|p: &KeyRef| p.version == r.version)
                    {
                        return Err(bad(
                            &r.config_key,
                            format!("key version {} is used twice", r.version),
                        ));
                    }
                    previous.push(r);
                }
                Some(VaultKeySources {
                    kek,
                    previous_keks: previous,
                    fingerprint_key: key_ref(&v.fingerprint_key, "vault.fingerprint_key")?,
                })
            }
        };
        let gateway = match &raw.gateway {
            None => None,
            Some(g) => {
                let processor = match g.processor.as_str() {
                    "sandbox" => ProcessorConfig::Sandbox {
                        ach_settle_after_ms: g
                            .sandbox
                            .as_ref()
                            .and_then(|s| s.ach_settle_after_ms)
                            .unwrap_or(60_000),
                    },
                    "authorize_net" => {
                        let a = g.authorize_net.as_ref().ok_or_else(|| {
                            bad(
                                "gateway.authorize_net",
                                "processor = \"authorize_net\" needs a [gateway.authorize_net] section",
                            )
                        })?;
                        check_endpoint(&a.endpoint, "gateway.authorize_net.endpoint")?;
                        if a.api_login_id.trim().is_empty() || a.api_login_id.len() > 25 {
                            return Err(bad(
                                "gateway.authorize_net.api_login_id",
                                "must be 1 to 25 characters",
                            ));
                        }
                        let transaction_key = secret_text(
                            &a.transaction_key,
                            "gateway.authorize_net.transaction_key",
                        )?;
                        let signature_key = match &a.signature_key {
                            None => None,
                            Some(src) => {
                                let k = "gateway.authorize_net.signature_key";
                                let text = secret_text(src, k)?;
                                Some(std::sync::Arc::new(
                                    gateway::authnet::webhook::SignatureKey::from_hex(&text)
                                        .map_err(|e| bad(k, e))?,
                                ))
                            }
                        };
                        ProcessorConfig::AuthorizeNet {
                            client: std::sync::Arc::new(gateway::authnet::AuthorizeNetConfig {
                                endpoint: a.endpoint.clone(),
                                api_login_id: a.api_login_id.clone(),
                                transaction_key,
                                timeout_ms: a.timeout_ms.unwrap_or(30_000).max(1),
                                lookup_days: a.lookup_days.unwrap_or(2),
                            }),
                            signature_key,
                            webhook_max_age_s: a.webhook_max_age_s.unwrap_or(259_200),
                        }
                    }
                    other => {
                        return Err(bad(
                            "gateway.processor",
                            format!("{other:?} is not a known processor (sandbox, authorize_net)"),
                        ));
                    }
                };
                if vault.is_none() {
                    return Err(bad(
                        "gateway",
                        "payments need the vault: add a [vault] section",
                    ));
                }
                let mut accounts = std::collections::HashMap::new();
                for (code, a) in &g.accounts {
                    let key = |f: &str| format!("gateway.accounts.{code}.{f}");
                    let currency = ledger::Currency::parse(code)
                        .map_err(|e| bad(&format!("gateway.accounts.{code}"), e.to_string()))?;
                    let entity = match &a.entity {
                        Some(e) => EntityCode::parse(e, &key("entity"))
                            .map_err(|r| bad(&key("entity"), r.message))?,
                        None => default_entity.clone(),
                    };
                    accounts.insert(
                        currency,
                        gateway::service::PostingAccounts {
                            entity,
                            clearing: ledger::AccountCode::parse(&a.clearing, &key("clearing"))
                                .map_err(|r| bad(&key("clearing"), r.message))?,
                            receivable: ledger::AccountCode::parse(
                                &a.receivable,
                                &key("receivable"),
                            )
                            .map_err(|r| bad(&key("receivable"), r.message))?,
                        },
                    );
                }
                if accounts.is_empty() {
                    return Err(bad(
                        "gateway.accounts",
                        "configure the ledger accounts of at least one currency",
                    ));
                }
                Some(GatewayConfig {
                    processor,
                    accounts,
                    resolver_interval_ms: g.resolver_interval_ms.unwrap_or(5_000).max(10),
                    ach_poll_interval_s: g.ach_poll_interval_s.unwrap_or(900),
                })
            }
        };
        let mut webhooks = Vec::new();
        for (i, w) in raw.webhooks.iter().enumerate() {
            let key = |f: &str| format!("webhooks[{i}].{f}");
            if w.name.trim().is_empty()
                || webhooks
                    .iter()
                    .any(|s: &gateway::webhooks::Subscriber| s.name == w.name)
            {
                return Err(bad(&key("name"), "must be non-empty and unique"));
            }
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                return Err(bad(&key("url"), "must be an http(s) URL"));
            }
            let secret = hmac_key(&w.secret, &key("secret"))?;
            webhooks.push(gateway::webhooks::Subscriber {
                name: w.name.clone(),
                url: w.url.clone(),
                secret: std::sync::Arc::new(secret),
            });
        }
        let sync = {
            let r = &raw.sync;
            if r.worker_concurrency == 0 || r.worker_concurrency > 256 {
                return Err(bad("sync.worker_concurrency", "must be 1 to 256"));
            }
            if r.lease_ms < 1_000 {
                return Err(bad("sync.lease_ms", "must be at least 1000"));
            }
            let sf = r.salesforce.as_ref();
            let event_secret = match sf.and_then(|s| s.event_secret.as_ref()) {
                None => None,
                Some(src) => Some(std::sync::Arc::new(hmac_key(
                    src,
                    "sync.salesforce.event_secret",
                )?)),
            };
            let outbound_token = match sf.and_then(|s| s.outbound_token.as_ref()) {
                None => None,
                Some(src) => {
                    let k = "sync.salesforce.outbound_token";
                    let t = secret_text(src, k)?;
                    if t.len() < 16 {
                        return Err(bad(k, "must be at least 16 characters"));
                    }
                    Some(std::sync::Arc::new(OutboundToken(t)))
                }
            };
            let organization_id = sf.and_then(|s| s.organization_id.clone());
            if let Some(o) = &organization_id
                && (!matches!(o.len(), 15 | 18) || !o.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(bad(
                    "sync.salesforce.organization_id",
                    "must be a 15- or 18-character Salesforce id",
                ));
            }
            if outbound_token.is_some() && organization_id.is_none() {
                return Err(bad(
                    "sync.salesforce.organization_id",
                    "is required with outbound_token: messages from other orgs are refused",
                ));
            }
            let salesforce_id = |k: &str, v: &Option<String>| match v {
                Some(o)
                    if !matches!(o.len(), 15 | 18)
                        || !o.bytes().all(|b| b.is_ascii_alphanumeric()) =>
                {
                    Err(bad(k, "must be a 15- or 18-character Salesforce id"))
                }
                _ => Ok(()),
            };
            let integration_user_id = sf.and_then(|s| s.integration_user_id.clone());
            salesforce_id("sync.salesforce.integration_user_id", &integration_user_id)?;
            let mut seen = std::collections::BTreeSet::new();
            for (i, m) in r.mappings.iter().enumerate() {
                m.check()
                    .map_err(|e| bad(&format!("sync.mappings[{i}].{}", e.path), e.message))?;
                if !seen.insert((m.salesforce.clone(), m.sage.clone())) {
                    return Err(bad(
                        &format!("sync.mappings[{i}]"),
                        format!("{} ⇄ {} is mapped twice", m.salesforce, m.sage),
                    ));
                }
            }
            let salesforce = match sf {
                Some(c) if c.login_url.is_some() || c.auth.is_some() || !c.objects.is_empty() => {
                    let k = |f: &str| format!("sync.salesforce.{f}");
                    let login_url = c
                        .login_url
                        .clone()
                        .ok_or_else(|| bad(&k("login_url"), "is required with auth and objects"))?;
                    check_endpoint(&login_url, &k("login_url"))?;
                    if let Some(u) = &c.instance_url {
                        check_endpoint(u, &k("instance_url"))?;
                    }
                    let credentials = match c.auth.as_ref() {
                        None => return Err(bad(&k("auth"), "is required with login_url")),
                        Some(RawSalesforceAuth::Jwt {
                            consumer_key,
                            username,
                            private_key,
                        }) => {
                            let pem = secret_text(private_key, &k("auth.private_key"))?;
                            sync::salesforce::Credentials::jwt_bearer(
                                consumer_key.clone(),
                                username.clone(),
                                &pem,
                            )
                            .map_err(|e| bad(&k("auth.private_key"), e.to_string()))?
                        }
                        Some(RawSalesforceAuth::ClientCredentials {
                            client_id,
                            client_secret,
                        }) => {
                            let secret = secret_text(client_secret, &k("auth.client_secret"))?;
                            sync::salesforce::Credentials::client_credentials(
                                client_id.clone(),
                                secret.as_str(),
                            )
                        }
                    };
                    let mut client_config = sync::salesforce::ClientConfig::new(login_url);
                    client_config.instance_url = c.instance_url.clone();
                    if let Some(v) = &c.api_version {
                        let ok = v.split_once('.').is_some_and(|(a, b)| {
                            a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok()
                        });
                        if !ok {
                            return Err(bad(&k("api_version"), "must look like 62.0"));
                        }
                        client_config.api_version = v.clone();
                    }
                    let client =
                        sync::salesforce::SalesforceClient::new(client_config, credentials)
                            .map_err(|e| bad(&k("auth"), e.to_string()))?;
                    let mut objects = Vec::new();
                    for (i, o) in c.objects.iter().enumerate() {
                        let name_ok = |n: &str| {
                            n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        };
                        if !name_ok(&o.name)
                            || objects
                                .iter()
                                .any(|p: &sync::flows::PullObject| p.name == o.name)
                        {
                            return Err(bad(
                                &format!("sync.salesforce.objects[{i}].name"),
                                "must be a unique object API name",
                            ));
                        }
                        if let Some(f) = o.fields.iter().find(|f| !name_ok(f)) {
                            return Err(bad(
                                &format!("sync.salesforce.objects[{i}].fields"),
                                format!("{f:?} is not a field API name"),
                            ));
                        }
                        objects.push(sync::flows::PullObject {
                            name: o.name.clone(),
                            fields: o.fields.clone(),
                        });
                    }
                    Some(SalesforceSettings {
                        client,
                        objects,
                        poll_interval_s: c.poll_interval_s.unwrap_or(300).max(1),
                        look_back_s: c.look_back_s.unwrap_or(60).max(0),
                    })
                }
                _ => None,
            };
            let intacct = match &r.intacct {
                None => None,
                Some(c) => {
                    if salesforce.is_none() {
                        return Err(bad(
                            "sync.intacct",
                            "needs [sync.salesforce] with login_url and auth: the loop reads Opportunities",
                        ));
                    }
                    let gateway_accounts = gateway.as_ref().map(|g| &g.accounts);
                    Some(intacct_settings(
                        c,
                        &default_entity,
                        gateway_accounts,
                        &r.mappings,
                    )?)
                }
            };
            let x3 = match &r.x3 {
                None => None,
                Some(_) if r.intacct.is_some() => {
                    return Err(bad(
                        "sync.x3",
                        "cannot be configured with [sync.intacct]: one Sage line per installation",
                    ));
                }
                Some(_) if salesforce.is_none() => {
                    return Err(bad(
                        "sync.x3",
                        "needs [sync.salesforce] with login_url and auth: the loop reads Opportunities",
                    ));
                }
                Some(c) => Some(x3::x3_settings(
                    c,
                    &default_entity,
                    gateway.as_ref().map(|g| &g.accounts),
                )?),
            };
            let mut agent_lines = [None, None];
            for (i, (line, line_raw, key)) in [
                (sync::objects::SageLine::Sage100, &r.sage100, "sync.sage100"),
                (
                    sync::objects::SageLine::BusinessWorks,
                    &r.businessworks,
                    "sync.businessworks",
                ),
            ]
            .into_iter()
            .enumerate()
            {
                let Some(c) = line_raw else { continue };
                let others: Vec<&str> = [
                    ("[sync.intacct]", r.intacct.is_some()),
                    ("[sync.x3]", r.x3.is_some()),
                    ("[sync.sage100]", i > 0 && r.sage100.is_some()),
                ]
                .into_iter()
                .filter_map(|(k, set)| set.then_some(k))
                .collect();
                if !others.is_empty() {
                    return Err(bad(
                        key,
                        format!(
                            "cannot be configured with {}: one Sage line per installation",
                            others.join(", ")
                        ),
                    ));
                }
                if salesforce.is_none() {
                    return Err(bad(
                        key,
                        "needs [sync.salesforce] with login_url and auth: the loop reads Opportunities",
                    ));
                }
                agent_lines[i] = Some(sage100::agent_line_settings(
                    line,
                    c,
                    &raw.agents,
                    &default_entity,
                    gateway.as_ref().map(|g| &g.accounts),
                )?);
            }
            let [sage100, businessworks] = agent_lines;
            SyncConfig {
                salesforce,
                intacct,
                x3,
                sage100,
                businessworks,
                integration_user_id,
                mappings: r.mappings.clone(),
                worker_concurrency: r.worker_concurrency,
                retention_days: r.retention_days,
                lease_ms: r.lease_ms,
                idle_poll_ms: r.idle_poll_ms.max(10),
                event_secret,
                event_tolerance_s: sf.and_then(|s| s.event_tolerance_s).unwrap_or(300),
                outbound_token,
                organization_id,
            }
        };
        let reconcile = reconcile_settings(&raw.reconcile, &default_entity, gateway.as_ref())?;
        let alerts = alerts::alerts_settings(raw.alerts.as_ref(), sync.salesforce.is_some())?;
        let console = console_settings(&raw.console)?;
        Ok(Config {
            database_url: url,
            db: db::DbOptions {
                max_connections: raw.database.max_connections,
                acquire_timeout_ms: raw.database.acquire_timeout_ms,
                sqlite_synchronous_full,
                ..db::DbOptions::default()
            },
            listen,
            shutdown_grace_ms: raw.server.shutdown_grace_ms,
            request_timeout_ms: raw.server.request_timeout_ms,
            request_body_limit_bytes: raw.server.request_body_limit_bytes,
            behind_tls_proxy: raw.server.behind_tls_proxy,
            tls,
            api_keys,
            api_key_secret,
            log_format,
            log_level: raw.log.level,
            default_entity,
            ledger_writers: raw.ledger.writers,
            ledger_max_batch_entries: raw.ledger.max_batch_entries,
            seal_interval_ms: raw.ledger.seal_interval_ms,
            vault,
            gateway,
            webhooks,
            sync,
            reconcile,
            alerts,
            console,
            agents: agents::agents(&raw.agents)?,
        })
    }
}

/// What the configuration tests of every section share.
#[cfg(test)]
pub(crate) mod test_support {
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};

    use super::{Config, ConfigError, RawConfig};

    /// A minimal `[sync.salesforce]` (the Sage lines need one).
    pub const SF: &str = "[sync.salesforce]\nlogin_url = \"https://login.salesforce.com\"\nauth = { kind = \"client_credentials\", client_id = \"x\", client_secret = { env = \"PATH\" } }\n";

    pub fn load(toml: &str) -> Result<Config, ConfigError> {
        Config::from_figment(
            Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(toml)),
        )
    }

    /// `toml` is refused at `key` with a message containing `text`.
    #[track_caller]
    pub fn refused(toml: &str, key: &str, text: &str) {
        match load(toml) {
            Err(e) => {
                assert_eq!(e.key, key, "{e}");
                assert!(e.to_string().contains(text), "{e}");
            }
            Ok(_) => panic!("{toml}: accepted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str, expected_key: Option<&str>) {
        let fig =
            Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(toml));
        match (Config::from_figment(fig), expected_key) {
            (Ok(_), None) => {}
            (Err(e), Some(key)) => {
                assert_eq!(e.key, key, "{e}");
                assert!(e.to_string().contains(key), "{e}");
            }
            (got, want) => panic!("{toml}: got {got:?}, want error on {want:?}"),
        }
    }

    #[test]
    fn errors_name_the_key() {
        check("", None);
        check("database_url = \"postgres://x@127.0.0.1/db\"", None);
        check("database_url = \"mysql://x\"", Some("database_url"));
        check("[server]\nlisten = \"nowhere\"", Some("server.listen"));
        check(
            "[sync]\nworker_concurrency = 0",
            Some("sync.worker_concurrency"),
        );
        check(
            "[sync.salesforce]\nlogin_url = \"https://login.salesforce.com\"",
            Some("sync.salesforce.auth"),
        );
        check(
            "[sync.salesforce]\nlogin_url = \"http://login.example.com\"\nauth = { kind = \"client_credentials\", client_id = \"x\", client_secret = { env = \"PATH\" } }",
            Some("sync.salesforce.login_url"),
        );
        check(
            "[sync.salesforce]\nlogin_url = \"https://login.salesforce.com\"\nauth = { kind = \"client_credentials\", client_id = \"x\", client_secret = { env = \"PATH\" } }\nobjects = [{ name = \"Bad Name\" }]",
            Some("sync.salesforce.objects[0].name"),
        );
        check(
            "[sync.salesforce]\nlogin_url = \"https://login.salesforce.com\"\nauth = { kind = \"jwt\", consumer_key = \"k\", username = \"u\", private_key = { env = \"PATH\" } }",
            Some("sync.salesforce.auth.private_key"),
        );
        check(
            "[sync.salesforce]\nlogin_url = \"https://login.salesforce.com\"\nauth = { kind = \"client_credentials\", client_id = \"x\", client_secret = { env = \"PATH\" } }\nobjects = [{ name = \"Account\", fields = [\"Name\"] }]",
            None,
        );
        check(
            "[sync.salesforce]\noutbound_token = { env = \"NOPE_NOT_SET_X\" }",
            Some("sync.salesforce.outbound_token"),
        );
        check(
            "[sync.salesforce]\norganization_id = \"00D-bad\"",
            Some("sync.salesforce.organization_id"),
        );
        check(
            "[[sync.mappings]]\nsalesforce = \"Account\"\nsage = \"CUSTOMER\"\nfields = [{ salesforce = \"Name\", owner = \"salesforce\" }]",
            Some("sync.mappings[0].fields[0].sage"),
        );
        check(
            "[[sync.mappings]]\nsalesforce = \"Account\"\nsage = \"CUSTOMER\"\nfields = [{ salesforce = \"Name\", sage = \"NAME\", owner = \"salesforce\", transform = { kind = \"lookup\", table = { A = \"B\" } } }]",
            None,
        );
        check(
            "[server]\nshutdown_grace_ms = \"soon\"",
            Some("server.shutdown_grace_ms"),
        );
        check("[server]\nlisen = \"127.0.0.1:1\"", Some("server.lisen"));
        check("[log]\nformat = \"xml\"", Some("log.format"));
        let agent_hash = "ab".repeat(32);
        check(
            &format!("[[agents]]\nname = \"s100\"\nkey_sha256 = \"{agent_hash}\""),
            None,
        );
        check(
            "[[agents]]\nname = \"s100\"\nkey_sha256 = \"00\"",
            Some("agents[0].key_sha256"),
        );
        check(
            &format!(
                "[[agents]]\nname = \"s100\"\nkey_sha256 = \"{agent_hash}\"\n[[agents]]\nname = \"s100\"\nkey_sha256 = \"{agent_hash}\""
            ),
            Some("agents[1].name"),
        );
        check(
            &format!("[[agents]]\nname = \"s100\"\nkey_sha256 = \"{agent_hash}\"\nlease_ms = 5"),
            Some("agents[0].lease_ms"),
        );
        check(
            "[ledger]\ndefault_entity = \"has space\"",
            Some("ledger.default_entity"),
        );
        check(
            "[ledger]\nmax_batch_entries = 0",
            Some("ledger.max_batch_entries"),
        );
        check(
            "[database]\nsqlite_synchronous = \"off\"",
            Some("database.sqlite_synchronous"),
        );
        check(
            "[[server.api_keys]]\nname = \"ops\"\nrole = \"root\"\nkey_hmac = \"00\"",
            Some("server.api_keys[0].role"),
        );
        check(
            "[[server.api_keys]]\nname = \"ops\"\nrole = \"admin\"\nkey_hmac = \"00\"",
            Some("server.api_keys[0].key_hmac"),
        );
        const HASH: &str =
            "$pbkdf2-sha256$i=10000$c2FsdHNhbHQ$VazARW7jCJ+/FpHCJUS2BflBhSFt3gRl5oudV8INrLw";
        check(
            &format!(
                "[[console.users]]\nname = \"ada\"\nrole = \"admin\"\npassword_hash = \"{HASH}\""
            ),
            None,
        );
        check(
            &format!(
                "[[console.users]]\nname = \"ada\"\nrole = \"root\"\npassword_hash = \"{HASH}\""
            ),
            Some("console.users[0].role"),
        );
        check(
            "[[console.users]]\nname = \"ada\"\nrole = \"admin\"\npassword_hash = \"hunter2\"",
            Some("console.users[0].password_hash"),
        );
        check(
            &format!(
                "[[console.users]]\nname = \"a b\"\nrole = \"admin\"\npassword_hash = \"{HASH}\""
            ),
            Some("console.users[0].name"),
        );
        check(
            &format!(
                "[[console.users]]\nname = \"ada\"\nrole = \"admin\"\npassword_hash = \"{HASH}\"\n[[console.users]]\nname = \"ada\"\nrole = \"viewer\"\npassword_hash = \"{HASH}\""
            ),
            Some("console.users[1].name"),
        );
        check(
            "[console]\nsession_ttl_s = 5",
            Some("console.session_ttl_s"),
        );
        check(
            "[console]\npublic_url = \"pay.example.com\"",
            Some("console.public_url"),
        );
        check(
            "[console]\nsage_record_url = \"https://erp.example.com/x\"",
            Some("console.sage_record_url"),
        );
        check(
            "[vault]\nkek = { version = 1, file = \"k\" }\nfingerprint_key = { version = 1, env = \"F\" }",
            None,
        );
        check(
            "[vault]\nkek = { version = 1 }\nfingerprint_key = { version = 1, env = \"F\" }",
            Some("vault.kek"),
        );
        check(
            "[vault]\nkek = { version = 1, file = \"k\" }\nprevious_keks = [{ version = 1, file = \"o\" }]\nfingerprint_key = { version = 1, env = \"F\" }",
            Some("vault.previous_keks[0]"),
        );
        check("[server]\nlisten = \"0.0.0.0:8080\"", Some("server.listen"));
        check(
            "[server]\nlisten = \"0.0.0.0:8080\"\nbehind_tls_proxy = true",
            None,
        );
        check("[server]\nlisten = \"[::1]:8080\"", None);
        check(
            "[server.tls]\ncert = \"cert.pem\"\nkey_file = \"key.pem\"",
            Some("server.tls.cert"),
        );
        check(
            "[server.tls]\nkey_file = \"key.pem\"",
            Some("server.tls.cert_file"),
        );
        check(
            "[server.tls]\ncert_file = \"cert.pem\"",
            Some("server.tls.key_file"),
        );
    }

    /// `[server.tls]` naming `cert` and `key` (paths), after `[server]` lines `server`.
    fn tls_toml(server: &str, cert: &Path, key: &Path) -> String {
        format!(
            "[server]\n{server}\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        )
    }

    fn check_message(toml: &str, key: &str, message: &str) {
        let fig =
            Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(toml));
        let e = Config::from_figment(fig).expect_err(toml);
        assert_eq!(e.key, key, "{e}");
        assert!(e.to_string().contains(message), "{e}");
    }

    #[test]
    fn tls_files_are_loaded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ours = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = write("cert.pem", &ours.cert.pem());
        let key = write("key.pem", &ours.signing_key.serialize_pem());
        let other_key = write("other-key.pem", &other.signing_key.serialize_pem());
        let missing = dir.path().join("missing.pem");
        let garbage = write("garbage.pem", "not PEM at all\n");

        let fig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(&tls_toml("", &cert, &key)));
        let config = Config::from_figment(fig).unwrap();
        let tls = config.tls.expect("TLS configured");
        assert_eq!(tls.server_config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // Debug shows the paths, never the key.
        let debug = format!("{tls:?}");
        assert!(
            debug.contains("key.pem") && !debug.contains("PRIVATE"),
            "{debug}"
        );

        // With TLS any address may be listened on; without it, loopback only (or behind a proxy).
        check(&tls_toml("listen = \"0.0.0.0:8443\"", &cert, &key), None);
        check(&tls_toml("listen = \"[::]:8443\"", &cert, &key), None);
        check_message(
            "[server]\nlisten = \"0.0.0.0:8080\"",
            "server.listen",
            "[server.tls]",
        );

        check_message(
            &tls_toml("", &missing, &key),
            "server.tls.cert_file",
            "cannot read",
        );
        check_message(
            &tls_toml("", &key, &key),
            "server.tls.cert_file",
            "no certificate found",
        );
        check_message(
            &tls_toml("", &cert, &missing),
            "server.tls.key_file",
            "cannot read",
        );
        check_message(
            &tls_toml("", &cert, &cert),
            "server.tls.key_file",
            "no private key found",
        );
        check_message(
            &tls_toml("", &cert, &garbage),
            "server.tls.key_file",
            "no private key found",
        );
        check_message(
            &tls_toml("", &cert, &other_key),
            "server.tls.key_file",
            "does not match the certificate",
        );
    }
}
