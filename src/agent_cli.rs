//! `cashloop agent`: the on-premise Sage 100 agent (see `sync::sage100::agent`). It needs no
//! configuration file or database of the server: only where to dial, its name and key, where
//! its idempotency record lives, how to reach the Sage 100 web services, and (for the reads)
//! the ODBC data source.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use sync::odbc::Source;
use sync::sage100::agent::{AgentOptions, Executor, StateStore, ViFolder};
use sync::sage100::soap::Client;

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
    /// The eBusiness Web Services URL, e.g. https://sage100.local/SageWS/eBusinessWebServices.asmx.
    #[arg(long)]
    pub sage_url: String,
    /// The Sage 100 web services user.
    #[arg(long)]
    pub sage_user: String,
    /// A file holding that user's password.
    #[arg(long)]
    pub sage_password_file: PathBuf,
    /// The Sage 100 company code (ABC).
    #[arg(long)]
    pub company: String,
    /// The UDF holding the Salesforce id on customers and sales orders.
    #[arg(long, default_value = "UDF_SF_ID")]
    pub sf_udf: String,
    /// The Visual Integrator import folder cash receipts are written to.
    #[arg(long)]
    pub vi_folder: Option<PathBuf>,
    /// A file holding the ODBC connection string for the `read_*` commands, e.g.
    /// `DSN=SOTAMAS90;UID=…;PWD=…;COMPANY=ABC;` (a file: it holds a password).
    #[arg(long)]
    pub odbc_file: Option<PathBuf>,
    /// How long one poll waits for a command, milliseconds.
    #[arg(long, default_value_t = 20_000)]
    pub wait_ms: u64,
    /// The longest wait between reconnection attempts, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub max_backoff_ms: u64,
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
    let password = read_secret(&args.sage_password_file, "--sage-password-file")?;
    let odbc = match &args.odbc_file {
        Some(f) => Some(Source::new(read_secret(f, "--odbc-file")?)),
        None => None,
    };
    let state = StateStore::open(&args.state)
        .await
        .map_err(|e| anyhow::anyhow!("--state {}: {e}", args.state.display()))?;
    let executor = Executor {
        client: Client::new(&args.sage_url, &args.sage_user, &password, &args.company),
        state,
        sf_udf: args.sf_udf,
        vi_folder: args.vi_folder.map(ViFolder),
        odbc,
    };
    let opts = AgentOptions {
        server: args.server,
        name: args.name,
        key,
        wait_ms: args.wait_ms,
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_millis(args.max_backoff_ms.max(200)),
    };
    sync::sage100::agent::run(opts, executor, crate::server::shutdown_signal()).await;
    Ok(())
}
