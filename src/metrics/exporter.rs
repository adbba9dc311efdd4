//! The Prometheus recorder and its own listener (METRICS_ADDR). Sales figures are not for
//! the public, so `/metrics` is never on the API's port: bind it to a private address.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_process::Collector;
use tokio::net::TcpListener;

use super::{ENABLED, FLUSH_BATCH_SIZE, FLUSH_DURATION, GRAPHQL_DURATION, REDIS_SCRIPT_DURATION};

/// OpenTelemetry's HTTP server buckets, in seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0,
];
/// A Lua script takes tens of microseconds when Redis is idle: buckets from 25 µs.
const SCRIPT_BUCKETS: &[f64] = &[
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];
const FLUSH_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Events per batch, up to well past FLUSH_BATCH's default of 500.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
];
/// How often histograms and idle series are tidied (the exporter leaves it to its user).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

pub struct Exporter {
    listener: TcpListener,
    handle: PrometheusHandle,
}

impl Exporter {
    /// Installs the process-wide recorder and binds `addr`. Call once, before the
    /// service starts counting.
    pub async fn install(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut builder = PrometheusBuilder::new();
        for (metric, buckets) in [
            (GRAPHQL_DURATION, REQUEST_BUCKETS),
            (REDIS_SCRIPT_DURATION, SCRIPT_BUCKETS),
            (FLUSH_DURATION, FLUSH_BUCKETS),
            (FLUSH_BATCH_SIZE, BATCH_BUCKETS),
        ] {
            builder = builder.set_buckets_for_metric(Matcher::Full(metric.to_owned()), buckets)?;
        }
        let handle = builder
            .install_recorder()
            .context("cannot install the metrics recorder")?;
        ENABLED.store(true, Ordering::Relaxed);
        super::describe();
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on METRICS_ADDR {addr}"))?;
        Ok(Self { listener, handle })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `GET /metrics` for as long as the process runs.
    pub async fn serve(self) {
        let upkeep = self.handle.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(UPKEEP_EVERY);
            loop {
                ticks.tick().await;
                upkeep.run_upkeep();
            }
        });
        let collector = Collector::default();
        collector.describe();
        let handle = self.handle;
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                let collector = collector.clone();
                async move { scrape(&handle, &collector) }
            }),
        );
        if let Err(error) = axum::serve(self.listener, app).await {
            tracing::error!(%error, "metrics listener failed");
        }
    }
}

fn scrape(handle: &PrometheusHandle, collector: &Collector) -> impl IntoResponse + use<> {
    collector.collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}
