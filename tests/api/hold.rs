//! lockOrder, confirmOrder, cancelOrder and restockProduct over real HTTP, with real
//! concurrency: stock is never oversold, orders are all or nothing, and every
//! transition is one outbox event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flashstock::domain::{ProductId, StoreId};
use futures_util::future::join_all;
use futures_util::{StreamExt, stream};
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestOptions, Topology, on_both_topologies, spawn_app_with};

const ORDER_FIELDS: &str = "id status totalCents heldUntil createdAt confirmedAt paymentReference
    lines { quantity unitPriceCents product { id } }";

fn lock_mutation() -> String {
    format!(
        "mutation($items: [OrderLineInput!]!, $key: String) {{
            lockOrder(input: {{ items: $items, idempotencyKey: $key }}) {{
                order {{ {ORDER_FIELDS} }}
                errors {{ code field productId available message }} }} }}"
    )
}

fn confirm_mutation() -> String {
    format!(
        "mutation($id: ID!, $ref: String!) {{
            confirmOrder(input: {{ orderId: $id, paymentReference: $ref }}) {{
                order {{ {ORDER_FIELDS} }} errors {{ code field }} }} }}"
    )
}

fn cancel_mutation() -> String {
    format!(
        "mutation($id: ID!) {{
            cancelOrder(orderId: $id) {{ order {{ {ORDER_FIELDS} }} errors {{ code field }} }} }}"
    )
}

fn order_query() -> String {
    format!("query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}")
}

const RESTOCK: &str = "mutation($id: ID!, $quantity: Int!, $reason: String) {
    restockProduct(productId: $id, quantity: $quantity, reason: $reason) {
        product { id available } errors { code field } } }";

fn line(product: ProductId, quantity: i64) -> Value {
    json!({ "productId": product.to_string(), "quantity": quantity })
}

/// The operation's `data.<field>`, failing the test on any top-level GraphQL error.
fn data(body: Value, field: &str) -> Value {
    assert!(
        body["errors"].is_null(),
        "unexpected GraphQL errors: {body}"
    );
    body["data"][field].clone()
}

/// Runs one operation as the token's user and returns its `data.<field>`.
async fn call(app: &TestApp, token: &str, query: &str, variables: Value, field: &str) -> Value {
    data(app.graphql(query, variables, Some(token)).await, field)
}

async fn lock(app: &TestApp, token: &str, items: Value, key: Option<&str>) -> Value {
    let variables = json!({ "items": items, "key": key });
    call(app, token, &lock_mutation(), variables, "lockOrder").await
}

async fn confirm(app: &TestApp, token: &str, order: &str, reference: &str) -> Value {
    let variables = json!({ "id": order, "ref": reference });
    call(app, token, &confirm_mutation(), variables, "confirmOrder").await
}

async fn cancel(app: &TestApp, token: &str, order: &str) -> Value {
    let variables = json!({ "id": order });
    call(app, token, &cancel_mutation(), variables, "cancelOrder").await
}

async fn order(app: &TestApp, token: &str, order: &str) -> Value {
    call(app, token, &order_query(), json!({ "id": order }), "order").await
}

fn codes(payload: &Value) -> Vec<String> {
    payload["errors"]
        .as_array()
        .expect("errors list")
        .iter()
        .map(|e| e["code"].as_str().unwrap().to_owned())
        .collect()
}

/// The order of a successful payload, after checking it carries no errors.
fn held_order(payload: &Value) -> Value {
    assert_eq!(payload["errors"], json!([]), "{payload}");
    payload["order"].clone()
}

fn order_id(payload: &Value) -> String {
    held_order(payload)["id"].as_str().unwrap().to_owned()
}

/// The single error code of a failed payload, after checking nothing came back.
fn failure(payload: &Value) -> String {
    assert!(payload["order"].is_null(), "{payload}");
    let codes = codes(payload);
    assert_eq!(codes.len(), 1, "{payload}");
    codes[0].clone()
}

async fn customers(app: &TestApp, count: usize) -> Vec<String> {
    stream::iter(0..count)
        .map(|_| async { app.create_customer().await.1 })
        .buffer_unordered(32)
        .collect()
        .await
}

