//! `cashloop bench ledger`: the ledger's throughput and latency, measured on fresh databases.
//! Each run prints a line per scenario and ends with ONE JSON line holding every figure
//! (BENCHMARKS.md records those lines with the command that produced them).
// Floating point here is for timing statistics (rates, seconds), never for money.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{Days, NaiveDate};
use clap::{Args, Subcommand};
use db::{Backend, Db};
use ledger::export::{ExportFormat, writer_for};
use ledger::{
    AccountCode, AccountType, Currency, Direction, EntityCode, EntryHeader, ExportRequest,
    IdempotencyKey, Ledger, LedgerOptions, Money, NewAccount, NewEntry, NewPosting, SourceName,
    Text, WriterConfig,
};
use serde_json::{Value, json};

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ledger write throughput and latency, verify and export rates.
    Ledger(LedgerBenchArgs),
    /// Tokenize and sale (tokenize + authorize + capture + ledger posting) through the HTTP
    /// API against the sandbox processor, with concurrent clients.
    Gateway(GatewayBenchArgs),
    /// A Salesforce pull and push of N records against the simulator with injected latency:
    /// records/s and API calls per record.
    SyncSalesforce(SyncBenchArgs),
    /// A historical load of customers and AR invoices into the Intacct simulator with injected
    /// latency: records/s, requests and functions per request.
    SyncIntacct(IntacctBenchArgs),
    /// The reconciliation engine on generated data: CSV read time and matching time (all
    /// passes) reported separately, rows/s and peak memory.
    Reconcile(ReconcileBenchArgs),
}

#[derive(Debug, Args)]
pub struct ReconcileBenchArgs {
    #[arg(long, default_value_t = 100_000)]
    pub payments: usize,
    #[arg(long, default_value_t = 100_000)]
    pub invoices: usize,
    /// Where the generated CSV files go (a temporary directory inside it).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Read-and-match runs over the same files; the fastest is reported (all are listed).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Through the database instead (`--database-url`, a fresh one): import the four files,
    /// then a stored month-end run (load + match + store the results).
    #[arg(long)]
    pub stored: bool,
}

#[derive(Debug, Args)]
pub struct IntacctBenchArgs {
    #[arg(long, default_value_t = 50_000)]
    pub customers: usize,
    #[arg(long, default_value_t = 50_000)]
    pub invoices: usize,
    /// Injected latency of every simulated Intacct request.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// Requests in flight (the client's per-company limit).
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Functions per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
}

#[derive(Debug, Args)]
pub struct SyncBenchArgs {
    /// sqlite, postgres or both.
    #[arg(long, default_value = "both")]
    pub backend: String,
    #[arg(
        long,
        env = "CASHLOOP_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Injected latency of every simulated Salesforce call.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
}

#[derive(Debug, Args)]
pub struct GatewayBenchArgs {
    /// sqlite, postgres or both.
    #[arg(long, default_value = "both")]
    pub backend: String,
    #[arg(
        long,
        env = "CASHLOOP_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Requests per scenario.
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
}

#[derive(Debug, Args)]
pub struct LedgerBenchArgs {
    /// sqlite, postgres or both.
    #[arg(long, default_value = "both")]
    pub backend: String,
    /// PostgreSQL server to benchmark on (a fresh schema is created and dropped).
    #[arg(
        long,
        env = "CASHLOOP_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
    /// Concurrent writers in the single-entry scenarios.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Entries per single-entry scenario.
    #[arg(long, default_value_t = 20_000)]
    pub entries: usize,
    /// Postings in the batched scenario (also the data set for verify and export).
    #[arg(long, default_value_t = 1_000_000)]
    pub postings: usize,
    /// Entries per transaction in the batched scenario.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Where the temporary SQLite files and the export go.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Keep the batched data set (PostgreSQL schema `clbench_keep_batched`) for inspection.
    #[arg(long)]
    pub keep: bool,
}

