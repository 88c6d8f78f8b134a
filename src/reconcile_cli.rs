//! `cashloop reconcile …`: imports into the database (`import`), runs over stored inputs or
//! over files (`run`), stored runs (`runs`, `report`), approving adjusting entries (`approve`)
//! and applying matched payments in Sage through the sync job queue (`apply`).
//!
//! Bad input stops before anything is written or run, with every bad line listed (exit 2).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Args, Subcommand, ValueEnum};
use db::Db;
use reconcile::Kind;
use reconcile::store::{RunReport, RunRequest, Store, StoreError};

use crate::config::Config;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    Json,
    Csv,
    Html,
}

#[derive(Debug, Subcommand)]
pub enum ReconcileCommand {
    /// Imports a CSV file of one kind into the database (all-or-nothing; importing the same
    /// file twice adds nothing).
    Import(ImportArgs),
    /// Runs a period over the stored inputs (`--period`), or over files (`--payments …`).
    Run(RunArgs),
    /// Stored runs, newest first.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// A stored run: totals per category and the item lists.
    Report(ReportArgs),
    /// Approves proposed adjusting entries of a run and posts them to the ledger.
    Approve(ApproveArgs),
    /// Queues the matched payments of a run to be applied to their invoices in Sage Intacct.
    Apply { run: i64 },
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[arg(long)]
    pub kind: Kind,
    /// The CSV file (see `reconcile::import` for the columns of each kind).
    pub file: Option<PathBuf>,
    /// The file lists every open item (an AR aging export): items missing from it are closed.
    #[arg(long)]
    pub snapshot: bool,
    /// Instead of a file: the gateway's collected payments (with `--kind payments`). Payments
    /// on an Opportunity the loop invoiced are the loop's to apply and are left out unless
    /// `--include-applied` (for matching captures to processor deposits).
    #[arg(long, conflicts_with = "file")]
    pub from_gateway: bool,
    #[arg(long, requires = "from_gateway")]
    pub include_applied: bool,
    /// Instead of a file: the open AR invoices of every `[sync.intacct]` entity, read now
    /// (with `--kind invoices`; a snapshot: items no longer open are closed).
    #[arg(long, conflicts_with_all = ["file", "from_gateway"])]
    pub from_intacct: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The month reconciled (`2026-10`): later payments and invoices are timing (cut-off).
    #[arg(long)]
    pub period: Option<String>,
    /// Only this entity's payments and open items.
    #[arg(long)]
    pub entity: Option<String>,
    /// Match and report, store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run over files instead of the stored inputs (nothing is stored).
    #[arg(long, requires = "invoices")]
    pub payments: Option<PathBuf>,
    #[arg(long, requires = "payments")]
    pub invoices: Option<PathBuf>,
    #[arg(long, requires = "payments")]
    pub settlements: Option<PathBuf>,
    #[arg(long, requires = "payments")]
    pub rates: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "json")]
    pub format: ReportFormat,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    pub run: i64,
    #[arg(long, value_enum, default_value = "json")]
    pub format: ReportFormat,
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    pub run: i64,
    /// The adjustment numbers to approve (repeatable), as `report` lists them.
    #[arg(long = "adjustment", required_unless_present = "all")]
    pub adjustments: Vec<i64>,
    /// Every proposed adjustment of the run.
    #[arg(long, conflicts_with = "adjustments")]
    pub all: bool,
}

/// The last day of `YYYY-MM`.
pub fn period_end(period: &str) -> anyhow::Result<NaiveDate> {
    reconcile::store::period_bounds(period)
        .map(|(_, last)| last)
        .with_context(|| format!("--period: {period:?} is not a month such as 2026-10"))
}