/// For the storms of a thousand requests: in a debug build, beside other tests on a
/// small machine, the server's own tasks can wait seconds for a turn, and a Redis reply
/// or a request would time out only because the runtime was busy.
fn storm() -> TestOptions {
    TestOptions::default()
        .arg("redis-response-timeout", "60s")
        .arg("request-timeout", "60s")
}

/// (available, held, sold) of each product, as Redis has them now.
async fn snapshot(app: &TestApp, store: StoreId, products: &[ProductId]) -> Vec<(i64, i64, i64)> {
    let mut counts = Vec::new();
    for product in products {
        counts.push((
            app.available(store, *product).await,
            app.held(store, *product).await,
            app.sold(store, *product).await,
        ));
    }
    counts
}

async fn outbox_len(app: &TestApp, store: StoreId) -> usize {
    app.redis
        .clone()
        .xlen(app.keys.store(store).outbox)
        .await
        .unwrap()
}

/// The outbox entries of a store, oldest first, as field maps.
async fn outbox(app: &TestApp, store: StoreId) -> Vec<BTreeMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = app
        .redis
        .clone()
        .xrange_all(app.keys.store(store).outbox)
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            entry
                .map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value(v).unwrap()))
                .collect()
        })
        .collect()
}

fn millis(raw: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(raw.as_str().expect("a timestamp"))
        .unwrap()
        .timestamp_millis()
}

on_both_topologies!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    flash_sale_never_sells_more_than_stock
);
async fn flash_sale_never_sells_more_than_stock(topology: Topology) {
    let app = spawn_app_with(storm().on(topology)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 1999, 100, None).await;
    let tokens = customers(&app, 1000).await;

    // Reads `available` straight from Redis for as long as the storm lasts.
    let storming = Arc::new(AtomicBool::new(true));
    let poller = {
        let storming = storming.clone();
        let mut redis = app.redis.clone();
        let key = app.keys.store(store).stock;
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while storming.load(Ordering::Relaxed) {
                let available: i64 = redis.hget(&key, product.0).await.unwrap();
                seen.push(available);
                tokio::task::yield_now().await;
            }
            seen
        })
    };

    let items = json!([line(product, 1)]);
    let replies = join_all(
        tokens
            .iter()
            .map(|token| lock(&app, token, items.clone(), None)),
    )
    .await;
    storming.store(false, Ordering::Relaxed);
    let seen = poller.await.unwrap();

    let held: Vec<&Value> = replies.iter().filter(|r| !r["order"].is_null()).collect();
    assert_eq!(held.len(), 100);
    let ids: BTreeSet<&str> = held
        .iter()
        .map(|r| {
            assert_eq!(r["order"]["status"], "HELD");
            assert_eq!(r["errors"], json!([]));
            r["order"]["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 100, "every hold is its own order");
    for refused in replies.iter().filter(|r| r["order"].is_null()) {
        assert_eq!(
            refused["errors"],
            json!([{
                "code": "INSUFFICIENT_STOCK",
                "field": null,
                "productId": product.to_string(),
                "available": 0,
                "message": "not enough stock for this product",
            }])
        );
    }
    assert_eq!(app.available(store, product).await, 0);
    assert_eq!(app.held(store, product).await, 100);
    assert!(seen.len() > 1, "the poller read during the storm");
    assert!(
        seen.iter().all(|available| (0..=100).contains(available)),
        "available left 0..=100: min {:?}",
        seen.iter().min()
    );
}

/// A small deterministic generator, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

on_both_topologies!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    multi_line_orders_are_all_or_nothing_under_contention
);
async fn multi_line_orders_are_all_or_nothing_under_contention(topology: Topology) {
    let app = spawn_app_with(storm().on(topology)).await;
    let store = app.create_store().await;
    let initial = [30, 50, 70];
    let mut products = Vec::new();
    for stock in initial {
        products.push(app.create_product(store, 500, stock, None).await);
    }
    let tokens = customers(&app, 100).await;

    let mut rng = Lcg(12);
    let orders: Vec<Vec<(ProductId, i64)>> = (0..400)
        .map(|_| {
            let wanted = 1 + rng.below(3) as usize;
            let mut lines = BTreeMap::new();
            while lines.len() < wanted {
                lines.insert(products[rng.below(3) as usize], 1 + rng.below(4) as i64);
            }
            lines.into_iter().collect()
        })
        .collect();
    let replies = join_all(orders.iter().enumerate().map(|(i, lines)| {
        let items: Vec<Value> = lines.iter().map(|(p, q)| line(*p, *q)).collect();
        lock(&app, &tokens[i % tokens.len()], json!(items), None)
    }))
    .await;

    let mut held_per_product: BTreeMap<ProductId, i64> = BTreeMap::new();
    let mut successes = 0;
    for (lines, reply) in orders.iter().zip(&replies) {
        if reply["order"].is_null() {
            let errors = reply["errors"].as_array().unwrap();
            assert!(!errors.is_empty());
            for error in errors {
                assert_eq!(error["code"], "INSUFFICIENT_STOCK", "{reply}");
                let short = ProductId::parse(error["productId"].as_str().unwrap()).unwrap();
                let wanted = lines.iter().find(|(p, _)| *p == short).unwrap().1;
                assert!(error["available"].as_i64().unwrap() < wanted, "{reply}");
            }
            continue;
        }
        successes += 1;
        let got: Vec<(ProductId, i64)> = held_order(reply)["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let id = ProductId::parse(l["product"]["id"].as_str().unwrap()).unwrap();
                (id, l["quantity"].as_i64().unwrap())
            })
            .collect();
        assert_eq!(&got, lines, "every line of a held order is held");
        for (product, quantity) in lines {
            *held_per_product.entry(*product).or_default() += quantity;
        }
    }
    assert!(successes > 0 && successes < orders.len());
    for (product, stock) in products.iter().zip(initial) {
        let available = app.available(store, *product).await;
        let held = app.held(store, *product).await;
        assert!(available >= 0, "product {product} went to {available}");
        assert_eq!(available + held, stock, "product {product}");
        assert_eq!(
            held,
            held_per_product.get(product).copied().unwrap_or(0),
            "units held for {product} are exactly the held orders' lines"
        );
    }
}

