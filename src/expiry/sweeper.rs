//! The certain path: every SWEEP_INTERVAL, releases every store's due holds from its
//! deadline index (a ZSET of order -> held_until), a bounded batch per script call. It
//! finds the stores in the set of stores with stock, never by scanning the keyspace. Any
//! number of instances may sweep at once: the release script skips what is no longer HELD.

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::context::AppContext;
use crate::domain::{OrderId, StoreId};
use crate::hold::HoldEngine;
use crate::metrics::ReleaseCause;

/// Runs until `stop` is cancelled; a pass cut short by it is harmless, since every
/// script call is atomic.
pub async fn sweep(app: AppContext, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(app.config.sweep_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let swept = tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => tokio::select! {
                () = stop.cancelled() => return,
                swept = sweep_all(&app.engine, app.config.sweep_batch) => swept,
            },
        };
        match swept {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "sweeper released expired holds"),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "sweep failed; retrying next interval")
            }
        }
    }
}

/// Releases every due hold of every store; returns how many this call released. A store
/// that fails is logged and left to the next pass; the others are still swept.
pub async fn sweep_all(engine: &HoldEngine, batch: usize) -> anyhow::Result<u64> {
    let mut released = 0;
    for store in engine.stores().await? {
        match sweep_store(engine, store, batch).await {
            Ok(n) => released += n,
            Err(error) => {
                tracing::warn!(%store, error = %format!("{error:#}"), "cannot sweep store")
            }
        }
    }
    Ok(released)
}

async fn sweep_store(engine: &HoldEngine, store: StoreId, batch: usize) -> anyhow::Result<u64> {
    let mut redis = engine.redis();
    let deadlines = engine.keys().store(store).deadlines;
    let mut released = 0;
    loop {
        // Redis's clock, as the scripts use: instances with skewed clocks still agree.
        // On a cluster, the clock of the node the scripts of this store run on.
        let (seconds, micros): (u64, u64) = redis.query_at(&deadlines, &redis::cmd("TIME")).await?;
        let now_ms = seconds * 1000 + micros / 1000;
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&deadlines)
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(batch)
            .query_async(&mut redis)
            .await?;
        let orders: Vec<OrderId> = due
            .iter()
            .filter_map(|member| Uuid::parse_str(member).ok())
            .map(|uuid| OrderId { store, uuid })
            .collect();
        released += engine.expire(store, &orders, ReleaseCause::Sweeper).await?;
        // The script takes every candidate out of the index (released, or no longer HELD),
        // so each full batch is progress; a member that is no order id would not be, and
        // ends the pass instead of spinning on it.
        if due.len() < batch || orders.len() < due.len() {
            return Ok(released);
        }
    }
}
