//! The outbox gauges, read from Redis: the backlog MySQL has not taken yet and the entries
//! set aside as dead letters. Every instance samples the same streams, so dashboards take
//! `max` over instances, not `sum`.

use metrics::gauge;
use tokio_util::sync::CancellationToken;

use super::{OUTBOX_DEAD_LETTERS, OUTBOX_PENDING};
use crate::hold::HoldEngine;
use crate::outbox::dead_letter_key;

/// Runs until `stop`; does nothing when no recorder is installed.
pub async fn sample_outbox(engine: HoldEngine, stop: CancellationToken) {
    super::every_sample(stop, || async {
        match lengths(&engine).await {
            Ok((pending, dead)) => {
                gauge!(OUTBOX_PENDING).set(pending as f64);
                gauge!(OUTBOX_DEAD_LETTERS).set(dead as f64);
            }
            Err(error) => {
                tracing::debug!(error = %format!("{error:#}"), "cannot sample the outbox")
            }
        }
    })
    .await;
}

/// Entries in every store's outbox and dead-letter streams. Acknowledged entries are
/// removed in the same script (`lua/outbox_ack.lua`), so a stream's length is its unread
/// plus pending entries.
async fn lengths(engine: &HoldEngine) -> anyhow::Result<(u64, u64)> {
    let stores = engine.stores().await?;
    if stores.is_empty() {
        return Ok((0, 0));
    }
    let mut pipe = redis::pipe();
    for store in &stores {
        let outbox = engine.keys().store(*store).outbox;
        pipe.cmd("XLEN").arg(&outbox);
        pipe.cmd("XLEN").arg(dead_letter_key(&outbox));
    }
    let counts: Vec<u64> = pipe.query_async(&mut engine.redis()).await?;
    let pending = counts.iter().step_by(2).sum();
    let dead = counts.iter().skip(1).step_by(2).sum();
    Ok((pending, dead))
}
