//! What the service counts for its operators, in Prometheus terms (docs/OPERATIONS.md).
//! Every function here records through the `metrics` facade: with no recorder installed
//! (METRICS_ADDR=off, or the service embedded in a test) each call is a no-op. Label
//! values are `&'static str` from bounded sets, and each series' handle is kept once
//! registered (`handles`), so recording on the request path allocates nothing.

mod exporter;
mod graphql;
mod live;
mod outbox;

mod handles;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    histogram,
};

use handles::Handles;

pub use exporter::Exporter;
pub use graphql::GraphqlTiming;
pub use live::sample_live;
pub use outbox::sample_outbox;

pub const LOCK_ORDERS: &str = "flashstock_lock_orders_total";
pub const ORDER_TRANSITIONS: &str = "flashstock_order_transitions_total";
pub const RELEASES: &str = "flashstock_releases_total";
pub const OUTBOX_PENDING: &str = "flashstock_outbox_pending";
pub const OUTBOX_DEAD_LETTERS: &str = "flashstock_outbox_dead_letters";
pub const FLUSH_BATCH_SIZE: &str = "flashstock_flush_batch_size";
pub const FLUSH_DURATION: &str = "flashstock_flush_duration_seconds";
pub const GRAPHQL_DURATION: &str = "flashstock_graphql_request_duration_seconds";
pub const REDIS_SCRIPT_DURATION: &str = "flashstock_redis_script_duration_seconds";
pub const HTTP_REQUESTS: &str = "flashstock_http_requests_total";
pub const WAITLIST_HANDOVERS: &str = "flashstock_waitlist_handovers_total";
pub const REPLICA_WAITS: &str = "flashstock_replica_waits_total";
pub const LIVE_STOCK_WATCHES: &str = "flashstock_live_stock_watches";
pub const LIVE_UPDATE_INTERVAL: &str = "flashstock_live_update_interval_seconds";

/// How often the gauges read from outside the request path are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Runs `sample` every SAMPLE_EVERY until `stop`; nothing at all when no recorder is
/// installed (the samples would only feed a metric).
async fn every_sample<F, Sample>(stop: tokio_util::sync::CancellationToken, mut sample: F)
where
    F: FnMut() -> Sample,
    Sample: Future<Output = ()>,
{
    if !enabled() {
        return;
    }
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        sample().await;
    }
}

/// Set once a recorder is installed: work done only to feed a metric (the outbox
/// sampler's reads) is skipped without one.
static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The help text Prometheus shows for each metric.
fn describe() {
    describe_counter!(
        LOCK_ORDERS,
        "lockOrder calls by outcome: held, existing (idempotent replay) or the first error code"
    );
    describe_counter!(
        ORDER_TRANSITIONS,
        "Orders that left HELD, by the state they moved to"
    );
    describe_counter!(
        RELEASES,
        "Holds whose units went back to the sale, by what released them"
    );
    describe_gauge!(
        OUTBOX_PENDING,
        "Outbox entries not yet in MySQL (unread plus pending), over all stores"
    );
    describe_gauge!(
        OUTBOX_DEAD_LETTERS,
        "Outbox entries set aside as unreadable, over all stores"
    );
    describe_histogram!(
        FLUSH_BATCH_SIZE,
        "Outbox events per batch committed to MySQL"
    );
    describe_histogram!(
        FLUSH_DURATION,
        Unit::Seconds,
        "Time to write one outbox batch to MySQL"
    );
    describe_histogram!(
        GRAPHQL_DURATION,
        Unit::Seconds,
        "GraphQL operations by root field, parse to response"
    );
    describe_histogram!(
        REDIS_SCRIPT_DURATION,
        Unit::Seconds,
        "Lua script calls by script, send to reply"
    );
    describe_counter!(HTTP_REQUESTS, "HTTP responses by route and status");
    describe_counter!(
        WAITLIST_HANDOVERS,
        "Holds made for the head of a waitlist from units that came back, counted by the instance that flushed them"
    );
    describe_counter!(
        REPLICA_WAITS,
        "Transitions that waited for REDIS_WAIT_REPLICAS replicas, by script and outcome: replicated, or timed_out (answered NOT_REPLICATED)"
    );
    describe_gauge!(
        LIVE_STOCK_WATCHES,
        "stockChanged subscriptions times their products, in this instance"
    );
    describe_gauge!(
        LIVE_UPDATE_INTERVAL,
        Unit::Seconds,
        "Shortest time between two stock updates of one product to one subscriber now: LIVE_MIN_INTERVAL, stretched by the LIVE_MAX_UPDATES_PER_SECOND budget"
    );
}

