use std::sync::{Arc, OnceLock};
use std::time::Instant;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use flashstock::config::{Cli, Command, Config, OutboxCommand};
use flashstock::startup::Application;
use flashstock::{audit, db, graphql, payments, seed, shutdown};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .init();
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
