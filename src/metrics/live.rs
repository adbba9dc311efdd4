//! The live-update gauges: how many stock watches this process serves and the interval
//! its update budget holds each of them to (`live::Pace`). Per instance, so dashboards
//! `sum` the watches and look at each instance's interval.

use std::time::Duration;

use metrics::gauge;
use tokio_util::sync::CancellationToken;

use super::{LIVE_STOCK_WATCHES, LIVE_UPDATE_INTERVAL};
use crate::live::LiveHub;

const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Runs until `stop`; does nothing when no recorder is installed.
pub async fn sample_live(hub: LiveHub, stop: CancellationToken) {
    if !super::enabled() {
        return;
    }
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let pace = hub.pace();
        gauge!(LIVE_STOCK_WATCHES).set(pace.watches() as f64);
        gauge!(LIVE_UPDATE_INTERVAL).set(pace.interval().as_secs_f64());
    }
}
