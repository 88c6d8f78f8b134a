//! The command line: arguments are parsed and the configuration validated before any work
//! starts; each subcommand is a thin call into a library crate.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use db::Db;
use ledger::export::{ExportFormat, ads, writer_for};
use ledger::input::{InputDefaults, parse_date, parse_entry_json};
use ledger::{
    AccountCode, AccountType, Currency, CustomerId, Direction, EntityCode, EntryId, ExportRequest,
    IdempotencyKey, Ledger, LedgerError, LedgerOptions, NewAccount, Period, SourceName, Text,
    WriterConfig,
};

use crate::config::{Config, LogFormat};

/// cashloop: closes the money loop between Salesforce and Sage.
#[derive(Debug, Parser)]
#[command(name = "cashloop", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./cashloop.toml if it exists).
    #[arg(long, global = true, env = "CASHLOOP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://FILE or postgres://… (overrides the configuration).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole loop on this machine: the server with Salesforce, Sage Intacct and
    /// Authorize.Net simulators, seeded data, Closed Won → invoice → payment → ledger.
    Sandbox(crate::sandbox::SandboxArgs),
    /// The on-premise Sage 100 agent: polls the server's command queue, executes commands
    /// through the eBusiness Web Services, reports results (no configuration file needed).
    Agent(crate::agent_cli::AgentArgs),
    /// Run the HTTP server (API, health probes) and the background ledger sealer.
    Serve(ServeArgs),
    /// Apply pending database migrations.
    Migrate,
    /// The double-entry ledger: accounts, entries, periods, balances, verification, exports.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Create API keys for the HTTP API.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// The operator console: password hashes for `[[console.users]]`.
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// Vault keys: generate new key files, re-wrap the vault under the current key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The sync job queue: status, the error queue, operator retry and resolve.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Benchmarks; each ends with one JSON line of its figures.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Reconciliation: imports, month-end runs, reports, approvals, applying in Sage.
    #[command(subcommand)]
    Reconcile(crate::reconcile_cli::ReconcileCommand),
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Jobs by status, and the age of the oldest job waiting to run.
    Status,
    /// Lists jobs (newest first), e.g. the error queue: `--status dead`.
    Jobs {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Pulls (and pushes) now, in this process: every configured object, or one.
    Run {
        /// Required: this command does one round and exits (the server runs on a schedule).
        #[arg(long)]
        once: bool,
        #[arg(long)]
        object: Option<String>,
        /// A historical load through Bulk API 2.0 for objects never pulled before (then REST
        /// pulls continue from its cursor).
        #[arg(long)]
        initial_bulk: bool,
    },
    /// Runs a dead job again (audited).
    Retry { job: i64 },
    /// Closes a dead job without running it, saying why (audited).
    Resolve {
        job: i64,
        #[arg(long)]
        note: String,
    },
}

