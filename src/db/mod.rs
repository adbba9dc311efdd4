//! MySQL/MariaDB: the durable record of stores, products, users, orders and the stock
//! ledger. Plain SQL through sqlx; nothing here is on the lockOrder hot path.

pub mod catalog;
pub mod orders;
pub mod users;

use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::MigrateDatabase;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

pub type Db = MySqlPool;

/// Opens a pool, creating the database first when it does not exist yet.
pub async fn connect(url: &str) -> anyhow::Result<Db> {
    if !sqlx::MySql::database_exists(url)
        .await
        .context("cannot reach MySQL at DATABASE_URL")?
    {
        sqlx::MySql::create_database(url)
            .await
            .context("cannot create the database")?;
    }
    connect_existing(url).await
}

/// Opens a pool on a database that exists already (`serve --no-migrate`, tools, tests).
pub async fn connect_existing(url: &str) -> anyhow::Result<Db> {
    MySqlPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .context("cannot connect to MySQL at DATABASE_URL")
}

pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(db)
        .await
        .context("migrations failed")?;
    Ok(())
}

pub async fn ping(db: &Db) -> anyhow::Result<()> {
    sqlx::query("SELECT 1").execute(db).await?;
    Ok(())
}
