//! `cashloop sandbox --sage sage100|businessworks`: the same seeded deals through an on-premise
//! Sage line. The server, the Salesforce simulator and the line's simulator on loopback, and
//! **the agent started in-process**, dialling the server as it would from the customer's
//! network: Closed Won → commands → customers and orders in Sage (web services for Sage 100,
//! import files for BusinessWorks) → orders invoiced in the simulator (what people do in Sage)
//! → read back over the real ODBC driver → Salesforce and the ledger → card payments. On Sage
//! 100 they become Visual Integrator cash receipts (the simulator runs the VI job every
//! quarter second) and come back as lower balances; on BusinessWorks they wait in the review
//! queue for a person, who then keys them in BusinessWorks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::Digest;
use sync::agent_exec::CommandExecutor;
use sync::businessworks::{self as bw, BwExecutor, BwNames, BwState, ImportFolder, Reader};
use sync::odbc::Source;
use sync::sage100::agent::{AgentOptions, Executor, StateStore, ViFolder};
use sync::sage100::simulator::{InvoiceOrder, Simulator as S100Sim};
use sync::sage100::soap::Client as S100Client;
use tokio::sync::watch;

use super::{
    ACCOUNTS, Api, PRODUCTS, SandboxArgs, close_won, opportunity_field, seed_deals, wait_for_field,
    wait_payment_status, write_secret,
};

const S100_USER: &str = "cashloop";
const S100_COMPANY: &str = "ABC";
/// The sandbox company's one currency (these lines keep one).
const CURRENCY: &str = "USD";

/// The line's simulator, as the sandbox drives it.
enum Sage {
    S100(S100Sim),
    Bw(Box<bw::simulator::Simulator>),
}

impl Sage {
    /// Invoices an order in full (8.25 % tax on Sage 100, freight 25.00 on BusinessWorks, to
    /// show both in the ledger); its invoice number.
    async fn invoice(&self, order_no: &str) -> anyhow::Result<String> {
        match self {
            Sage::S100(s) => {
                let order = s
                    .sales_orders()
                    .into_iter()
                    .find(|o| o.sales_order_no == order_no)
                    .ok_or_else(|| anyhow::anyhow!("Sage 100 has no order {order_no}"))?;
                let mut sales = rust_decimal::Decimal::ZERO;
                for l in &order.lines {
                    let q: rust_decimal::Decimal = l.quantity_ordered.parse()?;
                    let p: rust_decimal::Decimal = l.unit_price.parse()?;
                    sales += (q * p).round_dp(2);
                }
                // 8.25 %, to the cent, half away from zero.
                let tax = (sales * rust_decimal::Decimal::new(825, 4)).round_dp_with_strategy(
                    2,
                    rust_decimal::RoundingStrategy::MidpointAwayFromZero,
                );
                s.invoice_order(&InvoiceOrder {
                    sales_order_no: order_no.to_owned(),
                    sales_tax_minor: minor_units(tax)?,
                    ..InvoiceOrder::default()
                })
                .map_err(|e| anyhow::anyhow!("invoicing {order_no}: {e}"))
            }
            Sage::Bw(s) => s
                .invoice_order(order_no, 0, 2_500)
                .await
                .map_err(|e| anyhow::anyhow!("invoicing {order_no}: {e}")),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Sage::S100(_) => "sage100",
            Sage::Bw(_) => "businessworks",
        }
    }
}

