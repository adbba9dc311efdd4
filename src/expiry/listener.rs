//! The fast path: subscribes to Redis `expired` keyevents and, for each hold marker of
//! ours that expires, runs the release script for that hold at once. Pub/sub is
//! fire-and-forget, so an event lost while disconnected is simply missed; the sweeper
//! catches it. After a dropped connection or a Redis restart it resubscribes with backoff.
//! Keyspace events are local to the node where the key expired, so on a cluster it
//! subscribes on every master.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Msg;
use redis::aio::ConnectionLike;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::notifications::NotificationCheck;
use crate::context::AppContext;
use crate::domain::{OrderId, StoreId};
use crate::hold::HoldEngine;
use crate::metrics::ReleaseCause;
use crate::redis_conn::{NodeAddr, RedisConn};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that went silent without closing (a dead peer behind NAT) is noticed by a
/// PING that gets no answer.
const PING_EVERY: Duration = Duration::from_secs(10);
/// Most events released in one script call; what arrived together is released together.
const MOST_AT_ONCE: usize = 512;
/// How often the masters are listed again: a new master (a failover) is subscribed to
/// within this.
const TOPOLOGY_EVERY: Duration = Duration::from_secs(1);

/// Why a subscription ended.
enum Ended {
    Stopped,
    Lost(anyhow::Error),
}

/// Runs until `stop` is cancelled: one subscription per master, following the masters
/// as they change (a failover promotes a replica, a node joins or leaves).
pub async fn listen(app: AppContext, stop: CancellationToken) {
    let mut redis = app.engine.redis();
    let channel = format!("__keyevent@{}__:expired", redis.get_db());
    let configure = app.config.redis_configure_notifications;
    // Replicas are checked once per appearance: `notify-keyspace-events` is not
    // replicated, and a replica promoted by a failover must already publish expiries.
    let mut replica_check = NotificationCheck::new(configure);
    let mut replicas_checked: BTreeSet<NodeAddr> = BTreeSet::new();
    let mut masters: BTreeMap<NodeAddr, CancellationToken> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    loop {
        match redis.nodes().await {
            Ok(nodes) => {
                let serving: BTreeSet<NodeAddr> = nodes
                    .iter()
                    .filter(|node| node.master)
                    .map(|node| node.addr.clone())
                    .collect();
                masters.retain(|addr, subscribed| {
                    let keep = serving.contains(addr);
                    if !keep {
                        tracing::info!(node = %addr, "no longer a master; expiry listener leaves it");
                        subscribed.cancel();
                    }
                    keep
                });
                for addr in serving {
                    if masters.contains_key(&addr) {
                        continue;
                    }
                    let client = match redis.client_for(&addr) {
                        Ok(client) => client,
                        Err(error) => {
                            tracing::error!(%error, node = %addr, "expiry listener cannot address a master");
                            continue;
                        }
                    };
                    let subscribed = stop.child_token();
                    masters.insert(addr.clone(), subscribed.clone());
                    let (engine, channel) = (app.engine.clone(), channel.clone());
                    tasks.spawn(listen_on(engine, client, channel, configure, subscribed));
                }
                replicas_checked.retain(|addr| nodes.iter().any(|node| node.addr == *addr));
                for replica in nodes.iter().filter(|node| !node.master) {
                    if replicas_checked.contains(&replica.addr) {
                        continue;
                    }
                    if check_node(&redis, &replica.addr, &mut replica_check).await {
                        replicas_checked.insert(replica.addr.clone());
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot list the Redis nodes; expiry listener keeps its subscriptions")
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(TOPOLOGY_EVERY) => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Checks (and where allowed sets) one node's notifications; true when it answered.
async fn check_node(redis: &RedisConn, addr: &NodeAddr, check: &mut NotificationCheck) -> bool {
    let checked = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut conn = redis
            .client_for(addr)?
            .get_multiplexed_async_connection()
            .await?;
        check.run(&mut conn).await
    })
    .await;
    match checked {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, node = %addr, "cannot check a replica's notifications");
            false
        }
        Err(_) => false,
    }
}

/// One master's subscription, resubscribing with backoff until `stop`.
async fn listen_on(
    engine: HoldEngine,
    client: redis::Client,
    channel: String,
    configure: bool,
    stop: CancellationToken,
) {
    let mut check = NotificationCheck::new(configure);
    let mut backoff = Backoff::new(FIRST_RETRY, LONGEST_RETRY);
    loop {
        let ended = tokio::select! {
            () = stop.cancelled() => Ended::Stopped,
            ended = subscription(&engine, &client, &channel, &mut check, &mut backoff) => ended,
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
