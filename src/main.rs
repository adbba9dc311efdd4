use clap::Parser;
use tracing_subscriber::EnvFilter;

use flashstock::config::{Cli, Command, LogFormat};
use flashstock::metrics::Exporter;
use flashstock::startup::{Application, shutdown_signal};
use flashstock::{audit, db, graphql, seed};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.config.log_format);
    let config = cli.config;
    match cli.command {
        Command::Serve { no_migrate } => {
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
    }
}
