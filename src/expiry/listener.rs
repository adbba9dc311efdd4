//! The fast path: subscribes to Redis `expired` keyevents and, for each hold marker of
//! ours that expires, runs the release script for that hold at once. Pub/sub is
//! fire-and-forget, so an event lost while disconnected is simply missed; the sweeper
//! catches it. After a dropped connection or a Redis restart it resubscribes with backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Msg;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::notifications::NotificationCheck;
use crate::context::AppContext;
use crate::domain::{OrderId, StoreId};
use crate::hold::HoldEngine;
use crate::metrics::ReleaseCause;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that went silent without closing (a dead peer behind NAT) is noticed by a
/// PING that gets no answer.
const PING_EVERY: Duration = Duration::from_secs(10);
/// Most events released in one script call; what arrived together is released together.
const MOST_AT_ONCE: usize = 512;

/// Why a subscription ended.
enum Ended {
    Stopped,
    Lost(anyhow::Error),
}

/// Runs until `stop` is cancelled.
pub async fn listen(app: AppContext, stop: CancellationToken) {
    let client = match redis::Client::open(app.config.redis_url.as_str()) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "expiry listener cannot use REDIS_URL; the sweeper alone releases holds");
            return;
        }
    };
    let db = client.get_connection_info().redis_settings().db();
    let channel = format!("__keyevent@{db}__:expired");
    let mut check = NotificationCheck::new(app.config.redis_configure_notifications);
    let mut backoff = Backoff::new(FIRST_RETRY, LONGEST_RETRY);
    loop {
        let ended = tokio::select! {
            () = stop.cancelled() => Ended::Stopped,
            ended = subscription(&app.engine, &client, &channel, &mut check, &mut backoff) => ended,
        };
        let error = match ended {
            Ended::Stopped => return,
            Ended::Lost(error) => error,
        };
        let delay = backoff.next_delay();
        tracing::warn!(error = %format!("{error:#}"), ?delay, "expiry listener not subscribed; retrying");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One subscription, from connect to loss. Returns only when it is lost (or, inside the
/// caller's select, is dropped on stop).
async fn subscription(
    engine: &HoldEngine,
    client: &redis::Client,
    channel: &str,
    check: &mut NotificationCheck,
    backoff: &mut Backoff,
) -> Ended {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        // A connection of its own for the check: the shared one may still be failing over
        // after a restart, and a stale error must not read as "CONFIG refused".
        let mut commands = client.get_multiplexed_async_connection().await?;
        check.run(&mut commands).await?;
        client.get_async_pubsub().await
    })
    .await;
    let pubsub = match connected {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(error)) => return Ended::Lost(error.into()),
        Err(_) => return Ended::Lost(anyhow::anyhow!("connect timed out")),
    };
    let (mut sink, stream) = pubsub.split();
    if let Err(error) = sink.subscribe(channel).await {
        return Ended::Lost(error.into());
    }
    backoff.reset();
    tracing::info!(channel, "expiry listener subscribed");

    let mut events = stream.ready_chunks(MOST_AT_ONCE);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            batch = events.next() => match batch {
                Some(batch) => release(engine, &batch).await,
                None => return Ended::Lost(anyhow::anyhow!("subscription closed")),
            },
            _ = ping.tick() => {
                match tokio::time::timeout(CONNECT_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Ended::Lost(error.into()),
                    Err(_) => return Ended::Lost(anyhow::anyhow!("no answer to PING")),
                }
            }
        }
    }
}

/// Releases the holds whose markers these events name; keys of other prefixes and
/// anything that is not a hold marker are ignored.
async fn release(engine: &HoldEngine, events: &[Msg]) {
    let mut by_store: BTreeMap<StoreId, Vec<OrderId>> = BTreeMap::new();
    for event in events {
        let Ok(key) = event.get_payload::<String>() else {
            continue;
        };
        if let Some(order) = engine.keys().order_of_marker(&key) {
            by_store.entry(order.store).or_default().push(order);
        }
    }
    for (store, orders) in by_store {
        match engine
            .expire(store, &orders, ReleaseCause::ExpiryEvent)
            .await
        {
            Ok(released) => tracing::debug!(%store, released, "expiry events handled"),
            // Left in the deadline index: the sweeper releases them on its next pass.
            Err(error) => {
                tracing::warn!(%store, error = %format!("{error:#}"), "cannot release expired holds now")
            }
        }
    }
}
