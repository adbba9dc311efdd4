//! Live stock and order updates over WebSocket: what a storefront sees while a sale runs.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestOptions, one_at_a_time, spawn_app_with};
use crate::subscriber::{
    Event, LEGACY_WS, ORDER_CHANGED, STOCK_CHANGED, Subscriber, refused_upgrade,
};
use flashstock::domain::{ProductId, StoreId};

const LOCK: &str = "mutation($input: LockOrderInput!) {
    lockOrder(input: $input) { order { id status } errors { code } }
}";
const CANCEL: &str =
    "mutation($id: ID!) { cancelOrder(orderId: $id) { order { status } errors { code } } }";

/// Holds `quantity` units; the order id, or `None` when the stock is short.
async fn hold(app: &TestApp, token: &str, product: ProductId, quantity: i64) -> Option<String> {
    let body = app
        .graphql(
            LOCK,
            json!({ "input": { "items": [
                { "productId": product.0.to_string(), "quantity": quantity }
            ] } }),
            Some(token),
        )
        .await;
    let payload = &body["data"]["lockOrder"];
    match payload["order"]["id"].as_str() {
        Some(id) => Some(id.to_owned()),
        None => {
            assert_eq!(payload["errors"][0]["code"], "INSUFFICIENT_STOCK", "{body}");
            None
        }
    }
}

async fn cancel(app: &TestApp, token: &str, order: &str) {
    let body = app
        .graphql(CANCEL, json!({ "id": order }), Some(token))
        .await;
    assert_eq!(
        body["data"]["cancelOrder"]["order"]["status"], "CANCELLED",
        "{body}"
    );
}

fn available_of(payload: &Value) -> i64 {
    assert!(payload.get("errors").is_none(), "{payload}");
    payload["data"]["stockChanged"]["available"]
        .as_i64()
        .unwrap()
}

/// Reads stock updates until one says `expected`; fails after `limit`. Returns the
/// values seen on the way.
async fn until_available(subscriber: &mut Subscriber, expected: i64, limit: Duration) -> Vec<i64> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while seen.last() != Some(&expected) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("never saw {expected} within {limit:?}; saw {seen:?}"));
        match subscriber.event("s", left).await {
            Some(Event::Next(payload)) => seen.push(available_of(&payload)),
            None => panic!("never saw {expected} within {limit:?}; saw {seen:?}"),
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    seen
}

/// Holds expire after `hold_ttl` and the sweeper gives them back within 100ms.
fn quick_expiry(hold_ttl: &str) -> TestOptions {
    TestOptions::default()
        .arg("hold-ttl", hold_ttl)
        .arg("sweep-interval", "100ms")
}

/// A socket subscribed (as "s") to one product's stock.
async fn stock_subscriber(address: &str, product: ProductId) -> Subscriber {
    let mut subscriber = Subscriber::connect(address, None).await;
    subscriber
        .subscribe(
            "s",
            STOCK_CHANGED,
            json!({ "ids": [product.0.to_string()] }),
        )
        .await;
    subscriber
}

/// A product of `stock` units. One customer takes every hold in these tests, so the
/// per-customer hold cap is off.
async fn sale(options: TestOptions, stock: i64) -> (TestApp, StoreId, ProductId) {
    let app = spawn_app_with(options.arg("max-holds-per-customer", 0)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 1000, stock, None).await;
    (app, store, product)
}

#[tokio::test]
async fn stock_changed_sends_the_current_value_then_every_change() {
    // Holds expire after 2s and the sweeper looks every 100ms.
    let options = TestOptions::default()
        .arg("hold-ttl", "2s")
        .arg("sweep-interval", "100ms");
    let (app, store, product) = sale(options, 20).await;
    let (_, token) = app.create_customer().await;
    let mut subscriber = Subscriber::connect(&app.address, None).await;
    subscriber
        .subscribe(
            "s",
            STOCK_CHANGED,
            json!({ "ids": [product.0.to_string()] }),
        )
        .await;

    // The current value first.
    let first = subscriber.next_payload("s", Duration::from_secs(2)).await;
    assert_eq!(
        first["data"]["stockChanged"]["productId"],
        product.0.to_string()
    );
    assert_eq!(available_of(&first), 20);

    // Six holds, seen within a second.
    let started = Instant::now();
    let mut orders = Vec::new();
    for _ in 0..6 {
        orders.push(hold(&app, &token, product, 1).await.unwrap());
    }
    let seen = until_available(&mut subscriber, 14, Duration::from_secs(1)).await;
    eprintln!(
        "6 holds seen {:?} after the first: {seen:?}",
        started.elapsed()
    );
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");

    // A cancel.
    cancel(&app, &token, &orders[0]).await;
    until_available(&mut subscriber, 15, Duration::from_secs(1)).await;

    // The other five expire (2s after they were made; the sweeper gives them back).
    let seen = until_available(&mut subscriber, 20, Duration::from_secs(5)).await;
    assert!(seen.iter().all(|v| (15..=20).contains(v)), "{seen:?}");
    assert_eq!(app.available(store, product).await, 20);
}

