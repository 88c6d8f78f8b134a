//! `cashloop sandbox`: the whole loop on one machine in under a minute. A fresh SQLite file,
//! the server, and protocol-faithful simulators of Salesforce, Sage Intacct and Authorize.Net
//! on loopback ports; a small realistic dataset; Closed Won deals run through to invoices,
//! payments and the ledger; then the URLs and a summary, and the sandbox keeps running.

// Latency figures (not money) are floats.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde_json::{Value, json};
use sync::intacct::simulator::{Simulator as IntacctSim, SimulatorConfig as IntacctSimConfig};
use sync::intacct::{Element, IntacctClient, IntacctConfig, Secret, UserAuth};
use sync::salesforce::Record;
use sync::salesforce::simulator::{Simulator as SfSim, SimulatorConfig as SfSimConfig};

use crate::config::{Config, RawConfig};

mod onprem;
mod x3;

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Where the server listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Keeps the database, keys and configuration here (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Extra generated Closed Won deals beyond the seeded four (for latency figures).
    #[arg(long, default_value_t = 0)]
    pub extra_deals: usize,
    /// What a Closed Won deal becomes in Intacct: `ar_invoice` or `order_entry` (a Sales
    /// Invoice with item lines).
    #[arg(long, default_value = "ar_invoice")]
    pub document: String,
    /// Runs the loop, prints the summary, and exits instead of serving on.
    #[arg(long)]
    pub exit: bool,
    /// The Sage line the loop runs through: `intacct`, `x3` (the X3 simulator, REST), or an
    /// on-premise line with its agent started in-process: `sage100` (eBusiness Web Services,
    /// Visual Integrator, ODBC) or `businessworks` (import files, ODBC).
    #[arg(long, default_value = "intacct")]
    pub sage: String,
}

/// A seeded Salesforce account.
struct SeedAccount {
    name: &'static str,
    country: &'static str,
    currency: &'static str,
    contacts: [(&'static str, &'static str, &'static str); 2],
}

const ACCOUNTS: [SeedAccount; 4] = [
    SeedAccount {
        name: "Acme Corporation",
        country: "United States",
        currency: "USD",
        contacts: [
            ("Ada", "Lovelace", "ada@acme.example"),
            ("Charles", "Babbage", "ap@acme.example"),
        ],
    },
    SeedAccount {
        name: "Globex Inc",
        country: "United States",
        currency: "USD",
        contacts: [
            ("Hank", "Scorpio", "hank@globex.example"),
            ("Frank", "Grimes", "billing@globex.example"),
        ],
    },
    SeedAccount {
        name: "Bergmann GmbH",
        country: "Germany",
        currency: "EUR",
        contacts: [
            ("Greta", "Bergmann", "greta@bergmann.example"),
            ("Jonas", "Weber", "rechnung@bergmann.example"),
        ],
    },
    SeedAccount {
        name: "Hooli Europe Ltd",
        country: "United Kingdom",
        currency: "EUR",
        contacts: [
            ("Gavin", "Belson", "gavin@hooli.example"),
            ("Denpok", "Singh", "ar@hooli.example"),
        ],
    },
];

/// (name, product code, USD price, EUR price).
const PRODUCTS: [(&str, &str, &str, &str); 4] = [
    (
        "Cashloop Platform (annual)",
        "CL-PLAT",
        "12000.00",
        "11000.00",
    ),
    ("Implementation package", "CL-IMPL", "4500.00", "4200.00"),
    ("Premium support (annual)", "CL-SUPP", "2400.00", "2200.00"),
    ("Training day", "CL-TRAIN", "950.00", "900.00"),
];

fn write_secret(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(p)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Inserts one record into the Salesforce simulator as a person would; its id.
fn seed_one(sf: &SfSim, object: &str, r: Record) -> anyhow::Result<String> {
    sf.insert_as_user(object, &[r])
        .map_err(|e| anyhow::anyhow!("seeding {object}: {e:?}"))?
        .pop()
        .context("no id")
}

/// A seeded deal.
struct Deal {
    opportunity: String,
    account: String,
    account_name: String,
    currency: &'static str,
}

/// Deal `n`'s account name: the seeded accounts, then numbered copies of them.
fn deal_account_name(n: usize) -> String {
    let a = &ACCOUNTS[n % ACCOUNTS.len()];
    if n < ACCOUNTS.len() {
        a.name.to_owned()
    } else {
        format!("{} #{}", a.name, n / ACCOUNTS.len() + 1)
    }
}

/// Deal `n`'s lines: the platform always; implementation or support by turn; a discount on one
/// line. `products` holds (Product2 id, USD price, EUR price).
fn seed_lines(
    sf: &SfSim,
    opportunity: &str,
    products: &[(String, &str, &str)],
    currency: &str,
    n: usize,
) -> anyhow::Result<()> {
    let picks: [(usize, &str, &str); 2] =
        [(0, "1", "0"), (1 + n % 3, "2", ["0", "10", "5"][n % 3])];
    for (p, qty, discount) in picks {
        let (id, usd, eur) = &products[p];
        let price = if currency == "USD" { usd } else { eur };
        let mut line = Record::new("OpportunityLineItem")
            .with("OpportunityId", opportunity)
            .with("Product2Id", id.as_str())
            .with("Quantity", qty.parse::<rust_decimal::Decimal>()?)
            .with("UnitPrice", price.parse::<rust_decimal::Decimal>()?);
        if discount != "0" {
            line = line.with("Discount", discount.parse::<rust_decimal::Decimal>()?);
        }
        seed_one(sf, "OpportunityLineItem", line)?;
    }
    Ok(())
}

/// What every sandbox starts from: the server's loopback listener, keys and secrets written to
/// the data directory, an admin API key, and the Salesforce simulator posting signed events to
/// the server.
struct Prelude {
    listener: tokio::net::TcpListener,
    addr: std::net::SocketAddr,
    base: String,
    kek: PathBuf,
    fingerprint: PathBuf,
    api_secret: PathBuf,
    event_secret: PathBuf,
    admin_key: String,
    admin_hash: String,
    sf: SfSim,
    sf_secret: PathBuf,
}

async fn prelude(args: &SandboxArgs, dir: &Path) -> anyhow::Result<Prelude> {
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("{} is in use; taking any free port", args.listen);
            tokio::net::TcpListener::bind("127.0.0.1:0").await?
        }
        Err(e) => return Err(e).with_context(|| format!("--listen {}", args.listen)),
    };
    let addr = listener.local_addr()?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "--listen: the sandbox binds loopback only"
    );
    let base = format!("http://{addr}");
    let key = |name: &str| -> anyhow::Result<PathBuf> {
        write_secret(dir, name, &gateway::crypto::generate_key_hex()?)
    };
    let kek = key("kek-1.hex")?;
    let fingerprint = key("fingerprint-1.hex")?;
    let api_secret = key("api-key-secret.hex")?;
    let event_secret_hex = gateway::crypto::generate_key_hex()?;
    let event_secret = write_secret(dir, "salesforce-event-secret.hex", &event_secret_hex)?;
    let mut raw_key = [0u8; 18];
    getrandom::fill(&mut raw_key).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let admin_key = format!("clk_sandbox_{}", hex::encode(raw_key));
    let admin_hash = hex::encode(
        gateway::crypto::FingerprintKey::from_hex(1, &std::fs::read_to_string(&api_secret)?)?
            .fingerprint(admin_key.as_bytes()),
    );
    let sf = SfSim::start(SfSimConfig {
        event_webhook_url: Some(format!("{base}/v1/events/salesforce")),
        event_secret_hex: event_secret_hex.to_string(),
        ..SfSimConfig::default()
    })
    .await;
    let sf_secret = write_secret(dir, "salesforce-client-secret", &sf.config().client_secret)?;
    Ok(Prelude {
        listener,
        addr,
        base,
        kek,
        fingerprint,
        api_secret,
        event_secret,
        admin_key,
        admin_hash,
        sf,
        sf_secret,
    })
}

