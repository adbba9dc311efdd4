//! /metrics on its own listener: a scripted sale moves each counter by exactly what it
//! did. The recorder is global to a process, so the service runs as a process of its own,
//! on a private Redis without keyspace notifications: the sweeper alone releases, and
//! which path released a hold is known in advance.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{PrivateRedis, TestApp, TestOptions, one_at_a_time, spawn_app_with};
use crate::process::ServiceProcess;
use flashstock::domain::ProductId;

const LOCK: &str = "mutation Lock($input: LockOrderInput!) {
    lockOrder(input: $input) { order { id status } errors { code } }
}";
const CONFIRM: &str = "mutation($input: ConfirmOrderInput!) {
    confirmOrder(input: $input) { order { id status } errors { code } }
}";
const CANCEL: &str = "mutation($id: ID!) {
    cancelOrder(orderId: $id) { order { id status } errors { code } }
}";

/// One scrape: every sample by its series as rendered (`name{label="value"}`).
struct Scrape(HashMap<String, f64>);

impl Scrape {
    async fn take(service: &ServiceProcess) -> (Self, String) {
        let response = reqwest::get(format!("{}/metrics", service.metrics_address))
            .await
            .expect("metrics answer");
        assert!(response.status().is_success());
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        (Self(samples), text)
    }