#[tokio::test]
async fn the_last_value_a_subscriber_sees_is_the_true_one_after_a_burst() {
    let (app, store, product) = sale(TestOptions::default(), 25).await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut subscriber = stock_subscriber(&app.address, product).await;
        assert_eq!(
            available_of(&subscriber.next_payload("s", Duration::from_secs(2)).await),
            25
        );
        subscribers.push(subscriber);
    }
    let mut buyers = Vec::new();
    for _ in 0..10 {
        buyers.push(app.create_customer().await.1);
    }
    // 40 concurrent holds of one unit and 10 cancels race on 25 units.
    let holds = join_all((0..40).map(|i| hold(&app, &buyers[i % 10], product, 1))).await;
    let held: Vec<String> = holds.into_iter().flatten().collect();
    assert_eq!(held.len(), 25, "successes equal the stock");
    join_all(held.iter().take(10).enumerate().map(|(i, order)| {
        // Each order's owner is the buyer whose turn it was; try them all.
        let app = &app;
        let buyers = &buyers;
        async move {
            for token in buyers {
                let body = app
                    .graphql(CANCEL, json!({ "id": order }), Some(token))
                    .await;
                if body["data"]["cancelOrder"]["order"]["status"] == "CANCELLED" {
                    return;
                }
            }
            panic!("order {i} could not be cancelled");
        }
    }))
    .await;
    let truth = app.available(store, product).await;
    assert_eq!(truth, 10);
    for subscriber in &mut subscribers {
        until_available(subscriber, truth, Duration::from_secs(2)).await;
        // Nothing after it: the true value is the last one.
        let after = subscriber.event("s", Duration::from_millis(400)).await;
        assert!(after.is_none(), "{after:?}");
    }
}