pub async fn run(config: &Config, cmd: BenchCommand) -> anyhow::Result<()> {
    let args = match cmd {
        BenchCommand::Ledger(a) => a,
        BenchCommand::Gateway(g) => return gateway_bench(config, g).await,
        BenchCommand::SyncSalesforce(a) => return sync_bench(a).await,
        BenchCommand::SyncIntacct(a) => return intacct_bench(a).await,
        BenchCommand::Reconcile(a) if a.stored => return reconcile_stored_bench(config, &a).await,
        BenchCommand::Reconcile(a) => return reconcile_bench(&a),
    };
    let backends = parse_backends(&args.backend)?;
    let tmp = tempfile::Builder::new()
        .prefix("cashloop-bench")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let mut results = serde_json::Map::new();
    results.insert("bench".into(), json!("ledger"));
    results.insert(
        "params".into(),
        json!({"writers": args.writers, "entries": args.entries, "postings": args.postings, "batch": args.batch}),
    );
    for backend in backends {
        let mut out = serde_json::Map::new();
        let name = backend.name();
        eprintln!("== {name}");
        for (scenario, accounts) in [
            ("single_50_accounts", 50usize),
            ("single_2_hot_accounts", 2),
        ] {
            let (db, cleanup) =
                fresh(backend, &FreshArgs::from(&args), tmp.path(), scenario).await?;
            let ledger = bench_ledger(&db, args.batch);
            setup_accounts(&ledger, 50).await?;
            let r = single(&ledger, args.writers, args.entries, accounts).await?;
            eprintln!(
                "{scenario}: {:.0} entries/s, p50 {} µs, p99 {} µs",
                r["entries_per_s"].as_f64().unwrap_or_default(),
                r["p50_us"],
                r["p99_us"]
            );
            out.insert(scenario.into(), r);
            db.close().await;
            cleanup.await;
        }
        let (db, cleanup) = fresh(backend, &FreshArgs::from(&args), tmp.path(), "batched").await?;
        let ledger = bench_ledger(&db, args.batch);
        setup_accounts(&ledger, 50).await?;
        let r = batched(&ledger, args.postings, args.batch).await?;
        eprintln!(
            "batched: {:.0} postings/s ({} entries per transaction)",
            r["postings_per_s"].as_f64().unwrap_or_default(),
            args.batch
        );
        out.insert("batched".into(), r);
        let t = Instant::now();
        let sealed = ledger.seal().await?;
        let seal_s = t.elapsed().as_secs_f64();
        let seal_rate = rate(sealed, seal_s);
        eprintln!("seal: {sealed} entries in {seal_s:.2} s ({seal_rate:.0} entries/s)");
        out.insert(
            "seal".into(),
            json!({"entries": sealed, "seconds": seal_s, "entries_per_s": seal_rate}),
        );
        let t = Instant::now();
        let report = ledger.verify(&|_| {}).await?;
        let verify_s = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            report.ok(),
            "verify failed on benchmark data: {:?}",
            report.first_break
        );
        let verify_rate = rate(report.entries, verify_s);
        eprintln!(
            "verify: {} entries / {} postings in {verify_s:.2} s ({verify_rate:.0} entries/s)",
            report.entries, report.postings
        );
        out.insert(
            "verify".into(),
            json!({"entries": report.entries, "postings": report.postings, "seconds": verify_s, "entries_per_s": verify_rate}),
        );
        let path = tmp.path().join(format!("export-{name}.csv"));
        let req = ExportRequest {
            format: ExportFormat::Csv,
            from: start_date(),
            to: start_date() + Days::new(365),
            entity: None,
            currency: None,
        };
        reset_peak_rss();
        let t = Instant::now();
        let meta = ledger.export_meta(&req).await?;
        let file = std::fs::File::create(&path)?;
        let mut w = writer_for(
            ExportFormat::Csv,
            std::io::BufWriter::with_capacity(1 << 20, file),
        );
        let summary = ledger.export(&req, &meta, w.as_mut(), &|_| {}).await?;
        drop(w);
        let export_s = t.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let peak_rss_mb = peak_rss_kb().map(|kb| kb / 1024);
        eprintln!(
            "export csv: {} postings in {export_s:.2} s ({:.0} postings/s, {} MB file, peak RSS {} MB)",
            summary.postings,
            rate(summary.postings, export_s),
            bytes / 1_000_000,
            peak_rss_mb.map_or("?".to_owned(), |m| m.to_string())
        );
        out.insert(
            "export_csv".into(),
            json!({"postings": summary.postings, "seconds": export_s, "postings_per_s": rate(summary.postings, export_s), "bytes": bytes, "peak_rss_mb": peak_rss_mb}),
        );
        db.close().await;
        cleanup.await;
        results.insert(name.into(), Value::Object(out));
    }
    println!("{}", Value::Object(results));
    Ok(())
}

/// Resets the process's peak-RSS mark (Linux: `5` into /proc/self/clear_refs), so the next
/// reading covers one phase only.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory since the last reset (Linux `VmHWM`), in KiB.
fn peak_rss_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

fn start_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// `--backend sqlite|postgres|both`.
fn parse_backends(arg: &str) -> anyhow::Result<Vec<Backend>> {
    Ok(match arg {
        "sqlite" => vec![Backend::Sqlite],
        "postgres" => vec![Backend::Postgres],
        "both" => vec![Backend::Sqlite, Backend::Postgres],
        other => anyhow::bail!("--backend: {other:?} must be sqlite, postgres or both"),
    })
}

/// Where fresh databases are made.
#[derive(Debug)]
pub struct FreshArgs {
    pub postgres_url: String,
    pub keep: bool,
}

impl From<&LedgerBenchArgs> for FreshArgs {
    fn from(a: &LedgerBenchArgs) -> FreshArgs {
        FreshArgs {
            postgres_url: a.postgres_url.clone(),
            keep: a.keep,
        }
    }
}

type Cleanup = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A fresh migrated database: a new SQLite file, or a new PostgreSQL schema.
async fn fresh(
    backend: Backend,
    args: &FreshArgs,
    dir: &std::path::Path,
    scenario: &str,
) -> anyhow::Result<(Db, Cleanup)> {
    let opts = db::DbOptions {
        max_connections: 24,
        ..db::DbOptions::default()
    };
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.join(format!("{scenario}.db")).display());
            let db = Db::connect(&url, &opts).await?;
            db.migrate().await?;
            Ok((db, Box::pin(async {})))
        }
        Backend::Postgres => {
            let schema = if args.keep && scenario == "batched" {
                "clbench_keep_batched".to_owned()
            } else {
                format!("clbench_{}_{scenario}", std::process::id())
            };
            let keep = args.keep && scenario == "batched";
            let admin = Db::connect(&args.postgres_url, &opts)
                .await
                .with_context(|| {
                    format!(
                        "--postgres-url: cannot connect to {}",
                        crate::cli::redact_url(&args.postgres_url)
                    )
                })?;
            let Db::Postgres(pool) = &admin else {
                anyhow::bail!("--postgres-url must be postgres://")
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(pool)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(pool)
                .await?;
            let sep = if args.postgres_url.contains('?') {
                '&'
            } else {
                '?'
            };
            let db = Db::connect(
                &format!("{}{sep}options[search_path]={schema}", args.postgres_url),
                &opts,
            )
            .await?;
            db.migrate().await?;
            let cleanup: Cleanup = Box::pin(async move {
                if let (false, Db::Postgres(pool)) = (keep, &admin) {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(pool)
                    .await;
                }
                admin.close().await;
            });
            Ok((db, cleanup))
        }
    }
}

fn bench_ledger(db: &Db, batch: usize) -> Ledger {
    let mut writer = WriterConfig::for_backend(db.backend());
    writer.max_batch_entries = batch.max(1);
    Ledger::new(
        db.clone(),
        LedgerOptions {
            writer,
            clock: Arc::new(ledger::SystemClock),
        },
    )
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap_or_else(|e| panic!("{e}"))
}

fn acct(i: usize) -> AccountCode {
    AccountCode::parse(&format!("{}", 1000 + i), "code").unwrap_or_else(|e| panic!("{e}"))
}

async fn setup_accounts(ledger: &Ledger, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        ledger
            .create_account(
                NewAccount {
                    entity: EntityCode::parse("MAIN", "entity")?,
                    code: acct(i),
                    name: Text::parse(&format!("Bench account {i}"), "name")?,
                    account_type: if i % 2 == 0 {
                        AccountType::Asset
                    } else {
                        AccountType::Revenue
                    },
                    normal_balance: if i % 2 == 0 {
                        Direction::Debit
                    } else {
                        Direction::Credit
                    },
                    currency: usd(),
                    customer_subledger: false,
                },
                "bench",
            )
            .await?;
    }
    Ok(())
}