on_both_topologies!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    per_customer_limit_holds_under_a_race
);
async fn per_customer_limit_holds_under_a_race(topology: Topology) {
    let app = spawn_app_with(TestOptions::default().on(topology)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 100, Some(2)).await;
    let (_, token) = app.create_customer().await;
    let items = json!([line(product, 1)]);

    let replies = join_all((0..20).map(|_| lock(&app, &token, items.clone(), None))).await;
    let held: Vec<String> = replies
        .iter()
        .filter(|r| !r["order"].is_null())
        .map(order_id)
        .collect();
    assert_eq!(held.len(), 2);
    for refused in replies.iter().filter(|r| r["order"].is_null()) {
        assert_eq!(failure(refused), "LIMIT_EXCEEDED");
        assert_eq!(refused["errors"][0]["productId"], product.to_string());
        assert_eq!(refused["errors"][0]["available"], 0);
    }
    assert_eq!(app.held(store, product).await, 2);

    // Confirmed units still count; cancelled ones no longer do.
    held_order(&confirm(&app, &token, &held[0], "pay-1").await);
    held_order(&cancel(&app, &token, &held[1]).await);
    let again = lock(&app, &token, items.clone(), None).await;
    assert_eq!(held_order(&again)["status"], "HELD");
    assert_eq!(
        failure(&lock(&app, &token, items.clone(), None).await),
        "LIMIT_EXCEEDED"
    );
    // A quantity over what is left names how many are still allowed.
    held_order(&cancel(&app, &token, &order_id(&again)).await);
    let over = lock(&app, &token, json!([line(product, 2)]), None).await;
    assert_eq!(failure(&over), "LIMIT_EXCEEDED");
    assert_eq!(over["errors"][0]["available"], 1);

    // The limit is the customer's own: someone else still gets two.
    let (_, other) = app.create_customer().await;
    held_order(&lock(&app, &other, json!([line(product, 2)]), None).await);
    assert_eq!(app.sold(store, product).await, 1);
    assert_eq!(app.held(store, product).await, 2);
    assert_eq!(app.available(store, product).await, 97);
}