#[tokio::test]
async fn order_changed_reports_expiry_to_the_owner_and_nothing_to_anyone_else() {
    let (app, _store, product) = sale(quick_expiry("1s"), 5).await;
    let (_, owner) = app.create_customer().await;
    let (_, other) = app.create_customer().await;
    let order = hold(&app, &owner, product, 2).await.unwrap();

    let mut watcher = Subscriber::connect(&app.address, Some(&owner)).await;
    watcher
        .subscribe("o", ORDER_CHANGED, json!({ "id": order }))
        .await;
    let now = watcher.next_payload("o", Duration::from_secs(2)).await;
    assert_eq!(now["data"]["orderChanged"]["id"], order);
    assert_eq!(now["data"]["orderChanged"]["status"], "HELD");
    let expired = watcher.next_payload("o", Duration::from_secs(4)).await;
    assert_eq!(
        expired["data"]["orderChanged"]["status"], "EXPIRED",
        "{expired}"
    );
    assert_eq!(expired["data"]["orderChanged"]["heldUntil"], Value::Null);
    assert!(matches!(
        watcher.event("o", Duration::from_secs(1)).await,
        Some(Event::Complete)
    ));

    // Someone else's order, an unknown one and a malformed id all read alike.
    let mut stranger = Subscriber::connect(&app.address, Some(&other)).await;
    let unknown = format!("{}-0193a6c4-7f21-7c3e-9a41-5d2b8e6f1a00", _store.0);
    for (id, target) in [
        ("a", order.as_str()),
        ("b", unknown.as_str()),
        ("c", "nope"),
    ] {
        stranger
            .subscribe(id, ORDER_CHANGED, json!({ "id": target }))
            .await;
        let payload = stranger.next_payload(id, Duration::from_secs(2)).await;
        assert_eq!(
            payload["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{payload}"
        );
        assert_eq!(payload["errors"][0]["message"], "order not found");
        assert!(
            payload.get("data").is_none_or(Value::is_null),
            "no data: {payload}"
        );
        assert!(matches!(
            stranger.event(id, Duration::from_secs(1)).await,
            Some(Event::Complete)
        ));
    }

    // Without a token there is no viewer.
    let mut anonymous = Subscriber::connect(&app.address, None).await;
    anonymous
        .subscribe("x", ORDER_CHANGED, json!({ "id": order }))
        .await;
    let payload = anonymous.next_payload("x", Duration::from_secs(2)).await;
    assert_eq!(
        payload["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn order_changed_without_an_id_follows_every_order_of_the_viewer() {
    let (app, _store, product) = sale(TestOptions::default(), 5).await;
    let (_, owner) = app.create_customer().await;
    let (_, other) = app.create_customer().await;
    let mut watcher = Subscriber::connect_with(&app.address, LEGACY_WS, Some(&owner)).await;
    watcher.subscribe("all", ORDER_CHANGED, json!({})).await;
    // Give the subscription a moment to start before the changes it must see.
    tokio::time::sleep(Duration::from_millis(200)).await;

    hold(&app, &other, product, 1).await.unwrap();
    let order = hold(&app, &owner, product, 1).await.unwrap();
    cancel(&app, &owner, &order).await;
    for status in ["HELD", "CANCELLED"] {
        let payload = watcher.next_payload("all", Duration::from_secs(2)).await;
        assert_eq!(payload["data"]["orderChanged"]["id"], order, "{payload}");
        assert_eq!(payload["data"]["orderChanged"]["status"], status);
    }
    assert!(
        watcher
            .event("all", Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn subscription_input_is_checked_like_any_request() {
    let (app, _store, product) = sale(TestOptions::default(), 5).await;
    let mut subscriber = Subscriber::connect(&app.address, None).await;
    let too_many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    let cases = [
        ("none", json!({ "ids": [] }), "BAD_USER_INPUT"),
        ("many", json!({ "ids": too_many }), "BAD_USER_INPUT"),
        (
            "unknown",
            json!({ "ids": [product.0.to_string(), "999999"] }),
            "NOT_FOUND",
        ),
    ];
    for (id, variables, code) in cases {
        subscriber.subscribe(id, STOCK_CHANGED, variables).await;
        let payload = subscriber.next_payload(id, Duration::from_secs(2)).await;
        assert_eq!(
            payload["errors"][0]["extensions"]["code"], code,
            "{id}: {payload}"
        );
    }
    // Documents are costed as on POST.
    let nested = format!(
        "subscription {{ stockChanged(productIds: {}\"1\"{}) {{ productId }} }}",
        "[".repeat(40),
        "]".repeat(40)
    );
    subscriber.subscribe("deep", &nested, json!({})).await;
    let payload = subscriber
        .next_payload("deep", Duration::from_secs(2))
        .await;
    assert_eq!(
        payload["errors"][0]["extensions"]["code"], "QUERY_TOO_DEEP",
        "{payload}"
    );
}

#[tokio::test]
async fn a_socket_holds_at_most_ten_subscriptions() {
    let (app, _store, product) = sale(TestOptions::default(), 5).await;
    let mut subscriber = Subscriber::connect(&app.address, None).await;
    let ids = json!({ "ids": [product.0.to_string()] });
    for i in 0..10 {
        subscriber
            .subscribe(&format!("s{i}"), STOCK_CHANGED, ids.clone())
            .await;
        subscriber
            .next_payload(&format!("s{i}"), Duration::from_secs(2))
            .await;
    }
    subscriber
        .subscribe("s10", STOCK_CHANGED, ids.clone())
        .await;
    match subscriber.event("s10", Duration::from_secs(2)).await {
        Some(Event::Error(payload)) => {
            assert_eq!(
                payload[0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
                "{payload}"
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // Completing one makes room.
    subscriber
        .send(json!({ "type": "complete", "id": "s3" }))
        .await;
    subscriber.subscribe("s11", STOCK_CHANGED, ids).await;
    let payload = subscriber.next_payload("s11", Duration::from_secs(2)).await;
    assert_eq!(available_of(&payload), 5);
}

#[tokio::test]
async fn a_socket_without_connection_init_is_closed_with_4408() {
    let app = spawn_app_with(TestOptions::default().arg("ws-init-timeout", "300ms")).await;
    let mut silent = Subscriber::open(&app.address, crate::subscriber::TRANSPORT_WS).await;
    let started = Instant::now();
    let (code, reason) = silent.closed(Duration::from_secs(3)).await;
    assert_eq!(code, 4408, "{reason}");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // One that does init in time stays open past the timeout.
    let mut polite = Subscriber::connect(&app.address, None).await;
    assert!(
        polite
            .try_message(Duration::from_millis(600))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_bad_token_or_an_oversized_message_closes_the_socket() {
    let app = spawn_app_with(TestOptions::default().arg("max-body-bytes", 2048)).await;
    let mut forged = Subscriber::open(&app.address, crate::subscriber::TRANSPORT_WS).await;
    forged
        .init(json!({ "authorization": "Bearer not-a-token" }))
        .await;
    assert_eq!(forged.closed(Duration::from_secs(2)).await.0, 4403);

    let mut big = Subscriber::connect(&app.address, None).await;
    big.send_raw(format!(
        "{{\"type\":\"ping\",\"payload\":\"{}\"}}",
        "x".repeat(4096)
    ))
    .await;
    assert_eq!(big.closed(Duration::from_secs(2)).await.0, 1009);
}

#[tokio::test]
async fn connections_over_the_caps_are_refused_before_the_upgrade() {
    let app = spawn_app_with(
        TestOptions::default()
            .arg("ws-max-connections-per-address", 2)
            .arg("ws-max-connections", 50),
    )
    .await;
    let first = Subscriber::connect(&app.address, None).await;
    let _second = Subscriber::connect(&app.address, None).await;
    let (status, body) = refused_upgrade(&app.address).await;
    assert_eq!(status, 429);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "TOO_MANY_CONNECTIONS"
    );
    // A closed socket gives its place back.
    first.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _third = Subscriber::connect(&app.address, None).await;

    let app = spawn_app_with(TestOptions::default().arg("ws-max-connections", 1)).await;
    let _only = Subscriber::connect(&app.address, None).await;
    let (status, body) = refused_upgrade(&app.address).await;
    assert_eq!(status, 503);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "TOO_MANY_CONNECTIONS"
    );
}

/// Resident memory of a process, from /proc (Linux).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn five_hundred_subscribers_see_the_sell_out_and_sigterm_closes_them_with_1001() {
    let _serial = one_at_a_time().await;
    const SUBSCRIBERS: usize = 500;
    const STOCK: i64 = 150;
    let (app, store, product) = sale(TestOptions::default(), STOCK).await;
    let service = crate::process::ServiceProcess::start(
        &app,
        &crate::helpers::redis_url(),
        &[
            ("WS_MAX_CONNECTIONS_PER_ADDRESS", "1000"),
            ("MAX_HOLDS_PER_CUSTOMER", "0"),
        ],
    )
    .await;
    let before = rss_kib(service.pid());
    let subscribers = join_all((0..SUBSCRIBERS).map(|_| {
        let address = service.address.clone();
        async move {
            let mut subscriber = stock_subscriber(&address, product).await;
            let first = subscriber.next_payload("s", Duration::from_secs(10)).await;
            assert_eq!(available_of(&first), STOCK);
            subscriber
        }
    }))
    .await;
    let after = rss_kib(service.pid());
    eprintln!(
        "{SUBSCRIBERS} subscribers: service RSS {before} KiB -> {after} KiB, {:.1} KiB per socket",
        (after.saturating_sub(before)) as f64 / SUBSCRIBERS as f64
    );

    // 30 buyers hold one unit at a time until the product is sold out.
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for _ in 0..30 {
        tokens.push(app.create_customer().await.1);
    }
    let started = Instant::now();
    let held = join_all(tokens.iter().map(|token| {
        let http = &http;
        let address = &service.address;
        async move {
            let mut held = 0;
            loop {
                let body: Value = http
                    .post(format!("{address}/graphql"))
                    .bearer_auth(token)
                    .json(&json!({ "query": LOCK, "variables": { "input": { "items": [
                        { "productId": product.0.to_string(), "quantity": 1 }
                    ] } } }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if body["data"]["lockOrder"]["order"]["id"].is_string() {
                    held += 1;
                } else {
                    assert_eq!(
                        body["data"]["lockOrder"]["errors"][0]["code"], "INSUFFICIENT_STOCK",
                        "{body}"
                    );
                    return held;
                }
            }
        }
    }))
    .await;
    let sold_out = started.elapsed();
    assert_eq!(held.iter().sum::<i64>(), STOCK, "successes equal the stock");
    assert_eq!(app.available(store, product).await, 0);

    let mut subscribers = join_all(subscribers.into_iter().map(|mut subscriber| async move {
        until_available(&mut subscriber, 0, Duration::from_secs(5)).await;
        subscriber
    }))
    .await;
    eprintln!(
        "sold out in {sold_out:?}; all {SUBSCRIBERS} subscribers saw 0 within {:?} of the first hold",
        started.elapsed()
    );

    // SIGTERM: every socket is closed with 1001, and the process exits.
    service.terminate();
    let codes = join_all(
        subscribers
            .iter_mut()
            .map(|subscriber| subscriber.closed(Duration::from_secs(10))),
    )
    .await;
    assert!(
        codes.iter().all(|(code, _)| *code == 1001),
        "{:?}",
        &codes[..3]
    );
    let mut service = service;
    assert!(
        service
            .wait_for_exit(Duration::from_secs(15))
            .await
            .is_some()
    );
}

// The standard stockChanged document is served from one response rendered per change and
// shared by every socket; any other form is executed by async-graphql. These pin that both
// give the same answers.

const ALIASED: &str = "subscription($ids: [ID!]!) {
    stockChanged(productIds: $ids) { id: productId left: available }
}";
const WITH_TYPENAME: &str = "subscription($ids: [ID!]!) {
    stockChanged(productIds: $ids) { __typename productId available }
}";
const REVERSED: &str =
    "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { available productId } }";

/// Every message until none comes for `quiet` (at most `limit`), as written, by id.
async fn texts_until_quiet(
    subscriber: &mut Subscriber,
    quiet: Duration,
    limit: Duration,
) -> std::collections::HashMap<String, Vec<String>> {
    let deadline = Instant::now() + limit;
    let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
    while let Some(text) = subscriber.try_text(quiet).await {
        let message: Value = serde_json::from_str(&text).unwrap();
        let id = message["id"].as_str().unwrap_or_default().to_owned();
        seen.entry(id).or_default().push(text);
        assert!(Instant::now() < deadline, "still talking after {limit:?}");
    }
    seen
}

fn payload_of(text: &str) -> Value {
    let message: Value = serde_json::from_str(text).unwrap();
    assert!(
        matches!(message["type"].as_str(), Some("next" | "data")),
        "{text}"
    );
    assert!(message["payload"].get("errors").is_none(), "{text}");
    message["payload"].clone()
}

/// Holds 12 units in a burst and cancels 4: `stock - 8` left.
async fn burst(app: &TestApp, product: ProductId) {
    let (_, token) = app.create_customer().await;
    let holds = join_all((0..12).map(|_| hold(app, &token, product, 1))).await;
    let held: Vec<String> = holds.into_iter().flatten().collect();
    assert_eq!(held.len(), 12);
    join_all(held.iter().take(4).map(|order| cancel(app, &token, order))).await;
}

#[tokio::test]
async fn shared_and_executed_stock_subscriptions_send_the_same_bytes() {
    let (app, store, product) = sale(TestOptions::default(), 30).await;
    let id = product.0.to_string();
    let mut subscriber = Subscriber::connect(&app.address, None).await;
    // The standard form, and the same document with a variable it does not use: async-graphql
    // ignores the extra value, the shared path leaves such a request to it.
    subscriber
        .subscribe("shared", STOCK_CHANGED, json!({ "ids": [id] }))
        .await;
    subscriber
        .subscribe(
            "executed",
            STOCK_CHANGED,
            json!({ "ids": [id], "unused": 1 }),
        )
        .await;
    let same = |shared: &str, executed: &str| {
        assert_eq!(
            shared.replacen(r#""id":"shared""#, r#""id":"executed""#, 1),
            executed
        );
    };
    let first = texts_until_quiet(
        &mut subscriber,
        Duration::from_millis(500),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(first["shared"].len(), 1, "{first:?}");
    assert_eq!(first["executed"].len(), 1, "{first:?}");
    same(&first["shared"][0], &first["executed"][0]);
    assert_eq!(
        first["executed"][0],
        format!(
            r#"{{"type":"next","id":"executed","payload":{{"data":{{"stockChanged":{{"productId":"{id}","available":30}}}}}}}}"#
        )
    );

    burst(&app, product).await;
    let truth = app.available(store, product).await;
    assert_eq!(truth, 22);
    let after = texts_until_quiet(
        &mut subscriber,
        Duration::from_millis(500),
        Duration::from_secs(5),
    )
    .await;
    let (shared, executed) = (after["shared"].last(), after["executed"].last());
    same(shared.unwrap(), executed.unwrap());
    assert_eq!(available_of(&payload_of(shared.unwrap())), truth);
}

#[tokio::test]
async fn every_form_of_stock_subscription_gets_its_own_shape_and_the_true_last_value() {
    let (app, store, product) = sale(TestOptions::default(), 30).await;
    let id = product.0.to_string();
    let ids = json!({ "ids": [id] });
    let mut subscriber = Subscriber::connect(&app.address, None).await;
    subscriber
        .subscribe("plain", STOCK_CHANGED, ids.clone())
        .await;
    subscriber.subscribe("aliased", ALIASED, ids.clone()).await;
    subscriber
        .subscribe("typename", WITH_TYPENAME, ids.clone())
        .await;
    subscriber
        .subscribe("reversed", REVERSED, ids.clone())
        .await;
    let literal = format!(
        r#"subscription Live {{ stockChanged(productIds: ["{id}", "{id}"]) {{ productId available }} }}"#
    );
    subscriber
        .send(json!({
            "type": "subscribe", "id": "literal",
            "payload": { "query": literal, "operationName": "Live" },
        }))
        .await;
    let mut legacy = Subscriber::connect_with(&app.address, LEGACY_WS, None).await;
    legacy.subscribe("legacy", STOCK_CHANGED, ids.clone()).await;
    // Everyone has the current value before the sale starts.
    for (socket, count) in [(&mut subscriber, 5), (&mut legacy, 1)] {
        let first =
            texts_until_quiet(socket, Duration::from_millis(500), Duration::from_secs(5)).await;
        assert_eq!(first.len(), count, "{first:?}");
    }

    burst(&app, product).await;
    let truth = app.available(store, product).await;
    assert_eq!(truth, 22);
    let mut seen = texts_until_quiet(
        &mut subscriber,
        Duration::from_millis(500),
        Duration::from_secs(5),
    )
    .await;
    seen.extend(
        texts_until_quiet(
            &mut legacy,
            Duration::from_millis(500),
            Duration::from_secs(5),
        )
        .await,
    );
    let last = |name: &str| payload_of(seen[name].last().unwrap())["data"]["stockChanged"].clone();
    for name in ["plain", "literal", "legacy"] {
        assert_eq!(
            last(name),
            json!({ "productId": id, "available": truth }),
            "{name}"
        );
    }
    assert_eq!(last("aliased"), json!({ "id": id, "left": truth }));
    assert_eq!(
        last("typename"),
        json!({ "__typename": "StockUpdate", "productId": id, "available": truth })
    );
    assert_eq!(
        last("reversed"),
        json!({ "available": truth, "productId": id })
    );
    assert!(
        seen["reversed"]
            .last()
            .unwrap()
            .contains(&format!(r#"{{"available":{truth},"productId":"{id}"}}"#)),
        "fields come in the order selected"
    );
    // Values only ever go down during the holds and up with the cancels: none is made up.
    for (name, texts) in &seen {
        for text in texts {
            let update = &payload_of(text)["data"]["stockChanged"];
            let value = update["available"]
                .as_i64()
                .or(update["left"].as_i64())
                .unwrap();
            assert!((18..=30).contains(&value), "{name}: {text}");
        }
    }
}

#[tokio::test]
async fn a_shared_stock_subscription_completes_and_gives_its_id_back_like_any_other() {
    let (app, _store, product) = sale(TestOptions::default(), 30).await;
    let ids = json!({ "ids": [product.0.to_string()] });
    let (_, token) = app.create_customer().await;
    let mut subscriber = Subscriber::connect(&app.address, None).await;
    subscriber.subscribe("s", STOCK_CHANGED, ids.clone()).await;
    assert_eq!(
        available_of(&subscriber.next_payload("s", Duration::from_secs(2)).await),
        30
    );
    subscriber
        .send(json!({ "type": "complete", "id": "s" }))
        .await;
    assert!(matches!(
        subscriber.event("s", Duration::from_secs(2)).await,
        Some(Event::Complete)
    ));

    // The id again, in another form: only that form answers from now on.
    subscriber.subscribe("s", ALIASED, ids.clone()).await;
    let payload = subscriber.next_payload("s", Duration::from_secs(2)).await;
    assert_eq!(payload["data"]["stockChanged"]["left"], 30, "{payload}");
    // A running id taken by a new subscription replaces it (as async-graphql does), in
    // either direction.
    subscriber.subscribe("s", STOCK_CHANGED, ids.clone()).await;
    assert_eq!(
        available_of(&subscriber.next_payload("s", Duration::from_secs(2)).await),
        30
    );
    subscriber.subscribe("s", REVERSED, ids.clone()).await;
    let payload = subscriber.next_payload("s", Duration::from_secs(2)).await;
    assert_eq!(
        payload["data"]["stockChanged"]["available"], 30,
        "{payload}"
    );

    hold(&app, &token, product, 1).await.unwrap();
    let after = texts_until_quiet(
        &mut subscriber,
        Duration::from_millis(500),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(after["s"].len(), 1, "one subscription answers: {after:?}");
    assert!(
        after["s"][0].contains(r#"{"available":29,"productId""#),
        "{after:?}"
    );
}

#[tokio::test]
async fn the_update_budget_stretches_each_subscribers_interval_and_the_last_value_stays_true() {
    // 11 subscriptions on a budget of 20 updates a second: each is sent one update every
    // 11 / 20 = 0.55 s at most, whatever LIVE_MIN_INTERVAL (100ms) allows.
    let options = TestOptions::default()
        .arg("live-min-interval", "100ms")
        .arg("live-max-updates-per-second", 20);
    let (app, store, product) = sale(options, 100).await;
    let (_, token) = app.create_customer().await;
    let mut subscribers = Vec::new();
    for n in 0..11 {
        let mut subscriber = Subscriber::connect(&app.address, None).await;
        // One goes through async-graphql's executor rather than the shared responses.
        let query = if n == 0 { ALIASED } else { STOCK_CHANGED };
        subscriber
            .subscribe("s", query, json!({ "ids": [product.0.to_string()] }))
            .await;
        subscriber.next_payload("s", Duration::from_secs(2)).await;
        subscribers.push(subscriber);
    }
    // Past every first update's interval, so each subscriber's next one is paced anew.
    tokio::time::sleep(Duration::from_millis(700)).await;

    // A hold every 50 ms for 2 s: without the budget, an update every 100 ms.
    let selling = async {
        for _ in 0..40 {
            hold(&app, &token, product, 1).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let watching = join_all(subscribers.iter_mut().map(|subscriber| async move {
        let mut seen: Vec<(Instant, i64)> = Vec::new();
        while seen.last().map(|(_, available)| *available) != Some(60) {
            match subscriber.event("s", Duration::from_secs(5)).await {
                Some(Event::Next(payload)) => {
                    let available = payload["data"]["stockChanged"]["available"]
                        .as_i64()
                        .or_else(|| payload["data"]["stockChanged"]["left"].as_i64())
                        .unwrap_or_else(|| panic!("{payload}"));
                    seen.push((Instant::now(), available));
                }
                other => panic!("never saw 60; saw {seen:?}, then {other:?}"),
            }
        }
        // Nothing after the true value.
        let after = subscriber.event("s", Duration::from_millis(800)).await;
        assert!(after.is_none(), "{after:?}");
        seen
    }));
    let started = Instant::now();
    let (sold_in, seen) = tokio::join!(
        async {
            selling.await;
            started.elapsed()
        },
        watching
    );
    assert_eq!(app.available(store, product).await, 60);
    for updates in seen {
        let gaps: Vec<Duration> = updates
            .windows(2)
            .map(|pair| pair[1].0 - pair[0].0)
            .collect();
        let values: Vec<i64> = updates.iter().map(|(_, available)| *available).collect();
        // The first update after the sale began may come at once; every later one waits out
        // the stretched interval (less delivery jitter on a busy machine; without the budget
        // the gaps are 100 ms).
        assert!(
            gaps.iter().all(|gap| *gap >= Duration::from_millis(350)),
            "{gaps:?} {values:?}"
        );
        // At most one update per 0.55 s of selling, plus the first and the last.
        let most = 2 + (sold_in.as_secs_f64() / 0.55).ceil() as usize;
        assert!(updates.len() <= most, "{values:?} in {sold_in:?}");
        assert!(values.windows(2).all(|w| w[0] > w[1]), "{values:?}");
    }
}