/// Runs one command; the exit code (2: the input was refused, errors on stderr).
pub async fn command(config: &Config, cmd: ReconcileCommand, actor: &str) -> anyhow::Result<u8> {
    if let ReconcileCommand::Run(args) = &cmd
        && args.payments.is_some()
    {
        return Ok(if run_files(config, args)? { 0 } else { 2 });
    }
    let db = crate::cli::open_db(config).await?;
    let store = Store::new(db.clone());
    let code = match cmd {
        ReconcileCommand::Import(args) => import(config, &store, &args, actor).await?,
        ReconcileCommand::Run(args) => run_stored(config, &store, &args, actor).await?,
        ReconcileCommand::Runs { limit } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&store.runs(limit).await?)?
            );
            0
        }
        ReconcileCommand::Report(args) => {
            let report = store.report(args.run).await.map_err(not_found)?;
            write_report(&report, args.format, args.out.as_ref())?;
            0
        }
        ReconcileCommand::Approve(args) => {
            let ledger = crate::cli::open_ledger(config, db.clone());
            let only = (!args.all).then_some(args.adjustments.as_slice());
            let done = store
                .approve(&ledger, args.run, only, &config.reconcile.accounts, actor)
                .await
                .map_err(not_found)?;
            println!("{}", serde_json::to_string_pretty(&done)?);
            0
        }
        ReconcileCommand::Apply { run } => {
            let queued = apply(config, &store, run).await?;
            println!(
                "{}",
                serde_json::json!({ "run": run, "jobs_queued": queued })
            );
            0
        }
    };
    db.close().await;
    Ok(code)
}

fn not_found(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::RunNotFound(id) => anyhow::anyhow!("RUN: there is no reconciliation run {id}"),
        other => other.into(),
    }
}

async fn import(
    config: &Config,
    store: &Store,
    args: &ImportArgs,
    actor: &str,
) -> anyhow::Result<u8> {
    let mut snapshot = args.snapshot;
    let (bytes, origin) = if args.from_gateway {
        anyhow::ensure!(
            args.kind == Kind::Payments,
            "--from-gateway imports payments: use --kind payments"
        );
        (
            gateway_payments_csv(store.db(), args.include_applied).await?,
            "gateway".to_owned(),
        )
    } else if args.from_intacct {
        anyhow::ensure!(
            args.kind == Kind::Invoices,
            "--from-intacct imports open invoices: use --kind invoices"
        );
        let ia = config
            .sync
            .intacct
            .as_ref()
            .context("--from-intacct needs [sync.intacct] in the configuration")?;
        snapshot = true;
        (intacct_invoices_csv(ia).await?, "intacct".to_owned())
    } else {
        let file = args
            .file
            .as_ref()
            .context("FILE: give the CSV file to import (or --from-gateway)")?;
        let bytes =
            std::fs::read(file).with_context(|| format!("FILE: cannot read {}", file.display()))?;
        (bytes, format!("file:{}", file.display()))
    };
    anyhow::ensure!(
        !snapshot || args.kind == Kind::Invoices,
        "--snapshot applies to --kind invoices (open items) only"
    );
    match store
        .import(args.kind, &bytes, &origin, snapshot, actor)
        .await
    {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(0)
        }
        Err(StoreError::Invalid(invalid)) => {
            eprintln!("nothing was imported: the file has errors");
            eprintln!("{invalid}");
            Ok(2)
        }
        Err(e) => Err(e.into()),
    }
}