/// One lockOrder and how it ended: `held`, `existing`, or the first error code in snake
/// case (`insufficient_stock`, `unauthenticated`, `internal_error`, ...).
pub fn lock_order(outcome: &'static str) {
    static BY_OUTCOME: LazyLock<Handles<&'static str, Counter>> =
        LazyLock::new(|| Handles::new(|outcome| counter!(LOCK_ORDERS, "outcome" => outcome)));
    if enabled() {
        BY_OUTCOME.get(outcome).increment(1);
    }
}

/// One transition that waited for replicas (REDIS_WAIT_REPLICAS): whether they had it in
/// time. A rising `timed_out` is replicas falling behind, or gone.
pub fn replica_wait(script: &'static str, replicated: bool) {
    let outcome = if replicated {
        "replicated"
    } else {
        "timed_out"
    };
    counter!(REPLICA_WAITS, "script" => script, "outcome" => outcome).increment(1);
}

/// Why held units went back to the sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseCause {
    /// cancelOrder in time.
    Cancel,
    /// The expiry listener, on a hold marker's `expired` event.
    ExpiryEvent,
    /// The deadline sweeper.
    Sweeper,
    /// confirmOrder or cancelOrder that found the hold past its deadline.
    Lazy,
}

impl ReleaseCause {
    fn label(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::ExpiryEvent => "expiry_event",
            Self::Sweeper => "sweeper",
            Self::Lazy => "lazy",
        }
    }

    /// The state the released holds moved to.
    fn state(self) -> &'static str {
        match self {
            Self::Cancel => "cancelled",
            Self::ExpiryEvent | Self::Sweeper | Self::Lazy => "expired",
        }
    }
}

/// `holds` holds released by `cause`, each also one transition to its new state.
pub fn released(cause: ReleaseCause, holds: u64) {
    if holds == 0 {
        return;
    }
    counter!(RELEASES, "cause" => cause.label()).increment(holds);
    counter!(ORDER_TRANSITIONS, "to" => cause.state()).increment(holds);
}

pub fn confirmed() {
    counter!(ORDER_TRANSITIONS, "to" => "confirmed").increment(1);
}

/// One Lua script call, from send to reply (including a NOSCRIPT reload).
pub fn script(script: &'static str, took: Duration) {
    static BY_SCRIPT: LazyLock<Handles<&'static str, Histogram>> = LazyLock::new(|| {
        Handles::new(|script| histogram!(REDIS_SCRIPT_DURATION, "script" => script))
    });
    if enabled() {
        BY_SCRIPT.get(script).record(took.as_secs_f64());
    }
}

/// One GraphQL operation, by its root field (a name from the schema).
pub fn graphql_request(field: &'static str, took: Duration) {
    static BY_FIELD: LazyLock<Handles<&'static str, Histogram>> =
        LazyLock::new(|| Handles::new(|field| histogram!(GRAPHQL_DURATION, "field" => field)));
    if enabled() {
        BY_FIELD.get(field).record(took.as_secs_f64());
    }
}

/// One outbox batch committed to MySQL.
pub fn flushed(events: usize, took: Duration) {
    histogram!(FLUSH_BATCH_SIZE).record(events as f64);
    histogram!(FLUSH_DURATION).record(took.as_secs_f64());
}

/// Holds a release made for waiting customers, as the flusher writes them to MySQL.
pub fn waitlist_handovers(holds: usize) {
    if holds > 0 {
        counter!(WAITLIST_HANDOVERS).increment(holds as u64);
    }
}

/// One HTTP response. `route` is one of the router's paths (a bounded set).
pub fn http_response(route: &'static str, status: u16) {
    static BY_ROUTE_AND_STATUS: LazyLock<Handles<(&'static str, &'static str), Counter>> =
        LazyLock::new(|| {
            Handles::new(
                |(route, status)| counter!(HTTP_REQUESTS, "route" => route, "status" => status),
            )
        });
    if enabled() {
        BY_ROUTE_AND_STATUS
            .get((route, status_label(status)))
            .increment(1);
    }
}

/// Status codes as static labels; the service answers with these and few others.
fn status_label(status: u16) -> &'static str {
    match status {
        101 => "101",
        200 => "200",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        408 => "408",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_the_code_or_its_class() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(405), "405");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
    }
}