on_both_topologies!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    one_idempotency_key_makes_one_order_even_when_requests_race
);
async fn one_idempotency_key_makes_one_order_even_when_requests_race(topology: Topology) {
    let app = spawn_app_with(TestOptions::default().on(topology)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 250, 100, None).await;
    let (_, token) = app.create_customer().await;
    let items = json!([line(product, 3)]);

    let replies =
        join_all((0..50).map(|_| lock(&app, &token, items.clone(), Some("checkout-1")))).await;
    let ids: BTreeSet<String> = replies.iter().map(order_id).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.held(store, product).await, 3);
    assert_eq!(app.available(store, product).await, 97);
    let first = ids.into_iter().next().unwrap();

    // The key belongs to its customer: someone else's same key is another order.
    let (_, other) = app.create_customer().await;
    let theirs = order_id(&lock(&app, &other, items.clone(), Some("checkout-1")).await);
    assert_ne!(theirs, first);
    assert_eq!(app.held(store, product).await, 6);

    // The key names the order in whatever state it is now, and never holds again.
    held_order(&cancel(&app, &token, &first).await);
    let replay = held_order(&lock(&app, &token, items.clone(), Some("checkout-1")).await);
    assert_eq!(replay["id"], first.as_str());
    assert_eq!(replay["status"], "CANCELLED");
    assert_eq!(app.held(store, product).await, 3);
    assert_eq!(app.available(store, product).await, 97);
}

on_both_topologies!(
    #[tokio::test]
    duplicate_lines_are_summed_into_one
);
async fn duplicate_lines_are_summed_into_one(topology: Topology) {
    let app = spawn_app_with(TestOptions::default().on(topology)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 300, 10, None).await;
    let (_, token) = app.create_customer().await;

    let reply = lock(
        &app,
        &token,
        json!([line(product, 2), line(product, 3)]),
        None,
    )
    .await;
    let order = held_order(&reply);
    assert_eq!(
        order["lines"],
        json!([{ "quantity": 5, "unitPriceCents": 300, "product": { "id": product.to_string() } }])
    );
    assert_eq!(order["totalCents"], 1500);
    assert_eq!(app.held(store, product).await, 5);
    assert_eq!(app.available(store, product).await, 5);

    // Summed lines are checked as one: 3 + 3 is short even though each line alone is not.
    let short = lock(
        &app,
        &token,
        json!([line(product, 3), line(product, 3)]),
        None,
    )
    .await;
    assert_eq!(failure(&short), "INSUFFICIENT_STOCK");
    assert_eq!(short["errors"][0]["available"], 5);
    assert_eq!(app.available(store, product).await, 5);
}

on_both_topologies!(
    #[tokio::test]
    invalid_orders_name_their_fault_and_change_nothing
);
async fn invalid_orders_name_their_fault_and_change_nothing(topology: Topology) {
    let app = spawn_app_with(
        TestOptions::default()
            .arg("max-order-lines", 3)
            .on(topology),
    )
    .await;
    let store = app.create_store().await;
    let other_store = app.create_store().await;
    let mut products = Vec::new();
    for _ in 0..4 {
        products.push(app.create_product(store, 100, 20, None).await);
    }
    let elsewhere = app.create_product(other_store, 100, 20, None).await;
    let (_, token) = app.create_customer().await;
    let p = products[0];

    let cases = [
        (json!([]), "EMPTY_ORDER"),
        (json!([line(p, 0)]), "INVALID_QUANTITY"),
        (json!([line(p, -1)]), "INVALID_QUANTITY"),
        (json!([line(p, 1001)]), "INVALID_QUANTITY"),
        (json!([line(p, 600), line(p, 600)]), "INVALID_QUANTITY"),
        (
            json!([line(p, 1), { "productId": "999999", "quantity": 1 }]),
            "PRODUCT_NOT_FOUND",
        ),
        (
            json!([line(p, 1), { "productId": "abc", "quantity": 1 }]),
            "PRODUCT_NOT_FOUND",
        ),
        (
            json!(products.iter().map(|p| line(*p, 1)).collect::<Vec<_>>()),
            "TOO_MANY_LINES",
        ),
        (json!([line(p, 1), line(elsewhere, 1)]), "MIXED_STORES"),
    ];
    let before = snapshot(&app, store, &products).await;
    let elsewhere_before = snapshot(&app, other_store, &[elsewhere]).await;
    let outbox_before = outbox_len(&app, store).await;
    for (items, code) in cases {
        let reply = lock(&app, &token, items.clone(), None).await;
        assert_eq!(failure(&reply), code, "{items}");
        if code == "MIXED_STORES" {
            assert_eq!(
                reply["errors"][0]["message"],
                "products must be from the same store"
            );
        }
        assert_eq!(snapshot(&app, store, &products).await, before, "{items}");
        assert_eq!(
            snapshot(&app, other_store, &[elsewhere]).await,
            elsewhere_before
        );
    }
    assert_eq!(outbox_len(&app, store).await, outbox_before);
    assert_eq!(outbox_len(&app, other_store).await, 0);

    // Without a token there is no order at all, only a top-level error.
    let anonymous = app
        .graphql(&lock_mutation(), json!({ "items": [line(p, 1)] }), None)
        .await;
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    assert_eq!(snapshot(&app, store, &products).await, before);
}

