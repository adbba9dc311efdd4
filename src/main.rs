use clap::Parser;
use tracing_subscriber::EnvFilter;

use flashstock::config::{Cli, Command, OutboxCommand};
use flashstock::startup::{Application, shutdown_signal};
use flashstock::{audit, db, graphql, seed};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let config = cli.config;
    match cli.command {
        Command::Serve { no_migrate } => {
            let app = Application::build(config, !no_migrate).await?;
            tracing::info!(
                port = app.port(),
                "flashstock serving; GraphiQL at /graphql"
            );
            app.run_until_stopped(shutdown_signal()).await
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
        Command::Reconcile { store, force } => {
            flashstock::recovery::run(&config, store, force).await
        }
        Command::Outbox {
            action: OutboxCommand::ReplayDead { store },
        } => flashstock::outbox::dead_letters::run_replay(&config, store).await,
    }
}