impl Prelude {
    /// The configuration the Sage X3 and on-premise sandboxes share: the server with the admin
    /// key, the vault, the gateway on its sandbox processor (US books USD, UK books EUR), the
    /// sync worker and Salesforce. The Sage line's section follows.
    fn common_toml(&self, db_path: &Path) -> String {
        format!(
            r#"database_url = "sqlite://{db}"
[server]
listen = "{addr}"
shutdown_grace_ms = 2000
api_key_secret = {{ file = {api_secret:?} }}
[[server.api_keys]]
name = "sandbox-admin"
role = "admin"
key_hmac = "{admin_hash}"
[ledger]
default_entity = "US"
[vault]
kek = {{ version = 1, file = {kek:?} }}
fingerprint_key = {{ version = 1, file = {fingerprint:?} }}
[gateway]
processor = "sandbox"
resolver_interval_ms = 1000
[gateway.accounts.USD]
entity = "US"
clearing = "1100"
receivable = "1200"
[gateway.accounts.EUR]
entity = "UK"
clearing = "1100"
receivable = "1200"
[sync]
worker_concurrency = 4
idle_poll_ms = 25
[sync.salesforce]
event_secret = {{ file = {event_secret:?} }}
integration_user_id = "{api_user}"
login_url = "{sf_url}"
auth = {{ kind = "client_credentials", client_id = "{client_id}", client_secret = {{ file = {sf_secret:?} }} }}
objects = [{{ name = "Opportunity", fields = ["Name", "StageName", "IsWon", "Amount"] }}]
poll_interval_s = 15
"#,
            db = db_path.display(),
            addr = self.addr,
            api_secret = self.api_secret,
            admin_hash = self.admin_hash,
            kek = self.kek,
            fingerprint = self.fingerprint,
            event_secret = self.event_secret,
            api_user = self.sf.config().api_user_id,
            sf_url = self.sf.base_url(),
            client_id = self.sf.config().client_id,
            sf_secret = self.sf_secret,
        )
    }
}

