//! Expired holds give their stock back: within moments through Redis expiry events,
//! certainly through the deadline sweeper, and exactly once however many releasers race.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flashstock::redis_conn::RedisConn;
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::process::ServiceProcess;
use flashstock::domain::{OrderId, ProductId, StoreId, UserId};
use flashstock::hold::{LockOutcome, LockRequest, RequestedLine};

use crate::helpers::{
    PrivateRedis, TestApp, TestOptions, Topology, on_both_topologies, one_at_a_time,
    outbox_order_events, redis_url, spawn_app_with,
};

const LOCK: &str = "mutation($input: LockOrderInput!) {
    lockOrder(input: $input) { order { id status heldUntil } errors { code message } }
}";
const CONFIRM: &str = "mutation($input: ConfirmOrderInput!) {
    confirmOrder(input: $input) { order { id status } errors { code } }
}";
const EXPIRED_EVENTS: &str = "__keyevent@0__:expired";

/// A hold as lockOrder returned it.
struct Held {
    id: OrderId,
    held_until: DateTime<Utc>,
    quantity: i64,
}

async fn lock(app: &TestApp, token: &str, product: ProductId, quantity: i64) -> Held {
    let body = app
        .graphql(
            LOCK,
            json!({ "input": { "items": [
                { "productId": product.0.to_string(), "quantity": quantity }
            ] } }),
            Some(token),
        )
        .await;
    let order = &body["data"]["lockOrder"]["order"];
    assert_eq!(order["status"], "HELD", "lockOrder failed: {body}");
    Held {
        id: OrderId::parse(order["id"].as_str().unwrap()).unwrap(),
        held_until: order["heldUntil"].as_str().unwrap().parse().unwrap(),
        quantity,
    }
}

/// Polls `check` until it holds; fails the test after `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long after `held_until` the product's available stock was back to `initial`.
async fn stock_back_after(
    app: &TestApp,
    store: StoreId,
    product: ProductId,
    initial: i64,
    held_until: DateTime<Utc>,
) -> Duration {
    wait_for(
        Duration::from_secs(30),
        "the stock to come back",
        || async { app.available(store, product).await == initial },
    )
    .await;
    (Utc::now() - held_until).to_std().unwrap_or_default()
}