on_both_topologies!(
    #[tokio::test]
    confirm_and_cancel_follow_the_state_machine
);
async fn confirm_and_cancel_follow_the_state_machine(topology: Topology) {
    let app = spawn_app_with(TestOptions::default().on(topology)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 1000, 10, None).await;
    let (_, token) = app.create_customer().await;
    let items = json!([line(product, 2)]);
    let mut events = outbox_len(&app, store).await;
    assert_eq!(events, 0);

    // HELD, for exactly HOLD_TTL from the moment Redis took it.
    let held = held_order(&lock(&app, &token, items.clone(), None).await);
    let id = held["id"].as_str().unwrap().to_owned();
    assert_eq!(held["status"], "HELD");
    assert_eq!(held["totalCents"], 2000);
    assert_eq!(
        millis(&held["heldUntil"]) - millis(&held["createdAt"]),
        600_000
    );
    assert_eq!(order(&app, &token, &id).await["status"], "HELD");
    events += 1;
    assert_eq!(outbox_len(&app, store).await, events);

    // HELD -> CONFIRMED.
    let confirmed = held_order(&confirm(&app, &token, &id, "pay-42").await);
    assert_eq!(confirmed["status"], "CONFIRMED");
    assert_eq!(confirmed["paymentReference"], "pay-42");
    assert!(confirmed["confirmedAt"].is_string());
    assert!(confirmed["heldUntil"].is_null());
    assert_eq!(snapshot(&app, store, &[product]).await, [(8, 0, 2)]);
    events += 1;
    assert_eq!(outbox_len(&app, store).await, events);

    // The same payment again is the same order, sold once.
    let again = held_order(&confirm(&app, &token, &id, "pay-42").await);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["status"], "CONFIRMED");
    // Another payment, or a cancel, for a confirmed order is refused.
    assert_eq!(
        failure(&confirm(&app, &token, &id, "pay-43").await),
        "INVALID_STATE"
    );
    assert_eq!(failure(&cancel(&app, &token, &id).await), "INVALID_STATE");
    assert_eq!(snapshot(&app, store, &[product]).await, [(8, 0, 2)]);
    assert_eq!(outbox_len(&app, store).await, events);
    assert_eq!(order(&app, &token, &id).await["status"], "CONFIRMED");

    // HELD -> CANCELLED gives the units back at once; cancelling again changes nothing.
    let second = order_id(&lock(&app, &token, items.clone(), None).await);
    assert_eq!(snapshot(&app, store, &[product]).await, [(6, 2, 2)]);
    let cancelled = held_order(&cancel(&app, &token, &second).await);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(cancelled["heldUntil"].is_null());
    assert_eq!(snapshot(&app, store, &[product]).await, [(8, 0, 2)]);
    events += 2;
    assert_eq!(outbox_len(&app, store).await, events);
    let twice = held_order(&cancel(&app, &token, &second).await);
    assert_eq!(twice["id"], second.as_str());
    assert_eq!(twice["status"], "CANCELLED");
    assert_eq!(
        failure(&confirm(&app, &token, &second, "pay-44").await),
        "INVALID_STATE"
    );
    assert_eq!(snapshot(&app, store, &[product]).await, [(8, 0, 2)]);
    assert_eq!(outbox_len(&app, store).await, events);
    assert_eq!(order(&app, &token, &second).await["status"], "CANCELLED");

    // Each event carries the order's whole state after its transition; the stream is
    // the store's own, so it names the order by its UUID.
    let uuid = |order: &str| order.split_once('-').unwrap().1.to_owned();
    let (id, second) = (uuid(&id), uuid(&second));
    let log = outbox(&app, store).await;
    let statuses: Vec<(&str, &str)> = log
        .iter()
        .map(|e| (e["order"].as_str(), e["status"].as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            (id.as_str(), "HELD"),
            (id.as_str(), "CONFIRMED"),
            (second.as_str(), "HELD"),
            (second.as_str(), "CANCELLED"),
        ]
    );
    assert!(log.iter().all(|e| e["type"] == "order"));
    assert_eq!(log[1]["payment_ref"], "pay-42");

    // Ids that are not orders at all.
    assert_eq!(
        failure(&confirm(&app, &token, "not-an-order", "pay").await),
        "ORDER_NOT_FOUND"
    );
    assert_eq!(
        failure(&cancel(&app, &token, &format!("{store}-{}", uuid::Uuid::now_v7())).await),
        "ORDER_NOT_FOUND"
    );
    assert!(order(&app, &token, "not-an-order").await.is_null());
}