    /// A series never recorded reads 0, as Prometheus's `increase` treats a new series.
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

/// One product of 5 units and a customer, served by the service as a process of its own
/// on a private Redis (no keyspace notifications) with `env`.
struct Sale {
    app: TestApp,
    service: ServiceProcess,
    product: ProductId,
    token: String,
    _redis: PrivateRedis,
}

impl Sale {
    async fn start(env: &[(&str, &str)]) -> Self {
        let redis = PrivateRedis::start();
        let mut app = spawn_app_with(TestOptions::default().arg("redis-url", redis.url())).await;
        let store = app.create_store().await;
        let product = app.create_product(store, 1500, 5, None).await;
        let (_, token) = app.create_customer().await;
        app.stop().await;
        // One customer takes every hold of the scenario: the per-customer hold cap is off.
        let env: Vec<(&str, &str)> = [("MAX_HOLDS_PER_CUSTOMER", "0")]
            .into_iter()
            .chain(env.iter().copied())
            .collect();
        let service = ServiceProcess::start(&app, &redis.url(), &env).await;
        app.address = service.address.clone();
        Self {
            app,
            service,
            product,
            token,
            _redis: redis,
        }
    }
}

async fn lock(app: &TestApp, token: &str, product: ProductId) -> Value {
    let body = app
        .graphql(
            LOCK,
            json!({ "input": { "items": [{ "productId": product.0.to_string(), "quantity": 1 }] } }),
            Some(token),
        )
        .await;
    body["data"]["lockOrder"].clone()
}

async fn scrape_until(
    service: &ServiceProcess,
    what: &str,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (scrape, text) = Scrape::take(service).await;
        if done(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "{what} never happened:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_scripted_sale_moves_every_counter_by_exactly_what_it_did() {
    let _serial = one_at_a_time().await;
    let sale = Sale::start(&[
        ("HOLD_TTL", "3s"),
        ("SWEEP_INTERVAL", "300ms"),
        ("FLUSH_ENABLED", "true"),
    ])
    .await;
    let Sale {
        app,
        service,
        product,
        token,
        _redis: _private_redis,
    } = sale;
    let (before, _) = Scrape::take(&service).await;

    let mut holds = Vec::new();
    for _ in 0..5 {
        let locked = lock(&app, &token, product).await;
        assert_eq!(locked["order"]["status"], "HELD", "{locked}");
        holds.push(locked["order"]["id"].as_str().unwrap().to_owned());
    }
    for _ in 0..3 {
        let refused = lock(&app, &token, product).await;
        assert_eq!(
            refused["errors"][0]["code"], "INSUFFICIENT_STOCK",
            "{refused}"
        );
    }
    let cancelled = app
        .graphql(CANCEL, json!({ "id": holds[0] }), Some(&token))
        .await;
    assert_eq!(
        cancelled["data"]["cancelOrder"]["order"]["status"], "CANCELLED",
        "{cancelled}"
    );
    let confirmed = app
        .graphql(
            CONFIRM,
            json!({ "input": { "orderId": holds[1], "paymentReference": "pay-1" } }),
            Some(&token),
        )
        .await;
    assert_eq!(
        confirmed["data"]["confirmOrder"]["order"]["status"], "CONFIRMED",
        "{confirmed}"
    );

    // The other three expire; the sweeper releases them.
    let after = scrape_until(&service, "three releases by the sweeper", |s| {
        s.get(r#"flashstock_releases_total{cause="sweeper"}"#) >= 3.0
    })
    .await;
    let moved = |series: &str| after.get(series) - before.get(series);
    for (series, expected) in [
        (r#"flashstock_lock_orders_total{outcome="held"}"#, 5.0),
        (
            r#"flashstock_lock_orders_total{outcome="insufficient_stock"}"#,
            3.0,
        ),
        (r#"flashstock_lock_orders_total{outcome="existing"}"#, 0.0),
        (r#"flashstock_order_transitions_total{to="confirmed"}"#, 1.0),
        (r#"flashstock_order_transitions_total{to="cancelled"}"#, 1.0),
        (r#"flashstock_order_transitions_total{to="expired"}"#, 3.0),
        (r#"flashstock_releases_total{cause="cancel"}"#, 1.0),
        (r#"flashstock_releases_total{cause="sweeper"}"#, 3.0),
        (r#"flashstock_releases_total{cause="expiry_event"}"#, 0.0),
        (r#"flashstock_releases_total{cause="lazy"}"#, 0.0),
        (
            r#"flashstock_graphql_request_duration_seconds_count{field="lockOrder"}"#,
            8.0,
        ),
        (
            r#"flashstock_graphql_request_duration_seconds_count{field="cancelOrder"}"#,
            1.0,
        ),
        (
            r#"flashstock_graphql_request_duration_seconds_count{field="confirmOrder"}"#,
            1.0,
        ),
        (
            r#"flashstock_redis_script_duration_seconds_count{script="lock"}"#,
            8.0,
        ),
        (
            r#"flashstock_redis_script_duration_seconds_count{script="cancel"}"#,
            1.0,
        ),
        (
            r#"flashstock_redis_script_duration_seconds_count{script="confirm"}"#,
            1.0,
        ),
        (
            r#"flashstock_http_requests_total{route="/graphql",status="200"}"#,
            10.0,
        ),
    ] {
        assert_eq!(moved(series), expected, "{series}");
    }
    // Ten events in the outbox (five holds, five transitions), all flushed to MySQL.
    let flushed = scrape_until(&service, "the outbox drained", |s| {
        s.get("flashstock_flush_batch_size_sum") - before.get("flashstock_flush_batch_size_sum")
            >= 10.0
            && s.0.get("flashstock_outbox_pending") == Some(&0.0)
    })
    .await;
    assert_eq!(
        flushed.get("flashstock_flush_batch_size_sum")
            - before.get("flashstock_flush_batch_size_sum"),
        10.0
    );
    assert_eq!(flushed.get("flashstock_outbox_dead_letters"), 0.0);
    assert!(flushed.get("flashstock_flush_duration_seconds_count") >= 1.0);
    assert!(flushed.0.contains_key("process_cpu_seconds_total"));
    assert!(
        flushed.0.contains_key(
            r#"flashstock_redis_script_duration_seconds_bucket{script="lock",le="0.00005"}"#
        ),
        "sub-millisecond buckets"
    );
}

#[tokio::test]
async fn confirming_or_cancelling_past_the_deadline_counts_a_lazy_release() {
    let _serial = one_at_a_time().await;
    // A sweeper that never comes back: only the late calls release.
    let sale = Sale::start(&[("HOLD_TTL", "1s"), ("SWEEP_INTERVAL", "1h")]).await;
    let Sale {
        app,
        service,
        product,
        token,
        _redis: _private_redis,
    } = sale;
    let (before, _) = Scrape::take(&service).await;
    let first = lock(&app, &token, product).await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = lock(&app, &token, product).await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let late = app
        .graphql(
            CONFIRM,
            json!({ "input": { "orderId": first, "paymentReference": "pay-1" } }),
            Some(&token),
        )
        .await;
    assert_eq!(
        late["data"]["confirmOrder"]["errors"][0]["code"], "HOLD_EXPIRED",
        "{late}"
    );
    let late = app
        .graphql(CANCEL, json!({ "id": second }), Some(&token))
        .await;
    assert_eq!(
        late["data"]["cancelOrder"]["errors"][0]["code"], "HOLD_EXPIRED",
        "{late}"
    );
    // Asked again: already expired, nothing released twice.
    app.graphql(CANCEL, json!({ "id": second }), Some(&token))
        .await;

    let (after, _) = Scrape::take(&service).await;
    let moved = |series: &str| after.get(series) - before.get(series);
    assert_eq!(moved(r#"flashstock_releases_total{cause="lazy"}"#), 2.0);
    assert_eq!(
        moved(r#"flashstock_order_transitions_total{to="expired"}"#),
        2.0
    );
    assert_eq!(
        moved(r#"flashstock_order_transitions_total{to="confirmed"}"#),
        0.0
    );
    assert_eq!(moved(r#"flashstock_releases_total{cause="cancel"}"#), 0.0);
}

#[tokio::test]
async fn metrics_are_not_served_on_the_api_port() {
    let app = crate::helpers::spawn_app().await;
    let response = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn the_live_gauges_show_the_watches_and_the_interval_the_budget_holds_them_to() {
    let _serial = one_at_a_time().await;
    let sale = Sale::start(&[
        ("LIVE_MIN_INTERVAL", "100ms"),
        ("LIVE_MAX_UPDATES_PER_SECOND", "10"),
    ])
    .await;
    let idle = scrape_until(&sale.service, "the live gauges", |s| {
        s.0.contains_key("flashstock_live_update_interval_seconds")
    })
    .await;
    assert_eq!(idle.get("flashstock_live_stock_watches"), 0.0);
    assert_eq!(idle.get("flashstock_live_update_interval_seconds"), 0.1);

    // 30 watches on a budget of 10 updates a second: each one every 3 s.
    let mut subscribers = Vec::new();
    for _ in 0..30 {
        let mut subscriber =
            crate::subscriber::Subscriber::connect(&sale.service.address, None).await;
        subscriber
            .subscribe(
                "s",
                crate::subscriber::STOCK_CHANGED,
                json!({ "ids": [sale.product.0.to_string()] }),
            )
            .await;
        subscriber.next_payload("s", Duration::from_secs(5)).await;
        subscribers.push(subscriber);
    }
    let busy = scrape_until(&sale.service, "30 watches", |s| {
        s.get("flashstock_live_stock_watches") == 30.0
    })
    .await;
    assert_eq!(busy.get("flashstock_live_update_interval_seconds"), 3.0);

    drop(subscribers);
    let after = scrape_until(&sale.service, "the watches gone", |s| {
        s.get("flashstock_live_stock_watches") == 0.0
    })
    .await;
    assert_eq!(after.get("flashstock_live_update_interval_seconds"), 0.1);
}

#[tokio::test]
async fn replica_waits_are_counted_by_outcome() {
    let _serial = one_at_a_time().await;
    // The private Redis has no replica: every WAIT 1 runs out.
    let sale = Sale::start(&[("REDIS_WAIT_REPLICAS", "1"), ("REDIS_WAIT_TIMEOUT", "10ms")]).await;
    for _ in 0..3 {
        let payload = lock(&sale.app, &sale.token, sale.product).await;
        assert_eq!(payload["order"]["status"], "HELD", "{payload}");
        assert_eq!(payload["errors"][0]["code"], "NOT_REPLICATED", "{payload}");
    }
    let counted = scrape_until(&sale.service, "three timed-out waits", |s| {
        s.get(r#"flashstock_replica_waits_total{script="lock",outcome="timed_out"}"#) >= 3.0
    })
    .await;
    assert_eq!(
        counted.get(r#"flashstock_replica_waits_total{script="lock",outcome="timed_out"}"#),
        3.0
    );
    assert_eq!(
        counted.get(r#"flashstock_replica_waits_total{script="lock",outcome="replicated"}"#),
        0.0
    );
}

#[tokio::test]
async fn a_unit_handed_to_a_waiting_customer_is_counted_once_flushed() {
    let _serial = one_at_a_time().await;
    let sale = Sale::start(&[("FLUSH_ENABLED", "true")]).await;
    // The buyer takes all 5 units; a second customer waits for one.
    let mut held = Vec::new();
    for _ in 0..5 {
        let payload = lock(&sale.app, &sale.token, sale.product).await;
        held.push(payload["order"]["id"].as_str().unwrap().to_owned());
    }
    let (_, waiter) = sale.app.create_customer().await;
    let joined = sale
        .app
        .graphql(
            "mutation($id: ID!) { joinWaitlist(productId: $id, quantity: 1) { entry { position } errors { code } } }",
            json!({ "id": sale.product.0.to_string() }),
            Some(&waiter),
        )
        .await;
    assert_eq!(
        joined["data"]["joinWaitlist"]["entry"]["position"], 1,
        "{joined}"
    );
    let before = Scrape::take(&sale.service).await.0;
    let cancelled = sale
        .app
        .graphql(CANCEL, json!({ "id": held[0] }), Some(&sale.token))
        .await;
    assert_eq!(
        cancelled["data"]["cancelOrder"]["order"]["status"], "CANCELLED",
        "{cancelled}"
    );
    let after = scrape_until(&sale.service, "the hand-over flushed", |s| {
        s.get("flashstock_waitlist_handovers_total")
            - before.get("flashstock_waitlist_handovers_total")
            >= 1.0
            && s.0.get("flashstock_outbox_pending") == Some(&0.0)
    })
    .await;
    assert_eq!(
        after.get("flashstock_waitlist_handovers_total")
            - before.get("flashstock_waitlist_handovers_total"),
        1.0
    );
}
