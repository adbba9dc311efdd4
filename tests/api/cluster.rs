//! flashstock on a Redis Cluster with several instances, as real processes: two instances
//! selling two stores whose slots live on two masters; a master SIGKILLed mid-sale, its
//! replica taking over; and `REDIS_WAIT_REPLICAS=1` keeping every hold a buyer was told
//! of through that failover; and the live feed outliving the only node REDIS_URL names.
//! Each sale test ends with `flashstock audit` clean on the cluster.
//! The failover tests run on a private cluster (the shared one is never killed) and print
//! their timings (`-- --nocapture`).

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flashstock::domain::{OrderId, ProductId, StoreId};
use futures_util::{StreamExt, future::join_all, stream};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::{TestApp, cluster_url, one_at_a_time, outbox_order_events, spawn_app};
use crate::private_cluster::{
    PrivateCluster, connection_for_key, master_of_key, seed_ports, serving_master,
};
use crate::process::ServiceProcess;

const LOCK: &str = "mutation($input: LockOrderInput!) { lockOrder(input: $input) { \
     order { id status } errors { code } } }";
const CONFIRM: &str = "mutation($input: ConfirmOrderInput!) { confirmOrder(input: $input) { \
     order { id status } errors { code } } }";

/// The service's settings on a cluster, with `more` on top.
fn on_cluster<'a>(more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut settings = vec![("REDIS_CLUSTER", "true"), ("SWEEP_INTERVAL", "200ms")];
    settings.extend_from_slice(more);
    settings
}