/// Who the CLI acts as in the audit log.
pub fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// `cashloop sync …`.
pub async fn sync_command(config: &Config, cmd: SyncCommand) -> anyhow::Result<()> {
    let db = open_db(config).await?;
    let jobs = sync::jobs::Jobs::new(db.clone());
    let result = async {
        match cmd {
            SyncCommand::Status => {
                let s = jobs.status().await?;
                for (status, n) in &s.by_status {
                    println!("{status:<10} {n}");
                }
                if s.by_status.is_empty() {
                    println!("no jobs");
                }
                match s.oldest_pending_age_s {
                    Some(age) => println!("oldest due job waiting {age} s"),
                    None => println!("nothing due"),
                }
            }
            SyncCommand::Jobs { status, limit } => {
                if let Some(s) = status.as_deref()
                    && !sync::jobs::STATUSES.contains(&s)
                {
                    anyhow::bail!(
                        "--status: must be pending, running, succeeded, dead or resolved"
                    );
                }
                for j in jobs.list(status.as_deref(), limit.clamp(1, 10_000)).await? {
                    println!(
                        "{:>8}  {:<10} {:<22} attempts {}/{}  {}",
                        j.id,
                        j.status,
                        j.kind,
                        j.attempts,
                        j.max_attempts,
                        j.last_error.as_deref().unwrap_or("")
                    );
                }
            }
            SyncCommand::Run {
                once,
                object,
                initial_bulk,
            } => {
                if !once {
                    anyhow::bail!("--once: `sync run` does one round; `cashloop serve` runs on a schedule");
                }
                let Some(sf) = &config.sync.salesforce else {
                    anyhow::bail!("sync.salesforce: no Salesforce connection is configured (login_url, auth, objects)");
                };
                if let Some(o) = &object
                    && !sf.objects.iter().any(|p| &p.name == o)
                {
                    anyhow::bail!("--object: {o} is not in sync.salesforce.objects");
                }
                let flows = sync::flows::SalesforceSync::new(
                    db.clone(),
                    sf.client.clone(),
                    sf.objects.clone(),
                    config.sync.integration_user_id.clone(),
                )
                .with_look_back(chrono::Duration::seconds(sf.look_back_s));
                for o in sf.objects.iter().filter(|p| object.as_ref().is_none_or(|n| n == &p.name)) {
                    if initial_bulk {
                        let r = flows
                            .initial_load_bulk(&o.name)
                            .await
                            .map_err(|e| anyhow::anyhow!("initial load {}: {e:?}", o.name))?;
                        println!(
                            "loaded {:<24} {} records through Bulk API 2.0 ({} result pages): {} changes queued",
                            o.name, r.records, r.pages, r.queued
                        );
                        continue;
                    }
                    let r = flows
                        .pull(&o.name, None)
                        .await
                        .map_err(|e| anyhow::anyhow!("pull {}: {e:?}", o.name))?;
                    println!(
                        "pulled {:<24} {} records in {} pages: {} changes queued, {} own writes skipped",
                        o.name, r.records, r.pages, r.queued, r.echoes
                    );
                    let p = flows
                        .push(&o.name, None)
                        .await
                        .map_err(|e| anyhow::anyhow!("push {}: {e:?}", o.name))?;
                    if p.sent > 0 {
                        println!(
                            "pushed {:<24} {} sent: {} done, {} failed, {} to review",
                            o.name, p.sent, p.done, p.failed, p.review
                        );
                    }
                }
            }
            SyncCommand::Retry { job } => {
                let r = jobs.retry(job, &cli_actor()).await?;
                println!("job {} is {} again (due now)", r.id, r.status);
            }
            SyncCommand::Resolve { job, note } => {
                if note.trim().is_empty() {
                    anyhow::bail!("--note: say why the job is resolved");
                }
                let r = jobs.resolve(job, &cli_actor(), note.trim()).await?;
                println!("job {} resolved", r.id);
            }
        }
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    result
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides server.listen), e.g. 127.0.0.1:0 for any free port.
    #[arg(long)]
    pub listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// The chart of accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Post a journal entry from a JSON file (`-` for standard input); schema in README.md.
    Post {
        #[arg(long)]
        file: PathBuf,
    },
    /// Reverse an entry: post its mirror image, linked to it.
    Reverse {
        /// Id of the entry to reverse.
        #[arg(long)]
        entry: i64,
        /// Idempotency key of the reversal.
        #[arg(long)]
        key: String,
        /// Effective date of the reversal (default: today).
        #[arg(long)]
        date: Option<String>,
        #[arg(long)]
        memo: Option<String>,
    },
    /// Show one entry as JSON.
    Entry { id: i64 },
    /// Account balances (all accounts, or one with --account).
    Balance {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        entity: Option<String>,
        /// Balance as of this effective date (YYYY-MM-DD), inclusive.
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The trial balance; debits equal credits per currency.
    TrialBalance {
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        entity: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A customer's open AR documents.
    OpenItems {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Accounting periods: close, reopen, list.
    #[command(subcommand)]
    Period(PeriodCommand),
    /// Seal pending entries into the hash chain now.
    Seal,
    /// Recompute the hash chain and balances; exits 1 and names the first broken entry.
    Verify {
        /// Do not seal pending entries first.
        #[arg(long)]
        no_seal: bool,
        #[arg(long)]
        json: bool,
    },
    /// Export postings for auditors.
    Export(ExportArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Csv,
    Jsonl,
    Saft,
    Ads,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    pub format: FormatArg,
    /// First effective date (YYYY-MM-DD), inclusive.
    #[arg(long)]
    pub from: String,
    /// Last effective date (YYYY-MM-DD), inclusive.
    #[arg(long)]
    pub to: String,
    /// Output file; for `ads`, a directory that receives GL_Detail and Trial_Balance files.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub entity: Option<String>,
    /// Keep only postings in this currency (required by SAF-T for multi-currency ledgers).
    #[arg(long)]
    pub currency: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add an account.
    Add {
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
        /// asset, liability, equity, revenue or expense.
        #[arg(long = "type")]
        account_type: String,
        #[arg(long)]
        currency: String,
        /// Default: ledger.default_entity.
        #[arg(long)]
        entity: Option<String>,
        /// debit or credit (default: from the type; set it for contra accounts).
        #[arg(long)]
        normal_balance: Option<String>,
        /// Postings to this account must name a customer (AR control accounts).
        #[arg(long)]
        customer_subledger: bool,
    },
    /// List accounts.
    List {
        #[arg(long)]
        entity: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PeriodCommand {
    /// Close a month: entries dated in it are refused from now on.
    Close {
        #[arg(long)]
        period: String,
        #[arg(long)]
        entity: Option<String>,
    },
    /// Reopen a closed month.
    Open {
        #[arg(long)]
        period: String,
        #[arg(long)]
        entity: Option<String>,
    },
    /// List periods that have been closed or reopened.
    List {
        #[arg(long)]
        entity: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new key-encryption key and fingerprint key (64 hex characters each, mode 0600)
    /// into DIR and print the configuration that uses them.
    Generate {
        #[arg(long)]
        dir: PathBuf,
        /// Version of the new key-encryption key (one more than the current one when rotating).
        #[arg(long, default_value_t = 1)]
        version: u32,
    },
    /// Re-wrap every vault data key under the current key-encryption key (`vault.kek`), while
    /// servers keep serving: they must hold the old key in `vault.previous_keks` meanwhile.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Write a new secret (64 hex characters, mode 0600) that API keys are hashed with.
    Secret {
        #[arg(long)]
        file: PathBuf,
    },
    /// Generate a new random API key and print the configuration lines for it.
    New {
        #[arg(long)]
        name: String,
        /// admin, finance, payments or auditor.
        #[arg(long)]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Reads a password from the first line of standard input and prints its PBKDF2 hash
    /// with the `[[console.users]]` lines to add (the password itself is never printed).
    #[command(name = "hash-password")]
    HashPassword {
        /// The user's name.
        #[arg(long)]
        name: String,
        /// admin, finance or viewer.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// PBKDF2 iterations (at least 10000).
        #[arg(long, default_value_t = crate::console::password::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
}

/// `cashloop console hash-password`.
pub fn console_command(cmd: ConsoleCommand) -> anyhow::Result<()> {
    match cmd {
        ConsoleCommand::HashPassword {
            name,
            role,
            iterations,
        } => {
            if crate::config::ConsoleRole::parse(&role).is_none() {
                bail!("--role: {role:?} must be one of admin, finance, viewer");
            }
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.chars().count() < 12 {
                bail!("the password must be at least 12 characters");
            }
            let hash = crate::console::password::PasswordHash::new(password, iterations)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("[[console.users]]");
            println!("name = {name:?}");
            println!("role = {role:?}");
            println!("password_hash = \"{hash}\"");
            Ok(())
        }
    }
}

/// Exit code for input the ledger refused (1 is any other failure).
pub const EXIT_REJECTED: u8 = 2;

/// Loads the configuration, applying the global flags.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(url) = &cli.database_url {
        config.database_url = url.clone();
    }
    Ok(config)
}

pub fn init_logging(config: &Config, default_level: &str) {
    // CASHLOOP_LOG overrides the level for one run, e.g. CASHLOOP_LOG=debug.
    let level = std::env::var("CASHLOOP_LOG").unwrap_or_else(|_| {
        if config.log_level == "info" {
            default_level.to_owned()
        } else {
            config.log_level.clone()
        }
    });
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Connects and migrates.
pub async fn open_db(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database_url, &config.db)
        .await
        .with_context(|| format!("opening database {}", redact_url(&config.database_url)))?;
    db.migrate().await.context("applying migrations")?;
    Ok(db)
}

/// A URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub fn open_ledger(config: &Config, db: Db) -> Ledger {
    let mut writer = WriterConfig::for_backend(db.backend());
    if config.ledger_writers > 0 {
        writer.writers = config.ledger_writers;
    }
    writer.max_batch_entries = config.ledger_max_batch_entries;
    Ledger::new(
        db.clone(),
        LedgerOptions {
            writer,
            clock: Arc::new(ledger::SystemClock),
        },
    )
}

fn rej<T>(r: Result<T, ledger::Rejection>) -> anyhow::Result<T> {
    r.map_err(|r| LedgerError::Rejected(r).into())
}

fn opt_date(s: Option<&str>, field: &str) -> anyhow::Result<Option<chrono::NaiveDate>> {
    s.map(|s| rej(parse_date(s, field))).transpose()
}

fn entity_or_default(config: &Config, s: Option<&str>) -> anyhow::Result<EntityCode> {
    match s {
        Some(s) => rej(EntityCode::parse(s, "--entity")),
        None => Ok(config.default_entity.clone()),
    }
}

fn progress_bar(total: Option<u64>, what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {what} {{human_pos}}/{{human_len}} [{{elapsed_precise}}] {{per_sec}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// Runs a ledger subcommand.
pub async fn ledger_command(config: &Config, cmd: LedgerCommand) -> anyhow::Result<u8> {
    let db = open_db(config).await?;
    let ledger = open_ledger(config, db.clone());
    let code = run_ledger(config, &ledger, cmd).await;
    db.close().await;
    code
}

async fn run_ledger(config: &Config, ledger: &Ledger, cmd: LedgerCommand) -> anyhow::Result<u8> {
    match cmd {
        LedgerCommand::Account(AccountCommand::Add {
            code,
            name,
            account_type,
            currency,
            entity,
            normal_balance,
            customer_subledger,
        }) => {
            let account_type = AccountType::parse(&account_type).with_context(|| {
                format!("--type: {account_type:?} is not one of asset, liability, equity, revenue, expense")
            })?;
            let normal_balance = match normal_balance.as_deref() {
                None => account_type.default_normal_balance(),
                Some("debit") => Direction::Debit,
                Some("credit") => Direction::Credit,
                Some(other) => bail!("--normal-balance: {other:?} must be debit or credit"),
            };
            let account = ledger
                .create_account(
                    NewAccount {
                        entity: entity_or_default(config, entity.as_deref())?,
                        code: rej(AccountCode::parse(&code, "--code"))?,
                        name: rej(Text::parse(&name, "--name"))?,
                        account_type,
                        normal_balance,
                        currency: Currency::parse(&currency).map_err(|e| {
                            LedgerError::Rejected(ledger::Rejection::money(&e, "--currency"))
                        })?,
                        customer_subledger,
                    },
                    "cli",
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&account)?);
        }
        LedgerCommand::Account(AccountCommand::List { entity, json }) => {
            let entity = entity
                .map(|e| rej(EntityCode::parse(&e, "--entity")))
                .transpose()?;
            let accounts = ledger.accounts(entity.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&accounts)?);
            } else {
                println!(
                    "{:<8} {:<12} {:<10} {:<6} {:<4} name",
                    "entity", "code", "type", "normal", "cur"
                );
                for a in accounts {
                    println!(
                        "{:<8} {:<12} {:<10} {:<6} {:<4} {}{}",
                        a.entity,
                        a.code,
                        a.account_type.as_str(),
                        a.normal_balance.as_str(),
                        a.currency,
                        a.name,
                        if a.customer_subledger {
                            " (customer sub-ledger)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        LedgerCommand::Post { file } => {
            let bytes = if file == Path::new("-") {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                buf
            } else {
                std::fs::read(&file)
                    .with_context(|| format!("--file: cannot read {}", file.display()))?
            };
            let defaults = InputDefaults {
                entity: config.default_entity.clone(),
                source: rej(SourceName::parse("cli", "source"))?,
                idempotency_key: None,
            };
            let entry = rej(parse_entry_json(&bytes, &defaults))?;
            let out = ledger.post(entry).await?;
            if out.replayed {
                eprintln!(
                    "idempotency key already used with this same entry: returning entry {}",
                    out.entry.id
                );
            }
            println!("{}", serde_json::to_string_pretty(&out.entry)?);
        }
        LedgerCommand::Reverse {
            entry,
            key,
            date,
            memo,
        } => {
            let out = ledger
                .reverse(
                    EntryId(entry),
                    rej(IdempotencyKey::parse(&key, "--key"))?,
                    opt_date(date.as_deref(), "--date")?,
                    memo.map(|m| rej(Text::parse(&m, "--memo"))).transpose()?,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&out.entry)?);
        }
        LedgerCommand::Entry { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&ledger.entry(EntryId(id)).await?)?
            );
        }
        LedgerCommand::Balance {
            account,
            entity,
            as_of,
            json,
        } => {
            let as_of = opt_date(as_of.as_deref(), "--as-of")?;
            let entity = entity_or_default(config, entity.as_deref())?;
            let balances = match account {
                Some(code) => vec![
                    ledger
                        .balance(
                            &entity,
                            &rej(AccountCode::parse(&code, "--account"))?,
                            as_of,
                        )
                        .await?,
                ],
                None => {
                    let mut v = Vec::new();
                    for a in ledger.accounts(Some(&entity)).await? {
                        v.push(ledger.balance(&entity, &a.code, as_of).await?);
                    }
                    v
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&balances)?);
            } else {
                for b in balances {
                    println!(
                        "{:<12} {:>22}  {}",
                        b.account.code,
                        b.balance.to_string(),
                        b.account.name
                    );
                }
            }
        }
        LedgerCommand::TrialBalance {
            as_of,
            entity,
            json,
        } => {
            let as_of = opt_date(as_of.as_deref(), "--as-of")?;
            let entity = entity
                .map(|e| rej(EntityCode::parse(&e, "--entity")))
                .transpose()?;
            let tb = ledger.trial_balance(entity.as_ref(), as_of).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tb)?);
            } else {
                println!(
                    "Trial balance{}",
                    as_of.map(|d| format!(" as of {d}")).unwrap_or_default()
                );
                println!(
                    "{:<8} {:<12} {:<4} {:>20} {:>20}  name",
                    "entity", "account", "cur", "debit", "credit"
                );
                for r in &tb.rows {
                    let c = r.account.currency;
                    println!(
                        "{:<8} {:<12} {:<4} {:>20} {:>20}  {}",
                        r.account.entity,
                        r.account.code,
                        c,
                        ledger::export::format_minor(i128::from(r.debit_minor), c),
                        ledger::export::format_minor(i128::from(r.credit_minor), c),
                        r.account.name
                    );
                }
                for (c, (d, cr)) in &tb.totals {
                    println!(
                        "{:<8} {:<12} {:<4} {:>20} {:>20}",
                        "total",
                        "",
                        c,
                        ledger::export::format_minor(*d, *c),
                        ledger::export::format_minor(*cr, *c)
                    );
                }
            }
        }
        LedgerCommand::OpenItems { customer, as_of } => {
            let items = ledger
                .open_items(
                    &rej(CustomerId::parse(&customer, "--customer"))?,
                    opt_date(as_of.as_deref(), "--as-of")?,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        LedgerCommand::Period(p) => match p {
            PeriodCommand::Close { period, entity } => {
                let entity = entity_or_default(config, entity.as_deref())?;
                let period = rej(Period::parse(&period, "--period"))?;
                ledger.close_period(&entity, period, "cli").await?;
                println!("period {period} of entity {entity} is closed");
            }
            PeriodCommand::Open { period, entity } => {
                let entity = entity_or_default(config, entity.as_deref())?;
                let period = rej(Period::parse(&period, "--period"))?;
                ledger.reopen_period(&entity, period, "cli").await?;
                println!("period {period} of entity {entity} is open");
            }
            PeriodCommand::List { entity } => {
                let entity = entity
                    .map(|e| rej(EntityCode::parse(&e, "--entity")))
                    .transpose()?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&ledger.periods(entity.as_ref()).await?)?
                );
            }
        },
        LedgerCommand::Seal => {
            let n = ledger.seal().await?;
            println!("sealed {n} entries");
        }
        LedgerCommand::Verify { no_seal, json } => {
            if !no_seal {
                ledger.seal().await?;
            }
            let bar = progress_bar(None, "verifying entries");
            let report = ledger
                .verify(&|n| {
                    if let Some(b) = &bar {
                        b.set_position(n);
                    }
                })
                .await?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report.ok() {
                println!(
                    "ledger verified: {} entries, {} postings, {} sealed, {} pending; chain head {} {} ({} ms)",
                    report.entries,
                    report.postings,
                    report.sealed,
                    report.unsealed,
                    report.chain_head_seq.unwrap_or(0),
                    report.chain_head_hash.as_deref().unwrap_or("-"),
                    report.elapsed_ms
                );
            } else {
                let first = report.first_break.as_ref();
                println!(
                    "LEDGER VERIFICATION FAILED: {} problem(s). First broken: entry {} (seq {}): {}",
                    report.problems,
                    first
                        .and_then(|b| b.entry_id)
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "-".into()),
                    first
                        .and_then(|b| b.seq)
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "-".into()),
                    first.map(|b| b.reason.as_str()).unwrap_or("")
                );
                for b in report.sample.iter().skip(1) {
                    println!(
                        "  also: entry {:?} seq {:?}: {}",
                        b.entry_id, b.seq, b.reason
                    );
                }
            }
            return Ok(if report.ok() { 0 } else { 1 });
        }
        LedgerCommand::Export(args) => export(config, ledger, args).await?,
    }
    Ok(0)
}