/// Seeds the products and `ACCOUNTS.len() + extra` deals (an Opportunity in negotiation with
/// its lines); `currency` replaces the accounts' own (a Sage line with one currency).
fn seed_deals(
    sf: &SfSim,
    extra: usize,
    currency: Option<&'static str>,
) -> anyhow::Result<Vec<Deal>> {
    let mut products = Vec::new();
    for (name, code, usd, eur) in PRODUCTS {
        let id = seed_one(
            sf,
            "Product2",
            Record::new("Product2")
                .with("Name", name)
                .with("ProductCode", code)
                .with("IsActive", true),
        )?;
        products.push((id, usd, eur));
    }
    let mut deals = Vec::new();
    for n in 0..ACCOUNTS.len() + extra {
        let a = &ACCOUNTS[n % ACCOUNTS.len()];
        let cur = currency.unwrap_or(a.currency);
        let account_name = deal_account_name(n);
        let account = seed_one(
            sf,
            "Account",
            Record::new("Account")
                .with("Name", account_name.as_str())
                .with("BillingCountry", a.country)
                .with("CurrencyIsoCode", cur),
        )?;
        let opportunity = seed_one(
            sf,
            "Opportunity",
            Record::new("Opportunity")
                .with("Name", format!("{account_name} — FY27 subscription"))
                .with("StageName", "Negotiation/Review")
                .with(
                    "CloseDate",
                    chrono::Utc::now().format("%Y-%m-%d").to_string(),
                )
                .with("AccountId", account.as_str())
                .with("CurrencyIsoCode", cur),
        )?;
        seed_lines(sf, &opportunity, &products, cur, n)?;
        deals.push(Deal {
            opportunity,
            account,
            account_name,
            currency: cur,
        });
    }
    Ok(deals)
}

/// Closes every deal: Closed Won through the trigger's signed callout.
fn close_won(sf: &SfSim, deals: &[Deal]) -> anyhow::Result<()> {
    for d in deals {
        sf.update_as_user(
            "Opportunity",
            &d.opportunity,
            &Record::new("Opportunity").with("StageName", "Closed Won"),
        )
        .map_err(|e| anyhow::anyhow!("closing {}: {e:?}", d.opportunity))?;
    }
    Ok(())
}

/// An Opportunity's field as text (decimals normalised), as the loop wrote it back.
fn opportunity_field(sf: &SfSim, id: &str, f: &str) -> Option<String> {
    sf.record("Opportunity", id).and_then(|r| {
        r.get(f).and_then(|v| {
            v.as_str()
                .map(str::to_owned)
                .or_else(|| v.as_decimal().map(|d| d.normalize().to_string()))
        })
    })
}

/// Waits (at most `secs`) until every deal's Opportunity has `what`; answers how many have it.
async fn wait_for_field(sf: &SfSim, deals: &[Deal], what: &str, secs: u64) -> usize {
    let has = |d: &Deal| opportunity_field(sf, &d.opportunity, what).is_some();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline && !deals.iter().all(has) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deals.iter().filter(|d| has(d)).count()
}

/// The sandbox's admin calls to its own API.
struct Api {
    http: reqwest::Client,
    base: String,
    admin_key: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        idempotency_key: Option<String>,
        body: Value,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key);
        if !body.is_null() {
            req = req.json(&body);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {v}");
        Ok(v)
    }

    /// Deal `i` pays `share` % of its balance due by card (the sandbox processor); `None` when
    /// it has no balance yet. Answers (payment id, amount, status).
    async fn pay_share(
        &self,
        sf: &SfSim,
        deals: &[Deal],
        i: usize,
        share: u32,
    ) -> anyhow::Result<Option<(String, rust_decimal::Decimal, String)>> {
        let Some(d) = deals.get(i) else {
            return Ok(None);
        };
        let Some(balance) = opportunity_field(sf, &d.opportunity, "Balance_Due__c") else {
            return Ok(None);
        };
        let due: rust_decimal::Decimal = balance.parse()?;
        let amount = (due * rust_decimal::Decimal::from(share)
            / rust_decimal::Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToZero);
        let token = self
            .call(
                reqwest::Method::POST,
                "/v1/tokens",
                Some(format!("sandbox-token-{i}")),
                json!({"type": "card", "card": {"number": "4111111111111111", "exp_month": 12, "exp_year": 2030, "name": d.account_name}}),
            )
            .await?;
        let pay = self
            .call(
                reqwest::Method::POST,
                "/v1/payments",
                Some(format!("sandbox-pay-{i}")),
                json!({"payment_method": token["token"], "amount": amount.to_string(), "currency": d.currency,
                       "opportunity_id": d.opportunity, "account_id": d.account}),
            )
            .await?;
        Ok(Some((
            pay["id"].as_str().unwrap_or("?").to_owned(),
            amount,
            pay["status"].as_str().unwrap_or("?").to_owned(),
        )))
    }

    /// Prints the ledger's trial balance.
    async fn print_trial_balance(&self) {
        println!("Ledger balances:");
        match self
            .call(
                reqwest::Method::GET,
                "/v1/ledger/trial-balance",
                None,
                Value::Null,
            )
            .await
        {
            Ok(v) => {
                for row in v["rows"].as_array().into_iter().flatten() {
                    let a = &row["account"];
                    let minor = |f: &str| row[f].as_i64().unwrap_or(0);
                    let (side, amount) = if minor("debit_minor") > 0 {
                        ("Dr", minor("debit_minor"))
                    } else {
                        ("Cr", minor("credit_minor"))
                    };
                    println!(
                        "  {:<3} {:<5} {:<22} {side} {:>12} {}",
                        a["entity"].as_str().unwrap_or(""),
                        a["code"].as_str().unwrap_or(""),
                        a["name"].as_str().unwrap_or(""),
                        rust_decimal::Decimal::new(amount, 2),
                        a["currency"].as_str().unwrap_or("")
                    );
                }
            }
            Err(e) => println!("  (trial balance unavailable: {e})"),
        }
    }
}

