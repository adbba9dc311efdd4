//! The state every request and worker shares. Cheap to clone: handles, not data.

use std::sync::Arc;

use crate::redis_conn::RedisConn;

use crate::auth::{LoginLimiter, RegisterLimiter, TokenKeys, TokenVersions};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::db::Db;
use crate::hold::HoldEngine;
use crate::live::LiveHub;
use crate::orders::LockLimits;

#[derive(Clone)]
pub struct AppContext {
    pub config: Arc<Config>,
    pub db: Db,
    /// Multiplexed, reconnecting connection for request-path commands and scripts.
    pub redis: RedisConn,
    /// Dedicated connections for blocking commands (stream reads), never the shared one.
    pub redis_pool: deadpool_redis::Pool,
    pub engine: HoldEngine,
    pub catalog: Arc<Catalog>,
    pub tokens: Arc<TokenKeys>,
    pub token_versions: Arc<TokenVersions>,
    pub login_limiter: LoginLimiter,
    pub register_limiter: RegisterLimiter,
    /// Live stock and order changes for subscriptions (`live`).
    pub live: LiveHub,
    /// The run id of the Redis server every store was checked against on start
    /// (`recovery::watch` carries on from it).
    pub checked_server: String,
}

impl AppContext {
    pub fn lock_context(&self) -> crate::orders::lock::LockContext<'_> {
        crate::orders::lock::LockContext {
            db: &self.db,
            engine: &self.engine,
            catalog: &self.catalog,
            limits: LockLimits {
                max_line_quantity: self.config.max_line_quantity,
                max_order_lines: self.config.max_order_lines,
            },
        }
    }
}

/// MySQL and the hold engine for a one-off command (`audit`, `reconcile`, `outbox ...`):
/// the same DATABASE_URL, REDIS_URL and REDIS_KEY_PREFIX as the service, no migrations.
pub async fn connect_for_command(config: &Config) -> anyhow::Result<(Db, HoldEngine)> {
    config.validate()?;
    let db = crate::db::connect_existing(&config.database_url).await?;
    let engine = HoldEngine::connect(config).await?;
    Ok((db, engine))
}
