//! `cashloop sandbox --sage x3`: the same seeded deals through Sage X3 instead of Intacct. The
//! server, the Salesforce simulator and the X3 simulator (REST) on loopback, the gateway on its
//! sandbox processor; Closed Won → customers and orders in X3 (routed to two folders) → each
//! order invoiced by the simulator's control endpoint → pulled → Salesforce and the ledger →
//! card payments applied as X3 receipts.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use sync::x3::X3Record;
use sync::x3::simulator::{Simulator as X3Sim, SimulatorConfig as X3SimConfig};

use super::{
    ACCOUNTS, Api, PRODUCTS, SandboxArgs, close_won, opportunity_field, seed_deals, wait_for_field,
    wait_payment_status, write_secret,
};

/// The folders the sandbox routes to.
const FOLDERS: [&str; 2] = ["SEED", "UKLIVE"];

pub async fn run(args: SandboxArgs, dir: PathBuf, started: Instant) -> anyhow::Result<()> {
    let db_path = dir.join("cashloop.db");
    let p = super::prelude(&args, &dir).await?;
    let x3 = X3Sim::start(X3SimConfig::default()).await;
    let (x3_user, x3_password) = x3.config().users[0].clone();
    let x3_password = write_secret(&dir, "x3-password", &x3_password)?;
    let toml = format!(
        r#"{common}[sync.x3]
base_url = "{x3_url}"
folder = "SEED"
sales_site = "US011"
shipping_site = "US012"
user = "{x3_user}"
password = {{ file = {x3_password:?} }}
transport = "rest"
bank = "BNK01"
default_currency = "USD"
poll_interval_s = 1
[[sync.x3.routes]]
billing_countries = ["GB", "IE"]
folder = "UKLIVE"
sales_site = "GB011"
shipping_site = "GB012"
[[sync.x3.routes]]
billing_countries = ["DE", "FR"]
folder = "SEED"
sales_site = "FR011"
shipping_site = "FR012"
[sync.x3.ledger.USD]
entity = "US"
receivable = "1200"
revenue = "4000"
tax = "2200"
cash = "1010"
[sync.x3.ledger.EUR]
entity = "UK"
receivable = "1200"
revenue = "4000"
tax = "2200"
cash = "1010"
"#,
        common = p.common_toml(&db_path),
        x3_url = x3.base_url(),
    );
    let super::Prelude {
        listener,
        base,
        admin_key,
        sf,
        ..
    } = p;
    let super::Started {
        config_path,
        db: _,
        stop_tx,
        server,
    } = super::start(&dir, &toml, listener, &base).await?;
    let http = gateway::http::client();

    // X3's item master holds the products Salesforce sells (cashloop never creates items).
    for folder in FOLDERS {
        for (name, code, _, _) in PRODUCTS {
            x3.insert(
                folder,
                "ITMMASTER",
                X3Record::new()
                    .with("ITMREF", code)
                    .with("ITMDES1", name)
                    .with("STU", "UN"),
            );
        }
    }
    let deals = seed_deals(&sf, args.extra_deals, None)?;
    let field = |id: &str, f: &str| opportunity_field(&sf, id, f);

    // Closed Won through the trigger's signed callout: customers and orders in X3.
    close_won(&sf, &deals)?;
    let ordered = wait_for_field(&sf, &deals, "Sage_Order_Number__c", 60).await;

    // X3 invoices the orders (here: the simulator's control endpoint, as after delivery);
    // the scheduled pull brings the invoices to Salesforce and the ledger.
    for folder in FOLDERS {
        for o in x3.records(folder, "SORDER") {
            let r = http
                .post(format!(
                    "{}/sim/{folder}/SORDER/{}/invoice",
                    x3.base_url(),
                    o.text("SOHNUM")
                ))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "invoicing {}", o.text("SOHNUM"));
        }
    }
    // Read X3 now (POST /v1/sync/x3/pull) rather than at the next scheduled pull.
    let r = http
        .post(format!("{base}/v1/sync/x3/pull"))
        .bearer_auth(&admin_key)
        .send()
        .await?;
    anyhow::ensure!(
        r.status() == reqwest::StatusCode::ACCEPTED,
        "POST /v1/sync/x3/pull: {}",
        r.status()
    );
    let invoiced = wait_for_field(&sf, &deals, "Sage_Invoice_Number__c", 60).await;

    // Card payments: the first deal in full, 40 % of the EUR one.
    let api = Api {
        http: http.clone(),
        base: base.clone(),
        admin_key: admin_key.clone(),
    };
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
    let paid = wait_payment_status(&sf, &deals, &want, 30).await;

    println!();
    println!(
        "cashloop sandbox (Sage X3) — the loop ran in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("  cashloop API        {base}   (Authorization: Bearer {admin_key})");
    println!("  Salesforce sim      {}", sf.base_url());
    println!(
        "  Sage X3 sim         {}   (REST; folders SEED, UKLIVE)",
        x3.base_url()
    );
    println!("  data directory      {}", dir.display());
    println!("  configuration       {}", config_path.display());
    println!();
    println!(
        "Sales orders in X3 (folder, SOHNUM, sites, customer, CUSORDREF = Opportunity, total):"
    );
    let mut orders = 0;
    let mut invoices = 0;
    let mut receipts = 0;
    for folder in FOLDERS {
        for o in x3.records(folder, "SORDER") {
            orders += 1;
            println!(
                "  {folder:<7} {:<16} {}/{}  {:<7} {}  {:>10} {}",
                o.text("SOHNUM"),
                o.text("SALFCY"),
                o.text("STOFCY"),
                o.text("BPCORD"),
                o.text("CUSORDREF"),
                o.text("ORDNOT"),
                o.text("CUR"),
            );
        }
    }
    println!("Invoices in X3 (NUM, order, incl. tax, paid):");
    for folder in FOLDERS {
        for i in x3.records(folder, "SINVOICE") {
            invoices += 1;
            println!(
                "  {folder:<7} {:<16} {:<16} {:>10} {:>10} {}",
                i.text("NUM"),
                i.text("SOHNUM"),
                i.text("AMTATI"),
                i.text("PAYCUR"),
                i.text("CUR"),
            );
        }
        receipts += x3.records(folder, "PAYMENTH").len();
    }
    println!();
    println!("Closed Won → X3 (account, order, invoice, status, balance due):");
    for d in deals.iter().take(ACCOUNTS.len()) {
        println!(
            "  {:<22} {}  {:<16} {:<16} {:<14} {:>10}",
            d.account_name,
            d.currency,
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
    println!("Payments through the gateway, applied as X3 receipts:");
    super::print_payments(&deals, &payments);
    api.print_trial_balance().await;
    let figures = json!({
        "sage": "x3",
        "deals": deals.len(),
        "ordered": ordered,
        "invoiced": invoiced,
        "payments": payments.len(),
        "payments_applied": paid,
        "x3_customers": FOLDERS.iter().map(|f| x3.records(f, "BPCUSTOMER").len()).sum::<usize>(),
        "x3_orders": orders,
        "x3_invoices": invoices,
        "x3_receipts": receipts,
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{figures}");
    anyhow::ensure!(
        invoiced == deals.len() && ordered == deals.len(),
        "only {ordered} of {} deals were ordered and {invoiced} invoiced within 60 s; see `cashloop sync jobs --status dead`",
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