async fn export(config: &Config, ledger: &Ledger, args: ExportArgs) -> anyhow::Result<()> {
    let format = match args.format {
        FormatArg::Csv => ExportFormat::Csv,
        FormatArg::Jsonl => ExportFormat::Jsonl,
        FormatArg::Saft => ExportFormat::Saft,
        FormatArg::Ads => ExportFormat::Ads,
    };
    let from = rej(parse_date(&args.from, "--from"))?;
    let to = rej(parse_date(&args.to, "--to"))?;
    if to < from {
        bail!("--to: {to} is before --from {from}");
    }
    let req = ExportRequest {
        format,
        from,
        to,
        entity: args
            .entity
            .map(|e| rej(EntityCode::parse(&e, "--entity")))
            .transpose()?,
        currency: args
            .currency
            .map(|c| {
                Currency::parse(&c)
                    .map_err(|e| LedgerError::Rejected(ledger::Rejection::money(&e, "--currency")))
            })
            .transpose()?,
    };
    let _ = config;
    let meta = ledger.export_meta(&req).await?;
    let detail_path = if format == ExportFormat::Ads {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("--out: cannot create directory {}", args.out.display()))?;
        let tb_path = args.out.join(ads::trial_balance_file_name(to));
        let lines = ledger.trial_balance_lines(&req).await?;
        let f = std::fs::File::create(&tb_path)
            .with_context(|| format!("--out: cannot create {}", tb_path.display()))?;
        ads::write_trial_balance(std::io::BufWriter::new(f), &lines, &meta)?;
        args.out.join(ads::gl_detail_file_name(from, to))
    } else {
        args.out.clone()
    };
    // Write to a temporary name and rename at the end: a failed export leaves no half file.
    let tmp = detail_path.with_extension("partial");
    let file = std::fs::File::create(&tmp)
        .with_context(|| format!("--out: cannot create {}", tmp.display()))?;
    let mut writer = writer_for(format, std::io::BufWriter::with_capacity(1 << 20, file));
    let bar = progress_bar(Some(meta.posting_count), "exporting postings");
    let result = ledger
        .export(&req, &meta, writer.as_mut(), &|n| {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        })
        .await;
    drop(writer);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match result {
        Ok(summary) => {
            std::fs::rename(&tmp, &detail_path)?;
            eprintln!(
                "exported {} entries, {} postings to {}",
                summary.entries,
                summary.postings,
                detail_path.display()
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.into())
        }
    }
}

