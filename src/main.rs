use std::sync::{Arc, OnceLock};
use std::time::Instant;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use flashstock::config::{Cli, Command, Config, LogFormat, OutboxCommand};
use flashstock::metrics::Exporter;
use flashstock::startup::Application;
use flashstock::{audit, db, graphql, payments, seed, shutdown};

fn init_logs(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs.init(),
        // One object per line; the request's span (id, operation, user) rides on each.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let timeout = cli.config.shutdown_timeout;
    let signalled = Arc::new(OnceLock::new());
    let result = runtime.block_on(run(cli.command, cli.config, signalled.clone()));
    // Not a plain drop: that waits for blocking work (a password hash) without limit.
    runtime.shutdown_timeout(shutdown::remaining(timeout, signalled.get().copied()));
    result
}

async fn run(
    command: Command,
    config: Config,
    signalled: Arc<OnceLock<Instant>>,
) -> anyhow::Result<()> {
    match command {
        Command::Serve { no_migrate } => {
            shutdown::spawn_watchdog(config.shutdown_timeout)?;
            // A misconfigured service says so before it takes any port (the metrics
            // port may be another instance's, which would hide the real mistake).
            config.validate()?;
            config.require_jwt_secret()?;
            // Installed before anything counts; the listener lives as long as the process.
            if let Some(addr) = config.metrics_addr.0 {
                let exporter = Exporter::install(addr).await?;
                tracing::info!(address = %exporter.local_addr()?, "metrics at /metrics");
                tokio::spawn(exporter.serve());
            }
            let app = Application::build(config, !no_migrate).await?;
            tracing::info!(
                port = app.port(),
                "flashstock serving; GraphiQL at /graphql"
            );
            app.run_until_stopped(async move {
                shutdown::shutdown_signal().await;
                let _ = signalled.set(Instant::now());
            })
            .await
        }
        Command::Migrate => {
            let db = db::connect(&config.database_url).await?;
            db::migrate(&db).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Seed => {
            let db = db::connect(&config.database_url).await?;
            db::migrate(&db).await?;
            seed::run(&db).await
        }
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Command::Audit { wait } => audit::run(&config, wait).await,
        Command::Pay(args) => payments::pay(&config, args).await,
        Command::Reconcile { store, force } => {
            flashstock::recovery::run(&config, store, force).await
        }
        Command::Outbox {
            action: OutboxCommand::ReplayDead { store },
        } => flashstock::outbox::dead_letters::run_replay(&config, store).await,
    }
}