on_both_topologies!(
    #[tokio::test]
    someone_elses_order_is_not_found_but_an_admin_sees_and_cancels_it
);
async fn someone_elses_order_is_not_found_but_an_admin_sees_and_cancels_it(topology: Topology) {
    let app = spawn_app_with(TestOptions::default().on(topology)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 10, None).await;
    let (_, owner) = app.create_customer().await;
    let (_, stranger) = app.create_customer().await;
    let (_, admin) = app.create_admin().await;
    let id = order_id(&lock(&app, &owner, json!([line(product, 4)]), None).await);
    let events = outbox_len(&app, store).await;

    assert_eq!(
        failure(&confirm(&app, &stranger, &id, "pay").await),
        "ORDER_NOT_FOUND"
    );
    assert_eq!(
        failure(&cancel(&app, &stranger, &id).await),
        "ORDER_NOT_FOUND"
    );
    assert!(order(&app, &stranger, &id).await.is_null());
    // Paying is the owner's step alone, even for an ADMIN.
    assert_eq!(
        failure(&confirm(&app, &admin, &id, "pay").await),
        "ORDER_NOT_FOUND"
    );
    assert_eq!(snapshot(&app, store, &[product]).await, [(6, 4, 0)]);
    assert_eq!(outbox_len(&app, store).await, events);

    assert_eq!(order(&app, &owner, &id).await["status"], "HELD");
    assert_eq!(order(&app, &admin, &id).await["id"], id.as_str());
    let cancelled = held_order(&cancel(&app, &admin, &id).await);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(snapshot(&app, store, &[product]).await, [(10, 0, 0)]);
    assert_eq!(order(&app, &owner, &id).await["status"], "CANCELLED");
    assert_eq!(outbox_len(&app, store).await, events + 1);
}