async fn post(
    http: &reqwest::Client,
    address: &str,
    token: &str,
    query: &str,
    vars: Value,
) -> Value {
    match http
        .post(format!("{address}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": vars }))
        .timeout(Duration::from_secs(20))
        .send()
        .await
    {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// lockOrder of one unit: the order when the answer is a clean HELD, else the first error
/// code (`ERROR` for a failed request or a GraphQL error: Redis may be failing over).
async fn lock_one(
    http: &reqwest::Client,
    address: &str,
    token: &str,
    product: ProductId,
    key: Option<&str>,
) -> Result<String, String> {
    let vars = json!({ "input": {
        "items": [{ "productId": product.to_string(), "quantity": 1 }],
        "idempotencyKey": key,
    } });
    let body = post(http, address, token, LOCK, vars).await;
    let payload = &body["data"]["lockOrder"];
    match (
        payload["order"]["status"].as_str(),
        payload["errors"][0]["code"].as_str(),
    ) {
        (Some("HELD"), None) => Ok(payload["order"]["id"].as_str().unwrap().to_owned()),
        (_, Some(code)) => Err(code.to_owned()),
        _ => Err("ERROR".to_owned()),
    }
}

async fn confirm(
    http: &reqwest::Client,
    address: &str,
    token: &str,
    order: &str,
) -> Result<(), String> {
    let vars = json!({ "input": { "orderId": order, "paymentReference": format!("pay-{order}") } });
    let body = post(http, address, token, CONFIRM, vars).await;
    match body["data"]["confirmOrder"]["order"]["status"].as_str() {
        Some("CONFIRMED") if body["data"]["confirmOrder"]["errors"][0].is_null() => Ok(()),
        _ => Err(body.to_string()),
    }
}

fn uuid_of(order: &str) -> String {
    order.split_once('-').unwrap().1.to_owned()
}

/// Redis's available, held and sold units of a product, read on the master serving its
/// store now.
async fn split(
    app: &TestApp,
    ports: &[u16],
    store: StoreId,
    product: ProductId,
) -> (i64, i64, i64) {
    let keys = app.keys.store(store);
    let mut redis = connection_for_key(ports, &keys.stock).await;
    let mut field = async |hash: &str| -> i64 {
        let value: Option<i64> = redis::cmd("HGET")
            .arg(hash)
            .arg(product.0)
            .query_async(&mut redis)
            .await
            .unwrap();
        value.unwrap_or(0)
    };
    (
        field(&keys.stock).await,
        field(&keys.held).await,
        field(&keys.sold).await,
    )
}

/// Every status an order's outbox events carried, by order uuid.
async fn outbox_statuses(
    app: &TestApp,
    ports: &[u16],
    store: StoreId,
) -> HashMap<String, Vec<String>> {
    let outbox = app.keys.store(store).outbox;
    let mut redis = connection_for_key(ports, &outbox).await;
    let mut statuses: HashMap<String, Vec<String>> = HashMap::new();
    for (order, status) in outbox_order_events(&mut redis, &outbox).await {
        statuses.entry(order).or_default().push(status);
    }
    statuses
}

/// MySQL's orders: uuid -> (status, version).
async fn mysql_orders(app: &TestApp) -> HashMap<String, (String, u32)> {
    sqlx::query_as::<_, (String, String, u32)>(
        "SELECT id, CAST(status AS CHAR), version FROM orders",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, status, version)| (id, (status, version)))
    .collect()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// `flashstock audit` on the cluster, once the outbox is drained: clean, or the report.
fn assert_audit_clean(app: &TestApp, cluster_url: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_flashstock"))
        .args(["audit", "--wait", "60s"])
        .env("DATABASE_URL", &app.database_url)
        .env("REDIS_CLUSTER", "true")
        .env("REDIS_URL", cluster_url)
        .env("REDIS_KEY_PREFIX", app.keys.prefix())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the flashstock binary runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(report.contains(" 0 mismatches"), "{report}");
}

async fn wait_until<F, Fut>(limit: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn customers(app: &TestApp, n: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for _ in 0..n {
        tokens.push(app.create_customer().await.1);
    }
    tokens
}

/// Waits until `replica` has applied everything `master` had when called.
async fn wait_replicated(cluster: &PrivateCluster, master: u16, replica: u16) {
    let offset = |port: u16, field: &'static str| async move {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut cluster.node(port).await)
            .await
            .unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let target = offset(master, "master_repl_offset:").await;
    wait_until(Duration::from_secs(10), "the replica caught up", || async {
        offset(replica, "slave_repl_offset:").await >= target
    })
    .await;
}

#[tokio::test]
async fn two_instances_sell_two_stores_on_two_masters_and_release_each_hold_once() {
    let _serial = one_at_a_time().await;
    let url = cluster_url();
    let ports = seed_ports(&url);
    let mut app = spawn_app().await;
    app.keys_also_on_cluster(&url);
    let first = app.create_store().await;
    let first_master = master_of_key(&ports, &app.keys.store(first).stock).await;
    let mut second = app.create_store().await;
    while master_of_key(&ports, &app.keys.store(second).stock).await == first_master {
        second = app.create_store().await;
    }
    const STOCK: i64 = 50;
    const BUYERS: usize = 160;
    let a = app.create_product(first, 700, STOCK, None).await;
    let b = app.create_product(second, 900, STOCK, None).await;
    let buyers = customers(&app, BUYERS).await;
    // The harness's own instance runs on the single node; this test's run on the cluster.
    app.stop().await;

    let settings = on_cluster(&[("HOLD_TTL", "3s")]);
    let one = ServiceProcess::start(&app, &url, &settings).await;
    let two = ServiceProcess::start(&app, &url, &settings).await;
    let http = reqwest::Client::new();
    // Every (instance, product) pair gets 40 buyers, all at once.
    let replies: Vec<(ProductId, Result<String, String>)> = stream::iter(0..BUYERS)
        .map(|i| {
            let address = if i % 2 == 0 {
                &one.address
            } else {
                &two.address
            };
            let product = if (i / 2) % 2 == 0 { a } else { b };
            let (http, token) = (&http, &buyers[i]);
            async move { (product, lock_one(http, address, token, product, None).await) }
        })
        .buffer_unordered(40)
        .collect()
        .await;

    let mut holds = Vec::new();
    for (store, product) in [(first, a), (second, b)] {
        let mine = replies.iter().filter(|(p, _)| *p == product);
        let held: Vec<&String> = mine.clone().filter_map(|(_, r)| r.as_ref().ok()).collect();
        let refused: Vec<&String> = mine.filter_map(|(_, r)| r.as_ref().err()).collect();
        assert_eq!(
            held.len() as i64,
            STOCK,
            "product {product}: refused {refused:?}"
        );
        assert!(
            refused.iter().all(|code| *code == "INSUFFICIENT_STOCK"),
            "{refused:?}"
        );
        assert_eq!(split(&app, &ports, store, product).await, (0, STOCK, 0));
        holds.extend(held.into_iter().map(|order| (store, uuid_of(order))));
    }

    // Nobody pays: every hold expires on its store's master, released once.
    for (store, product) in [(first, a), (second, b)] {
        wait_until(Duration::from_secs(30), "every hold released", || async {
            split(&app, &ports, store, product).await == (STOCK, 0, 0)
        })
        .await;
    }
    for store in [first, second] {
        let events = outbox_statuses(&app, &ports, store).await;
        let ours: Vec<&(StoreId, String)> = holds.iter().filter(|(s, _)| *s == store).collect();
        assert_eq!(events.len(), ours.len(), "orders in store {store}'s outbox");
        for (_, order) in ours {
            assert_eq!(
                events.get(order).map(Vec::as_slice),
                Some(&["HELD".to_owned(), "EXPIRED".to_owned()][..]),
                "order {order}"
            );
        }
    }

    // Both instances again, sharing the flusher group: MySQL gets each order once.
    drop((one, two));
    let flushing = on_cluster(&[("HOLD_TTL", "3s"), ("FLUSH_ENABLED", "true")]);
    let _one = ServiceProcess::start(&app, &url, &flushing).await;
    let _two = ServiceProcess::start(&app, &url, &flushing).await;
    assert_audit_clean(&app, &url);
    let orders = mysql_orders(&app).await;
    assert_eq!(orders.len(), holds.len());
    for (_, order) in &holds {
        assert_eq!(
            orders.get(order),
            Some(&("EXPIRED".to_owned(), 2)),
            "order {order}"
        );
    }
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM stock_movements WHERE reason = 'SALE'"
        )
        .await,
        0
    );
    for product in [a, b] {
        let stock: i64 = sqlx::query_scalar("SELECT stock FROM products WHERE id = ?")
            .bind(product.0)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(stock, STOCK, "product {product}");
    }
}

