//! The outbox flusher: orders, lines, stock and ledger land in MySQL exactly once, through
//! concurrency, a killed process, a MySQL outage and replayed events; `flashstock audit`
//! agrees, and says so when it does not.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flashstock::audit;
use flashstock::auth::Viewer;
use flashstock::domain::{PaymentReference, ProductId, Role, StoreId, UserId};
use flashstock::orders::{self, LineInput};
use futures_util::{StreamExt, stream};
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::helpers::{
    TestApp, TestOptions, Topology, on_both_topologies, one_at_a_time, spawn_app, spawn_app_with,
};
use crate::process::ServiceProcess;

pub(crate) const LOCK: &str = "mutation($input: LockOrderInput!) { lockOrder(input: $input) { \
     order { id status totalCents } errors { code message } } }";
pub(crate) const CONFIRM: &str = "mutation($input: ConfirmOrderInput!) { confirmOrder(input: $input) { \
     order { id status } errors { code message } } }";
const CANCEL: &str =
    "mutation($id: ID!) { cancelOrder(orderId: $id) { order { id status } errors { code } } }";
const RESTOCK: &str = "mutation($id: ID!, $q: Int!, $r: String) { \
     restockProduct(productId: $id, quantity: $q, reason: $r) { product { id } errors { code } } }";
const MY_ORDERS: &str = "query { myOrders(first: 50) { totalCount edges { node { \
     id status totalCents lines { quantity unitPriceCents product { id } } } } } }";

pub(crate) const DRAIN_DEADLINE: Duration = Duration::from_secs(90);

/// The lines of the n-th order of a load: 1 to 3 units of `a`, and one of `b` every other order.
pub(crate) fn lines_of(n: usize, a: ProductId, b: ProductId) -> Vec<(ProductId, u32)> {
    let mut lines = vec![(a, (n % 3) as u32 + 1)];
    if n.is_multiple_of(2) {
        lines.push((b, 1));
    }
    lines
}

pub(crate) fn items(lines: &[(ProductId, u32)]) -> Value {
    lines
        .iter()
        .map(|(p, q)| json!({ "productId": p.to_string(), "quantity": q }))
        .collect()
}

/// lockOrder then confirmOrder over HTTP at `address`; returns the order id.
pub(crate) async fn lock_and_confirm(
    http: &reqwest::Client,
    address: &str,
    token: &str,
    lines: &[(ProductId, u32)],
) -> String {
    let order = post(
        http,
        address,
        LOCK,
        json!({ "input": { "items": items(lines) } }),
        token,
    )
    .await;
    let id = order["data"]["lockOrder"]["order"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("lockOrder failed: {order}"))
        .to_owned();
    let confirmed = post(
        http,
        address,
        CONFIRM,
        json!({ "input": { "orderId": id, "paymentReference": format!("pay-{id}") } }),
        token,
    )
    .await;
    assert_eq!(
        confirmed["data"]["confirmOrder"]["order"]["status"], "CONFIRMED",
        "{confirmed}"
    );
    id
}

pub(crate) async fn post(
    http: &reqwest::Client,
    address: &str,
    query: &str,
    variables: Value,
    token: &str,
) -> Value {
    http.post(format!("{address}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON body")
}

/// Waits until every store's outbox is empty (the flusher deletes what it committed).
pub(crate) async fn wait_drained(app: &TestApp) -> Duration {
    let started = Instant::now();
    loop {
        let left = audit::backlog(&app.context.engine).await.unwrap();
        if left.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < DRAIN_DEADLINE,
            "outbox not drained: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn assert_audit_clean(app: &TestApp) {
    let report = audit::audit(&app.db, &app.context.engine).await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert!(report.products > 0);
}

pub(crate) async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.db)
        .await
        .unwrap()
}