/// The payments made, one line each: `(deal, payment id, amount, status)`.
fn print_payments(deals: &[Deal], payments: &[(usize, String, rust_decimal::Decimal, String)]) {
    for (i, id, amount, status) in payments {
        println!(
            "  {id}  {} {amount:.2}  {status}  ({})",
            deals[*i].currency, deals[*i].account_name
        );
    }
}

/// Waits (at most `secs`) until each `(deal, status)` has that `Payment_Status__c`, naming the
/// ones still waiting; answers how many have it.
async fn wait_payment_status(
    sf: &SfSim,
    deals: &[Deal],
    want: &[(usize, &str)],
    secs: u64,
) -> usize {
    let ok = |(i, s): &(usize, &str)| {
        opportunity_field(sf, &deals[*i].opportunity, "Payment_Status__c").as_deref() == Some(*s)
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline && !want.iter().all(ok) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in want.iter().filter(|w| !ok(w)) {
        eprintln!(
            "still waiting: {} Payment_Status__c {:?}, expected {}",
            deals[w.0].account_name,
            opportunity_field(sf, &deals[w.0].opportunity, "Payment_Status__c"),
            w.1
        );
    }
    want.iter().filter(|w| ok(w)).count()
}

/// What [`start`] leaves running: the server on the sandbox's database.
struct Started {
    config_path: PathBuf,
    db: db::Db,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Writes the sandbox's configuration to `dir`, opens its database, adds the chart of accounts
/// (US in USD, UK in EUR) and starts `cashloop serve` on `listener`, ready at `base`.
async fn start(
    dir: &Path,
    toml: &str,
    listener: tokio::net::TcpListener,
    base: &str,
) -> anyhow::Result<Started> {
    let config_path = dir.join("cashloop.toml");
    std::fs::write(&config_path, toml)?;
    let config = Config::from_figment(
        Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(toml)),
    )
    .context("the sandbox configuration")?;
    crate::cli::init_logging(&config, "warn");
    let db = crate::cli::open_db(&config).await?;
    {
        let ledger = crate::cli::open_ledger(&config, db.clone());
        for (entity, currency) in [("US", "USD"), ("UK", "EUR")] {
            for (code, name, kind, normal, sub) in [
                ("1010", "Undeposited funds", "asset", "debit", false),
                ("1100", "Processor clearing", "asset", "debit", false),
                ("1200", "Accounts receivable", "asset", "debit", true),
                ("2200", "Sales tax payable", "liability", "credit", false),
                ("4000", "Subscription revenue", "revenue", "credit", false),
            ] {
                ledger
                    .create_account(
                        ledger::NewAccount {
                            entity: ledger::EntityCode::parse(entity, "entity")?,
                            code: ledger::AccountCode::parse(code, "code")?,
                            name: ledger::Text::parse(name, "name")?,
                            account_type: ledger::AccountType::parse(kind)
                                .context("account type")?,
                            normal_balance: ledger::Direction::parse(normal)
                                .context("direction")?,
                            currency: ledger::Currency::parse(currency)?,
                            customer_subledger: sub,
                        },
                        "sandbox",
                    )
                    .await?;
            }
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve_on(config, listener, async move {
        let _ = stop_rx.await;
    }));
    let http = gateway::http::client();
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(Started {
        config_path,
        db,
        stop_tx,
        server,
    })
}

pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (dir, _temp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("cashloop-sandbox-")
                .tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let db_path = dir.join("cashloop.db");
    if db_path.exists() {
        anyhow::bail!(
            "--dir: {} already holds a sandbox database; use an empty directory",
            dir.display()
        );
    }
    match args.sage.as_str() {
        "intacct" => {}
        "x3" => return x3::run(args, dir, started).await,
        "sage100" | "businessworks" => return onprem::run(args, dir, started).await,
        other => {
            anyhow::bail!("--sage: {other:?} is not one of intacct, x3, sage100, businessworks")
        }
    }
    let Prelude {
        listener,
        addr,
        base,
        kek,
        fingerprint,
        api_secret,
        event_secret,
        admin_key,
        admin_hash,
        sf,
        sf_secret,
    } = prelude(&args, &dir).await?;

    // The operator console's first user: a random password, shown in the summary.
    let mut raw_pw = [0u8; 12];
    getrandom::fill(&mut raw_pw).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let console_password = hex::encode(raw_pw);
    let console_hash = crate::console::password::PasswordHash::new(
        &console_password,
        crate::console::password::DEFAULT_ITERATIONS,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The simulators.
    let ia = IntacctSim::start(IntacctSimConfig::default()).await;
    let authnet_config = gateway::authnet::simulator::SimulatorConfig {
        webhook_url: Some(format!("{base}/v1/processors/authorize_net/webhooks")),
        ..Default::default()
    };
    let authnet = gateway::authnet::simulator::Simulator::start(authnet_config.clone()).await?;
    let ia_cfg = ia.config().clone();
    let ia_sender = write_secret(&dir, "intacct-sender-password", &ia_cfg.sender_password)?;
    let ia_user = write_secret(&dir, "intacct-user-password", &ia_cfg.users[0].1)?;
    let an_key = write_secret(
        &dir,
        "authnet-transaction-key",
        &authnet_config.transaction_key,
    )?;
    let an_sig = write_secret(
        &dir,
        "authnet-signature-key",
        &authnet_config.signature_key_hex,
    )?;

    let toml = format!(
        r#"database_url = "sqlite://{db}"
[server]
listen = "{addr}"
shutdown_grace_ms = 2000
api_key_secret = {{ file = {api_secret:?} }}
[[server.api_keys]]
name = "sandbox-admin"
role = "admin"
key_hmac = "{admin_hash}"
[ledger]
default_entity = "US"
[console]
public_url = "{base}"
salesforce_url = "{sf_url}"
[[console.users]]
name = "admin"
role = "admin"
password_hash = "{console_hash}"
[vault]
kek = {{ version = 1, file = {kek:?} }}
fingerprint_key = {{ version = 1, file = {fingerprint:?} }}
[gateway]
processor = "authorize_net"
resolver_interval_ms = 1000
[gateway.accounts.USD]
entity = "US"
clearing = "1100"
receivable = "1200"
[gateway.accounts.EUR]
entity = "UK"
clearing = "1100"
receivable = "1200"
[gateway.authorize_net]
endpoint = "{an_endpoint}"
api_login_id = "{an_login}"
transaction_key = {{ file = {an_key:?} }}
signature_key = {{ file = {an_sig:?} }}
[sync]
worker_concurrency = 4
idle_poll_ms = 25
[sync.salesforce]
event_secret = {{ file = {event_secret:?} }}
integration_user_id = "{api_user}"
login_url = "{sf_url}"
auth = {{ kind = "client_credentials", client_id = "{client_id}", client_secret = {{ file = {sf_secret:?} }} }}
objects = [{{ name = "Opportunity", fields = ["Name", "StageName", "IsWon", "Amount"] }},
           {{ name = "Cashloop_Credit_Memo__c", fields = ["Name", "Opportunity__c", "Amount__c", "Sage_Adjustment_Id__c"] }}]
poll_interval_s = 15
[sync.intacct]
endpoint = "{ia_endpoint}"
sender_id = "{sender}"
sender_password = {{ file = {ia_sender:?} }}
company_id = "{company}"
user_id = "{user}"
user_password = {{ file = {ia_user:?} }}
document = "{document}"
revenue_gl = "4000"
tax_gl = "2200"
bank_account = "BOA"
poll_interval_s = 10
[sync.intacct.vendors]
account_type = "Vendor"
[sync.intacct.entities.US]
tax_rate_percent = "8.25"
[sync.intacct.entities.UK]
tax_rate_percent = "20"
[sync.intacct.entity_rule]
field = "BillingCountry"
default = "US"
map = {{ "United Kingdom" = "UK", "Germany" = "UK", "France" = "UK" }}
[sync.intacct.ledger.USD]
entity = "US"
receivable = "1200"
revenue = "4000"
tax = "2200"
cash = "1010"
[sync.intacct.ledger.EUR]
entity = "UK"
receivable = "1200"
revenue = "4000"
tax = "2200"
cash = "1010"
"#,
        db = db_path.display(),
        an_endpoint = authnet.endpoint(),
        an_login = authnet_config.api_login_id,
        api_user = sf.config().api_user_id,
        sf_url = sf.base_url(),
        client_id = sf.config().client_id,
        ia_endpoint = ia.endpoint_url(),
        sender = ia_cfg.sender_id,
        company = ia_cfg.company_id,
        user = ia_cfg.users[0].0,
        document = args.document,
    );
    let Started {
        config_path,
        db,
        stop_tx,
        server,
    } = start(&dir, &toml, listener, &base).await?;
    let http = gateway::http::client();

    // Seed Salesforce: accounts with contacts, products and a price book.
    // One customer exists in Intacct already (keyed in by hand): it is linked, not duplicated.
    ia.insert(
        "CUSTOMER",
        vec![
            Element::new("CUSTOMER")
                .with_leaf("CUSTOMERID", "C-1007")
                .with_leaf("NAME", "Globex Inc")
                .with(Element::new("DISPLAYCONTACT").with_leaf("PRINTAS", "Globex Inc")),
        ],
    );
    // A supplier and its bill, entered in Intacct: the vendors module brings both to Salesforce.
    ia.insert(
        "VENDOR",
        vec![
            Element::new("VENDOR")
                .with_leaf("VENDORID", "V-2001")
                .with_leaf("NAME", "Northwind Hosting")
                .with(
                    Element::new("DISPLAYCONTACT")
                        .with_leaf("PRINTAS", "Northwind Hosting")
                        .with_leaf("EMAIL1", "billing@northwind.example"),
                ),
        ],
    );
    ia.insert(
        "APBILL",
        vec![
            Element::new("APBILL")
                .with_leaf("VENDORID", "V-2001")
                .with_leaf("RECORDID", "NW-88123")
                .with_leaf(
                    "WHENCREATED",
                    chrono::Utc::now().format("%m/%d/%Y").to_string(),
                )
                .with_leaf("CURRENCY", "USD")
                .with_leaf("STATE", "Posted")
                .with_leaf("TRX_TOTALENTERED", "1840.00")
                .with_leaf("TRX_TOTALDUE", "1840.00")
                .with_leaf("TOTALENTERED", "1840.00")
                .with_leaf("TOTALDUE", "1840.00")
                .with_leaf("MEGAENTITYID", "US"),
        ],
    );
    let one = |object: &str, r: Record| seed_one(&sf, object, r);
    let book = one(
        "Pricebook2",
        Record::new("Pricebook2")
            .with("Name", "Standard Price Book")
            .with("IsActive", true),
    )?;
    let mut products = Vec::new();
    for (name, code, usd, eur) in PRODUCTS {
        let id = one(
            "Product2",
            Record::new("Product2")
                .with("Name", name)
                .with("ProductCode", code)
                .with("IsActive", true),
        )?;
        for (currency, price) in [("USD", usd), ("EUR", eur)] {
            one(
                "PricebookEntry",
                Record::new("PricebookEntry")
                    .with("Pricebook2Id", book.as_str())
                    .with("Product2Id", id.as_str())
                    .with("UnitPrice", price.parse::<rust_decimal::Decimal>()?)
                    .with("CurrencyIsoCode", currency)
                    .with("IsActive", true),
            )?;
        }
        products.push((id, usd, eur));
    }
    let mut deals = Vec::new();
    let total_deals = ACCOUNTS.len() + args.extra_deals;
    for n in 0..total_deals {
        let a = &ACCOUNTS[n % ACCOUNTS.len()];
        let account_name = deal_account_name(n);
        let account = one(
            "Account",
            Record::new("Account")
                .with("Name", account_name.as_str())
                .with("BillingCountry", a.country)
                .with("CurrencyIsoCode", a.currency),
        )?;
        if n < ACCOUNTS.len() {
            for (first, last, email) in a.contacts {
                one(
                    "Contact",
                    Record::new("Contact")
                        .with("FirstName", first)
                        .with("LastName", last)
                        .with("Email", email)
                        .with("AccountId", account.as_str()),
                )?;
            }
        }
        let opportunity = one(
            "Opportunity",
            Record::new("Opportunity")
                .with("Name", format!("{account_name} — FY27 subscription"))
                .with("StageName", "Negotiation/Review")
                .with(
                    "CloseDate",
                    chrono::Utc::now().format("%Y-%m-%d").to_string(),
                )
                .with("AccountId", account.as_str())
                .with("Pricebook2Id", book.as_str())
                .with("CurrencyIsoCode", a.currency),
        )?;
        seed_lines(&sf, &opportunity, &products, a.currency, n)?;
        deals.push(Deal {
            opportunity,
            account,
            account_name,
            currency: a.currency,
        });
    }

    // Closed Won: Salesforce calls cashloop (the trigger's signed callout), cashloop does the rest.
    let mut won_at = Vec::new();
    for d in &deals {
        sf.update_as_user(
            "Opportunity",
            &d.opportunity,
            &Record::new("Opportunity").with("StageName", "Closed Won"),
        )
        .map_err(|e| anyhow::anyhow!("closing {}: {e:?}", d.opportunity))?;
        won_at.push(Instant::now());
    }
    let field = |id: &str, f: &str| -> Option<String> {
        sf.record("Opportunity", id).and_then(|r| {
            r.get(f).and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_decimal().map(|d| d.normalize().to_string()))
            })
        })
    };
    let mut latencies_ms: Vec<Option<f64>> = vec![None; deals.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies_ms.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, d) in deals.iter().enumerate() {
            if latencies_ms[i].is_none()
                && field(&d.opportunity, "Sage_Invoice_Number__c").is_some()
            {
                latencies_ms[i] = Some(won_at[i].elapsed().as_secs_f64() * 1000.0);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let invoiced = latencies_ms.iter().filter(|l| l.is_some()).count();

    // Payments: a card on the first deal (in full), a partial card payment on the EUR one.
    let call = |method: &'static str, path: String, key: Option<String>, body: Value| {
        let req = http
            .request(
                method.parse().unwrap_or(reqwest::Method::POST),
                format!("{base}{path}"),
            )
            .bearer_auth(&admin_key)
            .json(&body);
        let req = match key {
            Some(k) => req.header("Idempotency-Key", k),
            None => req,
        };
        async move {
            let r = req.send().await?;
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::ensure!(status.is_success(), "{method} {path}: {status} {v}");
            Ok::<Value, anyhow::Error>(v)
        }
    };
    let mut payments = Vec::new();
    for (i, share) in [(0usize, 100u32), (2, 40)] {
        let Some(d) = deals.get(i) else { continue };
        let Some(balance) = field(&d.opportunity, "Balance_Due__c") else {
            continue;
        };
        let Some(invoice) = field(&d.opportunity, "Sage_Invoice_Number__c") else {
            continue;
        };
        let due: rust_decimal::Decimal = balance.parse()?;
        let amount = (due * rust_decimal::Decimal::from(share)
            / rust_decimal::Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToZero);
        let token = call(
            "POST",
            "/v1/tokens".into(),
            Some(format!("sandbox-token-{i}")),
            json!({"type": "card", "card": {"number": "4111111111111111", "exp_month": 12, "exp_year": 2030, "name": d.account_name}}),
        )
        .await?;
        let pay = call(
            "POST",
            "/v1/payments".into(),
            Some(format!("sandbox-pay-{i}")),
            json!({"payment_method": token["token"], "amount": amount.to_string(), "currency": d.currency,
                   "opportunity_id": d.opportunity, "account_id": d.account, "invoice_refs": [invoice]}),
        )
        .await?;
        payments.push((
            i,
            pay["id"].as_str().unwrap_or("?").to_owned(),
            amount,
            pay["status"].as_str().unwrap_or("?").to_owned(),
        ));
    }
    // A hosted payment page for Globex's unpaid invoice.
    let mut pay_link = None;
    if let Some(d) = deals.get(1)
        && let (Some(balance), Some(invoice)) = (
            field(&d.opportunity, "Balance_Due__c"),
            field(&d.opportunity, "Sage_Invoice_Number__c"),
        )
    {
        let link = call(
            "POST",
            "/v1/payment_links".into(),
            Some("sandbox-link-1".into()),
            json!({"opportunity_id": d.opportunity, "account_id": d.account, "amount": balance,
                   "currency": d.currency, "invoice_ref": invoice, "description": format!("Invoice {invoice}")}),
        )
        .await?;
        pay_link = link["url"].as_str().map(str::to_owned);
    }
    // A cheque keyed into Intacct for Hooli's invoice.
    let mut cheque = None;
    if let Some(d) = deals.get(3) {
        let invoice = field(&d.opportunity, "Sage_Invoice_Number__c");
        let client = {
            let mut c = IntacctConfig::new(
                &ia_cfg.sender_id,
                Secret::new(&ia_cfg.sender_password),
                &ia_cfg.company_id,
                UserAuth::Login {
                    user_id: ia_cfg.users[0].0.clone(),
                    password: Secret::new(&ia_cfg.users[0].1),
                },
            );
            c.endpoint_url = ia.endpoint_url();
            c.entity = Some("UK".into());
            IntacctClient::new(c)?
        };
        if let Some(no) = invoice {
            let inv = client
                .read_by_query_all("ARINVOICE", &[], &format!("RECORDID = '{no}'"), 10)
                .await?;
            if let Some(inv) = inv.first() {
                let due = inv
                    .text_at("TRX_TOTALDUE")
                    .or(inv.text_at("TOTALDUE"))
                    .unwrap_or("0")
                    .to_owned();
                let record = Element::new("ARPYMT")
                    .with_leaf("FINANCIALENTITY", "BOA")
                    .with_leaf("PAYMENTMETHOD", "Printed Check")
                    .with_leaf("CUSTOMERID", inv.text_at("CUSTOMERID").unwrap_or_default())
                    .with_leaf("DOCNUMBER", "CHK-20931")
                    .with_leaf(
                        "RECEIPTDATE",
                        chrono::Utc::now().format("%m/%d/%Y").to_string(),
                    )
                    .with_leaf("CURRENCY", d.currency)
                    .with(
                        Element::new("ARPYMTDETAILS").with(
                            Element::new("ARPYMTDETAIL")
                                .with_leaf("RECORDKEY", inv.text_at("RECORDNO").unwrap_or_default())
                                .with_leaf("TRX_PAYMENTAMOUNT", &due),
                        ),
                    );
                client.create("sandbox-cheque-20931", vec![record]).await?;
                cheque = Some((no, due));
                // Read Intacct now rather than at the next scheduled pull.
                call("POST", "/v1/sync/intacct/pull".into(), None, json!({}))
                    .await
                    .ok();
            }
        }
    }
    // A goodwill credit granted in Salesforce on Globex's deal: pulled now (the schedule
    // would pull it within a minute) and turned into a credit memo in Intacct.
    let mut credit = None;
    // Read before the credit is granted: the loop can be faster than this process.
    let globex_due_before = deals
        .get(1)
        .and_then(|d| field(&d.opportunity, "Balance_Due__c"));
    if let Some(d) = deals.get(1) {
        let memo = one(
            "Cashloop_Credit_Memo__c",
            Record::new("Cashloop_Credit_Memo__c")
                .with("Name", "Goodwill credit")
                .with("Opportunity__c", d.opportunity.as_str())
                .with("Amount__c", "500.00".parse::<rust_decimal::Decimal>()?)
                .with("Reason__c", "Goodwill: onboarding started late"),
        )?;
        sync::jobs::Jobs::new(db.clone())
            .enqueue(sync::jobs::NewJob::new(
                sync::flows::PULL,
                json!({"object": "Cashloop_Credit_Memo__c"}),
            ))
            .await?;
        credit = Some(memo);
    }
    // Read the vendors and bills now (the schedule would within its interval).
    for entity in ["US", "UK"] {
        sync::jobs::Jobs::new(db.clone())
            .enqueue(sync::jobs::NewJob::new(
                sync::vendors::PULL,
                json!({"entity": entity}),
            ))
            .await?;
    }
    // Wait for the payments to show on the Opportunities.
    let settle_deadline = Instant::now() + Duration::from_secs(30);
    let want: Vec<(usize, &str)> = payments
        .iter()
        .map(|(i, _, _, _)| (*i, if *i == 0 { "Paid" } else { "Partially Paid" }))
        .chain(cheque.iter().map(|_| (3usize, "Paid")))
        .collect();
    let credited = |memo: &Option<String>| {
        memo.as_ref().is_none_or(|m| {
            sf.record("Cashloop_Credit_Memo__c", m)
                .is_some_and(|r| r.get_str("Sage_Adjustment_Id__c").is_some())
                && deals
                    .get(1)
                    .and_then(|d| field(&d.opportunity, "Balance_Due__c"))
                    != globex_due_before
        })
    };
    while Instant::now() < settle_deadline
        && !(credited(&credit)
            && sf.count(sync::vendors::BILL_OBJECT) > 0
            && want.iter().all(|(i, s)| {
                field(&deals[*i].opportunity, "Payment_Status__c").as_deref() == Some(*s)
            }))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if Instant::now() >= settle_deadline {
        // Say what is still outstanding rather than print a summary that looks complete.
        for (i, s) in &want {
            let got = field(&deals[*i].opportunity, "Payment_Status__c");
            if got.as_deref() != Some(*s) {
                eprintln!(
                    "still waiting: {} Payment_Status__c {got:?}, expected {s}",
                    deals[*i].account_name
                );
            }
        }
        if !credited(&credit) {
            eprintln!("still waiting: the credit memo on Globex Inc");
        }
        if sf.count(sync::vendors::BILL_OBJECT) == 0 {
            eprintln!("still waiting: the AP bill in Salesforce");
        }
    }

    // The summary.
    let mut sorted: Vec<f64> = latencies_ms.iter().flatten().copied().collect();
    sorted.sort_by(f64::total_cmp);
    println!();
    println!(
        "cashloop sandbox — the loop ran in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("  cashloop API        {base}   (Authorization: Bearer {admin_key})");
    println!("  operator console    {base}/console   (user admin, password {console_password})");
    if let Some(url) = &pay_link {
        println!("  payment page        {url}");
    }
    println!("  Salesforce sim      {}", sf.base_url());
    println!("  Sage Intacct sim    {}", ia.endpoint_url());
    println!("  Authorize.Net sim   {}", authnet.endpoint());
    println!("  data directory      {}", dir.display());
    println!("  configuration       {}", config_path.display());
    println!();
    println!("Closed Won → invoice (entity, customer, invoice number, status, balance due):");
    for d in deals.iter().take(ACCOUNTS.len()) {
        println!(
            "  {:<22} {}  {:<22} {:<14} {:<14} {:>10}",
            d.account_name,
            d.currency,
            field(&d.opportunity, "Sage_Invoice_Number__c").unwrap_or_else(|| "(not yet)".into()),
            field(&d.opportunity, "Sage_Invoice_Status__c").unwrap_or_default(),
            field(&d.opportunity, "Payment_Status__c").unwrap_or_default(),
            field(&d.opportunity, "Balance_Due__c")
                .and_then(|b| b.parse::<rust_decimal::Decimal>().ok())
                .map(|b| format!("{b:.2}"))
                .unwrap_or_default(),
        );
    }
    if deals.len() > ACCOUNTS.len() {
        println!("  … and {} more deals", deals.len() - ACCOUNTS.len());
    }
    println!();
    println!(
        "Intacct now holds {} customers (one linked, not duplicated), {} items, {} invoices, {} AR payments",
        ia.records("CUSTOMER").len(),
        ia.records("ITEM").len(),
        ia.records("ARINVOICE").len(),
        ia.records("ARPYMT").len()
    );
    println!("Payments through the gateway:");
    print_payments(&deals, &payments);
    if let Some((no, due)) = &cheque {
        println!("A cheque keyed into Intacct: {no}  {due}");
    }
    if let Some(m) = &credit {
        let r = sf.record("Cashloop_Credit_Memo__c", m);
        println!(
            "A credit granted in Salesforce (Globex Inc, 500.00): credit memo {} {}",
            r.as_ref()
                .and_then(|r| r.get_str("Sage_Adjustment_Id__c"))
                .unwrap_or("(not yet)"),
            r.as_ref()
                .and_then(|r| r.get_str("Status__c"))
                .unwrap_or("")
        );
    }
    println!(
        "Vendors and AP bills from Intacct in Salesforce: {} vendor account(s), {} bill(s)",
        sf.find("Account", "Type", "Vendor").len(),
        sf.count(sync::vendors::BILL_OBJECT)
    );
    Api {
        http: http.clone(),
        base: base.clone(),
        admin_key: admin_key.clone(),
    }
    .print_trial_balance()
    .await;
    println!();
    println!("Try:  curl -H 'Authorization: Bearer {admin_key}' {base}/v1/sync/status");
    println!("      curl -H 'Authorization: Bearer {admin_key}' {base}/v1/ledger/trial-balance");
    let w_credit = credit
        .iter()
        .filter(|m| {
            sf.record("Cashloop_Credit_Memo__c", m)
                .is_some_and(|r| r.get_str("Sage_Adjustment_Id__c").is_some())
        })
        .count();
    let figures = json!({
        "deals": deals.len(),
        "invoiced": invoiced,
        "closed_won_to_invoice_ms_p50": percentile(&sorted, 50.0),
        "closed_won_to_invoice_ms_p95": percentile(&sorted, 95.0),
        "closed_won_to_invoice_ms_max": sorted.last().copied().unwrap_or(0.0),
        "payments": payments.len(),
        "cheques": cheque.iter().count(),
        "credit_memos": w_credit,
        "ap_bills_in_salesforce": sf.count(sync::vendors::BILL_OBJECT),
        "intacct_customers": ia.records("CUSTOMER").len(),
        "intacct_invoices": ia.records("ARINVOICE").len(),
        "intacct_ar_payments": ia.records("ARPYMT").len(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{figures}");
    anyhow::ensure!(
        invoiced == deals.len(),
        "only {invoiced} of {} deals were invoiced within 60 s; see `cashloop sync jobs --status dead`",
        deals.len()
    );
    if args.exit {
        let _ = stop_tx.send(());
        let _ = server.await;
        return Ok(());
    }
    println!();
    println!("The sandbox keeps running; Ctrl-C stops it.");
    tokio::signal::ctrl_c().await?;
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
