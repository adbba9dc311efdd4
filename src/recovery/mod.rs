//! Redis going back in time, found and repaired. Every script that appends an outbox
//! event increments its store's sequence (`lua/hold_lib.lua::next_seq`); the flusher
//! records the highest one it wrote in MySQL (`store_sequences`). A store whose Redis
//! sequence is below MySQL's lost writes MySQL has (an older AOF, a replica promoted
//! before it caught up, a restart without persistence) and is rebuilt from MySQL before
//! it takes orders again; until then its orders get STORE_RECOVERING. Checked on start,
//! when the watcher sees another Redis server behind the connection, when a script finds
//! a store's stock gone, and by hand with `flashstock reconcile`. See docs/OUTBOX.md.

mod rebuild;
mod watch;

use std::time::Duration;

use anyhow::Context;

use crate::db::Db;
use crate::domain::StoreId;
use crate::hold::HoldEngine;

pub use rebuild::{RebuildReport, rebuild};
pub use watch::{run_id, watch};

/// How long one instance may hold a store's rebuild before another may take it over.
const REBUILD_LEASE: Duration = Duration::from_secs(60);

/// A store's sequence in Redis and in MySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequences {
    pub redis: u64,
    pub mysql: u64,
}

impl Sequences {
    /// Redis lost writes MySQL has. An empty Redis (0) is behind once MySQL has any.
    pub fn redis_behind(&self) -> bool {
        self.redis < self.mysql
    }
}

pub async fn sequences(db: &Db, engine: &HoldEngine, store: StoreId) -> anyhow::Result<Sequences> {
    let redis: Option<u64> = redis::cmd("GET")
        .arg(engine.keys().store(store).sequence())
        .query_async(&mut engine.redis())
        .await?;
    let mysql: Option<u64> =
        sqlx::query_scalar("SELECT seq FROM store_sequences WHERE store_id = ?")
            .bind(store.0)
            .fetch_optional(db)
            .await?;
    Ok(Sequences {
        redis: redis.unwrap_or(0),
        mysql: mysql.unwrap_or(0),
    })
}

/// Stores MySQL has seen events of: the only ones Redis can be behind on.
pub async fn sequenced_stores(db: &Db) -> anyhow::Result<Vec<StoreId>> {
    let ids: Vec<u64> =
        sqlx::query_scalar("SELECT store_id FROM store_sequences ORDER BY store_id")
            .fetch_all(db)
            .await?;
    Ok(ids.into_iter().map(StoreId).collect())
}

/// Clears a store's "recovering" mark however the check ends.
struct Recovering<'a> {
    engine: &'a HoldEngine,
    store: StoreId,
}

impl<'a> Recovering<'a> {
    fn mark(engine: &'a HoldEngine, store: StoreId) -> Self {
        engine.set_recovering(store, true);
        Self { engine, store }
    }
}

impl Drop for Recovering<'_> {
    fn drop(&mut self) {
        self.engine.set_recovering(self.store, false);
    }
}

/// Checks the store and rebuilds it from MySQL when Redis is behind (or always, with
/// `force`). Its orders get STORE_RECOVERING meanwhile. One instance rebuilds a store at
/// a time; another one finding the rebuild under way waits for it and checks again.
pub async fn ensure_current(
    db: &Db,
    engine: &HoldEngine,
    store: StoreId,
    force: bool,
) -> anyhow::Result<Option<RebuildReport>> {
    let _recovering = Recovering::mark(engine, store);
    let lock_key = engine.keys().store(store).rebuild_lock();
    let token = uuid::Uuid::new_v4().to_string();
    loop {
        let found = sequences(db, engine, store).await?;
        if !force && !found.redis_behind() {
            return Ok(None);
        }
        let taken: Option<String> = redis::cmd("SET")
            .arg(&lock_key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(REBUILD_LEASE.as_millis() as u64)
            .query_async(&mut engine.redis())
            .await?;
        if taken.is_none() {
            // Another instance is rebuilding it: wait, then look again.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        tracing::warn!(%store, redis = found.redis, mysql = found.mysql,
            "Redis is behind MySQL for this store; rebuilding it from MySQL");
        let rebuilt = rebuild(db, engine, store).await;
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(&lock_key)
            .query_async(&mut engine.redis())
            .await;
        let report = rebuilt.with_context(|| format!("cannot rebuild store {store}"))?;
        tracing::warn!(%store, holds = report.holds, products = report.products, seq = report.seq,
            "store rebuilt from MySQL; taking orders again");
        return Ok(Some(report));
    }
}

/// Checks every store MySQL has seen events of; a store that cannot be checked now is
/// logged and reported as an error after the others were checked.
pub async fn ensure_all(db: &Db, engine: &HoldEngine) -> anyhow::Result<usize> {
    let stores = sequenced_stores(db).await?;
    // Every store stops taking orders before the first is checked: a Redis that went
    // back in time did so for all of them.
    for store in &stores {
        engine.set_recovering(*store, true);
    }
    let mut rebuilt = 0;
    let mut failed = None;
    for store in stores {
        let result = ensure_current(db, engine, store, false).await;
        match result {
            Ok(Some(_)) => rebuilt += 1,
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%store, error = format!("{error:#}"), "store check failed");
                failed = Some(error);
            }
        }
    }
    match failed {
        Some(error) => Err(error),
        None => Ok(rebuilt),
    }
}

/// The `reconcile` command: checks the store (or every store), rebuilds those Redis is
/// behind on, or the named one regardless with `force`, and prints what it did.
pub async fn run(
    config: &crate::config::Config,
    store: Option<u64>,
    force: bool,
) -> anyhow::Result<()> {
    let (db, engine) = crate::context::connect_for_command(config).await?;
    let stores = match store {
        Some(id) => vec![StoreId(id)],
        None => sequenced_stores(&db).await?,
    };
    for store in stores {
        let before = sequences(&db, &engine, store).await?;
        match ensure_current(&db, &engine, store, force).await? {
            Some(report) => println!(
                "store {store}: Redis sequence {} / MySQL {}: rebuilt {} products and {} held orders from MySQL",
                before.redis, before.mysql, report.products, report.holds
            ),
            None => println!(
                "store {store}: Redis sequence {} / MySQL {}: current, nothing to do",
                before.redis, before.mysql
            ),
        }
    }
    Ok(())
}