async fn run_stored(
    config: &Config,
    store: &Store,
    args: &RunArgs,
    actor: &str,
) -> anyhow::Result<u8> {
    let period = args
        .period
        .clone()
        .context("--period: which month to reconcile, e.g. --period 2026-10")?;
    period_end(&period)?;
    if config.reconcile.collect_gateway && !args.dry_run {
        let csv = gateway_payments_csv(store.db(), false).await?;
        match store
            .import(Kind::Payments, &csv, "gateway", false, actor)
            .await
        {
            Ok(r) if r.added + r.changed > 0 => {
                eprintln!("  gateway payments: {} new, {} changed", r.added, r.changed);
            }
            Ok(_) => {}
            // A gateway payment the reconciliation model refuses must not stop the run of
            // everything else; it is named so someone can look.
            Err(StoreError::Invalid(invalid)) => {
                eprintln!("  gateway payments not taken in:\n{invalid}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let req = RunRequest {
        period,
        entity: args.entity.clone(),
        dry_run: args.dry_run,
        actor: actor.to_owned(),
        config: config.reconcile.match_config(),
        lease_ms: config.reconcile.lease_ms,
    };
    let started = Instant::now();
    let report = match store
        .run(&req, move |phase| {
            eprintln!(
                "  {:>7} ms  {} done",
                started.elapsed().as_millis(),
                phase.as_str()
            );
        })
        .await
    {
        Ok(r) => r,
        Err(e @ StoreError::Busy { .. }) => {
            eprintln!("the run did not start: {e}");
            return Ok(3);
        }
        Err(e) => return Err(e.into()),
    };
    match report.run.id {
        Some(id) => eprintln!("run {id} stored (digest {})", report.run.digest),
        None => eprintln!("dry run: nothing stored (digest {})", report.run.digest),
    }
    write_report(&report, args.format, args.out.as_ref())?;
    Ok(0)
}

/// Queues one `intacct.apply` job per matched payment of a run (its applications as lines),
/// marking the applications queued in the same transaction. Receipts that came from Sage are
/// already applied there and are left alone.
async fn apply(config: &Config, store: &Store, run: i64) -> anyhow::Result<u64> {
    anyhow::ensure!(
        config.sync.intacct.is_some(),
        "applying payments in Sage needs [sync.intacct] in the configuration"
    );
    let pending = store.unqueued_applications(run).await.map_err(not_found)?;
    let mut by_payment: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for (a, p) in pending {
        if a.payment_source == "sage_receipt" || a.payment_currency != a.item_currency {
            continue;
        }
        by_payment
            .entry(a.payment_key.clone())
            .or_default()
            .push((a, p));
    }
    let gateway_ids = gateway_payment_ids(store.db()).await?;
    let mut queued = 0;
    for (payment_id, apps) in by_payment {
        let Some((first, payment)) = apps.first() else {
            continue;
        };
        let receipt = sync::q2c::ApplyReceipt {
            run_id: run,
            payment_id: payment_id.clone(),
            entity: payment.entity.clone(),
            customer: payment.customer.clone(),
            currency: first.payment_currency.clone(),
            date: NaiveDate::parse_from_str(&first.payment_date, "%Y-%m-%d")
                .context("stored payment date")?,
            method: match first.payment_source.as_str() {
                "gateway_capture" => "card".into(),
                _ => "ach".into(),
            },
            from_gateway: gateway_ids.contains(&payment_id),
            lines: apps
                .iter()
                .filter(|(a, _)| a.item_amount_minor > 0)
                .map(|(a, _)| sync::q2c::ApplyLine {
                    document: a.document.clone(),
                    amount_minor: a.item_amount_minor,
                })
                .collect(),
        };
        let ords: Vec<i64> = apps.iter().map(|(a, _)| a.ord).collect();
        let mut job = sync::jobs::NewJob::new(sync::q2c::APPLY, serde_json::to_value(&receipt)?);
        job.dedupe_key = Some(format!("recon-apply:{run}:{payment_id}"));
        let mut tx = store.db().begin().await?;
        if let Some(job_id) = sync::jobs::Jobs::enqueue_in(&mut tx, job).await? {
            store.mark_queued_in(&mut tx, run, &ords, job_id).await?;
            queued += 1;
        }
        tx.commit().await?;
    }
    Ok(queued)
}

async fn gateway_payment_ids(db: &Db) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let ids: Vec<String> = match db {
        Db::Postgres(p) => {
            sqlx::query_scalar("SELECT id FROM gateway_payments")
                .fetch_all(p)
                .await?
        }
        Db::Sqlite(s) => {
            sqlx::query_scalar("SELECT id FROM gateway_payments")
                .fetch_all(&s.pool)
                .await?
        }
    };
    Ok(ids.into_iter().collect())
}

type GatewayRow = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The gateway's collected payments as a payments CSV: card captures net of refunds, settled
/// ACH debits, and a returned debit as its settlement plus the return (which the engine pairs).
/// The customer and entity are the Intacct ones the loop linked (the Account's CUSTOMERID, the
/// Opportunity's entity) when there are, and the invoice the Opportunity was billed on joins
/// the payment's own invoice references. Unless `include_applied`, payments on an Opportunity
/// the loop invoiced are left out: the loop applies those in Sage (a failure is in the error
/// queue), so they are not cash waiting to be applied.
pub async fn gateway_payments_csv(db: &Db, include_applied: bool) -> anyhow::Result<Vec<u8>> {
    const SELECT: &str = "SELECT p.id, p.method_kind, p.status, p.currency, p.captured_minor, p.refunded_minor, DAY, p.entity, p.account_id, p.invoice_refs, \
        (SELECT x.sage_id FROM sync_xref x WHERE x.object = 'Account' AND x.salesforce_id = p.account_id AND x.sage_system = 'intacct'), \
        (SELECT x.sage_entity FROM sync_xref x WHERE x.object = 'Opportunity' AND x.salesforce_id = p.opportunity_id AND x.sage_system = 'intacct'), \
        (SELECT x.last_values FROM sync_xref x WHERE x.object = 'Opportunity' AND x.salesforce_id = p.opportunity_id AND x.sage_system = 'intacct') \
        FROM gateway_payments p \
        WHERE p.captured_minor > 0 AND p.status IN ('captured', 'partially_refunded', 'settled', 'returned') \
        ORDER BY p.id";
    let rows: Vec<GatewayRow> = match db {
        Db::Postgres(p) => {
            sqlx::query_as(sqlx::AssertSqlSafe(SELECT.replace(
                "DAY",
                "to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            )))
            .fetch_all(p)
            .await?
        }
        Db::Sqlite(s) => {
            sqlx::query_as(sqlx::AssertSqlSafe(
                SELECT.replace("DAY", "substr(p.created_at, 1, 10)"),
            ))
            .fetch_all(&s.pool)
            .await?
        }
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(Kind::Payments.header())?;
    for row in rows {
        let (id, method, status, currency, captured, refunded, day, entity, account, refs) = (
            row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9,
        );
        let (customer, opp_entity, opp) = (row.10, row.11, row.12);
        if opp.is_some() && !include_applied {
            continue;
        }
        let currency = ledger::Currency::parse(&currency)
            .with_context(|| format!("gateway payment {id}: currency"))?;
        let amount = |minor| ledger::Money::from_minor(minor, currency).format_amount();
        let mut reference: Vec<String> = serde_json::from_str(&refs).unwrap_or_default();
        if let Some(no) = opp
            .as_deref()
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            .and_then(|v| {
                v.get("invoice_no")
                    .and_then(|n| n.as_str())
                    .map(str::to_owned)
            })
            && !reference.contains(&no)
        {
            reference.push(no);
        }
        let customer = customer
            .or(account)
            .unwrap_or_else(|| "UNASSIGNED".to_owned());
        let entity = opp_entity.unwrap_or(entity);
        let reference = reference.join(" ");
        let mut record = |id: &str, minor: i64, reference: &str, source: &str| {
            w.write_record([
                id,
                &entity,
                &customer,
                currency.code(),
                &amount(minor),
                &day,
                reference,
                source,
                "",
            ])
        };
        match (method.as_str(), status.as_str()) {
            ("bank_account", "settled") => record(&id, captured, &reference, "ach_settlement")?,
            ("bank_account", "returned") => {
                record(&id, captured, &reference, "ach_settlement")?;
                record(&format!("{id}-return"), captured, &id, "ach_return")?;
            }
            // Not settled yet: not money received.
            ("bank_account", _) => {}
            _ if captured > refunded => {
                record(&id, captured - refunded, &reference, "gateway_capture")?
            }
            _ => {}
        }
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The open AR invoices of every configured Intacct entity as an invoices CSV (one read per
/// entity, paged). Ids are `ENTITY:RECORDNO`; amounts in the transaction currency.
pub async fn intacct_invoices_csv(ia: &crate::config::IntacctSettings) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(Kind::Invoices.header())?;
    let day = |v: Option<&str>| -> Option<String> {
        let v = v?.get(..10)?;
        NaiveDate::parse_from_str(v, "%m/%d/%Y")
            .or_else(|_| NaiveDate::parse_from_str(v, "%Y-%m-%d"))
            .ok()
            .map(|d| d.to_string())
    };
    for (entity, settings) in &ia.entities {
        let rows = settings
            .client
            .read_by_query_all(
                "ARINVOICE",
                &[
                    "RECORDNO",
                    "RECORDID",
                    "CUSTOMERID",
                    "CURRENCY",
                    "TOTALDUE",
                    "TRX_TOTALDUE",
                    "WHENCREATED",
                    "WHENDUE",
                    "MEGAENTITYID",
                ],
                "TOTALDUE > 0",
                1000,
            )
            .await
            .with_context(|| format!("reading open invoices of Intacct entity {entity}"))?;
        for r in rows {
            // A session at the top level sees every entity's invoices: keep this entity's.
            if r.text_at("MEGAENTITYID")
                .is_some_and(|m| !m.is_empty() && m != entity)
            {
                continue;
            }
            let no = r.text_at("RECORDNO").unwrap_or_default();
            let created = day(r.text_at("WHENCREATED"))
                .with_context(|| format!("ARINVOICE {no}: WHENCREATED"))?;
            let due = day(r.text_at("WHENDUE")).unwrap_or_else(|| created.clone());
            let currency = r
                .text_at("CURRENCY")
                .filter(|c| !c.is_empty())
                .unwrap_or(&ia.q2c.default_currency);
            let open = r
                .text_at("TRX_TOTALDUE")
                .filter(|v| !v.is_empty())
                .or_else(|| r.text_at("TOTALDUE"))
                .unwrap_or("0");
            let number = r
                .text_at("RECORDID")
                .filter(|v| !v.is_empty())
                .unwrap_or(no);
            w.write_record([
                &format!("{entity}:{no}"),
                number,
                "invoice",
                entity,
                r.text_at("CUSTOMERID").unwrap_or_default(),
                currency,
                open,
                &created,
                &due,
            ])?;
        }
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs over files; `Ok(false)` when the input was refused (the errors are on stderr).
fn run_files(config: &Config, args: &RunArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(
        !args.dry_run && args.entity.is_none(),
        "--dry-run and --entity apply to runs over stored inputs (a run over files stores nothing)"
    );
    let match_config = reconcile::MatchConfig {
        period_end: args.period.as_deref().map(period_end).transpose()?,
        ..config.reconcile.match_config()
    };
    let files = reconcile::InputFiles {
        payments: args.payments.clone(),
        invoices: args.invoices.clone(),
        settlements: args.settlements.clone(),
        rates: args.rates.clone(),
    };
    let inputs = match reconcile::read_inputs(&files) {
        Ok(i) => i,
        Err(errors) => {
            eprintln!("the run did not start: the input has errors");
            for e in &errors {
                eprintln!("{e}");
            }
            return Ok(false);
        }
    };
    let started = Instant::now();
    let result = reconcile::reconcile_with_progress(inputs, &match_config, &mut |phase| {
        eprintln!(
            "  {:>7} ms  {} done",
            started.elapsed().as_millis(),
            phase.as_str()
        );
    })?;
    let mut out = output(args.out.as_ref())?;
    match args.format {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &result.summary())?;
            writeln!(out)?;
        }
        ReportFormat::Csv | ReportFormat::Html => {
            let report = reconcile::store::RunReport::unstored(&result);
            write_report_to(&report, args.format, &mut out)?;
        }
    }
    out.flush()?;
    Ok(true)
}

fn output(path: Option<&PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--out {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    })
}

fn write_report(
    report: &RunReport,
    format: ReportFormat,
    path: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let mut out = output(path)?;
    write_report_to(report, format, &mut out)?;
    out.flush()?;
    Ok(())
}

fn write_report_to(
    report: &RunReport,
    format: ReportFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)?;
        }
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "kind",
                "id",
                "entity",
                "customer",
                "category",
                "rule",
                "confidence",
                "currency",
                "amount_minor",
                "applied_minor",
                "open_minor",
                "fx_difference_minor",
                "related",
            ])?;
            for r in &report.results {
                w.write_record([
                    r.kind.as_str(),
                    &r.item_key,
                    &r.entity,
                    &r.customer,
                    &r.category,
                    r.rule.as_deref().unwrap_or(""),
                    &r.confidence.to_string(),
                    &r.currency,
                    &r.amount_minor.to_string(),
                    &r.applied_minor.to_string(),
                    &r.open_minor.to_string(),
                    &r.fx_difference_minor.to_string(),
                    r.related.as_deref().unwrap_or(""),
                ])?;
            }
            w.flush()?;
        }
        ReportFormat::Html => out.write_all(html_report(report).as_bytes())?,
    }
    Ok(())
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A self-contained page (no scripts, no external assets) an auditor can keep.
pub fn html_report(report: &RunReport) -> String {
    use std::fmt::Write as _;
    let run = &report.run;
    let title = match run.id {
        Some(id) => format!("Reconciliation run {id} — {}", run.period),
        None => format!("Reconciliation (not stored) — {}", run.period),
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse;margin:1rem 0}}\
         th,td{{border:1px solid #999;padding:.25rem .5rem;text-align:left}}td.n{{text-align:right}}</style></head><body>\
         <h1>{t}</h1><p>Entity: {e} · inputs up to #{hw} · digest <code>{d}</code></p>",
        t = esc(&title),
        e = esc(if run.entity.is_empty() {
            "all"
        } else {
            &run.entity
        }),
        hw = run.high_water,
        d = esc(&run.digest),
    );
    h.push_str("<h2>Totals</h2><table><thead><tr><th scope=\"col\">Kind</th><th scope=\"col\">Category</th><th scope=\"col\">Count</th><th scope=\"col\">Amount (minor units)</th></tr></thead><tbody>");
    for (kind, cats) in &report.totals {
        for (cat, t) in cats {
            let amounts: Vec<String> = t
                .amount_minor
                .iter()
                .map(|(c, a)| format!("{a} {c}"))
                .collect();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(kind),
                esc(cat),
                t.count,
                esc(&amounts.join(", "))
            );
        }
    }
    h.push_str("</tbody></table><h2>Items</h2><table><thead><tr>");
    for c in [
        "Kind", "Id", "Customer", "Category", "Rule", "Conf.", "Cur.", "Amount", "Applied", "Open",
    ] {
        let _ = write!(h, "<th scope=\"col\">{c}</th>");
    }
    h.push_str("</tr></thead><tbody>");
    for r in &report.results {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&r.kind),
            esc(&r.item_key),
            esc(&r.customer),
            esc(&r.category),
            esc(r.rule.as_deref().unwrap_or("")),
            r.confidence,
            esc(&r.currency),
            r.amount_minor,
            r.applied_minor,
            r.open_minor
        );
    }
    h.push_str("</tbody></table><h2>Proposed adjustments</h2><table><thead><tr><th scope=\"col\">#</th><th scope=\"col\">Kind</th><th scope=\"col\">Customer</th><th scope=\"col\">Document</th><th scope=\"col\">Amount</th><th scope=\"col\">Status</th></tr></thead><tbody>");
    for a in &report.adjustments {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{} {}</td><td>{}</td></tr>",
            a.ord,
            esc(&a.kind),
            esc(&a.customer),
            esc(a.document.as_deref().unwrap_or("")),
            a.amount_minor,
            esc(&a.currency),
            esc(&a.status)
        );
    }
    h.push_str("</tbody></table></body></html>\n");
    h
}