/// A steady load of one-unit holds from `workers` buyers at a time, alternating between
/// `addresses`, until `stop`: every reply with the time it came.
fn hold_load(
    http: &reqwest::Client,
    addresses: &[String],
    tokens: &[String],
    product: ProductId,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Instant, Result<String, String>)>> {
    let (http, addresses, tokens) = (http.clone(), addresses.to_vec(), tokens.to_vec());
    tokio::spawn(async move {
        let replies = Arc::new(Mutex::new(Vec::new()));
        join_all((0..workers).map(|worker| {
            let (http, addresses, tokens, stop, replies) =
                (&http, &addresses, &tokens, stop.clone(), replies.clone());
            async move {
                let mut n = worker;
                while !stop.load(Ordering::Relaxed) {
                    let address = &addresses[n % addresses.len()];
                    let token = &tokens[n % tokens.len()];
                    let reply = lock_one(http, address, token, product, None).await;
                    replies.lock().await.push((Instant::now(), reply));
                    n += workers;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }))
        .await;
        Arc::try_unwrap(replies).unwrap().into_inner()
    })
}

fn codes(replies: &[(Instant, Result<String, String>)]) -> HashMap<&str, usize> {
    let mut seen = HashMap::new();
    for (_, reply) in replies {
        *seen
            .entry(reply.as_ref().map(|_| "HELD").unwrap_or_else(|code| code))
            .or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn a_master_killed_mid_sale_hands_its_stores_to_its_replica_within_seconds() {
    let _serial = one_at_a_time().await;
    let mut cluster = PrivateCluster::start().await;
    let (url, ports) = (cluster.url(), cluster.ports());
    let mut app = spawn_app().await;
    let store = app.create_store().await;
    const STOCK: i64 = 10_000;
    let product = app.create_product(store, 1_000, STOCK, None).await;
    let tokens = customers(&app, 30).await;
    app.stop().await;
    let settings = on_cluster(&[
        ("HOLD_TTL", "8s"),
        ("FLUSH_ENABLED", "true"),
        ("MAX_HOLDS_PER_CUSTOMER", "0"),
    ]);
    let one = ServiceProcess::start(&app, &url, &settings).await;
    let two = ServiceProcess::start(&app, &url, &settings).await;
    let addresses = [one.address.clone(), two.address.clone()];
    let http = reqwest::Client::new();

    // Before the failover: 20 holds nobody pays for, 20 orders confirmed and flushed.
    let mut unpaid = Vec::new();
    let mut confirmed = Vec::new();
    for i in 0..40 {
        let (address, token) = (&addresses[i % 2], &tokens[i % tokens.len()]);
        let order = lock_one(&http, address, token, product, None)
            .await
            .unwrap();
        if i % 2 == 0 {
            unpaid.push(order);
        } else {
            confirm(&http, address, token, &order).await.unwrap();
            confirmed.push(order);
        }
    }
    wait_until(
        Duration::from_secs(30),
        "the confirmed orders flushed",
        || async {
            count(
                &app,
                "SELECT COUNT(*) FROM orders WHERE status = 'CONFIRMED'",
            )
            .await
                == 20
        },
    )
    .await;
    let stock_key = app.keys.store(store).stock;
    let master = master_of_key(&ports, &stock_key).await;
    let replica = cluster.replicas_of(master).await[0];
    wait_replicated(&cluster, master, replica).await;

    // Mid-sale: holds keep coming on both instances while the store's master dies.
    let stop = Arc::new(AtomicBool::new(false));
    let load = hold_load(&http, &addresses, &tokens, product, 6, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    cluster.kill(master);
    wait_until(Duration::from_secs(30), "the replica promoted", || async {
        serving_master(&ports, &stock_key).await == Some(replica)
    })
    .await;
    let promoted_after = killed_at.elapsed();
    // The first hold after the kill, as a buyer sees it.
    let mut first_hold = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while first_hold.is_none() {
        assert!(
            Instant::now() < deadline,
            "no hold taken within 30 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reply = lock_one(&http, &addresses[0], &tokens[0], product, None).await;
        if reply.is_ok() {
            first_hold = Some(killed_at.elapsed());
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let replies = load.await.unwrap();
    let before: Vec<_> = replies
        .iter()
        .filter(|(at, _)| *at < killed_at)
        .cloned()
        .collect();
    let after: Vec<_> = replies
        .iter()
        .filter(|(at, _)| *at >= killed_at)
        .cloned()
        .collect();
    let rebuilt = [&one, &two]
        .iter()
        .any(|s| s.log_text().contains("store rebuilt from MySQL"));
    eprintln!(
        "master SIGKILLed: replica promoted after {promoted_after:?}, lockOrder held again \
         {:?} after the kill; load before {:?}, from the kill on {:?}; store rebuilt from \
         MySQL: {rebuilt}",
        first_hold.unwrap(),
        codes(&before),
        codes(&after),
    );
    assert!(
        first_hold.unwrap() < Duration::from_secs(15),
        "lockOrder took {first_hold:?} to work again"
    );

    // Orders after the failover are confirmed as before.
    for i in 0..10 {
        let (address, token) = (&addresses[i % 2], &tokens[i]);
        let order = lock_one(&http, address, token, product, None)
            .await
            .unwrap();
        confirm(&http, address, token, &order).await.unwrap();
        confirmed.push(order);
    }

    // The holds taken before the failover still expire, on the promoted replica.
    wait_until(
        Duration::from_secs(40),
        "the holds taken before expired",
        || async {
            let orders = mysql_orders(&app).await;
            unpaid
                .iter()
                .all(|o| orders.get(&uuid_of(o)).is_some_and(|(s, _)| s == "EXPIRED"))
        },
    )
    .await;
    // And so do all the load's: the audit compares a quiet store.
    wait_until(Duration::from_secs(40), "every hold released", || async {
        split(&app, &ports, store, product).await.1 == 0
    })
    .await;
    assert_audit_clean(&app, &url);
    let orders = mysql_orders(&app).await;
    for order in &confirmed {
        assert_eq!(
            orders.get(&uuid_of(order)),
            Some(&("CONFIRMED".to_owned(), 2)),
            "order {order}"
        );
    }
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM (SELECT movement_key FROM stock_movements \
             GROUP BY movement_key HAVING COUNT(*) > 1) d"
        )
        .await,
        0
    );
    let sold = count(
        &app,
        "SELECT COUNT(*) FROM orders WHERE status = 'CONFIRMED'",
    )
    .await;
    assert_eq!(sold, confirmed.len() as i64);
    let (available, held, sold_units) = split(&app, &ports, store, product).await;
    assert!(available >= 0 && held >= 0);
    assert_eq!(available + held + sold_units, STOCK);
    assert_eq!(sold_units, confirmed.len() as i64);
}

#[tokio::test]
async fn with_wait_1_no_hold_a_buyer_was_told_of_is_lost_when_the_master_dies() {
    let _serial = one_at_a_time().await;
    let mut cluster = PrivateCluster::start().await;
    let (url, ports) = (cluster.url(), cluster.ports());
    let mut app = spawn_app().await;
    let store = app.create_store().await;
    const STOCK: i64 = 40;
    const BUYERS: usize = 120;
    let product = app.create_product(store, 1_000, STOCK, None).await;
    let tokens = customers(&app, BUYERS).await;
    app.stop().await;
    let settings = on_cluster(&[
        ("HOLD_TTL", "10m"),
        ("FLUSH_ENABLED", "true"),
        ("REDIS_WAIT_REPLICAS", "1"),
        ("REDIS_WAIT_TIMEOUT", "500ms"),
    ]);
    let one = ServiceProcess::start(&app, &url, &settings).await;
    let two = ServiceProcess::start(&app, &url, &settings).await;
    let addresses = [one.address.clone(), two.address.clone()];
    let http = reqwest::Client::new();
    let stock_key = app.keys.store(store).stock;
    let master = master_of_key(&ports, &stock_key).await;
    let replica = cluster.replicas_of(master).await[0];

    // Buyers come a few at a time; each retries with its idempotency key until it gets a
    // clean answer, HELD or INSUFFICIENT_STOCK. The master dies once 15 were told HELD.
    let told = Arc::new(Mutex::new(Vec::<String>::new()));
    let retried = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let buyers = stream::iter(0..BUYERS)
        .map(|i| {
            let (http, address, token) = (&http, &addresses[i % 2], &tokens[i]);
            let (told, retried) = (told.clone(), retried.clone());
            let key = format!("buyer-{i}");
            async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match lock_one(http, address, token, product, Some(&key)).await {
                        Ok(order) => {
                            told.lock().await.push(order);
                            return;
                        }
                        Err(code) if code == "INSUFFICIENT_STOCK" => return,
                        Err(code) => *retried.lock().await.entry(code).or_default() += 1,
                    }
                    assert!(Instant::now() < deadline, "buyer {i} never got an answer");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
        .buffer_unordered(6)
        .collect::<Vec<()>>();
    let killer = async {
        wait_until(Duration::from_secs(60), "15 buyers told HELD", || async {
            told.lock().await.len() >= 15
        })
        .await;
        let at = Instant::now();
        cluster.kill(master);
        // The promoted replica has no replica of its own, so every WAIT 1 times out
        // (NOT_REPLICATED) until the dead node is back, as a replica of it.
        wait_until(Duration::from_secs(30), "the replica promoted", || async {
            serving_master(&ports, &stock_key).await == Some(replica)
        })
        .await;
        let promoted = at.elapsed();
        cluster.restart(master);
        (at, promoted)
    };
    let ((), (killed_at, promoted)) = tokio::join!(
        async {
            buyers.await;
        },
        killer
    );
    let took = killed_at.elapsed();

    let told = told.lock().await.clone();
    let unique: std::collections::HashSet<&String> = told.iter().collect();
    eprintln!(
        "WAIT 1: {} buyers told HELD of {STOCK} units; the master, killed once 15 were, was \
         replaced by its replica after {promoted:?} and restarted as a replica then; the \
         sale ended {took:?} after the kill; answers retried: {:?}",
        unique.len(),
        retried.lock().await
    );
    assert_eq!(unique.len(), told.len(), "an order was told twice");
    assert!(
        told.len() as i64 <= STOCK,
        "{} buyers told HELD of {STOCK} units",
        told.len()
    );
    let (available, held, sold) = split(&app, &ports, store, product).await;
    assert_eq!((available, sold), (0, 0));
    assert_eq!(held, STOCK);
    // Every hold a buyer was told of is still there after the failover.
    let mut redis = connection_for_key(&ports, &stock_key).await;
    for order in &told {
        let status: Option<String> = redis::cmd("HGET")
            .arg(app.keys.hold(OrderId::parse(order).unwrap()))
            .arg("status")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(status.as_deref(), Some("HELD"), "order {order}");
    }
    assert_audit_clean(&app, &url);
}

/// Sells `n` units one order at a time: every third order is left HELD, the others are
/// confirmed. Returns (confirmed, held).
async fn sell(
    http: &reqwest::Client,
    address: &str,
    tokens: &[String],
    product: ProductId,
    n: usize,
) -> (Vec<String>, Vec<String>) {
    let (mut confirmed, mut held) = (Vec::new(), Vec::new());
    for i in 0..n {
        let token = &tokens[i % tokens.len()];
        let order = lock_one(http, address, token, product, None).await.unwrap();
        if i % 3 == 0 {
            held.push(order);
        } else {
            confirm(http, address, token, &order).await.unwrap();
            confirmed.push(order);
        }
    }
    (confirmed, held)
}

/// The store's sequence on the master serving it now, and in MySQL.
async fn store_sequences(app: &TestApp, ports: &[u16], store: StoreId) -> (u64, u64) {
    let key = app.keys.store(store).sequence();
    let redis: Option<u64> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection_for_key(ports, &key).await)
        .await
        .unwrap();
    let mysql: Option<u64> =
        sqlx::query_scalar("SELECT seq FROM store_sequences WHERE store_id = ?")
            .bind(store.0)
            .fetch_optional(&app.db)
            .await
            .unwrap();
    (redis.unwrap_or(0), mysql.unwrap_or(0))
}

/// Waits until the flusher has written every event of the store's master to MySQL.
async fn wait_flushed(app: &TestApp, ports: &[u16], store: StoreId) -> u64 {
    wait_until(Duration::from_secs(30), "the outbox flushed", || async {
        let (redis, mysql) = store_sequences(app, ports, store).await;
        redis > 0 && redis == mysql
    })
    .await;
    store_sequences(app, ports, store).await.1
}

#[tokio::test]
async fn a_replica_promoted_behind_mysql_is_rebuilt_from_it_and_orders_resume() {
    promoted_replica_behind_mysql().await;
}

/// A replica frozen while its master sells and the flusher writes those orders to MySQL,
/// then promoted when the master is killed: the store is rebuilt from MySQL, nothing is
/// sold twice, and orders resume.
async fn promoted_replica_behind_mysql() {
    let _serial = one_at_a_time().await;
    let mut cluster = PrivateCluster::start().await;
    // The replica is frozen for several node timeouts below; however stale, it must still
    // be allowed to take over (the default factor of 10 would allow 20 s here).
    cluster
        .config_set_all("cluster-replica-validity-factor", "0")
        .await;
    let (url, ports) = (cluster.url(), cluster.ports());
    let mut app = spawn_app().await;
    let store = app.create_store().await;
    // 18 units are sold before the failover: the stale replica thinks 12 of them free.
    const STOCK: i64 = 21;
    let product = app.create_product(store, 1_000, STOCK, None).await;
    let tokens = customers(&app, 6).await;
    app.stop().await;
    let settings = on_cluster(&[
        ("HOLD_TTL", "10m"),
        ("FLUSH_ENABLED", "true"),
        ("MAX_HOLDS_PER_CUSTOMER", "0"),
    ]);
    let service = ServiceProcess::start(&app, &url, &settings).await;
    let address = service.address.clone();
    let http = reqwest::Client::new();
    let stock_key = app.keys.store(store).stock;
    let master = master_of_key(&ports, &stock_key).await;
    let replica = cluster.replicas_of(master).await[0];

    // Sold while the replica follows: it has these.
    let (mut confirmed, mut held) = sell(&http, &address, &tokens, product, 6).await;
    let replicated_seq = wait_flushed(&app, &ports, store).await;
    wait_replicated(&cluster, master, replica).await;

    // The replica freezes and the master drops its link (what was sent on it before is
    // applied on resume, so nothing may be in flight): from here on only the master and
    // MySQL see the sale.
    cluster.pause(replica);
    let dropped: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query_async(&mut cluster.node(master).await)
        .await
        .unwrap();
    assert_eq!(dropped, 1, "the master's link to its replica dropped");
    let (more_confirmed, more_held) = sell(&http, &address, &tokens, product, 12).await;
    confirmed.extend(more_confirmed);
    held.extend(more_held);
    let mysql_seq = wait_flushed(&app, &ports, store).await;
    assert!(mysql_seq > replicated_seq);

    // The master dies with those writes; the replica wakes without them and takes over.
    // Then buyers come: only the units MySQL still has may be held. (None before the
    // kill: a hold the master took just before it died, never flushed, would be lost
    // with it, as docs/CLUSTER.md says.)
    let killed_at = Instant::now();
    cluster.kill(master);
    cluster.resume(replica);
    let stop = Arc::new(AtomicBool::new(false));
    let addresses = [address.clone()];
    let start_load = || hold_load(&http, &addresses, &tokens, product, 4, stop.clone());
    wait_until(Duration::from_secs(30), "the replica promoted", || async {
        serving_master(&ports, &stock_key).await == Some(replica)
    })
    .await;
    let promoted_after = killed_at.elapsed();
    let load = start_load();
    // Probes until the store answers: HELD, or sold out because the load took what was left.
    let mut probes = Vec::new();
    loop {
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "the store did not answer within 30 s of the kill: {:?}",
            codes(&probes)
        );
        let reply = lock_one(&http, &address, &tokens[0], product, None).await;
        let answered = match &reply {
            Ok(_) => true,
            Err(code) => code == "INSUFFICIENT_STOCK",
        };
        probes.push((Instant::now(), reply));
        if answered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut replies = load.await.unwrap();
    replies.extend(probes);
    replies.sort_by_key(|(at, _)| *at);
    let taken: Vec<(Instant, String)> = replies
        .iter()
        .filter_map(|(at, reply)| reply.clone().ok().map(|order| (*at, order)))
        .collect();
    let first_hold = taken.first().map(|(at, _)| *at - killed_at);
    let log = service.log_text();
    eprintln!(
        "replica promoted {promoted_after:?} after the master's SIGKILL, first lockOrder held \
         {first_hold:?} after it; answers from the kill on: {:?}",
        codes(&replies)
    );
    assert!(
        log.contains("Redis is behind MySQL for this store; rebuilding it from MySQL"),
        "the promoted replica was not found behind MySQL:\n{log}"
    );
    assert!(log.contains("store rebuilt from MySQL"), "{log}");
    let left = STOCK - (confirmed.len() + held.len()) as i64;
    assert!(
        !taken.is_empty() && taken.len() as i64 <= left,
        "{} holds taken after the kill, {left} units were left",
        taken.len()
    );
    held.extend(taken.into_iter().map(|(_, order)| order));
    let (redis_seq, _) = store_sequences(&app, &ports, store).await;
    assert!(redis_seq > mysql_seq, "the sequence went on from MySQL's");
    let (available, held_units, sold) = split(&app, &ports, store, product).await;
    eprintln!(
        "after the rebuild: available {available}, held {held_units}, sold {sold} of {STOCK}"
    );
    assert!(available >= 0 && held_units >= 0 && sold >= 0);
    assert_eq!(available + held_units + sold, STOCK);
    assert_eq!(sold, confirmed.len() as i64);
    assert_eq!(held_units, held.len() as i64);
    let mut redis = connection_for_key(&ports, &stock_key).await;
    for order in &held {
        let status: Option<String> = redis::cmd("HGET")
            .arg(app.keys.hold(OrderId::parse(order).unwrap()))
            .arg("status")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(status.as_deref(), Some("HELD"), "order {order}");
    }
    wait_flushed(&app, &ports, store).await;
    let orders = mysql_orders(&app).await;
    for order in &confirmed {
        assert_eq!(
            orders.get(&uuid_of(order)).map(|(s, _)| s.as_str()),
            Some("CONFIRMED"),
            "order {order}"
        );
    }
    let (sale_rows, units_sold, sold_orders): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(-SUM(delta), 0) AS SIGNED), COUNT(DISTINCT order_id) \
         FROM stock_movements WHERE reason = 'SALE' AND product_id = ?",
    )
    .bind(product.0)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (sale_rows, units_sold, sold_orders),
        (sold, sold, sold),
        "MySQL's SALE rows against Redis's sold units"
    );
    assert_audit_clean(&app, &url);
}

/// The live feed subscribes on one node (a plain PUBLISH reaches them all). With REDIS_URL
/// naming a single node that then dies, it moves on to another node of the cluster, so
/// storefronts keep seeing stock move.
#[tokio::test]
async fn the_live_feed_moves_to_another_node_when_the_only_node_in_redis_url_dies() {
    let _serial = one_at_a_time().await;
    let mut cluster = PrivateCluster::start().await;
    let mut app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(store, 1_000, 100, None).await;
    let tokens = customers(&app, 1).await;
    app.stop().await;
    // The one node the service is told of is a replica: killing it moves no slot.
    let topology = cluster.topology().await;
    let seed = topology.iter().find(|node| !node.master).unwrap().port;
    let service = ServiceProcess::start(
        &app,
        &format!("redis://127.0.0.1:{seed}"),
        &on_cluster(&[("MAX_HOLDS_PER_CUSTOMER", "0")]),
    )
    .await;
    let http = reqwest::Client::new();
    let mut subscriber = crate::subscriber::Subscriber::connect(&service.address, None).await;
    subscriber
        .subscribe(
            "s",
            crate::subscriber::STOCK_CHANGED,
            json!({ "ids": [product.to_string()] }),
        )
        .await;
    let available = |payload: Value| payload["data"]["stockChanged"]["available"].as_i64();
    let first = subscriber.next_payload("s", Duration::from_secs(10)).await;
    assert_eq!(available(first), Some(100));
    lock_one(&http, &service.address, &tokens[0], product, None)
        .await
        .unwrap();
    let held = subscriber.next_payload("s", Duration::from_secs(5)).await;
    assert_eq!(available(held), Some(99));

    cluster.kill(seed);
    let killed_at = Instant::now();
    // Holds go on (they never touched the dead replica); the subscriber must see them.
    let mut holds = 1;
    let seen = loop {
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "no update reached the subscriber in 20 s after its feed's node died"
        );
        lock_one(&http, &service.address, &tokens[0], product, None)
            .await
            .unwrap();
        holds += 1;
        if let Some(crate::subscriber::Event::Next(payload)) =
            subscriber.event("s", Duration::from_millis(500)).await
        {
            break available(payload).unwrap();
        }
    };
    eprintln!(
        "the feed's node died; an update reached the subscriber {:?} later",
        killed_at.elapsed()
    );
    assert!(
        seen < 99 && seen >= 100 - holds,
        "{seen} after {holds} holds"
    );
    // And the true value arrives last.
    let mut last = seen;
    while let Some(crate::subscriber::Event::Next(payload)) =
        subscriber.event("s", Duration::from_millis(700)).await
    {
        last = available(payload).unwrap();
    }
    assert_eq!(last, 100 - holds);
}
