//! The one source of change events in a process: a pattern subscription to every store's
//! live channel, applied to the hub. Pub/sub loses what is published while disconnected,
//! so after every (re)subscription the feed asks for a snapshot of every watched product;
//! snapshots travel through the same channel, so they land in order with the changes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::hub::{LiveHub, SnapshotRequests};
use super::message::Change;
use crate::catalog::Catalog;
use crate::context::AppContext;
use crate::domain::{ProductId, StoreId};
use crate::expiry::Backoff;
use crate::hold::HoldEngine;
use crate::redis_conn::NodeAddr;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that went silent without closing is noticed by a PING with no answer.
const PING_EVERY: Duration = Duration::from_secs(10);
/// Messages applied per wake-up; what arrived together is applied together.
const MOST_AT_ONCE: usize = 512;
const SNAPSHOT_ATTEMPTS: u32 = 4;

/// Runs until `stop` is cancelled.
pub async fn run(app: AppContext, stop: CancellationToken) {
    let Some(mut requests) = app.live.take_snapshot_requests() else {
        tracing::error!("a live feed already runs for this hub");
        return;
    };
    let pattern = app.engine.keys().live_pattern();
    let mut backoff = Backoff::new(FIRST_RETRY, LONGEST_RETRY);
    // Every node of the cluster as listed after the last subscription: with REDIS_URL's
    // own, where the next attempts look.
    let mut known: Vec<NodeAddr> = Vec::new();
    // A plain PUBLISH reaches every node of a cluster: any node serves, and each attempt
    // takes the next one, so a node that went down is not waited for.
    for attempt in 0.. {
        let client = match app.engine.redis().any_node_client(attempt, &known) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "live feed cannot use REDIS_URL; subscriptions get no updates");
                return;
            }
        };
        let error = tokio::select! {
            () = stop.cancelled() => return,
            error = subscription(&app, &client, &pattern, &mut requests, &mut backoff, &mut known) => error,
        };
        let delay = backoff.next_delay();
        tracing::warn!(error = %format!("{error:#}"), ?delay, "live feed not subscribed; retrying");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One subscription, from connect to loss.
async fn subscription(
    app: &AppContext,
    client: &redis::Client,
    pattern: &str,
    requests: &mut SnapshotRequests,
    backoff: &mut Backoff,
    known: &mut Vec<NodeAddr>,
) -> anyhow::Error {
    let pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(error)) => return error.into(),
        Err(_) => return anyhow::anyhow!("connect timed out"),
    };
    let (mut sink, stream) = pubsub.split();
    if let Err(error) = sink.psubscribe(pattern).await {
        return error.into();
    }
    backoff.reset();
    tracing::info!(pattern, "live feed subscribed");
    if app.engine.redis().is_cluster() {
        match app.engine.redis().clone().nodes().await {
            Ok(nodes) => *known = nodes.into_iter().map(|node| node.addr).collect(),
            // The next attempts still have REDIS_URL's nodes and the last list.
            Err(error) => tracing::warn!(%error, "live feed cannot list the cluster's nodes"),
        }
    }

    // Whatever changed while no subscription was open: re-read every watched product.
    let mut pending: Vec<(StoreId, ProductId)> = Vec::new();
    while let Ok(request) = requests.try_recv() {
        pending.push(request);
    }
    let watched = app.live.watched();
    if !watched.is_empty() {
        match app.catalog.products(&watched).await {
            Ok(rows) => pending.extend(rows.values().map(|row| (row.store, row.id))),
            Err(error) => return error.context("cannot look up watched products"),
        }
    }
    snapshot(&app.engine, &app.catalog, pending);

    let mut messages = stream.ready_chunks(MOST_AT_ONCE);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            batch = messages.next() => match batch {
                Some(batch) => apply(&app.live, app.engine.keys(), batch),
                None => return anyhow::anyhow!("subscription closed"),
            },
            Some(first) = requests.recv() => {
                let mut batch = vec![first];
                while let Ok(request) = requests.try_recv() {
                    batch.push(request);
                }
                snapshot(&app.engine, &app.catalog, batch);
            }
            _ = ping.tick() => {
                match tokio::time::timeout(CONNECT_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return error.into(),
                    Err(_) => return anyhow::anyhow!("no answer to PING"),
                }
            }
        }
    }
}

fn apply(hub: &LiveHub, keys: &crate::hold::KeySpace, batch: Vec<redis::Msg>) {
    for message in batch {
        let channel = message.get_channel_name();
        let Some(store) = keys.store_of_live(channel) else {
            continue;
        };
        let payload: String = match message.get_payload() {
            Ok(payload) => payload,
            Err(_) => continue,
        };
        match Change::parse(store, &payload) {
            Some(change) => hub.apply(change),
            None => tracing::warn!(channel, payload, "live message in an unknown format"),
        }
    }
}

/// Asks Redis to publish the current values of these products, store by store, off the
/// feed's own task (the answers come back as messages). A failed request is retried
/// after a pause unless the products are no longer watched.
fn snapshot(
    engine: &HoldEngine,
    catalog: &std::sync::Arc<Catalog>,
    products: Vec<(StoreId, ProductId)>,
) {
    if products.is_empty() {
        return;
    }
    let mut by_store: BTreeMap<StoreId, Vec<ProductId>> = BTreeMap::new();
    for (store, product) in products {
        by_store.entry(store).or_default().push(product);
    }
    let engine = engine.clone();
    let catalog = catalog.clone();
    tokio::spawn(async move {
        for (store, mut products) in by_store {
            products.sort_unstable();
            products.dedup();
            let mut delay = FIRST_RETRY;
            for attempt in 1..=SNAPSHOT_ATTEMPTS {
                let Err(error) = engine.publish_snapshot(store, &products).await else {
                    break;
                };
                // After the last attempt the next resubscription snapshots them again.
                tracing::warn!(%store, attempt, error = %format!("{error:#}"), "cannot publish a live snapshot");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(LONGEST_RETRY);
                // Products Redis lost (a restart without persistence) are seeded again.
                if let Err(error) = catalog.reseed(&products).await {
                    tracing::warn!(%store, error = %format!("{error:#}"), "cannot reseed live products");
                }
            }
        }
    });
}
