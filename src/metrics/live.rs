//! The live-update gauges: how many stock watches this process serves and the interval
//! its update budget holds each of them to (`live::Pace`). Per instance, so dashboards
//! `sum` the watches and look at each instance's interval.

use metrics::gauge;
use tokio_util::sync::CancellationToken;

use super::{LIVE_STOCK_WATCHES, LIVE_UPDATE_INTERVAL};
use crate::live::LiveHub;

/// Runs until `stop`; does nothing when no recorder is installed.
pub async fn sample_live(hub: LiveHub, stop: CancellationToken) {
    super::every_sample(stop, || async {
        let pace = hub.pace();
        gauge!(LIVE_STOCK_WATCHES).set(pace.watches() as f64);
        gauge!(LIVE_UPDATE_INTERVAL).set(pace.interval().as_secs_f64());
    })
    .await;
}