/// Waits until `subscribers` listeners are subscribed to expiry events on `redis`: on
/// every master of a cluster (where other tests' services may be subscribed as well).
async fn wait_for_listeners(redis: &RedisConn, subscribers: i64) {
    wait_for(
        Duration::from_secs(20),
        "the expiry listener to subscribe",
        || {
            let mut redis = redis.clone();
            async move {
                let Ok(nodes) = redis.nodes().await else {
                    return false;
                };
                for master in nodes.iter().filter(|node| node.master) {
                    let Ok(client) = redis.client_for(&master.addr) else {
                        return false;
                    };
                    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                        return false;
                    };
                    let reply: redis::RedisResult<(String, i64)> = redis::cmd("PUBSUB")
                        .arg("NUMSUB")
                        .arg(EXPIRED_EVENTS)
                        .query_async(&mut conn)
                        .await;
                    if !matches!(reply, Ok((_, n)) if n >= subscribers) {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
}

async fn notify_setting(redis: &mut RedisConn) -> String {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(redis)
        .await
        .unwrap();
    reply[1].clone()
}

async fn assert_publishes_expiries(redis: &mut RedisConn) {
    let setting = notify_setting(redis).await;
    assert!(
        setting.contains('E') && setting.contains('x'),
        "notify-keyspace-events is {setting:?}"
    );
}

/// Every status an order's outbox events moved it to after HELD, by order, read through
/// a connection of the test's own (no response timeout: the outbox may be long).
async fn finishing_events(app: &TestApp, store: StoreId) -> HashMap<OrderId, Vec<String>> {
    let config = &app.context.config;
    let mut redis = RedisConn::open(
        &config.redis_url,
        config.redis_cluster,
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let outbox = app.keys.store(store).outbox;
    let mut finished: HashMap<OrderId, Vec<String>> = HashMap::new();
    for (order, status) in outbox_order_events(&mut redis, &outbox).await {
        if status != "HELD" {
            let order = OrderId {
                store,
                uuid: order.parse().unwrap(),
            };
            finished.entry(order).or_default().push(status);
        }
    }
    finished
}

/// Each of `holds` has exactly one finishing event, EXPIRED, and there are no others.
async fn assert_each_expired_once(app: &TestApp, holds: &[Held]) {
    let store = holds[0].id.store;
    let finished = finishing_events(app, store).await;
    for hold in holds {
        assert_eq!(
            finished.get(&hold.id).map(Vec::as_slice),
            Some(&["EXPIRED".to_owned()][..]),
            "order {}",
            hold.id
        );
    }
    assert_eq!(finished.len(), holds.len());
}

async fn private_app(redis: &PrivateRedis, options: TestOptions) -> TestApp {
    spawn_app_with(options.arg("redis-url", redis.url())).await
}

/// A Redis that publishes expired-key events: a private single node started with them on,
/// or the local cluster, which has them on every node.
enum Notifying {
    Private(PrivateRedis),
    Cluster,
}

impl Notifying {
    fn on(topology: Topology) -> Self {
        match topology {
            Topology::Single => Self::Private(PrivateRedis::start_with(&[
                "--notify-keyspace-events",
                "Ex",
            ])),
            Topology::Cluster => Self::Cluster,
        }
    }

    async fn app(&self, options: TestOptions) -> TestApp {
        match self {
            Self::Private(redis) => private_app(redis, options).await,
            Self::Cluster => spawn_app_with(options.on(Topology::Cluster)).await,
        }
    }
}

/// HOLD_TTL and SWEEP_INTERVAL of a test. One customer takes every hold in these tests,
/// so the per-customer hold cap is off.
fn timing(hold_ttl: &str, sweep_interval: &str) -> TestOptions {
    TestOptions::default()
        .arg("hold-ttl", hold_ttl)
        .arg("sweep-interval", sweep_interval)
        .arg("max-holds-per-customer", 0)
}

/// One store with one product of `stock` units, and a customer's token.
async fn sale(app: &TestApp, stock: i64) -> (StoreId, ProductId, String) {
    let store = app.create_store().await;
    let product = app.create_product(store, 500, stock, None).await;
    let (_, token) = app.create_customer().await;
    (store, product, token)
}

on_both_topologies!(
    #[tokio::test]
    expired_hold_returns_its_stock_within_moments_when_redis_publishes_expiries
);
async fn expired_hold_returns_its_stock_within_moments_when_redis_publishes_expiries(
    topology: Topology,
) {
    let _serial = one_at_a_time().await;
    let redis = Notifying::on(topology);
    // A sweep an hour away: only the listener can release in time.
    let app = redis.app(timing("1s", "1h")).await;
    wait_for_listeners(&app.redis, 1).await;
    let (store, product, token) = sale(&app, 10).await;

    let hold = lock(&app, &token, product, 3).await;
    assert_eq!(app.available(store, product).await, 7);
    let delay = stock_back_after(&app, store, product, 10, hold.held_until).await;
    eprintln!("notifications on: stock back {delay:?} after heldUntil");
    assert!(delay < Duration::from_millis(1500), "took {delay:?}");
    assert_eq!(app.held(store, product).await, 0);
    assert_each_expired_once(&app, &[hold]).await;
}

#[tokio::test]
async fn expired_hold_returns_its_stock_by_the_next_sweep_when_notifications_are_off() {
    let _serial = one_at_a_time().await;
    let redis = PrivateRedis::start_with(&["--notify-keyspace-events", ""]);
    let sweep = Duration::from_millis(500);
    let app = private_app(
        &redis,
        timing("1s", "500ms").arg("redis-configure-notifications", "false"),
    )
    .await;
    let (store, product, token) = sale(&app, 10).await;

    let hold = lock(&app, &token, product, 4).await;
    let delay = stock_back_after(&app, store, product, 10, hold.held_until).await;
    eprintln!("notifications off, SWEEP_INTERVAL {sweep:?}: stock back {delay:?} after heldUntil");
    assert!(delay < sweep + Duration::from_millis(500), "took {delay:?}");
    assert_each_expired_once(&app, &[hold]).await;
    // Told not to configure Redis, the service left the setting alone.
    assert_eq!(notify_setting(&mut app.redis.clone()).await, "");
}

#[tokio::test]
async fn service_goes_on_with_one_warning_when_redis_refuses_config() {
    let _serial = one_at_a_time().await;
    let redis = PrivateRedis::start_with(&["--rename-command", "CONFIG", ""]);
    let mut app = private_app(&redis, TestOptions::default()).await;
    let (store, product, token) = sale(&app, 10).await;
    app.stop().await;
    let service = ServiceProcess::start(
        &app,
        &redis.url(),
        &[
            ("REDIS_CONFIGURE_NOTIFICATIONS", "true"),
            ("HOLD_TTL", "1s"),
            ("SWEEP_INTERVAL", "300ms"),
        ],
    )
    .await;
    app.address = service.address.clone();
    let mut own = app.redis.clone();
    wait_for_listeners(&own, 1).await;

    let hold = lock(&app, &token, product, 2).await;
    // The listener's connection drops; it resubscribes and checks again, silently.
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut own)
        .await
        .unwrap();
    stock_back_after(&app, store, product, 10, hold.held_until).await;
    wait_for_listeners(&own, 1).await;
    assert_each_expired_once(&app, &[hold]).await;
    let log = service.log_text();
    assert_eq!(log.matches("CONFIG refused").count(), 1, "{log}");
}

on_both_topologies!(
    #[tokio::test]
    confirm_racing_expiry_has_exactly_one_winner_per_hold
);
async fn confirm_racing_expiry_has_exactly_one_winner_per_hold(topology: Topology) {
    let _serial = one_at_a_time().await;
    let redis = Notifying::on(topology);
    let app = redis.app(timing("1s", "20ms")).await;
    wait_for_listeners(&app.redis, 1).await;
    let initial = 1000;
    let (store, product, token) = sale(&app, initial).await;

    // Each hold is paid for between 100 ms before and 47 ms after its own deadline, while
    // the listener and a 20 ms sweeper go after the same holds.
    let raced: Vec<(Held, &str)> = join_all((0..50).map(|i| {
        let (app, token) = (&app, &token);
        async move {
            let hold = lock(app, token, product, i % 3 + 1).await;
            let at = hold.held_until + chrono::Duration::milliseconds(-100 + 3 * i);
            if let Ok(wait) = (at - Utc::now()).to_std() {
                tokio::time::sleep(wait).await;
            }
            let body = app
                .graphql(
                    CONFIRM,
                    json!({ "input": {
                        "orderId": hold.id.to_string(), "paymentReference": format!("pay-{i}")
                    } }),
                    Some(token),
                )
                .await;
            let payload = &body["data"]["confirmOrder"];
            let outcome = match (&payload["order"]["status"], &payload["errors"][0]["code"]) {
                (Value::String(s), _) if s == "CONFIRMED" => "CONFIRMED",
                (_, Value::String(code)) if code == "HOLD_EXPIRED" => "EXPIRED",
                _ => panic!("unexpected confirmOrder reply {body}"),
            };
            (hold, outcome)
        }
    }))
    .await;

    wait_for(Duration::from_secs(10), "every hold to finish", || async {
        app.held(store, product).await == 0
    })
    .await;
    let finished = finishing_events(&app, store).await;
    let mut sold = 0;
    for (hold, outcome) in &raced {
        assert_eq!(
            finished.get(&hold.id).map(Vec::as_slice),
            Some(&[(*outcome).to_owned()][..]),
            "order {}",
            hold.id
        );
        let status = app
            .context
            .engine
            .load(hold.id)
            .await
            .unwrap()
            .unwrap()
            .status;
        assert_eq!(status.as_str(), *outcome);
        if *outcome == "CONFIRMED" {
            sold += hold.quantity;
        }
    }
    let confirmed = raced.iter().filter(|(_, o)| *o == "CONFIRMED").count();
    eprintln!(
        "confirm vs expiry: {confirmed} confirmed, {} expired",
        50 - confirmed
    );
    assert_eq!(app.sold(store, product).await, sold);
    assert_eq!(app.available(store, product).await + sold, initial);
}

#[tokio::test]
async fn holds_outstanding_when_the_service_is_killed_are_released_once_after_restart() {
    let _serial = one_at_a_time().await;
    let mut app = spawn_app_with(TestOptions::default()).await;
    let initial = 100;
    let (store, product, token) = sale(&app, initial).await;
    app.stop().await;

    let mut first = ServiceProcess::start(
        &app,
        &redis_url(),
        &[
            ("HOLD_TTL", "2s"),
            ("SWEEP_INTERVAL", "1h"),
            // One customer takes all 20 holds.
            ("MAX_HOLDS_PER_CUSTOMER", "0"),
        ],
    )
    .await;
    app.address = first.address.clone();
    let holds: Vec<Held> = join_all((0..20).map(|i| lock(&app, &token, product, i % 3 + 1))).await;
    let held: i64 = holds.iter().map(|h| h.quantity).sum();
    first.kill();

    // Let every deadline pass while no instance runs.
    let last = holds.iter().map(|h| h.held_until).max().unwrap();
    tokio::time::sleep(
        (last - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        app.held(store, product).await,
        held,
        "nothing ran while down"
    );

    let mut second =
        ServiceProcess::start(&app, &redis_url(), &[("SWEEP_INTERVAL", "200ms")]).await;
    stock_back_after(&app, store, product, initial, last).await;
    assert_eq!(app.held(store, product).await, 0);
    assert_each_expired_once(&app, &holds).await;
    second.terminate();
    let status = second.wait_for_exit(Duration::from_secs(15)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

on_both_topologies!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    five_thousand_holds_expiring_together_are_all_released
);
async fn five_thousand_holds_expiring_together_are_all_released(topology: Topology) {
    let _serial = one_at_a_time().await;
    let redis = Notifying::on(topology);
    let app = redis.app(timing("3s", "200ms")).await;
    wait_for_listeners(&app.redis, 1).await;
    let store = app.create_store().await;
    let initial = 1000;
    let mut products = Vec::new();
    for _ in 0..10 {
        products.push(app.create_product(store, 100, initial, None).await);
    }

    let started = Instant::now();
    let (engine, products) = (&app.context.engine, &products);
    let holds: Vec<Held> = futures_util::stream::iter(0..5000u64)
        .map(|i| async move {
            let order = OrderId::new(store);
            let request = LockRequest {
                order,
                user: UserId(i + 1),
                lines: vec![RequestedLine {
                    product: products[(i % 10) as usize],
                    quantity: 1,
                    unit_price_cents: 100,
                }],
                idempotency_key: None,
                allow_backorder: false,
            };
            match engine.lock(&request).await.unwrap().outcome {
                LockOutcome::Held { held_until, .. } => Held {
                    id: order,
                    held_until,
                    quantity: 1,
                },
                other => panic!("hold {i} not taken: {other:?}"),
            }
        })
        .buffer_unordered(1000)
        .collect()
        .await;
    eprintln!("5000 holds taken in {:?}", started.elapsed());
    let last = holds.iter().map(|h| h.held_until).max().unwrap();
    let first = holds.iter().map(|h| h.held_until).min().unwrap();
    let spread = (last - first).to_std().unwrap();
    eprintln!("5000 holds: deadlines spread over {spread:?}");
    // All of them were held at once and come due in one burst (about half a second when
    // the machine is not busy with other work).
    assert!(spread < Duration::from_secs(2), "spread {spread:?}");

    for product in products {
        stock_back_after(&app, store, *product, initial, last).await;
    }
    eprintln!(
        "5000 holds: all stock back {:?} after the last heldUntil",
        (Utc::now() - last).to_std().unwrap_or_default()
    );
    for product in products {
        let (available, held, sold) = (
            app.available(store, *product).await,
            app.held(store, *product).await,
            app.sold(store, *product).await,
        );
        assert_eq!(available + held + sold, initial, "product {product}");
        assert_eq!((held, sold), (0, 0), "product {product}");
    }
    assert_each_expired_once(&app, &holds).await;
}

on_both_topologies!(
    #[tokio::test]
    two_instances_release_every_expired_hold_exactly_once
);
async fn two_instances_release_every_expired_hold_exactly_once(topology: Topology) {
    let _serial = one_at_a_time().await;
    let redis = Notifying::on(topology);
    let options = || timing("1s", "50ms");
    let one = redis.app(options()).await;
    let two = redis
        .app(
            options()
                .arg("database-url", &one.database_url)
                .arg("redis-key-prefix", one.keys.prefix()),
        )
        .await;
    // Both listeners hear every expiry, and both sweepers run every 50 ms.
    wait_for_listeners(&one.redis, 2).await;
    let initial = 500;
    let (store, product, token) = sale(&one, initial).await;

    let holds: Vec<Held> = join_all((0..100).map(|i| {
        let instance = if i % 2 == 0 { &one } else { &two };
        lock(instance, &token, product, 1 + i % 2)
    }))
    .await;
    let last = holds.iter().map(|h| h.held_until).max().unwrap();
    stock_back_after(&one, store, product, initial, last).await;
    assert_eq!(one.held(store, product).await, 0);
    assert_each_expired_once(&one, &holds).await;
}

#[tokio::test]
async fn listener_resubscribes_and_rechecks_notifications_after_redis_restarts() {
    let _serial = one_at_a_time().await;
    let redis = PrivateRedis::start_with(&["--notify-keyspace-events", ""]);
    let port = redis.port;
    let app = private_app(
        &redis,
        timing("1s", "1h").arg("redis-configure-notifications", "true"),
    )
    .await;
    wait_for_listeners(&app.redis, 1).await;
    assert_publishes_expiries(&mut app.redis.clone()).await;

    // A new, empty Redis on the same port, notifications off again.
    drop(redis);
    let _restarted = PrivateRedis::start_on(port, &[]);
    let mut own = app.redis.clone();
    wait_for(
        Duration::from_secs(10),
        "the connection to come back",
        || {
            let mut own = own.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut own)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    wait_for_listeners(&own, 1).await;
    assert_publishes_expiries(&mut own).await;

    // Created after the restart: the catalog reseeds the lost stock from MySQL.
    let (store, product, token) = sale(&app, 10).await;
    let hold = lock(&app, &token, product, 5).await;
    let delay = stock_back_after(&app, store, product, 10, hold.held_until).await;
    eprintln!("after a Redis restart: stock back {delay:?} after heldUntil");
    assert!(delay < Duration::from_millis(1500), "took {delay:?}");
    assert_each_expired_once(&app, &[hold]).await;
}

#[tokio::test]
async fn sigterm_stops_the_service_cleanly_and_promptly() {
    let _serial = one_at_a_time().await;
    let mut app = spawn_app_with(TestOptions::default()).await;
    app.stop().await;
    let mut service = ServiceProcess::start(
        &app,
        &redis_url(),
        &[("SHUTDOWN_TIMEOUT", "10s"), ("SWEEP_INTERVAL", "100ms")],
    )
    .await;
    // A client holding a keep-alive connection open must not keep the server up.
    let http = reqwest::Client::new();
    let alive = http
        .get(format!("{}/healthz", service.address))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), 200);

    let signalled = Instant::now();
    service.terminate();
    let status = service.wait_for_exit(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    eprintln!("SIGTERM: exited {status:?} after {took:?}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        http.get(format!("{}/healthz", service.address))
            .send()
            .await
            .is_err()
    );
}
