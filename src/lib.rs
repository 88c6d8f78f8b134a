//! The `cashloop` binary's library half: configuration, the CLI, the HTTP server and the
//! benchmarks. It wires the domain crates together and holds no business rules of its own.

pub mod agent_api;
pub mod agent_cli;
pub mod alerts;
pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
pub mod reconcile_cli;
pub mod sandbox;
pub mod server;
pub mod tls;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, EXIT_REJECTED};

/// Parses arguments, runs the command, and maps the outcome to an exit code.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let rejected = e
                .downcast_ref::<ledger::LedgerError>()
                .and_then(|l| l.rejection())
                .map(|r| r.code);
            match rejected {
                Some(code) => {
                    eprintln!("error [{code}]: {e}");
                    ExitCode::from(EXIT_REJECTED)
                }
                None => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    // The sandbox writes its own configuration.
    if let Command::Sandbox(args) = cli.command {
        sandbox::run(args).await?;
        return Ok(0);
    }
    // The agent runs on the customer's network, without the server's configuration.
    if let Command::Agent(args) = cli.command {
        let filter = tracing_subscriber::EnvFilter::try_new(
            std::env::var("CASHLOOP_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        agent_cli::run(args).await?;
        return Ok(0);
    }
    let mut config = cli::load_config(&cli)?;
    match cli.command {
        Command::Serve(args) => {
            if let Some(listen) = args.listen {
                config.listen = listen
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--listen: {listen:?} is not an address:port"))?;
                if !config.listen.ip().is_loopback()
                    && config.tls.is_none()
                    && !config.behind_tls_proxy
                {
                    anyhow::bail!(
                        "--listen: {} is not a loopback address; plain HTTP beyond loopback needs [server.tls] or server.behind_tls_proxy = true",
                        config.listen
                    );
                }
            }
            cli::init_logging(&config, "info");
            serve(config).await?;
            Ok(0)
        }
        Command::Sandbox(_) | Command::Agent(_) => {
            unreachable!("handled before the configuration is read")
        }
        Command::Migrate => {
            cli::init_logging(&config, "warn");
            let db = cli::open_db(&config).await?;
            println!("migrations applied ({})", db.backend().name());
            db.close().await;
            Ok(0)
        }
        Command::Ledger(cmd) => {
            cli::init_logging(&config, "warn");
            cli::ledger_command(&config, cmd).await
        }
        Command::Console(cmd) => {
            cli::console_command(cmd)?;
            Ok(0)
        }
        Command::ApiKey(cmd) => {
            cli::api_key_command(&config, cmd)?;
            Ok(0)
        }
        Command::Keys(cmd) => {
            cli::init_logging(&config, "warn");
            cli::keys_command(&config, cmd).await?;
            Ok(0)
        }
        Command::Sync(cmd) => {
            cli::init_logging(&config, "warn");
            cli::sync_command(&config, cmd).await?;
            Ok(0)
        }
        Command::Reconcile(cmd) => {
            cli::init_logging(&config, "warn");
            reconcile_cli::command(&config, cmd, &cli::cli_actor()).await
        }
        Command::Bench(cmd) => {
            cli::init_logging(&config, "warn");
            bench::run(&config, cmd).await?;
            Ok(0)
        }
    }
}

/// `cashloop serve`: migrate, start the ledger and its sealer, serve until a signal.
pub async fn serve(config: config::Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("server.listen: cannot bind {}: {e}", config.listen))?;
    serve_on(config, listener, server::shutdown_signal()).await
}

/// Serves on an already-bound listener until `shutdown` resolves (tests bind port 0).
pub async fn serve_on(
    config: config::Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Vault keys are read before anything else starts: a bad key stops the server at once.
    let vault_keys = match &config.vault {
        Some(src) => Some(std::sync::Arc::new(cli::load_vault_keys(src)?)),
        None => None,
    };
    let db = cli::open_db(&config).await?;
    let ledger = cli::open_ledger(&config, db.clone());
    let vault = vault_keys.map(|k| gateway::vault::Vault::new(db.clone(), k));
    let outbox = if config.webhooks.is_empty() {
        None
    } else {
        Some(gateway::webhooks::Outbox::new(
            db.clone(),
            config.webhooks.clone(),
        )?)
    };
    let authnet = match &config.gateway {
        Some(config::GatewayConfig {
            processor: config::ProcessorConfig::AuthorizeNet { client, .. },
            ..
        }) => Some(gateway::authnet::AuthorizeNet::new((**client).clone())?),
        _ => None,
    };
    let payments = match (&config.gateway, &vault) {
        (Some(g), Some(v)) => {
            let processor: std::sync::Arc<dyn gateway::processor::Processor> = match &g.processor {
                config::ProcessorConfig::Sandbox {
                    ach_settle_after_ms,
                } => std::sync::Arc::new(
                    gateway::sandbox::SandboxProcessor::new().with_ach_settle_after(
                        std::time::Duration::from_millis(*ach_settle_after_ms),
                    ),
                ),
                config::ProcessorConfig::AuthorizeNet { .. } => match &authnet {
                    Some(a) => std::sync::Arc::new(a.clone()),
                    None => anyhow::bail!("gateway.authorize_net: connector not built"),
                },
            };
            let p = gateway::service::Payments::new(
                db.clone(),
                ledger.clone(),
                v.clone(),
                processor,
                g.accounts.clone(),
            );
            let p = match &outbox {
                Some(o) => p.with_outbox(o.clone()),
                None => p,
            };
            // Payments on an Opportunity become AR payments in Intacct (queued atomically).
            // On X3 they become receipts there instead (one Sage line per installation).
            // On an agent-backed line (Sage 100, BusinessWorks) they become that line's jobs.
            let agent_jobs = config
                .sync
                .agent_line()
                .and_then(|l| sync::agent_loop::payment_jobs(l.config.line));
            Some(match (&config.sync.intacct, &config.sync.x3, agent_jobs) {
                (Some(_), _, _) => {
                    p.with_observer(std::sync::Arc::new(sync::q2c::PaymentJobs::default()))
                }
                (None, Some(_), _) => {
                    p.with_observer(std::sync::Arc::new(sync::x3_loop::payment_jobs()))
                }
                (None, None, Some(j)) => p.with_observer(std::sync::Arc::new(j)),
                (None, None, None) => p,
            })
        }
        _ => None,
    };
    let sealer = ledger.spawn_sealer(std::time::Duration::from_millis(config.seal_interval_ms));
    let addr = listener.local_addr()?;
    // One plain line on stdout, so scripts (and tests) learn the port when listening on :0.
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("cashloop listening on {scheme}://{addr}");
    tracing::info!(
        listen = %addr,
        tls = config.tls.is_some(),
        backend = db.backend().name(),
        database = %cli::redact_url(&config.database_url),
        "cashloop serving"
    );
    let (resolver_stop, resolver_rx) = tokio::sync::watch::channel(false);
    if let (Some(p), Some(g)) = (&payments, &config.gateway) {
        tokio::spawn(p.clone().run_resolver(
            std::time::Duration::from_millis(g.resolver_interval_ms),
            chrono::Duration::seconds(g.ach_poll_interval_s as i64),
            resolver_rx,
        ));
    }
    // The sync worker: handlers for what is configured; idle (no polling) when nothing is.
    let jobs = sync::jobs::Jobs::new(db.clone());
    let mut registry = sync::jobs::Registry::new();
    let (sync_stop, sync_rx) = tokio::sync::watch::channel(false);
    if let Some(sf) = &config.sync.salesforce {
        let flows = sync::flows::SalesforceSync::new(
            db.clone(),
            sf.client.clone(),
            sf.objects.clone(),
            config.sync.integration_user_id.clone(),
        )
        .with_look_back(chrono::Duration::seconds(sf.look_back_s));
        registry = flows.clone().register(registry);
        if let Some(ia) = &config.sync.intacct {
            let q2c = std::sync::Arc::new(sync::q2c::Q2c::new(
                db.clone(),
                jobs.clone(),
                flows.clone(),
                ia.entities.clone(),
                ledger.clone(),
                ia.q2c.clone(),
            ));
            registry = sync::q2c::Q2c::register_shared(q2c.clone(), registry);
            if let Some(vc) = &ia.vendors {
                let vendors = std::sync::Arc::new(sync::vendors::Vendors::new(
                    db.clone(),
                    jobs.clone(),
                    flows.clone(),
                    ia.entities
                        .iter()
                        .map(|(id, e)| (id.clone(), e.client.clone()))
                        .collect(),
                    vc.clone(),
                ));
                registry = sync::vendors::Vendors::register_shared(vendors.clone(), registry)
                    // Replaces Q2c's handler for this kind: customers first, then vendors.
                    .register(
                        &sync::flows::changed_kind("Account"),
                        sync::vendors::account_changed_handler(Some(q2c.clone()), vendors.clone()),
                    );
                tokio::spawn(vendors.run_schedule(
                    std::time::Duration::from_secs(ia.vendors_poll_interval_s),
                    sync_rx.clone(),
                ));
            }
            tokio::spawn(q2c.run_schedule(
                std::time::Duration::from_secs(ia.poll_interval_s),
                sync_rx.clone(),
            ));
        }
        // Sage X3 instead of Intacct (the configuration refuses both at once).
        if let Some(x3) = &config.sync.x3 {
            let x3_loop = std::sync::Arc::new(sync::x3_loop::X3Loop::new(
                db.clone(),
                jobs.clone(),
                flows.clone(),
                x3.folders.clone(),
                ledger.clone(),
                x3.config.clone(),
            ));
            registry = sync::x3_loop::X3Loop::register_shared(x3_loop.clone(), registry);
            tokio::spawn(x3_loop.run_schedule(
                std::time::Duration::from_secs(x3.poll_interval_s),
                sync_rx.clone(),
            ));
        }
        // Sage 100 or BusinessWorks through the on-premise agent (one Sage line at most).
        if let Some(line) = config.sync.agent_line()
            && let Some(agent_loop) = sync::agent_loop::AgentLoop::new(
                db.clone(),
                jobs.clone(),
                flows.clone(),
                ledger.clone(),
                line.config.clone(),
            )
        {
            let agent_loop = std::sync::Arc::new(agent_loop);
            registry = sync::agent_loop::AgentLoop::register_shared(agent_loop.clone(), registry);
            tokio::spawn(agent_loop.run_schedule(
                std::time::Duration::from_secs(line.poll_interval_s),
                sync_rx.clone(),
            ));
        }
        tokio::spawn(flows.run_schedule(
            std::time::Duration::from_secs(sf.poll_interval_s),
            sync_rx.clone(),
        ));
    }
    // Finished jobs are pruned hourly (several servers doing it at once is harmless).
    if config.sync.retention_days > 0 {
        let jobs = jobs.clone();
        let days = i64::from(config.sync.retention_days);
        tokio::spawn(sync::jobs::run_on_ticks(
            std::time::Duration::from_secs(3_600),
            sync_rx.clone(),
            move |_| {
                let jobs = jobs.clone();
                async move {
                    let before = chrono::Utc::now() - chrono::Duration::days(days);
                    match jobs.prune(before, 5_000).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(deleted = n, "pruned finished sync jobs"),
                        Err(e) => tracing::warn!(error = %e, "pruning sync jobs failed"),
                    }
                }
            },
        ));
    }
    alerts::spawn(&config, &db, &ledger, sync_rx.clone());
    let worker = tokio::spawn(sync::jobs::run_worker(
        jobs.clone(),
        registry,
        sync::jobs::WorkerOptions {
            name: format!(
                "{}:{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "cashloop".into()),
                std::process::id()
            ),
            concurrency: config.sync.worker_concurrency,
            lease: std::time::Duration::from_millis(config.sync.lease_ms),
            idle_poll: std::time::Duration::from_millis(config.sync.idle_poll_ms),
        },
        sync_rx,
    ));
    // The console's dashboard history: the metrics sampled every few seconds.
    let live = console::live();
    tokio::spawn(
        live.samples
            .clone()
            .run(console::sampler::DEFAULT_INTERVAL, sync_stop.subscribe()),
    );
    let state = server::AppState {
        ledger,
        vault,
        payments,
        outbox,
        authnet,
        jobs,
        db: db.clone(),
        config: std::sync::Arc::new(config),
        live,
    };
    let result = server::serve(state, listener, shutdown).await;
    let _ = sealer.send(true);
    let _ = resolver_stop.send(true);
    let _ = sync_stop.send(true);
    // In-flight jobs finish (or their leases expire and another server takes them).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), worker).await;
    db.close().await;
    tracing::info!("cashloop stopped");
    result
}