/// A cheap deterministic generator (xorshift), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64)).unwrap_or(0)
    }
}

fn make_entry(
    key: String,
    day: NaiveDate,
    debit: usize,
    credit: usize,
    amount_minor: i64,
) -> anyhow::Result<NewEntry> {
    let amount = Money::from_minor(amount_minor, usd());
    let p = |a: usize, d: Direction| NewPosting {
        account: acct(a),
        direction: d,
        amount,
        customer_id: None,
        document_ref: None,
        memo: None,
    };
    Ok(NewEntry::new(
        EntryHeader {
            idempotency_key: IdempotencyKey::parse(&key, "key")?,
            entity: EntityCode::parse("MAIN", "entity")?,
            effective_date: day,
            source: SourceName::parse("bench", "source")?,
            external_ref: None,
            memo: None,
        },
        vec![p(debit, Direction::Debit), p(credit, Direction::Credit)],
    )?)
}

/// `writers` concurrent callers posting single entries over `accounts` accounts.
async fn single(
    ledger: &Ledger,
    writers: usize,
    entries: usize,
    accounts: usize,
) -> anyhow::Result<Value> {
    let per = entries / writers.max(1);
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..writers {
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1));
            let mut lat_us = Vec::with_capacity(per);
            for i in 0..per {
                let d = rng.below(accounts);
                let mut c = rng.below(accounts);
                if c == d {
                    c = (c + 1) % accounts;
                }
                let day = start_date() + Days::new((i % 28) as u64);
                let amount = i64::try_from(rng.below(100_000) + 1).unwrap_or(1);
                let e = make_entry(format!("w{w}-{i}"), day, d, c, amount)?;
                let t = Instant::now();
                ledger.post(e).await?;
                lat_us.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            anyhow::Ok(lat_us)
        }));
    }
    let mut lat = Vec::with_capacity(entries);
    for h in handles {
        lat.extend(h.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: usize| {
        lat.get((lat.len() * p / 100).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(json!({
        "entries": lat.len(),
        "accounts": accounts,
        "writers": writers,
        "seconds": seconds,
        "entries_per_s": rate(lat.len() as u64, seconds),
        "postings_per_s": rate(2 * lat.len() as u64, seconds),
        "p50_us": pct(50),
        "p99_us": pct(99),
    }))
}

/// One caller posting `batch` entries per transaction until `postings` postings exist.
async fn batched(ledger: &Ledger, postings: usize, batch: usize) -> anyhow::Result<Value> {
    let entries = postings / 2;
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let started = Instant::now();
    let mut done = 0usize;
    let mut lat_ms = Vec::new();
    while done < entries {
        let n = batch.min(entries - done);
        let mut v = Vec::with_capacity(n);
        for i in done..done + n {
            let d = rng.below(50);
            let c = (d + 1 + rng.below(49)) % 50;
            let day = start_date() + Days::new((i % 180) as u64);
            let amount = i64::try_from(rng.below(1_000_000) + 1).unwrap_or(1);
            v.push(make_entry(format!("b{i}"), day, d, c, amount)?);
        }
        let t = Instant::now();
        for r in ledger.post_batch(v).await? {
            r?;
        }
        lat_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        done += n;
    }
    let seconds = started.elapsed().as_secs_f64();
    lat_ms.sort_by(f64::total_cmp);
    let p50 = lat_ms.get(lat_ms.len() / 2).copied().unwrap_or(0.0);
    let p99 = lat_ms.get(lat_ms.len() * 99 / 100).copied().unwrap_or(0.0);
    Ok(json!({
        "entries": entries,
        "postings": entries * 2,
        "batch": batch,
        "seconds": seconds,
        "postings_per_s": rate(2 * entries as u64, seconds),
        "batch_p50_ms": p50,
        "batch_p99_ms": p99,
    }))
}

/// Latency percentiles (µs) and rate of one scenario.
fn summarize(mut lat_us: Vec<u32>, seconds: f64) -> Value {
    lat_us.sort_unstable();
    let pct = |p: usize| {
        lat_us
            .get((lat_us.len() * p / 100).min(lat_us.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    json!({
        "requests": lat_us.len(),
        "seconds": seconds,
        "per_s": rate(lat_us.len() as u64, seconds),
        "p50_us": pct(50),
        "p99_us": pct(99),
    })
}

/// Runs `clients` tasks, each sending its share of `requests` built by `make(i)`.
async fn http_load<F, Fut>(clients: usize, requests: usize, make: F) -> anyhow::Result<Value>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let make = Arc::new(make);
    let per = requests / clients.max(1);
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let make = make.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                make(c * per + i).await?;
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await??);
    }
    Ok(summarize(lat, started.elapsed().as_secs_f64()))
}

async fn gateway_bench(_config: &Config, args: GatewayBenchArgs) -> anyhow::Result<()> {
    let backends = parse_backends(&args.backend)?;
    let tmp = tempfile::tempdir()?;
    for name in ["kek-1.hex", "fingerprint-1.hex", "api-secret.hex"] {
        std::fs::write(
            tmp.path().join(name),
            gateway::crypto::generate_key_hex()?.as_bytes(),
        )?;
    }
    let secret = gateway::crypto::FingerprintKey::from_file(1, tmp.path().join("api-secret.hex"))?;
    let api_key = "cl_bench_payments";
    let mut results = serde_json::Map::new();
    results.insert("bench".into(), json!("gateway"));
    results.insert(
        "params".into(),
        json!({"clients": args.clients, "requests": args.requests}),
    );
    let ledger_args = LedgerBenchArgs {
        backend: args.backend.clone(),
        postgres_url: args.postgres_url.clone(),
        writers: 1,
        entries: 0,
        postings: 0,
        batch: 1000,
        dir: Some(tmp.path().to_path_buf()),
        keep: false,
    };
    for backend in backends {
        let name = backend.name();
        eprintln!("== {name}");
        let (db, cleanup) = fresh(
            backend,
            &FreshArgs::from(&ledger_args),
            tmp.path(),
            "gateway",
        )
        .await?;
        let url = match &db {
            Db::Sqlite(s) => format!("sqlite://{}", s.path.display()),
            Db::Postgres(_) => format!(
                "{}{}options[search_path]=clbench_{}_gateway",
                args.postgres_url,
                if args.postgres_url.contains('?') {
                    '&'
                } else {
                    '?'
                },
                std::process::id()
            ),
        };
        let l = bench_ledger(&db, 1000);
        for (code, name, sub) in [
            ("1100", "Processor clearing", false),
            ("1200", "Accounts receivable", true),
        ] {
            l.create_account(
                NewAccount {
                    entity: EntityCode::parse("MAIN", "entity")?,
                    code: AccountCode::parse(code, "code")?,
                    name: Text::parse(name, "name")?,
                    account_type: AccountType::Asset,
                    normal_balance: Direction::Debit,
                    currency: usd(),
                    customer_subledger: sub,
                },
                "bench",
            )
            .await?;
        }
        db.close().await;
        let toml = format!(
            "database_url = {url:?}\n[database]\nmax_connections = 32\n[server]\nlisten = \"127.0.0.1:0\"\napi_key_secret = {{ file = {:?} }}\n\
             [[server.api_keys]]\nname = \"bench\"\nrole = \"payments\"\nkey_hmac = \"{}\"\n\
             [vault]\nkek = {{ version = 1, file = {:?} }}\nfingerprint_key = {{ version = 1, file = {:?} }}\n\
             [gateway]\nprocessor = \"sandbox\"\naccounts = {{ USD = {{ clearing = \"1100\", receivable = \"1200\" }} }}\n",
            tmp.path().join("api-secret.hex").display().to_string(),
            hex::encode(secret.fingerprint(api_key.as_bytes())),
            tmp.path().join("kek-1.hex").display().to_string(),
            tmp.path().join("fingerprint-1.hex").display().to_string(),
        );
        let fig = figment::Figment::from(figment::providers::Serialized::defaults(
            crate::config::RawConfig::default(),
        ))
        .merge(<figment::providers::Toml as figment::providers::Format>::string(&toml));
        let config = crate::config::Config::from_figment(fig)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve_on(config, listener, async move {
            let _ = stopped.await;
        }));
        let client = gateway::http::client_builder()
            .pool_max_idle_per_host(args.clients * 2)
            .build()?;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let card = r#"{"type":"card","card":{"number":"4111111111111111","exp_month":12,"exp_year":2030}}"#;
        let tokenize = {
            let (client, base) = (client.clone(), base.clone());
            move |_i: usize| {
                let (client, base) = (client.clone(), base.clone());
                async move {
                    let r = client
                        .post(format!("{base}/v1/tokens"))
                        .bearer_auth(api_key)
                        .header("content-type", "application/json")
                        .body(card)
                        .send()
                        .await?;
                    anyhow::ensure!(
                        r.status().as_u16() == 201,
                        "tokenize: {}",
                        r.text().await.unwrap_or_default()
                    );
                    let v: Value = r.json().await?;
                    Ok(v["token"].as_str().unwrap_or_default().to_owned())
                }
            }
        };
        let tk = tokenize.clone();
        let tok = http_load(args.clients, args.requests, move |i| {
            let f = tk(i);
            async move { f.await.map(|_| ()) }
        })
        .await?;
        eprintln!(
            "tokenize: {:.0} req/s, p50 {} µs, p99 {} µs",
            tok["per_s"].as_f64().unwrap_or_default(),
            tok["p50_us"],
            tok["p99_us"]
        );
        let (c2, b2) = (client.clone(), base.clone());
        let sale = http_load(args.clients, args.requests, move |i| {
            let (client, base, tk) = (c2.clone(), b2.clone(), tokenize.clone());
            async move {
                let token = tk(i).await?;
                let body = format!(r#"{{"amount":"10.00","currency":"USD","payment_method":"{token}","capture":true,"account_id":"001BENCH","invoice_refs":["INV-{i}"]}}"#);
                let r = client.post(format!("{base}/v1/payments")).bearer_auth(api_key).header("content-type", "application/json").body(body).send().await?;
                anyhow::ensure!(r.status().as_u16() == 201, "sale: {}", r.text().await.unwrap_or_default());
                Ok(())
            }
        })
        .await?;
        eprintln!(
            "sale (tokenize + authorize + capture + ledger): {:.0} sales/s, p50 {} µs, p99 {} µs",
            sale["per_s"].as_f64().unwrap_or_default(),
            sale["p50_us"],
            sale["p99_us"]
        );
        let _ = stop.send(());
        server.await??;
        cleanup.await;
        results.insert(name.into(), json!({"tokenize": tok, "sale": sale}));
    }
    println!("{}", Value::Object(results));
    Ok(())
}

/// `cashloop bench sync-salesforce`: a pull of N Accounts changed in the org, then a push of N
/// records, through the real client, flows and database against the simulator over loopback
/// with `latency_ms` added to every call. Reports records/s, API calls, and the minimum calls
/// the API allows (⌈n/2000⌉ query pages, ⌈n/200⌉ collection calls).
async fn sync_bench(args: SyncBenchArgs) -> anyhow::Result<()> {
    use sync::flows::{PullObject, SalesforceSync};
    use sync::salesforce::simulator::{Simulator, SimulatorConfig};
    use sync::salesforce::{ClientConfig, Credentials, Record, SalesforceClient};
    let backends = parse_backends(&args.backend)?;
    if args.records == 0 {
        anyhow::bail!("--records: must be at least 1");
    }
    let n = args.records;
    let tmp = tempfile::Builder::new()
        .prefix("cashloop-bench")
        .tempdir()?;
    let mut results = serde_json::Map::new();
    results.insert("bench".into(), json!("sync-salesforce"));
    results.insert(
        "params".into(),
        json!({"records": n, "latency_ms": args.latency_ms}),
    );
    for backend in backends {
        let name = backend.name();
        eprintln!("== {name}");
        let (db, cleanup) = fresh(
            backend,
            &FreshArgs {
                postgres_url: args.postgres_url.clone(),
                keep: false,
            },
            tmp.path(),
            "sync",
        )
        .await?;
        let sim = Simulator::start(SimulatorConfig {
            daily_api_limit: 10_000_000,
            ..SimulatorConfig::default()
        })
        .await;
        // The org: n Accounts a person created.
        let people: Vec<Record> = (0..n)
            .map(|i| Record::new("Account").with("Name", format!("Customer {i:07}").as_str()))
            .collect();
        for chunk in people.chunks(10_000) {
            sim.insert_as_user("Account", chunk)
                .map_err(|e| anyhow::anyhow!("seeding the simulator: {e:?}"))?;
        }
        sim.set_latency_ms(args.latency_ms);
        let creds =
            Credentials::client_credentials(&sim.config().client_id, &sim.config().client_secret);
        let client = SalesforceClient::new(ClientConfig::new(sim.base_url()), creds)?;
        client.login().await?;
        let flows = SalesforceSync::new(
            db.clone(),
            client.clone(),
            vec![PullObject {
                name: "Account".into(),
                fields: vec!["Name".into()],
            }],
            Some(sim.config().api_user_id.clone()),
        );
        // Pull.
        let before = client.stats().total;
        let started = Instant::now();
        let pull = flows
            .pull("Account", None)
            .await
            .map_err(|e| anyhow::anyhow!("pull: {e:?}"))?;
        let pull_s = started.elapsed().as_secs_f64();
        let pull_calls = client.stats().total - before;
        anyhow::ensure!(pull.records as usize == n, "pulled {} of {n}", pull.records);
        let pull_min = n.div_ceil(2000) as u64;
        eprintln!(
            "pull: {n} records in {pull_s:.2} s = {:.0} records/s; {pull_calls} API calls (minimum {pull_min})",
            n as f64 / pull_s
        );
        // Push: n records to upsert by external id.
        for i in 0..n {
            let mut f = serde_json::Map::new();
            f.insert("Name".into(), json!(format!("Pushed {i:07}")));
            flows
                .queue_push("Account", "Sage_Customer_Id__c", &format!("C-{i:07}"), &f)
                .await?;
        }
        let before = client.stats().total;
        let started = Instant::now();
        let push = flows
            .push("Account", None)
            .await
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
        let push_s = started.elapsed().as_secs_f64();
        let push_calls = client.stats().total - before;
        anyhow::ensure!(
            push.done as usize == n,
            "pushed {} of {n}: {push:?}",
            push.done
        );
        let push_min = n.div_ceil(200) as u64;
        eprintln!(
            "push: {n} records in {push_s:.2} s = {:.0} records/s; {push_calls} API calls (minimum {push_min})",
            n as f64 / push_s
        );
        results.insert(
            name.into(),
            json!({
                "pull": {"records": n, "seconds": pull_s, "records_per_s": n as f64 / pull_s,
                         "api_calls": pull_calls, "min_api_calls": pull_min,
                         "calls_per_record": pull_calls as f64 / n as f64},
                "push": {"records": n, "seconds": push_s, "records_per_s": n as f64 / push_s,
                         "api_calls": push_calls, "min_api_calls": push_min,
                         "calls_per_record": push_calls as f64 / n as f64},
            }),
        );
        drop(sim);
        db.close().await;
        cleanup.await;
    }
    println!("{}", Value::Object(results));
    Ok(())
}

/// `cashloop bench sync-intacct`: a historical load of generated customers, then AR invoices,
/// through the real `IntacctClient` and `sync::intacct::load` against the Intacct simulator
/// on loopback with `latency_ms` added to every request; checks the simulator holds exactly
/// the expected records.
async fn intacct_bench(args: IntacctBenchArgs) -> anyhow::Result<()> {
    use sync::intacct::load::{self, LoadConfig, Progress};
    use sync::intacct::simulator::{Simulator, SimulatorConfig};
    use sync::intacct::{IntacctClient, IntacctConfig, Secret, UserAuth};
    anyhow::ensure!(args.customers >= 1, "--customers: must be at least 1");
    anyhow::ensure!(args.concurrency >= 1, "--concurrency: must be at least 1");
    let (customers, invoices) = intacct_data(args.customers, args.invoices);
    let sim = Simulator::start(SimulatorConfig::default()).await;
    sim.set_latency_ms(args.latency_ms);
    let sc = sim.config();
    let (user, password) = sc
        .users
        .first()
        .cloned()
        .context("the simulator has no user")?;
    let mut cfg = IntacctConfig::new(
        &sc.sender_id,
        Secret::new(&sc.sender_password),
        &sc.company_id,
        UserAuth::Login {
            user_id: user,
            password: Secret::new(password),
        },
    );
    cfg.endpoint_url = sim.endpoint_url();
    cfg.max_concurrent = args.concurrency;
    let client = IntacctClient::new(cfg)?;
    let config = LoadConfig {
        functions_per_request: args.batch,
        requests_in_flight: args.concurrency,
        progress_every: 10_000,
        ..LoadConfig::default()
    };
    eprintln!(
        "loading {} customers and {} invoices, {} functions per request, {} in flight, {} ms per request",
        args.customers, args.invoices, args.batch, args.concurrency, args.latency_ms
    );
    let report = load::load(&client, &customers, &invoices, &config, |p: &Progress| {
        let s = p.elapsed.as_secs_f64();
        eprintln!(
            "{:>8}: {:>7}/{} ({} created, {} already present, {} failed) {s:.1} s",
            p.kind.as_str(),
            p.done,
            p.total,
            p.counts.created,
            p.counts.already_present,
            p.counts.failed
        );
    })
    .await?;
    let seconds = report.elapsed.as_secs_f64();
    for f in report.failed.iter().take(10) {
        eprintln!("failed {} {}: {}", f.kind.as_str(), f.key, f.message());
    }
    let stored_customers = sim.records("CUSTOMER").len();
    let stored_invoices = sim.records("ARINVOICE").len();
    anyhow::ensure!(
        stored_customers == args.customers && stored_invoices == args.invoices,
        "the simulator holds {stored_customers} customers and {stored_invoices} invoices, expected {} and {}",
        args.customers,
        args.invoices
    );
    anyhow::ensure!(
        report.customers.created as usize == args.customers
            && report.invoices.created as usize == args.invoices,
        "created {} customers and {} invoices: {report:?}",
        report.customers.created,
        report.invoices.created
    );
    let records = (args.customers + args.invoices) as u64;
    eprintln!(
        "{records} records in {seconds:.2} s = {:.0} records/s; {} requests ({} resent), max {} in flight",
        rate(records, seconds),
        report.requests,
        report.retries,
        sim.max_in_flight()
    );
    println!(
        "{}",
        json!({
            "bench": "sync-intacct",
            "customers": args.customers,
            "invoices": args.invoices,
            "records": records,
            "seconds": seconds,
            "records_per_s": rate(records, seconds),
            "requests": report.requests,
            "functions_per_request": args.batch,
            "max_in_flight": sim.max_in_flight(),
            "latency_ms": args.latency_ms,
            "failures": report.failed.len(),
        })
    );
    Ok(())
}

/// Deterministic customers and invoices: ids, names, a few contact fields; invoices with 1–3
/// lines of 2-dp amounts built from integer minor units, dated across 2025, USD mostly and
/// about one in eight in EUR.
fn intacct_data(
    n_customers: usize,
    n_invoices: usize,
) -> (
    Vec<sync::intacct::load::LoadCustomer>,
    Vec<sync::intacct::NewInvoice>,
) {
    use sync::intacct::load::LoadCustomer;
    use sync::intacct::{InvoiceLine, NewInvoice};
    const FIRST: [&str; 8] = [
        "Northwind",
        "Contoso",
        "Fabrikam",
        "Globex",
        "Initech",
        "Umbrella",
        "Tailspin",
        "Wingtip",
    ];
    const SECOND: [&str; 6] = [
        "Traders",
        "Logistics",
        "Foods",
        "Systems",
        "Outfitters",
        "Labs",
    ];
    const SUFFIX: [&str; 5] = ["Inc.", "LLC", "GmbH", "Ltd", "& Co."];
    const CITIES: [(&str, &str); 6] = [
        ("Seattle", "US"),
        ("Austin", "US"),
        ("Chicago", "US"),
        ("Boston", "US"),
        ("Berlin", "DE"),
        ("Lyon", "FR"),
    ];
    const ACCOUNTS: [&str; 3] = ["4000", "4100", "4200"];
    let mut rng = Rng(0x5eed_1a7a_c0ff_ee11);
    let customers: Vec<LoadCustomer> = (0..n_customers)
        .map(|i| {
            let (city, country) = CITIES[rng.below(CITIES.len())];
            let first = FIRST[rng.below(FIRST.len())];
            LoadCustomer {
                customer_id: format!("C-{:06}", i + 1),
                name: format!(
                    "{first} {} {} {}",
                    SECOND[rng.below(SECOND.len())],
                    SUFFIX[rng.below(SUFFIX.len())],
                    i + 1
                ),
                email: Some(format!("ap{}@{}.example", i + 1, first.to_lowercase())),
                phone: Some(format!("+1 555 {:04}", rng.below(10_000))),
                city: Some(city.into()),
                country_code: Some(country.into()),
                term_name: Some("N30".into()),
                currency: Some(if country == "US" { "USD" } else { "EUR" }.into()),
            }
        })
        .collect();
    let year_start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or(NaiveDate::MIN);
    let invoices = (0..n_invoices)
        .map(|i| {
            let date = year_start + Days::new(rng.below(365) as u64);
            let lines = (0..1 + rng.below(3))
                .map(|l| {
                    let minor = 500 + i64::try_from(rng.below(2_500_000)).unwrap_or(0);
                    InvoiceLine {
                        gl_account_no: ACCOUNTS[rng.below(ACCOUNTS.len())].into(),
                        amount: rust_decimal::Decimal::new(minor, 2),
                        memo: Some(format!("Services, line {}", l + 1)),
                        location_id: None,
                        department_id: None,
                    }
                })
                .collect();
            let eur = rng.below(8) == 0;
            NewInvoice {
                customer_id: customers[rng.below(customers.len())].customer_id.clone(),
                date_created: date,
                date_due: Some(date + Days::new(30)),
                term_name: None,
                invoice_no: Some(format!("INV-{:07}", i + 1)),
                description: Some(format!("Historical invoice {}", i + 1)),
                currency: Some(if eur { "EUR" } else { "USD" }.into()),
                exch_rate_type: eur.then(|| "Intacct Daily Rate".into()),
                lines,
            }
        })
        .collect();
    (customers, invoices)
}

/// `cashloop bench reconcile`: generates payments, invoices, settlements and rates as CSV
/// files, then reads them through the importer and runs every matching pass, timing the two
/// phases separately. Peak memory (VmHWM) covers read and match, not generation.
fn reconcile_bench(args: &ReconcileBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("cashloop-bench-reconcile")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let started = Instant::now();
    let files = reconcile_data(tmp.path(), args)?;
    let generate_s = started.elapsed().as_secs_f64();
    let csv_bytes: u64 = [
        &files.payments,
        &files.invoices,
        &files.settlements,
        &files.rates,
    ]
    .into_iter()
    .flatten()
    .filter_map(|p| std::fs::metadata(p).ok())
    .map(|m| m.len())
    .sum();
    eprintln!("generated {csv_bytes} bytes of CSV in {generate_s:.2} s");
    let config = reconcile::MatchConfig {
        period_end: NaiveDate::from_ymd_opt(2026, 10, 31),
        ..reconcile::MatchConfig::default()
    };
    reset_peak_rss();
    // Each run reads the files afresh and matches; the fastest run (by read + match) is
    // reported, since the machine is shared and slower runs measure the neighbours.
    let mut best: Option<(f64, f64, serde_json::Map<String, Value>)> = None;
    let mut runs_s = Vec::new();
    let mut last_result = None;
    for _ in 0..args.runs.max(1) {
        drop(last_result.take());
        let t0 = Instant::now();
        let inputs = reconcile::read_inputs(&files).map_err(|errors| {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("generated input did not parse: {}", text.join("; "))
        })?;
        let read_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut phases = serde_json::Map::new();
        let mut last = t1;
        let result = reconcile::reconcile_with_progress(inputs, &config, &mut |phase| {
            let now = Instant::now();
            phases.insert(phase.as_str().into(), json!((now - last).as_secs_f64()));
            last = now;
        })?;
        let match_s = t1.elapsed().as_secs_f64();
        eprintln!(
            "read in {read_s:.3} s, matched in {match_s:.3} s (total {:.3} s)",
            read_s + match_s
        );
        runs_s.push(read_s + match_s);
        if best
            .as_ref()
            .is_none_or(|(r, m, _)| read_s + match_s < r + m)
        {
            best = Some((read_s, match_s, phases));
        }
        last_result = Some(result);
    }
    let peak_rss_mb = peak_rss_kb().unwrap_or(0) / 1024;
    let (Some((read_s, match_s, phases)), Some(result)) = (best, last_result) else {
        anyhow::bail!("no run");
    };
    let rows = (result.inputs.payments.len()
        + result.inputs.open_items.len()
        + result.inputs.settlements.len()
        + result.inputs.rates.len()) as u64;
    let summary = result.summary();
    let counts = |m: &std::collections::BTreeMap<reconcile::Category, reconcile::CategoryTotal>| {
        m.iter()
            .map(|(c, t)| (c.as_str().to_owned(), json!(t.count)))
            .collect::<serde_json::Map<String, Value>>()
    };
    let total_s = read_s + match_s;
    eprintln!(
        "best of {}: read {rows} rows in {read_s:.3} s, matched in {match_s:.3} s (total {total_s:.3} s), peak RSS {peak_rss_mb} MB",
        runs_s.len()
    );
    println!(
        "{}",
        json!({
            "bench": "reconcile",
            "params": {"payments": args.payments, "invoices": args.invoices, "seed": args.seed, "runs": runs_s.len()},
            "rows": rows,
            "csv_bytes": csv_bytes,
            "read_s": read_s,
            "match_s": match_s,
            "match_phases_s": phases,
            "total_s": total_s,
            "runs_total_s": runs_s,
            "read_rows_per_s": rate(rows, read_s),
            "match_rows_per_s": rate(rows, match_s),
            "total_rows_per_s": rate(rows, total_s),
            "peak_rss_mb": peak_rss_mb,
            "applications": summary.applications,
            "suggestions": summary.suggestions,
            "adjustments": summary.adjustments,
            "payments": counts(&summary.payments),
            "invoices": counts(&summary.items),
            "settlements": counts(&summary.settlements),
        })
    );
    // Freeing a million-row result is not part of any figure; skip it.
    std::mem::forget(result);
    Ok(())
}

/// `bench reconcile --stored`: the same generated files imported into the configured
/// database, then one stored run of October 2026; import, run and re-read (report) timed apart.
async fn reconcile_stored_bench(config: &Config, args: &ReconcileBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("cashloop-bench-reconcile")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let files = reconcile_data(tmp.path(), args)?;
    let db = crate::cli::open_db(config).await?;
    let store = reconcile::store::Store::new(db.clone());
    anyhow::ensure!(
        store.high_water().await? == 0,
        "--stored needs an empty database (reconciliation inputs exist already)"
    );
    let t0 = Instant::now();
    let mut rows = 0u64;
    for (kind, path) in [
        (reconcile::Kind::Payments, &files.payments),
        (reconcile::Kind::Invoices, &files.invoices),
        (reconcile::Kind::Settlements, &files.settlements),
        (reconcile::Kind::Rates, &files.rates),
    ] {
        let Some(path) = path else { continue };
        let bytes = std::fs::read(path)?;
        let r = store
            .import(
                kind,
                &bytes,
                "bench",
                kind == reconcile::Kind::Invoices,
                "bench",
            )
            .await
            .map_err(|e| anyhow::anyhow!("{kind}: {e}"))?;
        rows += r.rows;
    }
    let import_s = t0.elapsed().as_secs_f64();
    eprintln!("imported {rows} rows in {import_s:.3} s");
    let t1 = Instant::now();
    let report = store
        .run(
            &reconcile::store::RunRequest {
                period: "2026-10".into(),
                entity: None,
                dry_run: false,
                actor: "bench".into(),
                config: reconcile::MatchConfig::default(),
                lease_ms: 600_000,
            },
            |_| {},
        )
        .await?;
    let run_s = t1.elapsed().as_secs_f64();
    let id = report.run.id.context("stored run")?;
    let t2 = Instant::now();
    let again = store.report(id).await?;
    let report_s = t2.elapsed().as_secs_f64();
    anyhow::ensure!(
        again.run.digest == report.run.digest,
        "stored run reads back differently"
    );
    eprintln!("run (load + match + store) {run_s:.3} s, report read back {report_s:.3} s");
    println!(
        "{}",
        json!({
            "bench": "reconcile-stored",
            "backend": db.backend().name(),
            "params": {"payments": args.payments, "invoices": args.invoices, "seed": args.seed},
            "rows": rows,
            "import_s": import_s,
            "import_rows_per_s": rate(rows, import_s),
            "run_s": run_s,
            "run_rows_per_s": rate(rows, run_s),
            "report_s": report_s,
            "results": again.results.len(),
            "applications": again.applications.len(),
            "digest": report.run.digest,
        })
    );
    db.close().await;
    Ok(())
}

/// Minor units as a 2-decimal amount.
fn cents(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// Writes the four CSV inputs. Invoices come in blocks of ten per customer (three entities;
/// one customer in twenty bills in EUR, one in twenty-five in GBP, the rest USD), dated
/// August–October 2026 with 30-day terms. Payments follow the invoices with a realistic mix:
/// about half quote the invoice number, others pay an exact amount without reference, split
/// over two invoices, pay short, pay over, pay twice, pay in EUR for a USD invoice, or belong
/// to no known customer; about a third are gateway captures in processor batches (settled
/// as deposits of their batch's gross less 2.9% fees, one in twenty off by a cent), a fifth
/// ACH, the rest Sage receipts. A few are dated after the period end (31 October).
fn reconcile_data(
    dir: &std::path::Path,
    args: &ReconcileBenchArgs,
) -> anyhow::Result<reconcile::InputFiles> {
    use std::io::Write;
    let mut rng = Rng(args.seed.max(1));
    let start = NaiveDate::from_ymd_opt(2026, 8, 1).unwrap_or(NaiveDate::MIN);
    let currency_of = |c: usize| match (c % 20, c % 25) {
        (0, _) => "EUR",
        (_, 1) => "GBP",
        _ => "USD",
    };
    let paths = reconcile::InputFiles {
        payments: Some(dir.join("payments.csv")),
        invoices: Some(dir.join("invoices.csv")),
        settlements: Some(dir.join("settlements.csv")),
        rates: Some(dir.join("rates.csv")),
    };
    let create =
        |p: &Option<std::path::PathBuf>| -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
            let path = p.as_ref().context("path")?;
            Ok(std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(path)?,
            ))
        };
    // Invoices: (customer, amount, day offset) kept for the payment generator.
    let mut inv: Vec<(u32, i64, u16)> = Vec::with_capacity(args.invoices);
    let mut w = create(&paths.invoices)?;
    writeln!(
        w,
        "id,number,kind,entity,customer,currency,amount_open,date,due_date"
    )?;
    for j in 0..args.invoices {
        let c = j / 10;
        let amount = i64::try_from(5_000 + rng.below(2_000_000)).unwrap_or(5_000);
        let offset = u16::try_from(rng.below(80)).unwrap_or(0);
        let date = start + Days::new(u64::from(offset));
        let due = date + Days::new(30);
        writeln!(
            w,
            "{},INV-{j:08},invoice,E{},CUST-{c:07},{},{},{date},{due}",
            100_000_000 + j,
            c % 3,
            currency_of(c),
            cents(amount)
        )?;
        inv.push((u32::try_from(c).unwrap_or(0), amount, offset));
    }
    w.flush()?;
    // Payments, and the captures' batch totals for the settlements.
    let mut batches: std::collections::BTreeMap<u64, (i64, &'static str)> = Default::default();
    let mut w = create(&paths.payments)?;
    writeln!(
        w,
        "id,entity,customer,currency,amount,date,reference,source,batch_id"
    )?;
    let (mut j, mut n) = (0usize, 0usize);
    while n < args.payments {
        let kind = rng.below(100);
        let roll = rng.below(100);
        let (source, batch_day) = match roll {
            0..=32 => ("gateway_capture", true),
            33..=52 => ("ach_settlement", false),
            _ => ("sage_receipt", false),
        };
        let mut emit = |w: &mut std::io::BufWriter<std::fs::File>,
                        c: usize,
                        cur: &'static str,
                        amount: i64,
                        offset: u64,
                        reference: &str|
         -> anyhow::Result<()> {
            let date = start + Days::new(offset);
            let batch = if batch_day {
                let b = offset * 1_000 + (n as u64 % 7);
                let e = batches.entry(b).or_insert((0, cur));
                if e.1 == cur {
                    e.0 += amount;
                    format!("BATCH-{b}")
                } else {
                    String::new()
                }
            } else {
                String::new()
            };
            writeln!(
                w,
                "PAY-{n:09},E{},CUST-{c:07},{cur},{},{date},\"{reference}\",{source},{batch}",
                c % 3,
                cents(amount)
            )?;
            n += 1;
            Ok(())
        };
        if j >= inv.len() || kind >= 96 {
            // Unknown customer.
            let amount = i64::try_from(1_000 + rng.below(500_000)).unwrap_or(1_000);
            emit(
                &mut w,
                9_000_000 + rng.below(1_000),
                "USD",
                amount,
                rng.below(90) as u64,
                "",
            )?;
            continue;
        }
        let (c, amount, offset) = inv[j];
        let c = c as usize;
        let cur = currency_of(c);
        let pay_day = u64::from(offset) + 1 + rng.below(15) as u64;
        match kind {
            0..=54 => {
                emit(
                    &mut w,
                    c,
                    cur,
                    amount,
                    pay_day,
                    &format!("Payment for INV-{j:08}"),
                )?;
                j += 1;
            }
            55..=64 => {
                emit(&mut w, c, cur, amount, pay_day, "")?;
                j += 1;
            }
            65..=74 if j + 1 < inv.len() && inv[j + 1].0 as usize == c => {
                let total = amount + inv[j + 1].1;
                let reference = format!("Remittance INV-{j:08}, INV-{:08}", j + 1);
                emit(&mut w, c, cur, total, pay_day, &reference)?;
                j += 2;
            }
            75..=79 => {
                emit(
                    &mut w,
                    c,
                    cur,
                    amount * 6 / 10,
                    pay_day,
                    &format!("INV-{j:08} part"),
                )?;
                j += 1;
            }
            80..=82 => {
                emit(
                    &mut w,
                    c,
                    cur,
                    amount + 2_500,
                    pay_day,
                    &format!("INV-{j:08}"),
                )?;
                j += 1;
            }
            83..=86 => {
                let reference = format!("Invoice INV-{j:08}");
                emit(&mut w, c, cur, amount, pay_day, &reference)?;
                emit(
                    &mut w,
                    c,
                    cur,
                    amount,
                    pay_day + rng.below(3) as u64,
                    &reference,
                )?;
                j += 1;
            }
            87..=90 if cur == "USD" => {
                // Paid in EUR at about 1.08 USD per EUR.
                let eur = amount * 10_000 / 10_800;
                emit(
                    &mut w,
                    c,
                    "EUR",
                    eur,
                    pay_day,
                    &format!("INV-{j:08} EUR remittance"),
                )?;
                j += 1;
            }
            _ => {
                emit(&mut w, c, cur, amount, pay_day, &format!("ref {j}"))?;
                j += 1;
            }
        }
    }
    w.flush()?;
    let mut w = create(&paths.settlements)?;
    writeln!(w, "deposit_id,batch_id,date,currency,gross,fees,net")?;
    for (k, (b, (gross, cur))) in batches.iter().enumerate() {
        let gross = if k % 20 == 7 { gross + 1 } else { *gross };
        let fees = gross * 29 / 1_000;
        let date = start + Days::new(b / 1_000 + 2);
        writeln!(
            w,
            "DEP-{k:07},BATCH-{b},{date},{cur},{},{},{}",
            cents(gross),
            cents(fees),
            cents(gross - fees)
        )?;
    }
    w.flush()?;
    let mut w = create(&paths.rates)?;
    writeln!(w, "from,to,date,rate")?;
    for d in 0..100u64 {
        let date = start + Days::new(d);
        writeln!(w, "EUR,USD,{date},1.{:04}", 800 + (d % 7))?;
        writeln!(w, "GBP,USD,{date},1.{:04}", 2_700 + (d % 5))?;
    }
    w.flush()?;
    Ok(paths)
}
