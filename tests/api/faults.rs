//! Faults under load: a killed instance, a refused event, a stop with a backlog, MariaDB
//! stopped mid-flush, Redis restarted or gone back in time. Each
//! ends with `flashstock audit` clean and every confirmed order once in MySQL, and prints
//! how long orders took to flow again and MySQL to catch up (`-- --nocapture`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flashstock::domain::{ProductId, StoreId};
use futures_util::{StreamExt, stream};
use serde_json::json;

use flashstock::audit::{self, Mismatch};
use flashstock::outbox::dead_letters;

use crate::flush::{
    DRAIN_DEADLINE, Sale, append_by_hand, assert_exactly_once, confirm_load,
    confirm_without_flusher, confirmed_in_mysql, flusher, flushing, hold_event, kill_mid_flush,
    lines_of, lock_and_confirm, open_sale, run_audit, run_command, snapshot, wait_drained,
};
use crate::helpers::{
    PrivateRedis, TestApp, one_at_a_time, spawn_app, spawn_app_with, unique_suffix,
};
use crate::private_mariadb::PrivateMariadb;
use crate::process::ServiceProcess;

/// Every consumer of the store's outbox group, with the entries pending on it.
async fn consumers(app: &TestApp, store: StoreId) -> HashMap<String, u64> {
    let reply: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(app.keys.store(store).outbox)
        .arg("flusher")
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    reply
        .into_iter()
        .map(|c| {
            (
                redis::from_redis_value_ref(&c["name"]).unwrap(),
                redis::from_redis_value_ref(&c["pending"]).unwrap(),
            )
        })
        .collect()
}

/// The consumer name an instance takes by default: host name and its pid.
fn consumer_of(service: &ServiceProcess) -> String {
    let ours = flashstock::outbox::default_name();
    let (host, _) = ours.rsplit_once('-').unwrap();
    format!("{host}-{}", service.pid())
}

