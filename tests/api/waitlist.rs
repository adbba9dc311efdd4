//! The waitlist over real HTTP: units that come back (cancel, expiry, restock) go to the
//! customers who were turned away first, as HELD orders made inside the script that
//! releases them, so a buyer polling lockOrder at the same instant never gets them.
//! After each test every unit is available, held or sold exactly once, in Redis and,
//! once flushed, in MySQL (the audit).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flashstock::audit;
use flashstock::domain::{ProductId, StoreId};
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestOptions, spawn_app_with};

const JOIN: &str = "mutation($id: ID!, $quantity: Int!) {
    joinWaitlist(productId: $id, quantity: $quantity) {
        entry { productId quantity position status } errors { code message } } }";

const LEAVE: &str = "mutation($id: ID!) {
    leaveWaitlist(productId: $id) { entry { position } errors { code } } }";

const MINE: &str = "query { myWaitlist { productId quantity position status } }";

const LOCK: &str = "mutation($id: ID!) {
    lockOrder(input: { items: [{ productId: $id, quantity: 1 }] }) {
        order { id } errors { code } } }";

const CANCEL: &str = "mutation($id: ID!) {
    cancelOrder(orderId: $id) { order { status } errors { code } } }";

const MY_ORDERS: &str = "query { myOrders(first: 20) { edges { node {
    id status fromWaitlist lines { quantity } } } } }";

fn data(body: Value, field: &str) -> Value {
    assert!(body["errors"].is_null(), "GraphQL errors: {body}");
    body["data"][field].clone()
}

