//! `cashloop reconcile run`: a reconciliation from exported CSV files (payments, invoices,
//! settlements, rates). Bad input stops the run before it starts, with every bad line listed;
//! the report is the totals per category (JSON) or one row per payment and item (CSV).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{Datelike, NaiveDate};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(long)]
    pub payments: PathBuf,
    #[arg(long)]
    pub invoices: PathBuf,
    #[arg(long)]
    pub settlements: Option<PathBuf>,
    #[arg(long)]
    pub rates: Option<PathBuf>,
    /// The month reconciled (`2026-10`): later payments and invoices are timing (cut-off).
    #[arg(long)]
    pub period: Option<String>,
    #[arg(long, value_enum, default_value = "json")]
    pub format: ReportFormat,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The last day of `YYYY-MM`.
pub fn period_end(period: &str) -> anyhow::Result<NaiveDate> {
    let first = NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
        .ok()
        .filter(|_| period.len() == 7)
        .with_context(|| format!("--period: {period:?} is not a month such as 2026-10"))?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    };
    next.context("--period: out of range")?
        .pred_opt()
        .context("--period")
}

/// Runs it; `Ok(false)` when the input was refused (the errors are on stderr).
pub fn run(args: &RunArgs) -> anyhow::Result<bool> {
    let config = reconcile::MatchConfig {
        period_end: args.period.as_deref().map(period_end).transpose()?,
        ..reconcile::MatchConfig::default()
    };
    let files = reconcile::InputFiles {
        payments: Some(args.payments.clone()),
        invoices: Some(args.invoices.clone()),
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
    let result = reconcile::reconcile_with_progress(inputs, &config, &mut |phase| {
        eprintln!("  {} done", phase.as_str());
    })?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--out {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    match args.format {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &result.summary())?;
            writeln!(out)?;
        }
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "kind",
                "id",
                "category",
                "rule",
                "confidence",
                "currency",
                "amount_minor",
                "applied_minor",
                "open_minor",
            ])?;
            for (p, o) in result.inputs.payments.iter().zip(&result.payments) {
                let amount = p.amount.money();
                w.write_record([
                    "payment",
                    p.id.as_str(),
                    o.category.as_str(),
                    o.rule.map(|r| r.as_str()).unwrap_or(""),
                    &o.confidence.percent().to_string(),
                    amount.currency().code(),
                    &amount.amount_minor().to_string(),
                    &o.applied_minor.to_string(),
                    &o.unapplied_minor.to_string(),
                ])?;
            }
            for (i, o) in result.inputs.open_items.iter().zip(&result.items) {
                let amount = i.open.money();
                w.write_record([
                    "invoice",
                    i.number.as_str(),
                    o.category.as_str(),
                    "",
                    "",
                    amount.currency().code(),
                    &amount.amount_minor().to_string(),
                    &o.applied_minor.to_string(),
                    &o.residual_minor.to_string(),
                ])?;
            }
            w.flush()?;
        }
    }
    Ok(true)
}