/// Prints a new API key once, and the configuration that accepts it; or a new secret.
pub fn api_key_command(config: &Config, cmd: ApiKeyCommand) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCommand::Secret { file } => {
            write_secret_file(&file, &gateway::crypto::generate_key_hex()?)?;
            println!("wrote {}; add to cashloop.toml:", file.display());
            println!("[server]");
            println!(
                "api_key_secret = {{ file = {:?} }}",
                file.display().to_string()
            );
            Ok(())
        }
        ApiKeyCommand::New { name, role } => {
            if crate::config::Role::parse(&role).is_none() {
                bail!("--role: {role:?} must be one of admin, finance, payments, auditor");
            }
            let secret = config
                .api_key_secret
                .as_ref()
                .context("configuration key `server.api_key_secret`: set it first (`cashloop api-key secret --file …`)")?;
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let key = zeroize::Zeroizing::new(format!("cl_{}", hex::encode(raw)));
            let hash = hex::encode(secret.fingerprint(key.as_bytes()));
            println!("API key (shown once; store it now): {}", key.as_str());
            println!();
            println!("Add to cashloop.toml:");
            println!("[[server.api_keys]]");
            println!("name = {name:?}");
            println!("role = {role:?}");
            println!("key_hmac = \"{hash}\"");
            Ok(())
        }
    }
}