/// Waits until Redis's own clock, the one the scripts use, has passed `deadline_ms`.
async fn wait_for_redis_time(app: &TestApp, deadline_ms: i64) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut app.redis.clone())
            .await
            .unwrap();
        if secs * 1000 + micros / 1000 >= deadline_ms {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "Redis time never passed the deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Single-node by nature: the local cluster publishes expiries, and the listener would
// release these holds before confirm or cancel could find them late.
#[tokio::test]
async fn a_hold_past_its_deadline_expires_on_confirm_or_cancel_and_returns_the_units() {
    // The sweeper waits an hour (and the shared Redis publishes no expiries), so only the
    // confirm and cancel scripts can find these holds late.
    let app = spawn_app_with(
        TestOptions::default()
            .arg("hold-ttl", "1s")
            .arg("sweep-interval", "1h"),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 5, Some(1)).await;
    let (_, paying) = app.create_customer().await;
    let (_, cancelling) = app.create_customer().await;
    let first = held_order(&lock(&app, &paying, json!([line(product, 1)]), None).await);
    let second = held_order(&lock(&app, &cancelling, json!([line(product, 1)]), None).await);
    let (first_id, second_id) = (
        first["id"].as_str().unwrap().to_owned(),
        second["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        millis(&first["heldUntil"]) - millis(&first["createdAt"]),
        1000
    );
    assert_eq!(snapshot(&app, store, &[product]).await, [(3, 2, 0)]);
    let events = outbox_len(&app, store).await;

    // No sweeper is needed: the script that finds the hold late expires it itself.
    wait_for_redis_time(&app, millis(&second["heldUntil"])).await;
    assert_eq!(
        failure(&confirm(&app, &paying, &first_id, "late-payment").await),
        "HOLD_EXPIRED"
    );
    assert_eq!(snapshot(&app, store, &[product]).await, [(4, 1, 0)]);
    assert_eq!(
        failure(&cancel(&app, &cancelling, &second_id).await),
        "HOLD_EXPIRED"
    );
    assert_eq!(snapshot(&app, store, &[product]).await, [(5, 0, 0)]);
    assert_eq!(outbox_len(&app, store).await, events + 2);
    for (token, id) in [(&paying, &first_id), (&cancelling, &second_id)] {
        let expired = order(&app, token, id).await;
        assert_eq!(expired["status"], "EXPIRED");
        assert!(expired["heldUntil"].is_null());
    }

    // Expired stays expired, however it is asked again.
    assert_eq!(
        failure(&confirm(&app, &paying, &first_id, "late-payment").await),
        "HOLD_EXPIRED"
    );
    assert_eq!(
        failure(&cancel(&app, &paying, &first_id).await),
        "HOLD_EXPIRED"
    );
    assert_eq!(
        failure(&cancel(&app, &cancelling, &second_id).await),
        "HOLD_EXPIRED"
    );
    assert_eq!(outbox_len(&app, store).await, events + 2);
    assert_eq!(snapshot(&app, store, &[product]).await, [(5, 0, 0)]);

    // Expired units no longer count against the per-customer limit.
    held_order(&lock(&app, &paying, json!([line(product, 1)]), None).await);
    assert_eq!(snapshot(&app, store, &[product]).await, [(4, 1, 0)]);
}

on_both_topologies!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    concurrent_restocks_each_add_their_units_once
);
async fn concurrent_restocks_each_add_their_units_once(topology: Topology) {
    let app = spawn_app_with(TestOptions::default().on(topology)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 7, None).await;
    let (_, admin) = app.create_admin().await;
    let (_, customer) = app.create_customer().await;
    let vars = json!({ "id": product.to_string(), "quantity": 1, "reason": "delivery" });

    let replies = join_all((0..50).map(|_| app.graphql(RESTOCK, vars.clone(), Some(&admin)))).await;
    let mut seen = BTreeSet::new();
    for reply in replies {
        let payload = data(reply, "restockProduct");
        assert_eq!(payload["errors"], json!([]));
        seen.insert(payload["product"]["available"].as_i64().unwrap());
    }
    assert_eq!(seen, (8..=57).collect(), "each restock saw its own total");
    assert_eq!(app.available(store, product).await, 57);
    let log = outbox(&app, store).await;
    assert_eq!(log.len(), 50);
    assert!(log.iter().all(|e| e["type"] == "restock"
        && e["units"] == "1"
        && e["product"] == product.to_string()
        && e["reason"] == "delivery"));

    // Only positive quantities, only ADMINs; nothing moves otherwise.
    for quantity in [0, -3] {
        let reply = app
            .graphql(
                RESTOCK,
                json!({ "id": product.to_string(), "quantity": quantity }),
                Some(&admin),
            )
            .await;
        assert_eq!(failure(&data(reply, "restockProduct")), "INVALID_QUANTITY");
    }
    let forbidden = app.graphql(RESTOCK, vars.clone(), Some(&customer)).await;
    assert_eq!(forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let unknown = app
        .graphql(
            RESTOCK,
            json!({ "id": "999999", "quantity": 1 }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        failure(&data(unknown, "restockProduct")),
        "PRODUCT_NOT_FOUND"
    );
    assert_eq!(app.available(store, product).await, 57);
    assert_eq!(outbox_len(&app, store).await, 50);
}

#[tokio::test]
async fn a_change_no_replica_has_in_time_answers_with_the_order_and_not_replicated() {
    // The shared Redis has no replica: WAIT 1 always runs out.
    let app = spawn_app_with(
        TestOptions::default()
            .arg("redis-wait-replicas", 1)
            .arg("redis-wait-timeout", "20ms"),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 5, None).await;
    let (_, token) = app.create_customer().await;

    let first = lock(&app, &token, json!([line(product, 2)]), Some("k-1")).await;
    assert_eq!(codes(&first), ["NOT_REPLICATED"], "{first}");
    assert_eq!(first["order"]["status"], "HELD", "{first}");
    let id = first["order"]["id"].as_str().unwrap().to_owned();
    // The hold stands on the master.
    assert_eq!(
        (
            app.available(store, product).await,
            app.held(store, product).await
        ),
        (3, 2)
    );

    // A retry with the same key is the same order, held once.
    let retried = lock(&app, &token, json!([line(product, 2)]), Some("k-1")).await;
    assert_eq!(retried["order"]["id"], id.as_str(), "{retried}");
    // Still on no replica, and the retry says so too.
    assert_eq!(codes(&retried), ["NOT_REPLICATED"], "{retried}");
    assert_eq!(
        (
            app.available(store, product).await,
            app.held(store, product).await
        ),
        (3, 2)
    );

    let confirmed = confirm(&app, &token, &id, "pay-1").await;
    assert_eq!(codes(&confirmed), ["NOT_REPLICATED"], "{confirmed}");
    assert_eq!(confirmed["order"]["status"], "CONFIRMED", "{confirmed}");
    assert_eq!(
        (
            app.held(store, product).await,
            app.sold(store, product).await
        ),
        (0, 2)
    );
}

/// Connections the service holds open for replicated transitions (named after its prefix).
async fn wait_connections(redis: &mut redis::aio::MultiplexedConnection, name: &str) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(redis)
        .await
        .unwrap();
    let named = format!(" name={name} ");
    clients.lines().filter(|line| line.contains(&named)).count()
}

#[tokio::test]
async fn a_burst_of_replicated_changes_shares_a_few_connections_instead_of_opening_one_each() {
    // The shared Redis has no replica: each WAIT 1 holds its connection for the full 30ms.
    let app = spawn_app_with(
        TestOptions::default()
            .arg("redis-wait-replicas", 1)
            .arg("redis-wait-timeout", "30ms")
            .arg("redis-wait-connections", 3)
            .arg("max-holds-per-customer", 0),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 100, None).await;
    let (_, token) = app.create_customer().await;
    let name = format!("flashstock-wait-{}", app.keys.prefix());
    let client = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut watcher = client.get_multiplexed_async_connection().await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let sampling = {
        let (done, name) = (Arc::clone(&done), name.clone());
        tokio::spawn(async move {
            let mut most = 0;
            while !done.load(Ordering::Relaxed) {
                most = most.max(wait_connections(&mut watcher, &name).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            most
        })
    };
    // 60 holds at once, each of them WAITing 30ms.
    let answers =
        join_all((0..60).map(|_| lock(&app, &token, json!([line(product, 1)]), None))).await;
    done.store(true, Ordering::Relaxed);
    let most = sampling.await.unwrap();
    for answer in &answers {
        assert_eq!(answer["order"]["status"], "HELD", "{answer}");
        assert_eq!(codes(answer), ["NOT_REPLICATED"], "{answer}");
    }
    assert_eq!(app.available(store, product).await, 40);
    assert!(most >= 1, "the sampler saw the wait connections");
    assert!(most <= 3, "{most} wait connections at once");
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    assert!(wait_connections(&mut redis, &name).await <= 3);
}

#[tokio::test]
async fn on_a_cluster_with_replicas_a_replicated_change_answers_without_error() {
    let app = spawn_app_with(
        TestOptions::default()
            .arg("redis-wait-replicas", 1)
            .arg("redis-wait-timeout", "2s")
            .on(Topology::Cluster),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 5, None).await;
    let (_, token) = app.create_customer().await;
    let id = order_id(&lock(&app, &token, json!([line(product, 1)]), Some("k-1")).await);
    let retried = lock(&app, &token, json!([line(product, 1)]), Some("k-1")).await;
    assert_eq!(order_id(&retried), id);
    let cancelled = cancel(&app, &token, &id).await;
    assert_eq!(held_order(&cancelled)["status"], "CANCELLED");
    assert_eq!(app.available(store, product).await, 5);
}