/// One `lockOrder` of one unit, as a buyer polling for returned units sends it: whether
/// it got an order.
async fn lock_one_unit(
    http: &reqwest::Client,
    address: &str,
    token: &str,
    product: ProductId,
) -> bool {
    let body: Value = http
        .post(format!("{address}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": LOCK, "variables": { "id": product.to_string() } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    !body["data"]["lockOrder"]["order"].is_null()
}

async fn join(app: &TestApp, token: &str, product: ProductId, quantity: i64) -> Value {
    let variables = json!({ "id": product.to_string(), "quantity": quantity });
    data(
        app.graphql(JOIN, variables, Some(token)).await,
        "joinWaitlist",
    )
}

async fn mine(app: &TestApp, token: &str) -> Vec<Value> {
    data(
        app.graphql(MINE, json!({}), Some(token)).await,
        "myWaitlist",
    )
    .as_array()
    .unwrap()
    .clone()
}

async fn lock(app: &TestApp, token: &str, product: ProductId) -> Value {
    let variables = json!({ "id": product.to_string() });
    data(app.graphql(LOCK, variables, Some(token)).await, "lockOrder")
}

/// Waits until the customer's orders (as flushed to MySQL) include a HELD one made from
/// the waitlist; returns its id.
async fn waitlist_order(app: &TestApp, token: &str) -> String {
    let started = Instant::now();
    loop {
        let orders = data(
            app.graphql(MY_ORDERS, json!({}), Some(token)).await,
            "myOrders",
        );
        let found =
            orders["edges"].as_array().unwrap().iter().find(|edge| {
                edge["node"]["fromWaitlist"] == true && edge["node"]["status"] == "HELD"
            });
        if let Some(edge) = found {
            return edge["node"]["id"].as_str().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no order from the waitlist"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn redis_i64(app: &TestApp, key: String, field: String) -> i64 {
    let value: Option<i64> = redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    value.unwrap_or(0)
}

/// Both equations in Redis: every unit received is available, held or sold exactly once,
/// and pre-order capacity plus pre-ordered units is the backorder limit.
async fn assert_units_once(app: &TestApp, store: StoreId, product: ProductId, received: i64) {
    let (available, held, sold) = (
        app.available(store, product).await,
        app.held(store, product).await,
        app.sold(store, product).await,
    );
    assert!(available >= 0 && held >= 0 && sold >= 0);
    assert_eq!(available + held + sold, received);
    let keys = app.keys.store(store);
    let id = product.0.to_string();
    let open = redis_i64(app, keys.backorder, id.clone()).await;
    let bo_held = redis_i64(app, keys.backorder_held, id.clone()).await;
    let bo_sold = redis_i64(app, keys.backorder_sold, id.clone()).await;
    let limit = redis_i64(app, keys.terms, format!("{id}:bo")).await;
    assert!(open >= 0 && bo_held >= 0 && bo_sold >= 0);
    assert_eq!(open + bo_held + bo_sold, limit, "backorder equation");
}

async fn assert_flushed_and_audited(app: &TestApp) {
    let started = Instant::now();
    while !audit::backlog(&app.context.engine)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "outbox not drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = audit::audit(&app.db, &app.context.engine).await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn returning_units_go_to_the_waitlist_in_order_and_never_to_a_poller() {
    let app = spawn_app_with(
        TestOptions::default()
            .arg("hold-ttl", "2s")
            .arg("flush-enabled", "true"),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 250, 2, None).await;
    let (_, a) = app.create_customer().await;
    let (_, b) = app.create_customer().await;
    let (_, early) = app.create_customer().await;
    let refused = join(&app, &early, product, 1).await;
    assert_eq!(refused["errors"][0]["code"], "NOT_SOLD_OUT", "{refused}");

    let a_order = lock(&app, &a, product).await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    lock(&app, &b, product).await;
    let mut waiters = Vec::new();
    for expected in 1..=3 {
        let (_, token) = app.create_customer().await;
        let joined = join(&app, &token, product, 1).await;
        assert_eq!(joined["entry"]["position"], expected, "{joined}");
        assert_eq!(joined["entry"]["status"], "WAITING");
        waiters.push(token);
    }
    let again = join(&app, &waiters[0], product, 1).await;
    assert_eq!(again["errors"][0]["code"], "ALREADY_WAITING");

    // A poller hammers lockOrder the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let polled = Arc::new(AtomicUsize::new(0));
    let (_, poller) = app.create_customer().await;
    let poller_task = {
        let (stop, polled, app_address) = (stop.clone(), polled.clone(), app.address.clone());
        let http = app.http.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if lock_one_unit(&http, &app_address, &poller, product).await {
                    polled.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // A cancel hands the unit to the first in line.
    let cancelled = data(
        app.graphql(CANCEL, json!({ "id": a_order }), Some(&a))
            .await,
        "cancelOrder",
    );
    assert_eq!(cancelled["order"]["status"], "CANCELLED");
    waitlist_order(&app, &waiters[0]).await;
    let second = mine(&app, &waiters[1]).await;
    assert_eq!(second[0]["position"], 1, "the second moved up: {second:?}");
    // B's hold expires: its unit goes to the second.
    waitlist_order(&app, &waiters[1]).await;
    // The first never pays: its auto-hold expires and the unit moves on to the third.
    waitlist_order(&app, &waiters[2]).await;
    stop.store(true, Ordering::Relaxed);
    poller_task.await.unwrap();
    assert_eq!(
        polled.load(Ordering::Relaxed),
        0,
        "a poller got a returning unit"
    );
    for token in &waiters {
        assert!(mine(&app, token).await.is_empty());
    }
    assert_units_once(&app, store, product, 2).await;
    assert_flushed_and_audited(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_stay_exact_under_concurrent_joins_and_leaves() {
    let app = spawn_app_with(TestOptions::default().arg("waitlist-ttl", "3s")).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 0, None).await;
    let mut first = Vec::new();
    for _ in 0..20 {
        first.push(app.create_customer().await.1);
    }
    let joined = join_all(first.iter().map(|t| join(&app, t, product, 1))).await;
    let positions: BTreeSet<i64> = joined
        .iter()
        .map(|p| p["entry"]["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, (1..=20).collect());

    // Half leave while five more join, all at once.
    let mut later = Vec::new();
    for _ in 0..5 {
        later.push(app.create_customer().await.1);
    }
    let app_ref = &app;
    let leaving = first.iter().step_by(2).map(|t| {
        let variables = json!({ "id": product.to_string() });
        let app = app_ref;
        async move {
            data(
                app.graphql(LEAVE, variables, Some(t)).await,
                "leaveWaitlist",
            )
        }
    });
    let (left, _) = tokio::join!(
        join_all(leaving),
        join_all(later.iter().map(|t| join(&app, t, product, 1)))
    );
    assert!(left.iter().all(|p| p["errors"] == json!([])));

    // The ten who stayed keep their order, ahead of the five who came later.
    let mut stayed = Vec::new();
    for (index, token) in first.iter().enumerate().skip(1).step_by(2) {
        stayed.push((joined[index]["entry"]["position"].as_i64().unwrap(), token));
    }
    stayed.sort();
    for (rank, (_, token)) in stayed.iter().enumerate() {
        let entries = mine(&app, token).await;
        assert_eq!(entries[0]["position"], rank as i64 + 1);
    }
    let mut late: Vec<i64> = Vec::new();
    for token in &later {
        late.push(mine(&app, token).await[0]["position"].as_i64().unwrap());
    }
    late.sort();
    assert_eq!(late, (11..=15).collect::<Vec<_>>());
    let gone = data(
        app.graphql(LEAVE, json!({ "id": product.to_string() }), Some(&first[0]))
            .await,
        "leaveWaitlist",
    );
    assert_eq!(gone["errors"][0]["code"], "NOT_WAITING");

    // Entries carry their own deadline: past WAITLIST_TTL they are gone.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(mine(&app, &later[0]).await.is_empty());
    assert_units_once(&app, store, product, 0).await;
}

#[tokio::test]
async fn a_customer_at_the_limit_is_skipped_with_a_reason_and_keeps_the_head() {
    let app = spawn_app_with(TestOptions::default()).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 2, Some(2)).await;
    let (_, admin) = app.create_admin().await;
    let (_, holder) = app.create_customer().await;
    let variables = json!({ "id": product.to_string() });
    let both = "mutation($id: ID!) {
        lockOrder(input: { items: [{ productId: $id, quantity: 2 }] }) { order { id } errors { code } } }";
    let held = data(
        app.graphql(both, variables.clone(), Some(&holder)).await,
        "lockOrder",
    );
    let (_, capped) = app.create_customer().await;
    let (_, next) = app.create_customer().await;
    assert_eq!(
        join(&app, &capped, product, 2).await["entry"]["position"],
        1
    );
    assert_eq!(join(&app, &next, product, 1).await["entry"]["position"], 2);
    let update =
        "mutation($id: ID!) { updateProduct(input: { productId: $id, maxPerCustomer: 1 }) {
        errors { code } } }";
    let changed = data(
        app.graphql(update, variables.clone(), Some(&admin)).await,
        "updateProduct",
    );
    assert_eq!(changed["errors"], json!([]));

    // Both units come back: the head may take only one now, so it is passed over.
    let order = held["order"]["id"].as_str().unwrap();
    app.graphql(CANCEL, json!({ "id": order }), Some(&holder))
        .await;
    let skipped = mine(&app, &capped).await;
    assert_eq!(skipped[0]["status"], "SKIPPED_LIMIT", "{skipped:?}");
    assert_eq!(skipped[0]["position"], 1);
    assert!(
        mine(&app, &next).await.is_empty(),
        "the next entry got a unit"
    );
    // One unit went to the next entry; with no one else waiting, the other is on sale.
    assert_eq!(app.available(store, product).await, 1);
    assert_eq!(app.held(store, product).await, 1);
    assert_units_once(&app, store, product, 2).await;
}

#[tokio::test]
async fn a_restock_fills_preorders_then_the_waitlist_then_the_sale() {
    let app = spawn_app_with(TestOptions::default().arg("flush-enabled", "true")).await;
    let store = app.create_store().await;
    let product = app
        .create_product_with_backorders(store, 100, 0, None, 1)
        .await;
    let (_, admin) = app.create_admin().await;
    let (_, preorder) = app.create_customer().await;
    let (_, waiting) = app.create_customer().await;
    let pre = "mutation($id: ID!) {
        lockOrder(input: { items: [{ productId: $id, quantity: 1 }], allowBackorder: true }) {
            order { id } errors { code } } }";
    let variables = json!({ "id": product.to_string() });
    let held = data(
        app.graphql(pre, variables.clone(), Some(&preorder)).await,
        "lockOrder",
    );
    let confirm = "mutation($id: ID!) {
        confirmOrder(input: { orderId: $id, paymentReference: \"p-1\" }) { errors { code } } }";
    let order = json!({ "id": held["order"]["id"] });
    data(
        app.graphql(confirm, order, Some(&preorder)).await,
        "confirmOrder",
    );
    assert_eq!(
        join(&app, &waiting, product, 1).await["entry"]["position"],
        1
    );

    let restock = "mutation($id: ID!) {
        restockProduct(productId: $id, quantity: 3) { product { available } errors { code } } }";
    let after = data(
        app.graphql(restock, variables, Some(&admin)).await,
        "restockProduct",
    );
    assert_eq!(
        after["product"]["available"], 1,
        "one pre-order, one waiter, one on sale"
    );
    waitlist_order(&app, &waiting).await;
    assert_units_once(&app, store, product, 3).await;
    assert_flushed_and_audited(&app).await;
}

#[tokio::test]
async fn a_customer_at_the_hold_cap_is_skipped_with_a_reason() {
    let app = spawn_app_with(TestOptions::default().arg("max-holds-per-customer", 1)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 1, None).await;
    let other = app.create_product(store, 100, 5, None).await;
    let (_, holder) = app.create_customer().await;
    let (_, capped) = app.create_customer().await;
    let (_, next) = app.create_customer().await;
    let held = lock(&app, &holder, product).await;
    assert_eq!(
        join(&app, &capped, product, 1).await["entry"]["position"],
        1
    );
    assert_eq!(join(&app, &next, product, 1).await["entry"]["position"], 2);
    // Joined first, then took a hold elsewhere in the store: now at the cap.
    assert!(!lock(&app, &capped, other).await["order"].is_null());

    let order = held["order"]["id"].as_str().unwrap();
    app.graphql(CANCEL, json!({ "id": order }), Some(&holder))
        .await;
    let skipped = mine(&app, &capped).await;
    assert_eq!(skipped[0]["status"], "SKIPPED_HOLD_CAP", "{skipped:?}");
    assert_eq!(skipped[0]["position"], 1);
    assert!(
        mine(&app, &next).await.is_empty(),
        "the next entry got the unit"
    );
    assert_eq!(app.available(store, product).await, 0);
    assert_units_once(&app, store, product, 1).await;
    assert_units_once(&app, store, other, 5).await;
}

/// Waitlist entries live only in Redis: a rebuild from MySQL clears them, and a hold
/// already handed over comes back as one, still marked as from the waitlist.
#[tokio::test]
async fn a_rebuild_keeps_handed_over_holds_and_clears_the_waitlist() {
    // A rebuild scans and rewrites the store while its flusher runs: alone, like the
    // other recovery tests.
    let _serial = crate::helpers::one_at_a_time().await;
    let app = spawn_app_with(TestOptions::default().arg("flush-enabled", "true")).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 1, None).await;
    let (_, holder) = app.create_customer().await;
    let (_, first) = app.create_customer().await;
    let (_, second) = app.create_customer().await;
    let held = lock(&app, &holder, product).await;
    assert_eq!(join(&app, &first, product, 1).await["entry"]["position"], 1);
    assert_eq!(
        join(&app, &second, product, 1).await["entry"]["position"],
        2
    );
    let order = held["order"]["id"].as_str().unwrap();
    app.graphql(CANCEL, json!({ "id": order }), Some(&holder))
        .await;
    let handed = waitlist_order(&app, &first).await;
    assert_flushed_and_audited(&app).await;

    flashstock::recovery::rebuild(&app.db, &app.context.engine, store)
        .await
        .unwrap();
    assert!(mine(&app, &second).await.is_empty(), "the entry survived");
    let uuid = handed.split_once('-').unwrap().1;
    let hold_key = format!("{}{uuid}", app.keys.hold_prefix(store));
    let (status, from_waitlist): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(&hold_key)
        .arg("status")
        .arg("waitlist")
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    assert_eq!(
        (status.as_deref(), from_waitlist.as_deref()),
        (Some("HELD"), Some("1"))
    );
    assert_eq!(app.held(store, product).await, 1);
    assert_units_once(&app, store, product, 1).await;
    // The rebuilt hand-over still releases like any hold: its unit goes on sale now.
    let cancelled = data(
        app.graphql(CANCEL, json!({ "id": handed }), Some(&first))
            .await,
        "cancelOrder",
    );
    assert_eq!(cancelled["order"]["status"], "CANCELLED", "{cancelled}");
    assert_eq!(app.available(store, product).await, 1);
    assert_flushed_and_audited(&app).await;
}

const CONFIRM: &str = "mutation($id: ID!) {
    confirmOrder(input: { orderId: $id, paymentReference: \"late\" }) {
        order { status } errors { code } } }";

/// Waits until Redis's clock (the one the scripts read) has passed the order's deadline.
async fn wait_past_deadline(app: &TestApp, order: &str) {
    let id = flashstock::domain::OrderId::parse(order).unwrap();
    let hold = app.context.engine.load(id).await.unwrap().unwrap();
    let deadline = hold.held_until.timestamp_millis();
    let started = Instant::now();
    loop {
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut app.redis.clone())
            .await
            .unwrap();
        if secs * 1000 + micros / 1000 >= deadline {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "Redis time never passed the deadline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Buyers who call lockOrder for `product` in a loop until `stop`; the task returns how
/// many orders they got.
fn racing_buyers(
    app: &TestApp,
    tokens: Vec<String>,
    product: ProductId,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let (http, address) = (app.http.clone(), app.address.clone());
    tokio::spawn(async move {
        let buyers = tokens.into_iter().map(|token| {
            let (http, address, stop) = (http.clone(), address.clone(), stop.clone());
            async move {
                let mut got = 0;
                while !stop.load(Ordering::Relaxed) {
                    if lock_one_unit(&http, &address, &token, product).await {
                        got += 1;
                    }
                }
                got
            }
        });
        join_all(buyers).await.into_iter().sum()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_confirm_or_cancel_hands_the_expired_units_to_the_line_not_to_a_racing_buyer() {
    // The sweeper waits an hour and the shared Redis publishes no expiries: only the
    // confirm or cancel that meets a hold past its deadline can release it.
    let app = spawn_app_with(
        TestOptions::default()
            .arg("hold-ttl", "1s")
            .arg("sweep-interval", "1h")
            .arg("flush-enabled", "true"),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 300, 1, None).await;
    let (_, holder) = app.create_customer().await;
    let (_, first) = app.create_customer().await;
    let (_, second) = app.create_customer().await;
    let order = lock(&app, &holder, product).await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(join(&app, &first, product, 1).await["entry"]["position"], 1);
    assert_eq!(
        join(&app, &second, product, 1).await["entry"]["position"],
        2
    );
    let mut racers = Vec::new();
    for _ in 0..6 {
        racers.push(app.create_customer().await.1);
    }
    wait_past_deadline(&app, &order).await;
    assert_eq!(
        app.held(store, product).await,
        1,
        "something swept the hold"
    );

    // The holder pays too late while six buyers call lockOrder at the same instant.
    let stop = Arc::new(AtomicBool::new(false));
    let racing = racing_buyers(&app, racers, product, stop.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let confirmed = data(
        app.graphql(CONFIRM, json!({ "id": order }), Some(&holder))
            .await,
        "confirmOrder",
    );
    assert_eq!(
        confirmed["errors"][0]["code"], "HOLD_EXPIRED",
        "{confirmed}"
    );
    let handed = waitlist_order(&app, &first).await;

    // The first never pays: past its deadline, the cancel that meets it releases it, and
    // the unit moves on to the second in the same step.
    wait_past_deadline(&app, &handed).await;
    let cancelled = data(
        app.graphql(CANCEL, json!({ "id": handed }), Some(&first))
            .await,
        "cancelOrder",
    );
    assert_eq!(
        cancelled["errors"][0]["code"], "HOLD_EXPIRED",
        "{cancelled}"
    );
    waitlist_order(&app, &second).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        racing.await.unwrap(),
        0,
        "a racing buyer got a unit that came back"
    );
    assert!(mine(&app, &first).await.is_empty());
    assert!(mine(&app, &second).await.is_empty());
    assert_eq!(app.available(store, product).await, 0);
    assert_eq!(app.held(store, product).await, 1);
    assert_units_once(&app, store, product, 1).await;
    assert_flushed_and_audited(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restock_hands_a_unit_to_every_entry_of_a_long_line_in_one_step() {
    let app = spawn_app_with(TestOptions::default().arg("flush-enabled", "true")).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 120, 0, None).await;
    let (_, admin) = app.create_admin().await;
    let mut waiters = Vec::new();
    for _ in 0..60 {
        waiters.push(app.create_customer().await.1);
    }
    let joined = join_all(waiters.iter().map(|t| join(&app, t, product, 1))).await;
    assert!(
        joined.iter().all(|p| p["errors"] == json!([])),
        "{joined:?}"
    );

    let restock = "mutation($id: ID!) {
        restockProduct(productId: $id, quantity: 65) { product { available } errors { code } } }";
    let after = data(
        app.graphql(restock, json!({ "id": product.to_string() }), Some(&admin))
            .await,
        "restockProduct",
    );
    assert_eq!(after["product"]["available"], 5, "{after}");
    assert_eq!(app.held(store, product).await, 60);
    for token in &waiters {
        assert!(mine(&app, token).await.is_empty());
    }
    assert_units_once(&app, store, product, 65).await;
    assert_flushed_and_audited(&app).await;
    let (orders, customers): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM orders \
         WHERE from_waitlist AND status = 'HELD'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((orders, customers), (60, 60));
}

#[tokio::test]
async fn an_expired_entry_ahead_is_not_counted_even_when_entries_behind_it_live_longer() {
    // Two instances with different WAITLIST_TTL (a change being rolled out): an entry made
    // by the first expires while the one behind it, made by the second, still waits.
    let first = spawn_app_with(TestOptions::default().arg("waitlist-ttl", "1s")).await;
    let second = spawn_app_with(
        TestOptions::default()
            .arg("database-url", &first.database_url)
            .arg("redis-key-prefix", first.keys.prefix())
            .arg("waitlist-ttl", "1h"),
    )
    .await;
    let store = first.create_store().await;
    let product = first.create_product(store, 100, 0, None).await;
    let (_, short) = first.create_customer().await;
    let (_, long) = first.create_customer().await;
    assert_eq!(
        join(&first, &short, product, 1).await["entry"]["position"],
        1
    );
    assert_eq!(
        join(&second, &long, product, 1).await["entry"]["position"],
        2
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let entries = mine(&second, &long).await;
    assert_eq!(entries[0]["position"], 1, "{entries:?}");
    assert!(mine(&first, &short).await.is_empty());
    let (_, late) = first.create_customer().await;
    assert_eq!(
        join(&second, &late, product, 1).await["entry"]["position"],
        2
    );
    assert_units_once(&first, store, product, 0).await;
}

#[tokio::test]
async fn units_too_few_for_the_head_go_to_the_first_entry_they_fill_and_the_head_keeps_its_place() {
    let app = spawn_app_with(TestOptions::default().arg("flush-enabled", "true")).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 1, None).await;
    let (_, admin) = app.create_admin().await;
    let (_, holder) = app.create_customer().await;
    let (_, wants_two) = app.create_customer().await;
    let (_, wants_one) = app.create_customer().await;
    let held = lock(&app, &holder, product).await;
    assert_eq!(
        join(&app, &wants_two, product, 2).await["entry"]["position"],
        1
    );
    assert_eq!(
        join(&app, &wants_one, product, 1).await["entry"]["position"],
        2
    );

    // One unit comes back: it cannot fill the head, so the next entry gets it.
    let order = held["order"]["id"].as_str().unwrap();
    app.graphql(CANCEL, json!({ "id": order }), Some(&holder))
        .await;
    waitlist_order(&app, &wants_one).await;
    let head = mine(&app, &wants_two).await;
    assert_eq!(head[0]["position"], 1, "{head:?}");
    assert_eq!(head[0]["status"], "WAITING");
    assert_eq!(app.available(store, product).await, 0);

    // Two more: the head gets both, whole.
    let restock = "mutation($id: ID!) {
        restockProduct(productId: $id, quantity: 2) { product { available } errors { code } } }";
    let after = data(
        app.graphql(restock, json!({ "id": product.to_string() }), Some(&admin))
            .await,
        "restockProduct",
    );
    assert_eq!(after["product"]["available"], 0, "{after}");
    waitlist_order(&app, &wants_two).await;
    assert!(mine(&app, &wants_two).await.is_empty());
    assert_eq!(app.held(store, product).await, 3);
    assert_units_once(&app, store, product, 3).await;
    assert_flushed_and_audited(&app).await;
}

#[tokio::test]
async fn a_hand_over_reaches_the_waiting_customer_over_order_changed() {
    use crate::subscriber::{LEGACY_WS, Subscriber};
    let app = spawn_app_with(TestOptions::default().arg("flush-enabled", "true")).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 1, None).await;
    let (_, holder) = app.create_customer().await;
    let (_, waiting) = app.create_customer().await;
    let held = lock(&app, &holder, product).await;
    assert_eq!(
        join(&app, &waiting, product, 1).await["entry"]["position"],
        1
    );
    let mut watcher = Subscriber::connect_with(&app.address, LEGACY_WS, Some(&waiting)).await;
    watcher
        .subscribe(
            "mine",
            "subscription { orderChanged { id status fromWaitlist } }",
            json!({}),
        )
        .await;
    // Give the subscription a moment to start before the change it must see.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let order = held["order"]["id"].as_str().unwrap();
    app.graphql(CANCEL, json!({ "id": order }), Some(&holder))
        .await;
    let payload = watcher.next_payload("mine", Duration::from_secs(2)).await;
    let changed = &payload["data"]["orderChanged"];
    assert_eq!(changed["status"], "HELD", "{payload}");
    assert_eq!(changed["fromWaitlist"], true, "{payload}");
    assert_eq!(changed["id"], waitlist_order(&app, &waiting).await.as_str());
    assert_units_once(&app, store, product, 1).await;
}