/// Reads the vault's keys from where the configuration says; errors name the config key.
pub fn load_vault_keys(
    src: &crate::config::VaultKeySources,
) -> anyhow::Result<gateway::vault::VaultKeys> {
    use crate::config::KeySource;
    use gateway::crypto::{FingerprintKey, Kek, KeyRing};
    fn kek(r: &crate::config::KeyRef) -> anyhow::Result<Kek> {
        match &r.source {
            KeySource::File(p) => Kek::from_file(r.version, p),
            KeySource::Env(v) => Kek::from_env(r.version, v),
        }
        .map_err(|e| anyhow::anyhow!("configuration key `{}`: {e}", r.config_key))
    }
    let mut ring = KeyRing::new(kek(&src.kek)?);
    for p in &src.previous_keks {
        ring = ring
            .with_previous(kek(p)?)
            .map_err(|e| anyhow::anyhow!("configuration key `{}`: {e}", p.config_key))?;
    }
    let f = &src.fingerprint_key;
    let fingerprint = match &f.source {
        KeySource::File(p) => FingerprintKey::from_file(f.version, p),
        KeySource::Env(v) => FingerprintKey::from_env(f.version, v),
    }
    .map_err(|e| anyhow::anyhow!("configuration key `{}`: {e}", f.config_key))?;
    Ok(gateway::vault::VaultKeys { ring, fingerprint })
}