/// Waits until MySQL has `total` confirmed orders; returns when it got there.
async fn wait_confirmed(app: &TestApp, total: usize) -> Instant {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while confirmed_in_mysql(app).await < total as i64 {
        assert!(Instant::now() < deadline, "MySQL never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Instant::now()
}

async fn assert_audit_clean(app: &TestApp) {
    let (clean, output) = run_audit(app);
    assert!(clean, "{output}");
    assert!(output.contains(" 0 mismatches"), "{output}");
}

async fn sale_with_backlog(
    app: &mut TestApp,
    orders: usize,
) -> (
    Sale,
    Vec<(String, Vec<(flashstock::domain::ProductId, u32)>)>,
) {
    let sale = open_sale(app, 40).await;
    app.stop().await;
    let backlog = confirm_without_flusher(app, &sale, 0..orders).await;
    (sale, backlog)
}

#[tokio::test]
async fn a_killed_instance_s_orders_reach_mysql_within_seconds_of_the_restart() {
    let _serial = one_at_a_time().await;
    let mut app = spawn_app().await;
    let (sale, mut orders) = sale_with_backlog(&mut app, 600).await;

    // Small batches, so the kill lands while a batch is delivered and not yet acknowledged.
    let mut killed = flusher(&app, &app.database_url, &[("FLUSH_BATCH", "5")]);
    kill_mid_flush(&app, &mut killed, orders.len()).await;
    let dead = consumer_of(&killed);
    if consumers(&app, sale.store)
        .await
        .get(&dead)
        .copied()
        .unwrap_or(0)
        == 0
    {
        // The kill landed between two batches: leave what a process that died right
        // after its read leaves, entries delivered to it and never acknowledged.
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("flusher")
            .arg(&dead)
            .arg("COUNT")
            .arg(5)
            .arg("STREAMS")
            .arg(app.keys.store(sale.store).outbox)
            .arg(">")
            .query_async(&mut app.redis.clone())
            .await
            .unwrap();
    }
    let left = consumers(&app, sale.store).await;
    assert!(
        left.get(&dead).copied().unwrap_or(0) > 0,
        "nothing pending on the killed consumer: {left:?}"
    );

    // Restarted as a new consumer (a new pid), with a second instance beside it on the
    // same host; FLUSH_CLAIM_IDLE stays at its 30 s default and plays no part.
    let restarted_at = Instant::now();
    let restarted = flusher(&app, &app.database_url, &[]).ready().await;
    let neighbour = flusher(&app, &app.database_url, &[]).ready().await;
    let http = reqwest::Client::new();
    let flowing = confirm_load(&http, &restarted.address, &sale, 600..601).await;
    let flowing_after = restarted_at.elapsed();
    orders.extend(flowing);
    orders.extend(confirm_load(&http, &restarted.address, &sale, 601..700).await);
    let caught_up = wait_confirmed(&app, orders.len()).await - restarted_at;
    eprintln!(
        "SIGKILL + restart: orders flowed again {flowing_after:?} after the restart, \
         MySQL caught up after {caught_up:?}"
    );
    assert!(
        caught_up < Duration::from_secs(10),
        "MySQL caught up only after {caught_up:?}"
    );

    // The departed consumer leaves the group once it owns nothing; the two live ones
    // never took over each other's entries.
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumers(&app, sale.store).await.contains_key(&dead) {
        assert!(
            Instant::now() < deadline,
            "the departed consumer stayed in the group"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (service, other) in [(&restarted, &neighbour), (&neighbour, &restarted)] {
        let log = service.log_text();
        assert!(
            !log.lines()
                .any(|line| line.contains("took over") && line.contains(&consumer_of(other))),
            "{log}"
        );
    }
    wait_drained(&app).await;
    assert_exactly_once(&app, &orders, &sale.prices, &sale.opening).await;
    assert_audit_clean(&app).await;
}

/// Waits until the store's outbox is empty (dead letters aside); returns how long it took.
async fn wait_outbox_empty(app: &TestApp, store: StoreId) -> Duration {
    let started = Instant::now();
    loop {
        let left: u64 = redis::cmd("XLEN")
            .arg(app.keys.store(store).outbox)
            .query_async(&mut app.redis.clone())
            .await
            .unwrap();
        if left == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < DRAIN_DEADLINE,
            "outbox not drained: {left} left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn with(event: &[(String, String)], changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut event: Vec<(String, String)> = event
        .iter()
        .filter(|(name, _)| !changes.iter().any(|(changed, _)| changed == name))
        .cloned()
        .collect();
    event.extend(
        changes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    event
}

#[tokio::test]
async fn a_final_status_in_mysql_never_changes_and_a_contrary_event_is_dead_lettered() {
    let app = spawn_app_with(flushing()).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 1_000, 100, None).await;
    let (_, customer) = app.create_customer().await;
    let order = lock_and_confirm(&app.http, &app.address, &customer, &[(product, 4)]).await;
    wait_drained(&app).await;
    let row = || async {
        sqlx::query_as::<_, (String, Option<String>, Option<chrono::NaiveDateTime>, Option<chrono::NaiveDateTime>, u32)>(
            "SELECT CAST(status AS CHAR), payment_reference, confirmed_at, finished_at, version FROM orders",
        )
        .fetch_one(&app.db)
        .await
        .unwrap()
    };
    let (before, confirmed_row) = (snapshot(&app).await, row().await);
    assert_eq!(confirmed_row.0, "CONFIRMED");

    // What a Redis that went back in time could write for the same order: cancelled
    // instead, or confirmed again with another payment, both at the final version.
    let confirmed = hold_event(&app, &order).await;
    let later = (chrono::Utc::now().timestamp_millis() + 5_000).to_string();
    let cancelled = with(
        &confirmed,
        &[
            ("status", "CANCELLED"),
            ("confirmed", ""),
            ("payment_ref", ""),
            ("finished", &later),
        ],
    );
    let paid_again = with(
        &confirmed,
        &[
            ("payment_ref", "pay-again"),
            ("confirmed", &later),
            ("finished", &later),
        ],
    );
    append_by_hand(&app, store, &cancelled).await;
    append_by_hand(&app, store, &paid_again).await;
    wait_outbox_empty(&app, store).await;

    // Nothing moved: not the status, not the payment, not the stock, not the ledger.
    assert_eq!(row().await, confirmed_row);
    assert_eq!(snapshot(&app).await, before);
    // The contrary status is set aside with the reason; the same status again is a replay.
    let (letters, total) = dead_letters::list(&app.context.engine, store, 10)
        .await
        .unwrap();
    assert_eq!(total, 1, "{letters:?}");
    assert_eq!(letters[0].fields["status"], "CANCELLED");
    assert!(
        letters[0].error.contains("final as CONFIRMED"),
        "{}",
        letters[0].error
    );
    let report = audit::audit(&app.db, &app.context.engine).await.unwrap();
    assert!(
        report
            .mismatches
            .iter()
            .any(|m| matches!(m, Mismatch::DeadLetter { what, .. } if what.contains("CANCELLED"))),
        "{:?}",
        report.mismatches
    );
}

/// GET /readyz: the status and the JSON body with each check.
async fn readyz(app: &TestApp) -> (reqwest::StatusCode, serde_json::Value) {
    let ready = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    (ready.status(), ready.json().await.unwrap())
}

/// Runs `flashstock outbox replay-dead` against the test's database and key prefix.
fn replay_dead(app: &TestApp) -> (bool, String) {
    run_command(app, &["outbox", "replay-dead"])
}

#[tokio::test]
async fn a_poison_event_is_dead_lettered_while_the_sale_flows_on_and_replays_once_fixed() {
    let _serial = one_at_a_time().await;
    let app = spawn_app_with(flushing().arg("flush-batch", "50")).await;
    let sale = open_sale(&app, 40).await;
    let customer = sale.customers[0].0;

    // A confirmed order of a product MySQL does not know (its row was never written):
    // its lines break a foreign key, a refusal no retry can fix.
    let missing = sale.a.0 + sale.b.0 + 1_000;
    let now = chrono::Utc::now().timestamp_millis().to_string();
    let poison_id = uuid::Uuid::now_v7();
    let poison: Vec<(String, String)> = [
        ("type", "order".to_owned()),
        ("order", poison_id.to_string()),
        ("user", customer.to_string()),
        ("store", sale.store.to_string()),
        ("lines", format!("{missing}:1:700")),
        ("total", "700".to_owned()),
        ("status", "CONFIRMED".to_owned()),
        ("created", now.clone()),
        ("held_until", now.clone()),
        ("confirmed", now.clone()),
        ("finished", now.clone()),
        ("payment_ref", "pay-poison".to_owned()),
        ("idem", String::new()),
        ("version", "2".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let load = confirm_load(&app.http, &app.address, &sale, 0..600);
    let inject = async {
        while confirmed_in_mysql(&app).await < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        append_by_hand(&app, sale.store, &poison).await;
        let injected = Instant::now();
        let flushed_then = confirmed_in_mysql(&app).await;
        while dead_letters::list(&app.context.engine, sale.store, 1)
            .await
            .unwrap()
            .1
            == 0
        {
            assert!(
                injected.elapsed() < DRAIN_DEADLINE,
                "the poison event was never set aside"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (injected, injected.elapsed(), flushed_then)
    };
    let (orders, (injected, isolated, flushed_then)) = tokio::join!(load, inject);
    assert!(
        flushed_then < 600,
        "the load ended before the poison landed"
    );
    wait_outbox_empty(&app, sale.store).await;
    let caught_up = injected.elapsed();
    eprintln!(
        "poison event: orders never stopped flowing; it was set aside {isolated:?} after it was \
         appended, MySQL had every other order {caught_up:?} after it (load still running)"
    );

    // Every real order went in, exactly once; the poison is set aside with MySQL's error.
    assert_exactly_once(&app, &orders, &sale.prices, &sale.opening).await;
    let (letters, total) = dead_letters::list(&app.context.engine, sale.store, 10)
        .await
        .unwrap();
    assert_eq!(total, 1, "{letters:?}");
    assert_eq!(letters[0].fields["order"], poison_id.to_string());
    assert!(
        letters[0].error.contains("foreign key"),
        "{}",
        letters[0].error
    );
    // One bad event does not take the instance out of service.
    let (ready, _) = readyz(&app).await;
    assert_eq!(ready, 200);
    let (clean, output) = run_audit(&app);
    assert!(!clean, "{output}");
    assert!(
        output.contains("dead letter") && output.contains(&poison_id.to_string()),
        "{output}"
    );

    // Still refused while the cause stands: kept, and the command says so.
    let (replayed, output) = replay_dead(&app);
    assert!(!replayed, "{output}");
    assert!(
        output.contains("0 dead letters; 1 still refused"),
        "{output}"
    );

    // The cause fixed (the product's row written, with the opening-stock ledger row the
    // catalog writes beside it), the replay puts it in, once.
    sqlx::query(
        "INSERT INTO products (id, store_id, name, price_cents, stock) VALUES (?, ?, 'late row', 700, 10)",
    )
    .bind(missing)
    .bind(sale.store.0)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO stock_movements (movement_key, product_id, delta, reason, note) \
         VALUES (?, ?, 10, 'ADJUSTMENT', 'opening stock')",
    )
    .bind(format!("opening:{missing}"))
    .bind(missing)
    .execute(&app.db)
    .await
    .unwrap();
    let (replayed, output) = replay_dead(&app);
    assert!(replayed, "{output}");
    assert!(
        output.contains("replayed 1 dead letters; 0 still refused"),
        "{output}"
    );
    let (status, stock): (String, i64) = sqlx::query_as(
        "SELECT CAST(o.status AS CHAR), p.stock FROM orders o JOIN products p ON p.id = ? WHERE o.id = ?",
    )
    .bind(missing)
    .bind(poison_id.to_string())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((status.as_str(), stock), ("CONFIRMED", 9));
    let (replayed, output) = replay_dead(&app);
    assert!(
        replayed && output.contains("replayed 0 dead letters"),
        "{output}"
    );
    assert_audit_clean(&app).await;
}

#[tokio::test]
async fn sigterm_lets_the_batch_in_flight_commit_and_a_successor_takes_the_rest_at_once() {
    let _serial = one_at_a_time().await;
    let mut app = spawn_app().await;
    let (sale, orders) = sale_with_backlog(&mut app, 1_500).await;
    let events = 2 * orders.len() as i64;

    let mut stopping = flusher(&app, &app.database_url, &[("SHUTDOWN_TIMEOUT", "10s")]);
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while confirmed_in_mysql(&app).await == 0 {
        assert!(Instant::now() < deadline, "nothing was flushed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let name = consumer_of(&stopping);
    let signalled = Instant::now();
    stopping.terminate();
    let status = stopping
        .wait_for_exit(Duration::from_secs(15))
        .await
        .expect("the service stops within SHUTDOWN_TIMEOUT");
    let stopped_in = signalled.elapsed();
    assert!(status.success(), "{status}\n{}", stopping.log_text());
    assert!(
        !stopping.log_text().contains("shutdown timed out"),
        "{}",
        stopping.log_text()
    );

    // Whatever it read was committed and acknowledged: nothing is left pending on it (it
    // left the group), and every entry gone from the stream is in MySQL.
    let left: i64 = redis::cmd("XLEN")
        .arg(app.keys.store(sale.store).outbox)
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    let (held, confirmed): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(status = 'HELD'), 0) AS SIGNED), \
         CAST(COALESCE(SUM(status = 'CONFIRMED'), 0) AS SIGNED) FROM orders",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(left > 0, "the whole backlog was written before the stop");
    assert_eq!(held + 2 * confirmed, events - left, "{left} entries left");
    assert_eq!(consumers(&app, sale.store).await.get(&name), None);
    let lease: bool = redis::cmd("EXISTS")
        .arg(app.keys.flush_lease(&name))
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    assert!(!lease, "the lease was not given up");

    let restarted_at = Instant::now();
    let _successor = flusher(&app, &app.database_url, &[]).ready().await;
    let caught_up = wait_confirmed(&app, orders.len()).await - restarted_at;
    eprintln!(
        "SIGTERM with {left} of {events} entries left: stopped in {stopped_in:?}; \
         the successor had MySQL caught up {caught_up:?} after its start"
    );
    wait_drained(&app).await;
    assert_exactly_once(&app, &orders, &sale.prices, &sale.opening).await;
    assert_audit_clean(&app).await;
}

const LOCK_ONE: &str = "mutation($input: LockOrderInput!) { lockOrder(input: $input) { \
     order { id status } errors { code } } }";
const CONFIRM_ONE: &str = "mutation($input: ConfirmOrderInput!) { confirmOrder(input: $input) { \
     order { id status } errors { code } } }";

/// lockOrder of `quantity` units: the order id, or the error codes (a transport or
/// internal error counts as "ERROR": Redis may be down).
async fn try_lock(
    app: &TestApp,
    token: &str,
    product: ProductId,
    quantity: u32,
) -> Result<String, String> {
    let body = app
        .graphql(
            LOCK_ONE,
            json!({ "input": { "items": [{ "productId": product.to_string(), "quantity": quantity }] } }),
            Some(token),
        )
        .await;
    match body["data"]["lockOrder"]["order"]["id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => Err(body["data"]["lockOrder"]["errors"][0]["code"]
            .as_str()
            .unwrap_or("ERROR")
            .to_owned()),
    }
}

async fn try_confirm(app: &TestApp, token: &str, order: &str) -> Result<(), String> {
    let body = app
        .graphql(
            CONFIRM_ONE,
            json!({ "input": { "orderId": order, "paymentReference": format!("pay-{order}") } }),
            Some(token),
        )
        .await;
    match body["data"]["confirmOrder"]["order"]["status"].as_str() {
        Some("CONFIRMED") => Ok(()),
        _ => Err(body.to_string()),
    }
}

/// Retries lockOrder (one unit) until Redis answers and the store takes orders again;
/// returns the order and every error code seen before.
async fn first_order_after(
    app: &TestApp,
    token: &str,
    product: ProductId,
) -> (String, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        match try_lock(app, token, product, 1).await {
            Ok(order) => return (order, seen),
            Err(code) => seen.push(code),
        }
        assert!(
            Instant::now() < deadline,
            "no order taken after the restart: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redis available + held + sold of a product.
async fn split(app: &TestApp, store: StoreId, product: ProductId) -> (i64, i64, i64) {
    (
        app.available(store, product).await,
        app.held(store, product).await,
        app.sold(store, product).await,
    )
}

async fn statuses(app: &TestApp) -> HashMap<String, String> {
    sqlx::query_as::<_, (String, String)>("SELECT id, CAST(status AS CHAR) FROM orders")
        .fetch_all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

fn uuid_of(order: &str) -> String {
    order.split_once('-').unwrap().1.to_owned()
}

#[tokio::test]
async fn redis_restarted_empty_is_rebuilt_from_mysql_and_its_holds_still_count() {
    let _serial = one_at_a_time().await;
    let redis = PrivateRedis::start();
    let port = redis.port;
    let app = spawn_app_with(
        flushing()
            .arg("redis-url", redis.url())
            .arg("hold-ttl", "6s")
            .arg("sweep-interval", "100ms")
            // One customer takes every hold here: the per-customer hold cap is off.
            .arg("max-holds-per-customer", 0),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 1_000, 100, None).await;
    let (_, token) = app.create_customer().await;

    // Holds that will be past their deadline after the restart, holds that will not,
    // and confirmed orders; all of it in MySQL before Redis goes.
    let mut early = Vec::new();
    for _ in 0..5 {
        early.push(try_lock(&app, &token, product, 2).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut late = Vec::new();
    for _ in 0..5 {
        late.push(try_lock(&app, &token, product, 3).await.unwrap());
    }
    let mut confirmed = Vec::new();
    for _ in 0..4 {
        let order = try_lock(&app, &token, product, 1).await.unwrap();
        try_confirm(&app, &token, &order).await.unwrap();
        confirmed.push(order);
    }
    wait_drained(&app).await;
    assert_eq!(
        split(&app, store, product).await,
        (100 - 10 - 15 - 4, 25, 4)
    );

    // Redis dies and comes back with nothing.
    drop(redis);
    let restarted_at = Instant::now();
    let _redis = PrivateRedis::start_on(port, &[]);
    let (probe, seen) = first_order_after(&app, &token, product).await;
    let flowing = restarted_at.elapsed();
    assert!(
        !seen.iter().any(|code| code == "INSUFFICIENT_STOCK"),
        "{seen:?}"
    );
    // Rebuilt, not reseeded: the holds outstanding still hold their units.
    assert_eq!(
        split(&app, store, product).await,
        (100 - 10 - 15 - 4 - 1, 26, 4)
    );

    // Holds still in their time can be confirmed; the early ones expire and give their
    // units back once.
    for order in late.iter().chain([&probe]) {
        try_confirm(&app, &token, order).await.unwrap();
        confirmed.push(order.clone());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.held(store, product).await != 0 {
        assert!(Instant::now() < deadline, "the early holds never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_drained(&app).await;
    let caught_up = restarted_at.elapsed();
    eprintln!(
        "Redis restarted empty: orders flowed again {flowing:?} after the restart (codes meanwhile: {:?}), \
         MySQL had every confirmation and expiry {caught_up:?} after it (the early holds' deadline included)",
        seen.iter().collect::<std::collections::BTreeSet<_>>()
    );
    let sold = 4 + 15 + 1;
    assert_eq!(split(&app, store, product).await, (100 - sold, 0, sold));
    let statuses = statuses(&app).await;
    for order in &early {
        assert_eq!(statuses[&uuid_of(order)], "EXPIRED", "{order}");
    }
    for order in &confirmed {
        assert_eq!(statuses[&uuid_of(order)], "CONFIRMED", "{order}");
    }
    let (stock, sales): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT stock FROM products WHERE id = ?), \
         (SELECT CAST(-SUM(delta) AS SIGNED) FROM stock_movements WHERE reason = 'SALE')",
    )
    .bind(product.0)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((stock, sales), (100 - sold, sold));
    let report = audit::audit(&app.db, &app.context.engine).await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
}

/// Locks and confirms `n` single-unit orders, 8 at a time; returns those confirmed and
/// the error codes of those refused.
async fn buy_units(
    app: &TestApp,
    token: &str,
    product: ProductId,
    n: usize,
) -> (Vec<String>, Vec<String>) {
    let results: Vec<Result<String, String>> = stream::iter(0..n)
        .map(|_| async move {
            let order = try_lock(app, token, product, 1).await?;
            try_confirm(app, token, &order).await?;
            Ok(order)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut bought = Vec::new();
    let mut refused = Vec::new();
    for result in results {
        match result {
            Ok(order) => bought.push(order),
            Err(code) => refused.push(code),
        }
    }
    (bought, refused)
}

#[tokio::test]
async fn redis_restored_from_its_aof_or_from_an_older_copy_never_sells_a_unit_twice() {
    let _serial = one_at_a_time().await;
    let dir = std::env::temp_dir().join(format!(
        "flashstock-aof-{}",
        crate::helpers::unique_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let persistent = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        dir.to_str().unwrap(),
    ];
    let redis = PrivateRedis::start_with(&persistent);
    let port = redis.port;
    // One customer takes every hold here: the per-customer hold cap is off.
    let app = spawn_app_with(
        flushing()
            .arg("redis-url", redis.url())
            .arg("max-holds-per-customer", 0),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 1_000, 60, None).await;
    let (_, token) = app.create_customer().await;
    let mut sold = Vec::new();

    // 1. Killed and restarted from its own AOF (every write fsynced): nothing is lost,
    //    nothing is rebuilt, the sale goes on.
    let (bought, refused) = buy_units(&app, &token, product, 10).await;
    assert!(refused.is_empty(), "{refused:?}");
    sold.extend(bought);
    wait_drained(&app).await;
    drop(redis);
    let restarted_at = Instant::now();
    let redis = PrivateRedis::start_on(port, &persistent);
    let (order, _) = first_order_after(&app, &token, product).await;
    let flowing = restarted_at.elapsed();
    try_confirm(&app, &token, &order).await.unwrap();
    sold.push(order);
    wait_drained(&app).await;
    eprintln!(
        "Redis killed, restarted from its AOF: orders flowed again {flowing:?} after the restart, \
         MySQL caught up {:?} after it",
        restarted_at.elapsed()
    );
    assert_eq!(split(&app, store, product).await, (49, 0, 11));

    // 2. A copy of the AOF now, then more sales that reach MySQL; Redis comes back from
    //    the copy: it has gone back in time by 9 sales.
    let copy = dir.join("older");
    let copied = std::process::Command::new("cp")
        .args([
            "-r",
            dir.join("appendonlydir").to_str().unwrap(),
            copy.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copied.success());
    let (bought, refused) = buy_units(&app, &token, product, 9).await;
    assert!(refused.is_empty(), "{refused:?}");
    sold.extend(bought);
    wait_drained(&app).await;
    assert_eq!(split(&app, store, product).await, (40, 0, 20));
    drop(redis);
    std::fs::remove_dir_all(dir.join("appendonlydir")).unwrap();
    std::fs::rename(&copy, dir.join("appendonlydir")).unwrap();
    let restarted_at = Instant::now();
    let _redis = PrivateRedis::start_on(port, &persistent);
    let (order, seen) = first_order_after(&app, &token, product).await;
    let flowing = restarted_at.elapsed();
    try_confirm(&app, &token, &order).await.unwrap();
    sold.push(order);

    // The store was rebuilt from MySQL before it took that order: 39 units are left, not
    // the 48 the old copy says, and no more than those sell.
    let (bought, refused) = buy_units(&app, &token, product, 60).await;
    assert_eq!(bought.len(), 39, "refused: {refused:?}");
    assert!(
        refused.iter().all(|e| e.contains("INSUFFICIENT_STOCK")),
        "{refused:?}"
    );
    sold.extend(bought);
    wait_drained(&app).await;
    eprintln!(
        "Redis restarted from an older AOF copy: rebuilt, orders flowed again {flowing:?} after the \
         restart (codes meanwhile: {:?}), MySQL caught up {:?} after it (with 40 more orders)",
        seen.iter().collect::<std::collections::BTreeSet<_>>(),
        restarted_at.elapsed()
    );
    assert_eq!(split(&app, store, product).await, (0, 0, 60));
    let statuses = statuses(&app).await;
    assert_eq!(statuses.len(), 60);
    for order in &sold {
        assert_eq!(statuses[&uuid_of(order)], "CONFIRMED", "{order}");
    }
    let stock: i64 = sqlx::query_scalar("SELECT stock FROM products WHERE id = ?")
        .bind(product.0)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stock, 0);
    let report = audit::audit(&app.db, &app.context.engine).await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Buyers that each lock and confirm one order after another, with a short pause between
/// two (a steady sale well inside the products' stock), until `selling` is cleared; every
/// order comes back with the moment its confirmation was answered. A lockOrder or
/// confirmOrder that fails fails the test.
async fn steady_sale(
    app: &TestApp,
    sale: &Sale,
    buyers: usize,
    selling: &AtomicBool,
) -> Vec<(String, Vec<(ProductId, u32)>, Instant)> {
    let buyer = |first: usize| async move {
        let mut bought = Vec::new();
        let mut n = first;
        while selling.load(Ordering::SeqCst) {
            let lines = lines_of(n, sale.a, sale.b);
            let token = &sale.customers[n % sale.customers.len()].1;
            let id = lock_and_confirm(&app.http, &app.address, token, &lines).await;
            bought.push((id, lines, Instant::now()));
            n += buyers;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bought
    };
    futures_util::future::join_all((0..buyers).map(buyer))
        .await
        .into_iter()
        .flatten()
        .collect()
}

const MARIADB_OUTAGE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn mariadb_stopped_mid_flush_for_20_s_while_the_sale_goes_on_loses_nothing() {
    let _serial = one_at_a_time().await;
    let mut mariadb = PrivateMariadb::start().await;
    let database_url = mariadb.url(&format!("fs_test_{}", unique_suffix()));
    let mut app = spawn_app_with(flushing().arg("database-url", &database_url)).await;
    // The checks below and the audit command read the private server.
    app.database_url = database_url;
    let sale = open_sale(&app, 16).await;

    let selling = AtomicBool::new(true);
    let load = steady_sale(&app, &sale, 4, &selling);
    let outage = async {
        // Mid-flush: MySQL has part of the sale and the flusher is writing the rest.
        let deadline = Instant::now() + DRAIN_DEADLINE;
        let mut flushed = 0;
        while flushed < 50 {
            assert!(Instant::now() < deadline, "nothing was flushed");
            tokio::time::sleep(Duration::from_millis(10)).await;
            flushed = confirmed_in_mysql(&app).await;
        }
        mariadb.stop().await;
        let stopped = Instant::now();
        tokio::time::sleep(MARIADB_OUTAGE - Duration::from_secs(1)).await;
        let ready = readyz(&app).await;
        tokio::time::sleep(MARIADB_OUTAGE.saturating_sub(stopped.elapsed())).await;
        mariadb.start_again().await;
        let restarted = Instant::now();
        // The sale goes on across the restart, then ends.
        tokio::time::sleep(Duration::from_secs(1)).await;
        selling.store(false, Ordering::SeqCst);
        (flushed, stopped, ready, restarted)
    };
    let (sold, (flushed, stopped, ready, restarted)) = tokio::join!(load, outage);
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert_eq!(ready.1["checks"]["mysql"]["status"], "down", "{}", ready.1);

    // Orders never stopped: lockOrder and confirmOrder kept answering through the outage.
    let mut answered: Vec<Instant> = sold
        .iter()
        .map(|(_, _, at)| *at)
        .filter(|at| (stopped..restarted).contains(at))
        .collect();
    answered.sort();
    assert!(
        answered.len() > 100,
        "{} orders during the outage",
        answered.len()
    );
    let first = answered[0] - stopped;
    let longest_pause = std::iter::once(stopped)
        .chain(answered.iter().copied())
        .chain([restarted])
        .collect::<Vec<_>>()
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap();
    assert!(
        longest_pause < Duration::from_secs(2),
        "orders stalled for {longest_pause:?} while MariaDB was down"
    );

    let orders: Vec<(String, Vec<(ProductId, u32)>)> =
        sold.into_iter().map(|(id, lines, _)| (id, lines)).collect();
    assert!(flushed < orders.len() as i64);
    let caught_up = wait_confirmed(&app, orders.len()).await - restarted;
    eprintln!(
        "MariaDB stopped {MARIADB_OUTAGE:?} mid-flush ({flushed} of {} orders in MySQL): orders never \
         stopped, the first confirmed {first:?} after the stop, {} during the outage, longest pause \
         {longest_pause:?}; MySQL had every order {caught_up:?} after MariaDB's restart",
        orders.len(),
        answered.len()
    );
    wait_drained(&app).await;

    // Redis and MySQL agree, to the unit.
    assert_exactly_once(&app, &orders, &sale.prices, &sale.opening).await;
    for product in [sale.a, sale.b] {
        let units: i64 = orders
            .iter()
            .flat_map(|(_, lines)| lines)
            .filter(|(p, _)| *p == product)
            .map(|(_, q)| i64::from(*q))
            .sum();
        assert_eq!(
            split(&app, sale.store, product).await,
            (sale.opening[&product] - units, 0, units),
            "product {product}"
        );
    }
    assert_audit_clean(&app).await;
}