pub(crate) async fn mysql_stock(app: &TestApp, product: ProductId) -> i64 {
    sqlx::query_scalar("SELECT stock FROM products WHERE id = ?")
        .bind(product.0)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Every order MySQL has, with its status, total and lines ("pid:qty:price" sorted).
pub(crate) async fn mysql_orders(app: &TestApp) -> HashMap<String, (String, i64, String)> {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT o.id, o.status, o.total_cents, \
         GROUP_CONCAT(CONCAT(i.product_id, ':', i.quantity, ':', i.unit_price_cents) ORDER BY i.product_id) \
         FROM orders o JOIN order_items i ON i.order_id = o.id GROUP BY o.id, o.status, o.total_cents",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, status, total, lines)| (id, (status, total, lines)))
        .collect()
}

/// What MySQL must hold for an order of these lines at these prices.
fn expected(lines: &[(ProductId, u32)], prices: &HashMap<ProductId, i64>) -> (i64, String) {
    let mut sorted = lines.to_vec();
    sorted.sort();
    let total = sorted.iter().map(|(p, q)| i64::from(*q) * prices[p]).sum();
    let text = sorted
        .iter()
        .map(|(p, q)| format!("{p}:{q}:{}", prices[p]))
        .collect::<Vec<_>>()
        .join(",");
    (total, text)
}

/// Checks that exactly `orders` are CONFIRMED in MySQL with their lines and totals, that
/// each product lost exactly the units sold and that each line has one SALE movement.
pub(crate) async fn assert_exactly_once(
    app: &TestApp,
    orders: &[(String, Vec<(ProductId, u32)>)],
    prices: &HashMap<ProductId, i64>,
    opening: &HashMap<ProductId, i64>,
) {
    let recorded = mysql_orders(app).await;
    assert_eq!(recorded.len(), orders.len());
    let mut sold: HashMap<ProductId, i64> = HashMap::new();
    for (id, lines) in orders {
        let uuid = id.split_once('-').unwrap().1;
        let (total, text) = expected(lines, prices);
        assert_eq!(
            recorded.get(uuid),
            Some(&("CONFIRMED".to_owned(), total, text)),
            "order {id}"
        );
        for (product, quantity) in lines {
            *sold.entry(*product).or_default() += i64::from(*quantity);
        }
    }
    for (product, units) in opening {
        assert_eq!(
            mysql_stock(app, *product).await,
            units - sold.get(product).copied().unwrap_or(0),
            "stock of product {product}"
        );
    }
    let lines: usize = orders.iter().map(|(_, lines)| lines.len()).sum();
    assert_eq!(
        count(
            app,
            "SELECT COUNT(*) FROM stock_movements WHERE reason = 'SALE'"
        )
        .await,
        lines as i64
    );
    assert_eq!(
        count(
            app,
            "SELECT COUNT(*) FROM (SELECT movement_key FROM stock_movements GROUP BY movement_key HAVING COUNT(*) > 1) d"
        )
        .await,
        0
    );
}

/// A sale of two products in one store, with customers to buy them.
pub(crate) struct Sale {
    pub store: StoreId,
    pub a: ProductId,
    pub b: ProductId,
    pub prices: HashMap<ProductId, i64>,
    pub opening: HashMap<ProductId, i64>,
    pub customers: Vec<(UserId, String)>,
}

pub(crate) async fn open_sale(app: &TestApp, customers: usize) -> Sale {
    let store = app.create_store().await;
    let a = app.create_product(store, 1_999, 20_000, None).await;
    let b = app.create_product(store, 550, 10_000, None).await;
    let mut list = Vec::new();
    for _ in 0..customers {
        list.push(app.create_customer().await);
    }
    Sale {
        store,
        a,
        b,
        prices: HashMap::from([(a, 1_999), (b, 550)]),
        opening: HashMap::from([(a, 20_000), (b, 10_000)]),
        customers: list,
    }
}

/// Runs `orders` lock + confirm pairs over HTTP, 32 at a time.
pub(crate) async fn confirm_load(
    http: &reqwest::Client,
    address: &str,
    sale: &Sale,
    orders: std::ops::Range<usize>,
) -> Vec<(String, Vec<(ProductId, u32)>)> {
    stream::iter(orders)
        .map(|n| {
            let lines = lines_of(n, sale.a, sale.b);
            let token = sale.customers[n % sale.customers.len()].1.clone();
            async move {
                let id = lock_and_confirm(http, address, &token, &lines).await;
                (id, lines)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// The age of the oldest event not yet in MySQL, by Redis's clock (`None`: no answer).
async fn outbox_lag_ms(app: &TestApp, store: StoreId) -> Option<i64> {
    let mut redis = app.redis.clone();
    let oldest: Vec<(String, HashMap<String, String>)> = redis
        .xrange_count(app.keys.store(store).outbox, "-", "+", 1)
        .await
        .ok()?;
    let Some((id, _)) = oldest.first() else {
        return Some(0);
    };
    let (seconds, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut redis).await.ok()?;
    Some(seconds * 1000 + micros / 1000 - id.split_once('-')?.0.parse::<i64>().ok()?)
}

on_both_topologies!(
    #[tokio::test]
    two_thousand_confirmed_orders_land_in_mysql_exactly_once
);
async fn two_thousand_confirmed_orders_land_in_mysql_exactly_once(topology: Topology) {
    let _serial = one_at_a_time().await;
    let app = spawn_app_with(flushing().on(topology)).await;
    let sale = open_sale(&app, 40).await;

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let (app, store) = (&app, sale.store);
        async move {
            let mut lags = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                lags.extend(outbox_lag_ms(app, store).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lags
        }
    };
    let load = async {
        let started = Instant::now();
        let orders = confirm_load(&app.http, &app.address, &sale, 0..2000).await;
        let confirming = started.elapsed();
        let draining = wait_drained(&app).await;
        sampling.store(false, Ordering::Relaxed);
        (orders, confirming, draining)
    };
    let (mut lags, (orders, confirming, draining)) = tokio::join!(sampler, load);

    assert_exactly_once(&app, &orders, &sale.prices, &sale.opening).await;
    assert_audit_clean(&app).await;
    lags.sort_unstable();
    eprintln!(
        "2000 orders confirmed over HTTP in {confirming:?} ({:.0}/s); drained {draining:?} after the last; \
         outbox lag during the load: median {} ms, p99 {} ms, max {} ms ({} samples)",
        2000.0 / confirming.as_secs_f64(),
        lags[lags.len() / 2],
        lags[lags.len() * 99 / 100],
        lags[lags.len() - 1],
        lags.len()
    );
}

/// The service as its own process, sharing the test app's key prefix, with its flusher on.
pub(crate) fn flusher(
    app: &TestApp,
    database_url: &str,
    settings: &[(&str, &str)],
) -> ServiceProcess {
    let mut env = vec![("FLUSH_ENABLED", "true")];
    // The test app's Redis: the shared node, or the cluster.
    let config = &app.context.config;
    if config.redis_cluster {
        env.push(("REDIS_CLUSTER", "true"));
    }
    env.extend_from_slice(settings);
    ServiceProcess::spawn(app, database_url, &config.redis_url, &env)
}

/// Locks and confirms orders through the same use cases the API calls, while no service
/// runs: the events wait in the outbox for a flusher.
pub(crate) async fn confirm_without_flusher(
    app: &TestApp,
    sale: &Sale,
    orders: std::ops::Range<usize>,
) -> Vec<(String, Vec<(ProductId, u32)>)> {
    stream::iter(orders)
        .map(|n| async move {
            let lines = lines_of(n, sale.a, sale.b);
            let viewer = Viewer {
                id: sale.customers[n % sale.customers.len()].0,
                role: Role::Customer,
            };
            let input: Vec<LineInput> = lines
                .iter()
                .map(|(p, q)| LineInput {
                    product_id: p.to_string(),
                    quantity: i64::from(*q),
                })
                .collect();
            let hold = orders::lock_order(app.context.lock_context(), viewer, &input, None, false)
                .await
                .unwrap()
                .into_result()
                .unwrap();
            let id = hold.id.to_string();
            let payment = PaymentReference::parse(&format!("pay-{n}")).unwrap();
            orders::confirm_order(&app.db, &app.context.engine, viewer, &id, &payment)
                .await
                .unwrap()
                .into_result()
                .unwrap();
            (id, lines)
        })
        .buffer_unordered(32)
        .collect()
        .await
}

pub(crate) async fn confirmed_in_mysql(app: &TestApp) -> i64 {
    count(
        app,
        "SELECT COUNT(*) FROM orders WHERE status = 'CONFIRMED'",
    )
    .await
}

/// Kills `service` once MySQL has some but not all of `total` orders.
pub(crate) async fn kill_mid_flush(
    app: &TestApp,
    service: &mut ServiceProcess,
    total: usize,
) -> i64 {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let flushed = confirmed_in_mysql(app).await;
        if flushed > 0 {
            service.kill();
            assert!(
                (flushed as usize) < total,
                "the flush finished before the kill; lower FLUSH_BATCH"
            );
            return flushed;
        }
        assert!(Instant::now() < deadline, "nothing was flushed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(crate) async fn pending_of(app: &TestApp, store: StoreId, consumer: &str) -> u64 {
    let reply: Vec<(String, u64)> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(app.keys.store(store).outbox)
        .arg("flusher")
        .query_async::<Vec<HashMap<String, redis::Value>>>(&mut app.redis.clone())
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                redis::from_redis_value_ref(&c["name"]).unwrap(),
                redis::from_redis_value_ref(&c["pending"]).unwrap(),
            )
        })
        .collect();
    reply
        .into_iter()
        .find(|(name, _)| name == consumer)
        .map_or(0, |(_, pending)| pending)
}

on_both_topologies!(
    #[tokio::test]
    a_killed_flusher_loses_nothing_and_counts_nothing_twice
);
async fn a_killed_flusher_loses_nothing_and_counts_nothing_twice(topology: Topology) {
    let _serial = one_at_a_time().await;
    let mut app = spawn_app_with(TestOptions::default().on(topology)).await;
    let sale = open_sale(&app, 20).await;
    app.stop().await;
    let orders = confirm_without_flusher(&app, &sale, 0..600).await;

    // Small batches, so the kill lands while the backlog is being written.
    let mut first = flusher(
        &app,
        &app.database_url,
        &[("FLUSH_CONSUMER", "first"), ("FLUSH_BATCH", "5")],
    );
    let flushed = kill_mid_flush(&app, &mut first, orders.len()).await;
    eprintln!(
        "killed with {flushed} of {} orders in MySQL, {} entries pending on the killed consumer",
        orders.len(),
        pending_of(&app, sale.store, "first").await
    );

    // The same consumer name comes back and finishes its own pending entries first;
    // it is killed again mid-flush.
    let mut again = flusher(
        &app,
        &app.database_url,
        &[
            ("FLUSH_CONSUMER", "first"),
            ("FLUSH_BATCH", "5"),
            ("FLUSH_CLAIM_IDLE", "1h"),
        ],
    );
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while confirmed_in_mysql(&app).await == flushed {
        assert!(
            Instant::now() < deadline,
            "the restarted consumer flushed nothing"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    again.kill();

    // Another consumer claims what the dead one left pending.
    let _other = flusher(
        &app,
        &app.database_url,
        &[("FLUSH_CONSUMER", "second"), ("FLUSH_CLAIM_IDLE", "300ms")],
    )
    .ready()
    .await;
    wait_drained(&app).await;
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while pending_of(&app, sale.store, "first").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the dead consumer's entries were never claimed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_exactly_once(&app, &orders, &sale.prices, &sale.opening).await;
    assert_audit_clean(&app).await;
}

/// A TCP proxy in front of MySQL that the test switches off (every connection cut, new
/// ones closed at once) and on again.
pub(crate) struct Switch {
    port: u16,
    on: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Switch {
    pub(crate) async fn start(target: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let on = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let (on, cut) = (on.clone(), cut.clone());
            async move {
                let mut links = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((mut client, _)) = accepted else { continue };
                            if !on.load(Ordering::SeqCst) {
                                continue; // dropped: the client sees the connection close
                            }
                            links.spawn(async move {
                                if let Ok(mut server) = TcpStream::connect(target).await {
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                                }
                            });
                        }
                        () = cut.notified() => links.abort_all(),
                        Some(_) = links.join_next(), if !links.is_empty() => {}
                    }
                }
            }
        });
        Self {
            port,
            on,
            cut,
            task,
        }
    }

    pub(crate) fn off(&self) {
        self.on.store(false, Ordering::SeqCst);
        self.cut.notify_one();
    }

    pub(crate) fn on(&self) {
        self.on.store(true, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by this proxy's.
    pub(crate) fn url(&self, url: &str) -> String {
        let (_, database) = url.rsplit_once('/').unwrap();
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_mysql_outage_delays_the_flush_but_loses_nothing() {
    let mut app = spawn_app().await;
    let sale = open_sale(&app, 20).await;
    app.stop().await;
    let mysql = Switch::start("127.0.0.1:3306").await;
    let http = reqwest::Client::new();
    let service = flusher(&app, &mysql.url(&app.database_url), &[])
        .ready()
        .await;

    mysql.off();
    let orders = confirm_load(&http, &service.address, &sale, 0..1000).await;
    let ready = http
        .get(format!("{}/readyz", service.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["mysql"]["status"], "down", "{body}");
    assert_eq!(confirmed_in_mysql(&app).await, 0);
    let backlog: u64 = app
        .redis
        .clone()
        .xlen(app.keys.store(sale.store).outbox)
        .await
        .unwrap();
    assert_eq!(
        backlog, 2000,
        "one event per lock and per confirm, all kept"
    );

    mysql.on();
    let back = Instant::now();
    let mut first = confirmed_in_mysql(&app).await;
    while first == 0 {
        assert!(
            back.elapsed() < DRAIN_DEADLINE,
            "nothing flushed after MySQL came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        first = confirmed_in_mysql(&app).await;
    }
    let resumed = back.elapsed();
    let draining = wait_drained(&app).await;
    assert_exactly_once(&app, &orders, &sale.prices, &sale.opening).await;
    assert_audit_clean(&app).await;
    eprintln!(
        "MySQL back: first commit after {resumed:?} (retry pause); the other {} orders \
         ({} events) followed in {draining:?}: {:.0} orders/s into MySQL",
        1000 - first,
        2000 - 2 * first,
        (1000 - first) as f64 / draining.as_secs_f64()
    );
}

/// Adds the outbox event the scripts would write for this hold, by hand.
pub(crate) async fn append_by_hand(app: &TestApp, store: StoreId, fields: &[(String, String)]) {
    let _: String = app
        .redis
        .clone()
        .xadd(app.keys.store(store).outbox, "*", fields)
        .await
        .unwrap();
}

pub(crate) async fn hold_event(app: &TestApp, order: &str) -> Vec<(String, String)> {
    let id = flashstock::domain::OrderId::parse(order).unwrap();
    let fields: Vec<(String, String)> = app.redis.clone().hgetall(app.keys.hold(id)).await.unwrap();
    let mut event = vec![
        ("type".to_owned(), "order".to_owned()),
        ("order".to_owned(), id.uuid.to_string()),
    ];
    event.extend(fields);
    event
}

/// Everything the flusher writes, to compare before and after a replay.
pub(crate) async fn snapshot(
    app: &TestApp,
) -> (
    Vec<(String, String, u32)>,
    Vec<(String, i64)>,
    Vec<(u64, i64)>,
) {
    let orders = sqlx::query_as("SELECT id, status, version FROM orders ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    let ledger = sqlx::query_as("SELECT movement_key, delta FROM stock_movements ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    let stock = sqlx::query_as("SELECT id, stock FROM products ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    (orders, ledger, stock)
}

pub(crate) fn run_audit(app: &TestApp) -> (bool, String) {
    run_command(app, &["audit", "--wait", "30s"])
}

/// Runs a `flashstock` command on the test's database and key prefix: success and stdout.
pub(crate) fn run_command(app: &TestApp, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flashstock"))
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env("REDIS_URL", &app.context.config.redis_url)
        .env(
            "REDIS_CLUSTER",
            app.context.config.redis_cluster.to_string(),
        )
        .env("REDIS_KEY_PREFIX", app.keys.prefix())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the flashstock binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

on_both_topologies!(
    #[tokio::test]
    every_final_status_restocks_and_replays_are_recorded_once
);
async fn every_final_status_restocks_and_replays_are_recorded_once(topology: Topology) {
    let app = spawn_app_with(flushing().arg("hold-ttl", "1s").on(topology)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 1_000, 100, None).await;
    let (_, customer) = app.create_customer().await;
    let (_, admin) = app.create_admin().await;
    let lock = |quantity: u32| {
        let vars = json!({ "input": { "items": items(&[(product, quantity)]) } });
        let (app, customer) = (&app, &customer);
        async move {
            let reply = app.graphql(LOCK, vars, Some(customer)).await;
            reply["data"]["lockOrder"]["order"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };

    let cancelled = lock(2).await;
    let reply = app
        .graphql(CANCEL, json!({ "id": cancelled }), Some(&customer))
        .await;
    assert_eq!(reply["data"]["cancelOrder"]["order"]["status"], "CANCELLED");

    let expired = lock(3).await;
    // Past its deadline: the confirm script itself releases the hold as EXPIRED.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let reply = app
        .graphql(
            CONFIRM,
            json!({ "input": { "orderId": expired, "paymentReference": "late" } }),
            Some(&customer),
        )
        .await;
    assert_eq!(
        reply["data"]["confirmOrder"]["errors"][0]["code"], "HOLD_EXPIRED",
        "{reply}"
    );

    let reply = app
        .graphql(
            RESTOCK,
            json!({ "id": product.to_string(), "q": 25, "r": "late truck" }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        reply["data"]["restockProduct"]["errors"],
        json!([]),
        "{reply}"
    );

    let confirmed = lock_and_confirm(&app.http, &app.address, &customer, &[(product, 4)]).await;
    wait_drained(&app).await;

    let statuses: HashMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT id, status FROM orders")
            .fetch_all(&app.db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let uuid = |id: &str| id.split_once('-').unwrap().1.to_owned();
    assert_eq!(statuses[&uuid(&cancelled)], "CANCELLED");
    assert_eq!(statuses[&uuid(&expired)], "EXPIRED");
    assert_eq!(statuses[&uuid(&confirmed)], "CONFIRMED");
    assert_eq!(mysql_stock(&app, product).await, 100 + 25 - 4);
    let ledger: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT CAST(reason AS CHAR), delta, note FROM stock_movements WHERE product_id = ? ORDER BY CAST(reason AS CHAR)",
    )
    .bind(product.0)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        ledger,
        vec![
            (
                "ADJUSTMENT".to_owned(),
                100,
                Some("opening stock".to_owned())
            ),
            ("RESTOCK".to_owned(), 25, Some("late truck".to_owned())),
            ("SALE".to_owned(), -4, None),
        ]
    );
    assert_audit_clean(&app).await;

    // myOrders reads what the flusher wrote.
    let mine = app.graphql(MY_ORDERS, json!({}), Some(&customer)).await;
    assert_eq!(mine["data"]["myOrders"]["totalCount"], 3, "{mine}");
    let newest = &mine["data"]["myOrders"]["edges"][0]["node"];
    assert_eq!(newest["id"], confirmed.as_str());
    assert_eq!(newest["status"], "CONFIRMED");
    assert_eq!(newest["totalCents"], 4_000);
    assert_eq!(
        newest["lines"],
        json!([{ "quantity": 4, "unitPriceCents": 1000, "product": { "id": product.to_string() } }])
    );

    // Replays: the confirmed order's event again, an older HELD version of it, the
    // cancellation again and the restock again. Nothing may change.
    let before = snapshot(&app).await;
    let confirmed_event = hold_event(&app, &confirmed).await;
    let held_again: Vec<(String, String)> = confirmed_event
        .iter()
        .filter(|(k, _)| !["confirmed", "finished", "payment_ref"].contains(&k.as_str()))
        .map(|(k, v)| match k.as_str() {
            "status" => (k.clone(), "HELD".to_owned()),
            "version" => (k.clone(), "1".to_owned()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let (restock_key, at): (String, chrono::NaiveDateTime) = sqlx::query_as(
        "SELECT movement_key, created_at FROM stock_movements WHERE reason = 'RESTOCK'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let restock_event: Vec<(String, String)> = [
        ("type", "restock".to_owned()),
        (
            "restock",
            restock_key.strip_prefix("restock:").unwrap().to_owned(),
        ),
        ("product", product.to_string()),
        ("units", "25".to_owned()),
        ("reason", "late truck".to_owned()),
        ("at", at.and_utc().timestamp_millis().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for event in [
        &confirmed_event,
        &held_again,
        &hold_event(&app, &cancelled).await,
        &restock_event,
    ] {
        append_by_hand(&app, store, event).await;
    }
    wait_drained(&app).await;
    assert_eq!(snapshot(&app).await, before);
    assert_audit_clean(&app).await;

    // The command agrees, and names a difference planted on purpose.
    let (clean, output) = run_audit(&app);
    assert!(clean, "{output}");
    assert!(output.contains("0 mismatches"), "{output}");
    sqlx::query("UPDATE products SET stock = stock + 1 WHERE id = ?")
        .bind(product.0)
        .execute(&app.db)
        .await
        .unwrap();
    let (clean, output) = run_audit(&app);
    assert!(!clean, "{output}");
    assert!(
        output.contains(&format!(
            "product {product}: MySQL stock 122 != Redis available 121 + held 0"
        )),
        "{output}"
    );
}

/// The harness keeps outbox entries by default; these tests are about the flusher.
pub(crate) fn flushing() -> TestOptions {
    TestOptions::default().arg("flush-enabled", "true")
}

/// The acknowledgement trims the stream only below what the group has delivered. A group
/// whose history is behind the ids a flusher committed (a replica promoted behind its
/// master) keeps the entries it never delivered, to be read and written to MySQL.
#[tokio::test]
async fn acknowledging_never_trims_entries_the_group_has_not_delivered() {
    let client = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("t{}:ack-floor", crate::helpers::unique_suffix());
    let group = flashstock::outbox::GROUP;
    for n in 1..=10 {
        let _: String = redis
            .xadd(&stream, format!("{n}-0"), &[("n", n)])
            .await
            .unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(group)
        .arg("0")
        .query_async(&mut redis)
        .await
        .unwrap();
    // The group delivered 1..3 only; then a flusher acknowledges 1..3 with 8..10, ids
    // it read on a master whose history this one lacks.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("c")
        .arg("COUNT")
        .arg(3)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut redis)
        .await
        .unwrap();
    let ack = redis::Script::new(include_str!("../../lua/outbox_ack.lua"));
    let _: i64 = ack
        .key(&stream)
        .arg(group)
        .arg(&["1-0", "2-0", "3-0", "8-0", "9-0", "10-0"])
        .invoke_async(&mut redis)
        .await
        .unwrap();
    let left: Vec<(String, HashMap<String, String>)> = redis
        .xrange_all::<_, redis::streams::StreamRangeReply>(&stream)
        .await
        .unwrap()
        .ids
        .into_iter()
        .map(|entry| {
            let fields = entry
                .map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value(v).unwrap()))
                .collect();
            (entry.id, fields)
        })
        .collect();
    let ids: Vec<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["4-0", "5-0", "6-0", "7-0"],
        "undelivered entries stay"
    );
    let _: () = redis.del(&stream).await.unwrap();
}