pub async fn run(args: SandboxArgs, dir: PathBuf, started: Instant) -> anyhow::Result<()> {
    let line = args.sage.clone();
    let db_path = dir.join("cashloop.db");
    let p = super::prelude(&args, &dir).await?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let agent_key = hex::encode(raw);
    let agent_hash = hex::encode(sha2::Sha256::digest(agent_key.as_bytes()));
    let agent_name = format!("{line}-agent");
    let division = if line == "sage100" { "01" } else { "00" };
    let toml = format!(
        r#"{common}[[agents]]
name = "{agent_name}"
key_sha256 = "{agent_hash}"
lease_ms = 30000
[sync.{line}]
agent = "{agent_name}"
ar_division_no = "{division}"
currency = "{CURRENCY}"
poll_interval_s = 1
[sync.{line}.ledger.{CURRENCY}]
entity = "US"
receivable = "1200"
revenue = "4000"
tax = "2200"
cash = "1010"
"#,
        common = p.common_toml(&db_path),
    );

    // The line's simulator, and the agent for it (on the "customer's network": the same machine
    // here). It dials out to the server, backing off until the server answers.
    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let codes: Vec<&str> = PRODUCTS.iter().map(|p| p.1).collect();
    let opts = AgentOptions {
        server: p.base.clone(),
        name: agent_name.clone(),
        key: agent_key,
        wait_ms: 2_000,
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(1_000),
    };
    let (agent_stop, agent_stopped) = watch::channel(false);
    let (sage, agent) = match line.as_str() {
        "sage100" => {
            let mut pw = [0u8; 12];
            getrandom::fill(&mut pw).map_err(|e| anyhow::anyhow!("random: {e}"))?;
            let password = hex::encode(pw);
            write_secret(&agent_dir, "sage100-password", &password)?;
            let sim = S100Sim::start_at(
                &dir.join("sage100-abc.db"),
                S100_USER,
                &password,
                S100_COMPANY,
                &codes,
            )
            .await
            .map_err(|e| anyhow::anyhow!("Sage 100 simulator: {e}"))?;
            let vi = agent_dir.join("vi-import");
            std::fs::create_dir_all(&vi)?;
            sim.set_vi_folder(&vi);
            let executor = Executor {
                client: S100Client::new(&sim.url(), S100_USER, &password, S100_COMPANY),
                state: StateStore::open(&agent_dir.join("agent-state.db")).await?,
                sf_udf: "UDF_SF_ID".into(),
                vi_folder: Some(ViFolder(vi)),
                odbc: Some(Source::new(sim.odbc_connection_string())),
            };
            (Sage::S100(sim), spawn_agent(opts, executor, agent_stopped))
        }
        _ => {
            let import = ImportFolder::new(agent_dir.join("bw-import"));
            let names = BwNames::default();
            let sim = bw::simulator::Simulator::create(
                &dir.join("businessworks.db"),
                names.clone(),
                import.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("BusinessWorks simulator: {e}"))?;
            for (name, code, usd, _) in PRODUCTS {
                sim.add_item(code, name, minor_units(usd.parse()?)?, "S")
                    .await
                    .map_err(|e| anyhow::anyhow!("BusinessWorks item {code}: {e}"))?;
            }
            let executor = BwExecutor::new(
                Reader::new(sim.source(), names),
                BwState::open(&agent_dir.join("agent-state.db")).await?,
                import,
            );
            (
                Sage::Bw(Box::new(sim)),
                spawn_agent(opts, executor, agent_stopped),
            )
        }
    };

    let super::Prelude {
        listener,
        base,
        admin_key,
        sf,
        ..
    } = p;
    let super::Started {
        config_path,
        db,
        stop_tx,
        server,
    } = super::start(&dir, &toml, listener, &base).await?;
    let http = gateway::http::client();
    let api = Api {
        http: http.clone(),
        base: base.clone(),
        admin_key: admin_key.clone(),
    };

    // BusinessWorks' import utility and Sage 100's Visual Integrator job run on their own
    // schedule.
    let background = match &sage {
        Sage::Bw(s) => s.spawn_polling(Duration::from_millis(100)),
        Sage::S100(s) => {
            let sim_url = s.base_url();
            let http = http.clone();
            tokio::spawn(async move {
                loop {
                    let _ = http.post(format!("{sim_url}/sim/vi/run")).send().await;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        }
    };

    let deals = seed_deals(&sf, args.extra_deals, Some(CURRENCY))?;
    let field = |id: &str, f: &str| opportunity_field(&sf, id, f);
    close_won(&sf, &deals)?;
    let ordered = wait_for_field(&sf, &deals, "Sage_Order_Number__c", 90).await;

    // People invoice the orders in Sage; the agent reads them back over ODBC.
    let mut invoices = Vec::new();
    for d in &deals {
        let Some(order) = field(&d.opportunity, "Sage_Order_Number__c") else {
            continue;
        };
        invoices.push(sage.invoice(&order).await?);
    }
    api.call(
        reqwest::Method::POST,
        &format!("/v1/sync/{line}/pull"),
        None,
        serde_json::Value::Null,
    )
    .await?;
    let invoiced = wait_for_field(&sf, &deals, "Sage_Invoice_Number__c", 60).await;

    // Card payments: the first deal in full, 40 % of the third.
    let mut payments = Vec::new();
    for (i, share) in [(0usize, 100u32), (2, 40)] {
        if let Some((id, amount, status)) = api.pay_share(&sf, &deals, i, share).await? {
            payments.push((i, id, amount, status));
        }
    }
    let want: Vec<(usize, &str)> = payments
        .iter()
        .map(|(i, _, _, _)| (*i, if *i == 0 { "Paid" } else { "Partially Paid" }))
        .collect();
    // BusinessWorks: the payments wait in review; a person keys them in BusinessWorks, and
    // the next read brings the lower balance back.
    let mut review_items = 0;
    if let Sage::Bw(s) = &sage {
        review_items = wait_review_items(&db, payments.len()).await;
        for (i, _, amount, _) in &payments {
            let Some(invoice) = field(&deals[*i].opportunity, "Sage_Invoice_Number__c") else {
                continue;
            };
            s.apply_payment(&invoice, minor_units(*amount)?)
                .await
                .map_err(|e| anyhow::anyhow!("keying the payment in BusinessWorks: {e}"))?;
        }
    }
    let paid = wait_payment_status(&sf, &deals, &want, 60).await;

    let label = match &sage {
        Sage::S100(_) => "Sage 100",
        Sage::Bw(_) => "Sage BusinessWorks",
    };
    println!();
    println!(
        "cashloop sandbox ({label}, through the on-premise agent) — the loop ran in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("  cashloop API        {base}   (Authorization: Bearer {admin_key})");
    println!("  Salesforce sim      {}", sf.base_url());
    match &sage {
        Sage::S100(s) => {
            println!(
                "  Sage 100 sim        {}   (eBusiness Web Services)",
                s.url()
            );
            println!(
                "  Sage 100 ODBC       Driver=SQLite3;Database={}",
                s.database_path().display()
            );
        }
        Sage::Bw(s) => {
            println!("  BusinessWorks ODBC  {}", s.connection_string());
        }
    }
    println!(
        "  agent               {agent_name} (in-process; state in {})",
        agent_dir.display()
    );
    println!("  data directory      {}", dir.display());
    println!("  configuration       {}", config_path.display());
    println!();
    println!("Closed Won → {label} (account, customer, order, invoice, status, balance due):");
    for d in deals.iter().take(ACCOUNTS.len()) {
        let account_customer = sf
            .record("Account", &d.account)
            .and_then(|r| r.get_str("Sage_Customer_Id__c").map(str::to_owned))
            .unwrap_or_default();
        println!(
            "  {:<22} {:<14} {:<10} {:<12} {:<14} {:>10}",
            d.account_name,
            account_customer,
            field(&d.opportunity, "Sage_Order_Number__c").unwrap_or_else(|| "(not yet)".into()),
            field(&d.opportunity, "Sage_Invoice_Number__c").unwrap_or_default(),
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
    match &sage {
        Sage::S100(_) => {
            println!("Payments through the gateway, imported as Visual Integrator cash receipts:")
        }
        Sage::Bw(_) => println!(
            "Payments through the gateway (BusinessWorks: to review, then keyed in BusinessWorks):"
        ),
    }
    super::print_payments(&deals, &payments);
    api.print_trial_balance().await;
    let (customers, orders) = match &sage {
        Sage::S100(s) => (s.customers().len(), s.sales_orders().len()),
        Sage::Bw(s) => (
            s.customers().await.map(|c| c.len()).unwrap_or(0),
            usize::try_from(s.order_count().await.unwrap_or(0)).unwrap_or(0),
        ),
    };
    let vi_files = match &sage {
        Sage::S100(_) => count_files(&agent_dir.join("vi-import").join("processed")),
        Sage::Bw(_) => 0,
    };
    let figures = json!({
        "sage": sage.name(),
        "deals": deals.len(),
        "ordered": ordered,
        "invoiced": invoiced,
        "sage_customers": customers,
        "sage_orders": orders,
        "sage_invoices": invoices.len(),
        "payments": payments.len(),
        "payments_applied": paid,
        "review_items": review_items,
        "vi_files_posted": vi_files,
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{figures}");
    let stop = async move {
        background.abort();
        let _ = agent_stop.send(true);
        let _ = agent.await;
        let _ = stop_tx.send(());
        let _ = server.await;
    };
    if invoiced != deals.len() || ordered != deals.len() {
        stop.await;
        anyhow::bail!(
            "only {ordered} of {} deals were ordered and {invoiced} invoiced in time; see `cashloop sync jobs --status dead`",
            deals.len()
        );
    }
    if !args.exit {
        println!();
        println!("The sandbox keeps running; Ctrl-C stops it.");
        tokio::signal::ctrl_c().await?;
    }
    stop.await;
    Ok(())
}

/// Runs `cashloop agent`'s loop with `executor` until `stop` turns true.
fn spawn_agent<E: CommandExecutor + Send + Sync + 'static>(
    opts: AgentOptions,
    executor: E,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(sync::sage100::agent::run(opts, executor, async move {
        let _ = stop.wait_for(|s| *s).await;
    }))
}

/// A 2-decimal amount in minor units (refused if it has fractions of a cent).
fn minor_units(amount: rust_decimal::Decimal) -> anyhow::Result<i64> {
    let m = (amount * rust_decimal::Decimal::ONE_HUNDRED).normalize();
    anyhow::ensure!(m.scale() == 0, "{amount} has fractions of a cent");
    Ok(i64::try_from(m.mantissa())?)
}

/// Waits (at most 30 s) for `n` open review items (the console's review queue); answers how
/// many there are.
async fn wait_review_items(db: &db::Db, n: usize) -> usize {
    let review = sync::review::Review::new(db.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = review.open_items(100).await.map(|i| i.len()).unwrap_or(0);
        if open >= n || Instant::now() > deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "csv"))
                .count()
        })
        .unwrap_or(0)
}
