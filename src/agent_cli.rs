//! `cashloop agent`: the on-premise agent for Sage 100 (see `sync::sage100::agent`) or, with
//! `--line businessworks`, Sage BusinessWorks (see `sync::businessworks`). It needs no
//! configuration file or database of the server: only where to dial, its name and key, where
//! its idempotency record lives, how to reach the Sage line, and (for reads) its ODBC data
//! source.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use sync::businessworks::{BwExecutor, BwNames, BwState, ImportFolder, Reader};
use sync::odbc::Source;
use sync::sage100::agent::{AgentOptions, Executor, StateStore, ViFolder};
use sync::sage100::soap::Client;

/// The Sage line an agent serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Line {
    Sage100,
    Businessworks,
}

/// BusinessWorks (`--line businessworks`): ODBC reads, import-file writes.
#[derive(Debug, Args)]
pub struct BwArgs {
    /// The folder BusinessWorks' import utility reads import files from.
    #[arg(long)]
    pub import_folder: Option<PathBuf>,
    /// Where the import writes its logs (default: IMPORT_FOLDER/log).
    #[arg(long)]
    pub import_log_folder: Option<PathBuf>,
    /// A TOML file naming BusinessWorks' tables and columns (`[customer]`, `[order]`,
    /// `[order_line]`, `[invoice]`, `[invoice_line]`, `[item]`); defaults otherwise.
    #[arg(long)]
    pub bw_config: Option<PathBuf>,
    /// How long one execution waits for the import's log before leaving the command for a
    /// retry, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub import_wait_ms: u64,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The cashloop server's base URL, e.g. https://cashloop.example.com.
    #[arg(long)]
    pub server: String,
    /// This agent's name (as in the server's `[[agents]]`).
    #[arg(long)]
    pub name: String,
    /// A file holding the agent key (the server stores its SHA-256).
    #[arg(long)]
    pub key_file: PathBuf,
    /// The local idempotency record (a SQLite file, created if missing).
    #[arg(long)]
    pub state: PathBuf,
    /// The Sage line this agent serves.
    #[arg(long, value_enum, default_value = "sage100")]
    pub line: Line,
    /// The eBusiness Web Services URL, e.g. https://sage100.local/SageWS/eBusinessWebServices.asmx
    /// (sage100).
    #[arg(long)]
    pub sage_url: Option<String>,
    /// The Sage 100 web services user (sage100).
    #[arg(long)]
    pub sage_user: Option<String>,
    /// A file holding that user's password (sage100).
    #[arg(long)]
    pub sage_password_file: Option<PathBuf>,
    /// The Sage 100 company code, e.g. ABC (sage100).
    #[arg(long)]
    pub company: Option<String>,
    /// The UDF holding the Salesforce id on customers and sales orders.
    #[arg(long, default_value = "UDF_SF_ID")]
    pub sf_udf: String,
    /// The Visual Integrator import folder cash receipts are written to.
    #[arg(long)]
    pub vi_folder: Option<PathBuf>,
    /// A file holding the ODBC connection string (a file: it may hold a password): Sage 100's
    /// ProvideX data source for the `read_*` commands, e.g. `DSN=SOTAMAS90;UID=…;PWD=…;COMPANY=ABC;`,
    /// or BusinessWorks' Actian Zen data source (required with `--line businessworks`).
    #[arg(long)]
    pub odbc_file: Option<PathBuf>,
    /// How long one poll waits for a command, milliseconds.
    #[arg(long, default_value_t = 20_000)]
    pub wait_ms: u64,
    /// The longest wait between reconnection attempts, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub max_backoff_ms: u64,
    #[command(flatten)]
    pub bw: BwArgs,
}

fn need<T>(v: Option<T>, flag: &str, line: &str) -> anyhow::Result<T> {
    v.ok_or_else(|| anyhow::anyhow!("{flag} is required with --line {line}"))
}

fn read_secret(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?;
    let s = s.trim().to_owned();
    if s.is_empty() {
        anyhow::bail!("{what} {} is empty", path.display());
    }
    Ok(s)
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let key = read_secret(&args.key_file, "--key-file")?;
    let opts = AgentOptions {
        server: args.server.clone(),
        name: args.name.clone(),
        key,
        wait_ms: args.wait_ms,
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_millis(args.max_backoff_ms.max(200)),
    };
    match args.line {
        Line::Sage100 => {
            let password = read_secret(
                &need(args.sage_password_file, "--sage-password-file", "sage100")?,
                "--sage-password-file",
            )?;
            let state = StateStore::open(&args.state)
                .await
                .map_err(|e| anyhow::anyhow!("--state {}: {e}", args.state.display()))?;
            let executor = Executor {
                client: Client::new(
                    &need(args.sage_url, "--sage-url", "sage100")?,
                    &need(args.sage_user, "--sage-user", "sage100")?,
                    &password,
                    &need(args.company, "--company", "sage100")?,
                ),
                state,
                sf_udf: args.sf_udf,
                vi_folder: args.vi_folder.map(ViFolder),
                odbc: match &args.odbc_file {
                    Some(f) => Some(Source::new(read_secret(f, "--odbc-file")?)),
                    None => None,
                },
            };
            sync::sage100::agent::run(opts, executor, crate::server::shutdown_signal()).await;
        }
        Line::Businessworks => {
            let odbc_file = need(args.odbc_file, "--odbc-file", "businessworks")?;
            let executor = businessworks_executor(args.bw, &odbc_file, &args.state).await?;
            sync::sage100::agent::run(opts, executor, crate::server::shutdown_signal()).await;
        }
    }
    Ok(())
}

/// The BusinessWorks executor from `--odbc-file`, `--import-folder` and `--bw-config`.
async fn businessworks_executor(
    bw: BwArgs,
    odbc_file: &std::path::Path,
    state: &std::path::Path,
) -> anyhow::Result<BwExecutor> {
    const LINE: &str = "businessworks";
    let connection = read_secret(odbc_file, "--odbc-file")?;
    let dir = need(bw.import_folder, "--import-folder", LINE)?;
    if !dir.is_dir() {
        anyhow::bail!("--import-folder {} is not a folder", dir.display());
    }
    let mut import = ImportFolder::new(dir);
    if let Some(log) = bw.import_log_folder {
        import.log_dir = log;
    }
    let names = match &bw.bw_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--bw-config {}: {e}", path.display()))?;
            let names: BwNames = figment::Figment::from(
                <figment::providers::Toml as figment::providers::Format>::string(&text),
            )
            .extract()
            .map_err(|e| anyhow::anyhow!("--bw-config {}: {e}", path.display()))?;
            names
                .validate()
                .map_err(|e| anyhow::anyhow!("--bw-config {}: {e}", path.display()))?;
            names
        }
        None => BwNames::default(),
    };
    let state = BwState::open(state)
        .await
        .map_err(|e| anyhow::anyhow!("--state {}: {e}", state.display()))?;
    let mut executor = BwExecutor::new(Reader::new(Source::new(connection), names), state, import);
    executor.log_wait = Duration::from_millis(bw.import_wait_ms);
    Ok(executor)
}