/// `cashloop keys …`.
pub async fn keys_command(config: &Config, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate { dir, version } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("--dir: cannot create {}", dir.display()))?;
            let kek_path = dir.join(format!("kek-{version}.hex"));
            let fp_path = dir.join("fingerprint-1.hex");
            write_secret_file(&kek_path, &gateway::crypto::generate_key_hex()?)?;
            let fp_new = !fp_path.exists();
            if fp_new {
                write_secret_file(&fp_path, &gateway::crypto::generate_key_hex()?)?;
            }
            println!(
                "wrote {}{}",
                kek_path.display(),
                if fp_new {
                    format!(" and {}", fp_path.display())
                } else {
                    String::new()
                }
            );
            println!();
            println!("[vault]");
            println!(
                "kek = {{ version = {version}, file = {:?} }}",
                kek_path.display().to_string()
            );
            if version > 1 {
                println!("# while rotating, keep the old key readable:");
                println!(
                    "previous_keks = [{{ version = {}, file = {:?} }}]",
                    version - 1,
                    dir.join(format!("kek-{}.hex", version - 1))
                        .display()
                        .to_string()
                );
            }
            println!(
                "fingerprint_key = {{ version = 1, file = {:?} }}",
                fp_path.display().to_string()
            );
            Ok(())
        }
        KeysCommand::Rotate => {
            let src = config
                .vault
                .as_ref()
                .context("configuration key `vault`: the vault is not configured (see `cashloop keys generate`)")?;
            let keys = std::sync::Arc::new(load_vault_keys(src)?);
            let db = open_db(config).await?;
            let vault = gateway::vault::Vault::new(db.clone(), keys);
            let bar = progress_bar(None, "re-wrapping data keys");
            let report = vault
                .rotate("cli", &|n| {
                    if let Some(b) = &bar {
                        b.set_position(n);
                    }
                })
                .await?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            println!(
                "re-wrapped {} data keys under key version {}; older key versions can now be retired",
                report.rewrapped, report.current_version
            );
            db.close().await;
            Ok(())
        }
    }
}

/// Creates `path` readable by its owner only; refuses to overwrite a key.
fn write_secret_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| {
        format!(
            "cannot create {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}
