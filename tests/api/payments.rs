//! PAYMENT_CONFIRMATION=webhook: only a signed payment notification confirms an order.

use std::time::Duration;

use flashstock::domain::{ProductId, StoreId};
use flashstock::payments::signature;
use futures_util::future::join_all;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestOptions, one_at_a_time, spawn_app, spawn_app_with};

const SECRET: &str = "whsec-test-0123456789abcdef0123456789abcdef";

fn webhook_mode() -> TestOptions {
    TestOptions::default()
        .arg("payment-confirmation", "webhook")
        .arg("payment-webhook-secret", SECRET)
}

const LOCK: &str = "mutation($input: LockOrderInput!) {
    lockOrder(input: $input) { order { id status totalCents } errors { code } } }";
const CONFIRM: &str = "mutation($id: ID!, $ref: String!) {
    confirmOrder(input: { orderId: $id, paymentReference: $ref }) {
        order { id status paymentReference } errors { code } } }";
const ORDER: &str = "query($id: ID!) { order(id: $id) { id status paymentReference } }";

/// Holds `quantity` units for the token's customer; returns (order id, total in cents).
async fn lock(app: &TestApp, token: &str, product: ProductId, quantity: i64) -> (String, i64) {
    let input = json!({ "items": [{ "productId": product.to_string(), "quantity": quantity }] });
    let body = app
        .graphql(LOCK, json!({ "input": input }), Some(token))
        .await;
    let order = &body["data"]["lockOrder"]["order"];
    assert_eq!(order["status"], "HELD", "{body}");
    (
        order["id"].as_str().unwrap().to_owned(),
        order["totalCents"].as_i64().unwrap(),
    )
}

fn event(id: &str, order: &str, amount_cents: i64) -> Value {
    json!({
        "id": id,
        "type": "payment.succeeded",
        "orderId": order,
        "paymentReference": format!("pay-{id}"),
        "amountCents": amount_cents,
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// POSTs `body` as the provider would, with `header` as Flashstock-Signature (none: no header).
async fn deliver(app: &TestApp, body: &[u8], header: Option<String>) -> (u16, Value) {
    let mut request = app
        .http
        .post(format!("{}/webhooks/payment", app.address))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(header) = header {
        request = request.header(signature::HEADER, header);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Signs `event` with the service's secret at `timestamp` and delivers it.
async fn pay_at(app: &TestApp, event: &Value, timestamp: i64) -> (u16, Value) {
    let body = serde_json::to_vec(event).unwrap();
    let header = signature::sign(SECRET.as_bytes(), timestamp, &body);
    deliver(app, &body, Some(header)).await
}

async fn pay(app: &TestApp, event: &Value) -> (u16, Value) {
    pay_at(app, event, now()).await
}

fn code(answer: &(u16, Value)) -> &str {
    answer.1["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

async fn outbox_len(app: &TestApp, store: StoreId) -> usize {
    app.redis
        .clone()
        .xlen(app.keys.store(store).outbox)
        .await
        .unwrap()
}

/// Everything a refused notification must leave alone: Redis's split of the product's
/// units, the order as the API shows it, the hold's hash, and MySQL's order row, ledger
/// and stock.
#[derive(Debug, PartialEq)]
struct State {
    units: (i64, i64, i64),
    order: Value,
    hold: std::collections::BTreeMap<String, String>,
    mysql_order: Option<(String, u32, Option<String>)>,
    ledger: Vec<(String, i64)>,
    mysql_stock: i64,
}

async fn state(
    app: &TestApp,
    store: StoreId,
    product: ProductId,
    order: &str,
    token: &str,
) -> State {
    let uuid = order.split_once('-').unwrap().1;
    let hold_key = app
        .keys
        .hold(flashstock::domain::OrderId::parse(order).unwrap());
    State {
        units: (
            app.available(store, product).await,
            app.held(store, product).await,
            app.sold(store, product).await,
        ),
        order: app
            .graphql(ORDER, json!({ "id": order }), Some(token))
            .await,
        hold: app.redis.clone().hgetall(hold_key).await.unwrap(),
        mysql_order: sqlx::query_as(
            "SELECT CAST(status AS CHAR), version, confirmed_by FROM orders WHERE id = ?",
        )
        .bind(uuid)
        .fetch_optional(&app.db)
        .await
        .unwrap(),
        ledger: sqlx::query_as("SELECT movement_key, delta FROM stock_movements ORDER BY id")
            .fetch_all(&app.db)
            .await
            .unwrap(),
        mysql_stock: sqlx::query_scalar("SELECT stock FROM products WHERE id = ?")
            .bind(product.0)
            .fetch_one(&app.db)
            .await
            .unwrap(),
    }
}

/// Waits until the flusher has written the order to MySQL with `status`.
async fn flushed(app: &TestApp, order: &str, status: &str) {
    let uuid = order.split_once('-').unwrap().1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found: Option<String> =
            sqlx::query_scalar("SELECT CAST(status AS CHAR) FROM orders WHERE id = ?")
                .bind(uuid)
                .fetch_optional(&app.db)
                .await
                .unwrap();
        if found.as_deref() == Some(status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {order} never reached MySQL as {status} (found {found:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_customer_cannot_confirm_in_webhook_mode_and_nothing_moves() {
    let app = spawn_app_with(webhook_mode()).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 250, 10, None).await;
    let (_, token) = app.create_customer().await;
    let (order, _) = lock(&app, &token, product, 3).await;
    let events = outbox_len(&app, store).await;
    let before = state(&app, store, product, &order, &token).await;

    let body = app
        .graphql(
            CONFIRM,
            json!({ "id": order, "ref": "anything" }),
            Some(&token),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    assert!(body["data"].is_null(), "{body}");

    assert_eq!(state(&app, store, product, &order, &token).await, before);
    assert_eq!(before.units, (7, 3, 0));
    assert_eq!(outbox_len(&app, store).await, events);
}

#[tokio::test]
async fn the_webhook_is_off_without_a_secret_and_client_mode_confirms_as_before() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(store, 250, 10, None).await;
    let (_, token) = app.create_customer().await;
    let (order, total) = lock(&app, &token, product, 1).await;
    assert_eq!(pay(&app, &event("evt-off", &order, total)).await.0, 404);
    assert_eq!(app.held(store, product).await, 1);

    let body = app
        .graphql(
            CONFIRM,
            json!({ "id": order, "ref": "card-1" }),
            Some(&token),
        )
        .await;
    assert_eq!(
        body["data"]["confirmOrder"]["order"]["status"], "CONFIRMED",
        "{body}"
    );
}

#[tokio::test]
async fn a_signed_notification_confirms_once_and_its_replay_changes_nothing() {
    let app = spawn_app_with(webhook_mode()).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 250, 10, None).await;
    let (_, token) = app.create_customer().await;
    let (order, total) = lock(&app, &token, product, 4).await;
    assert_eq!(total, 1000);
    let events = outbox_len(&app, store).await;

    let paid = event("evt-1", &order, total);
    let first = pay(&app, &paid).await;
    assert_eq!(
        first,
        (200, json!({ "orderId": order, "status": "CONFIRMED" }))
    );
    assert_eq!(
        (
            app.available(store, product).await,
            app.held(store, product).await,
            app.sold(store, product).await
        ),
        (6, 0, 4)
    );
    assert_eq!(outbox_len(&app, store).await, events + 1);
    let confirmed = state(&app, store, product, &order, &token).await;
    assert_eq!(confirmed.order["data"]["order"]["status"], "CONFIRMED");
    assert_eq!(
        confirmed.order["data"]["order"]["paymentReference"],
        "pay-evt-1"
    );
    assert_eq!(confirmed.hold["confirmed_by"], "payment:evt-1");

    // The provider retries: the same answer, nothing moves, no event is appended.
    for _ in 0..2 {
        assert_eq!(pay(&app, &paid).await, first);
    }
    assert_eq!(state(&app, store, product, &order, &token).await, confirmed);
    assert_eq!(outbox_len(&app, store).await, events + 1);
}

#[tokio::test]
async fn refused_notifications_leave_stock_order_and_ledger_as_they_were() {
    let app = spawn_app_with(webhook_mode().arg("flush-enabled", "true")).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 250, 10, None).await;
    let (_, token) = app.create_customer().await;
    let (order, total) = lock(&app, &token, product, 2).await;
    flushed(&app, &order, "HELD").await;
    let before = state(&app, store, product, &order, &token).await;
    assert_eq!(before.units, (8, 2, 0));

    let good = event("evt-good", &order, total);
    let body = serde_json::to_vec(&good).unwrap();
    let other_secret = b"not-the-secret-not-the-secret-0123456789";
    let stale = now() - 301;
    let refusals = [
        // A signature made with another secret.
        (
            deliver(
                &app,
                &body,
                Some(signature::sign(other_secret, now(), &body)),
            )
            .await,
            401,
            "INVALID_SIGNATURE",
        ),
        // No signature at all, and a header that is not one.
        (deliver(&app, &body, None).await, 401, "INVALID_SIGNATURE"),
        (
            deliver(&app, &body, Some("t=1,v1=zz".into())).await,
            401,
            "INVALID_SIGNATURE",
        ),
        // The signed body altered on the way: another amount under the good signature.
        (
            deliver(
                &app,
                &serde_json::to_vec(&event("evt-good", &order, 1)).unwrap(),
                Some(signature::sign(SECRET.as_bytes(), now(), &body)),
            )
            .await,
            401,
            "INVALID_SIGNATURE",
        ),
        // Well signed, but more than PAYMENT_WEBHOOK_TOLERANCE (5m) old.
        (pay_at(&app, &good, stale).await, 401, "STALE_SIGNATURE"),
        // Well signed, but not a payment event.
        (
            pay(&app, &json!({ "id": "evt-x", "type": "payment.succeeded" })).await,
            400,
            "BAD_REQUEST",
        ),
        // Well signed, for an order that does not exist.
        (
            pay(
                &app,
                &event(
                    "evt-404",
                    &format!("{store}-{}", uuid::Uuid::now_v7()),
                    total,
                ),
            )
            .await,
            404,
            "ORDER_NOT_FOUND",
        ),
        (
            pay(&app, &event("evt-405", "no-such-order", total)).await,
            404,
            "ORDER_NOT_FOUND",
        ),
        // Well signed, for the order, with the wrong amount.
        (
            pay(&app, &event("evt-short", &order, total - 1)).await,
            409,
            "AMOUNT_MISMATCH",
        ),
    ];
    for (answer, status, expected) in &refusals {
        assert_eq!(answer.0, *status, "{expected}: {answer:?}");
        assert_eq!(code(answer), *expected, "{answer:?}");
    }
    // Give the flusher time to write anything a refusal might have appended.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&app, store, product, &order, &token).await, before);

    // The mismatch is remembered for its event; the hold itself was untouched, so the
    // right payment still confirms it.
    let replayed = pay(&app, &event("evt-short", &order, total - 1)).await;
    assert_eq!((replayed.0, code(&replayed)), (409, "AMOUNT_MISMATCH"));
    assert_eq!(pay(&app, &good).await.0, 200);
    flushed(&app, &order, "CONFIRMED").await;
    let after = state(&app, store, product, &order, &token).await;
    assert_eq!(after.units, (8, 0, 2));
    assert_eq!(after.mysql_stock, 8);
    assert_eq!(
        after.mysql_order,
        Some(("CONFIRMED".into(), 2, Some("payment:evt-good".into())))
    );
    let notes: Vec<Option<String>> =
        sqlx::query_scalar("SELECT note FROM stock_movements WHERE reason = 'SALE'")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(notes, [Some("confirmed by payment:evt-good".to_owned())]);
}

#[tokio::test]
async fn a_payment_for_an_expired_hold_is_refused_and_changes_nothing() {
    let app = spawn_app_with(
        webhook_mode()
            .arg("hold-ttl", "300ms")
            .arg("sweep-interval", "100ms")
            .arg("flush-enabled", "true"),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 250, 10, None).await;
    let (_, token) = app.create_customer().await;
    let (order, total) = lock(&app, &token, product, 2).await;
    flushed(&app, &order, "EXPIRED").await;
    let before = state(&app, store, product, &order, &token).await;
    assert_eq!(before.units, (10, 0, 0));

    let late = event("evt-late", &order, total);
    for _ in 0..2 {
        let answer = pay(&app, &late).await;
        assert_eq!(
            (answer.0, code(&answer)),
            (409, "HOLD_EXPIRED"),
            "{answer:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state(&app, store, product, &order, &token).await, before);
}

#[tokio::test]
async fn an_admin_confirms_anyones_order_by_hand_and_the_ledger_names_them() {
    let app = spawn_app_with(webhook_mode().arg("flush-enabled", "true")).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 250, 10, None).await;
    let (_, customer) = app.create_customer().await;
    let (admin_id, admin) = app.create_admin().await;
    let (order, _) = lock(&app, &customer, product, 1).await;

    let body = app
        .graphql(
            CONFIRM,
            json!({ "id": order, "ref": "bank-transfer-77" }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        body["data"]["confirmOrder"]["order"]["status"], "CONFIRMED",
        "{body}"
    );
    flushed(&app, &order, "CONFIRMED").await;
    let by = format!("ADMIN:{admin_id}");
    let after = state(&app, store, product, &order, &customer).await;
    assert_eq!(after.units, (9, 0, 1));
    assert_eq!(
        after.mysql_order,
        Some(("CONFIRMED".into(), 2, Some(by.clone())))
    );
    let notes: Vec<Option<String>> =
        sqlx::query_scalar("SELECT note FROM stock_movements WHERE reason = 'SALE'")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(notes, [Some(format!("confirmed by {by}"))]);

    // The provider's notification for the same order, under another reference, comes
    // too late: the order is paid already, so this payment must be refunded.
    let (status, answer) = pay(&app, &event("evt-after-admin", &order, 250)).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["errors"][0]["extensions"]["code"], "ALREADY_PAID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_notifications_with_duplicates_confirm_each_order_once() {
    let _serial = one_at_a_time().await;
    let app = spawn_app_with(
        webhook_mode()
            .arg("flush-enabled", "true")
            .arg("redis-response-timeout", "60s")
            .arg("request-timeout", "60s"),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 300, 50, None).await;
    let mut orders = Vec::new();
    for _ in 0..50 {
        let (_, token) = app.create_customer().await;
        orders.push(lock(&app, &token, product, 1).await);
    }
    assert_eq!(app.available(store, product).await, 0);

    // 50 events, 10 of them delivered twice, all at once.
    let mut deliveries: Vec<Value> = orders
        .iter()
        .enumerate()
        .map(|(n, (order, total))| event(&format!("evt-{n}"), order, *total))
        .collect();
    deliveries.extend(deliveries[..10].to_vec());
    let answers = join_all(deliveries.iter().map(|e| pay(&app, e))).await;
    for ((status, body), delivered) in answers.iter().zip(&deliveries) {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["status"], "CONFIRMED");
        assert_eq!(body["orderId"], delivered["orderId"]);
    }
    assert_eq!(
        (
            app.available(store, product).await,
            app.held(store, product).await,
            app.sold(store, product).await
        ),
        (0, 0, 50)
    );

    for (order, _) in &orders {
        flushed(&app, order, "CONFIRMED").await;
    }
    let confirmed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'CONFIRMED'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(confirmed, 50);
    let (sales, units): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(-SUM(delta) AS SIGNED) FROM stock_movements WHERE reason = 'SALE'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((sales, units), (50, 50));
    let stock: i64 = sqlx::query_scalar("SELECT stock FROM products WHERE id = ?")
        .bind(product.0)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stock, 0);
    let confirmers: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT confirmed_by) FROM orders WHERE confirmed_by LIKE 'payment:evt-%'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(confirmers, 50);
}

/// `flashstock pay`, the development tool that plays the provider.
async fn pay_command(app: &TestApp, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashstock"))
        .env("DATABASE_URL", &app.database_url)
        .env("REDIS_URL", crate::helpers::redis_url())
        .env("REDIS_KEY_PREFIX", app.keys.prefix())
        .env("PAYMENT_WEBHOOK_SECRET", SECRET)
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", app.port))
        .env_remove("JWT_SECRET")
        .arg("pay")
        .args(args)
        .output()
        .await
        .expect("flashstock runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[tokio::test]
async fn the_pay_command_signs_and_sends_a_notification_like_a_provider() {
    let _serial = one_at_a_time().await;
    let app = spawn_app_with(webhook_mode()).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 450, 10, None).await;
    let (_, token) = app.create_customer().await;
    let (order, _) = lock(&app, &token, product, 2).await;

    let (ok, printed) = pay_command(&app, &["--order", &order, "--amount-cents", "1"]).await;
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("409") && printed.contains("AMOUNT_MISMATCH"),
        "{printed}"
    );
    assert_eq!(app.held(store, product).await, 2);

    // By default it pays the order's total, read from Redis.
    let (ok, printed) = pay_command(&app, &["--order", &order, "--event-id", "evt-cli"]).await;
    assert!(ok, "{printed}");
    assert!(printed.contains("\"status\":\"CONFIRMED\""), "{printed}");
    assert!(printed.contains("\"amountCents\":900"), "{printed}");
    assert_eq!(app.sold(store, product).await, 2);
    let replay = pay_command(&app, &["--order", &order, "--event-id", "evt-cli"]).await;
    assert!(replay.0, "{}", replay.1);
    assert_eq!(app.sold(store, product).await, 2);
}

/// With REDIS_WAIT_REPLICAS, a payment is acknowledged only once replicas have it: the
/// shared Redis has none, so the provider is asked to retry, and each retry confirms
/// nothing twice.
#[tokio::test]
async fn a_payment_no_replica_has_yet_is_asked_again_and_confirms_once() {
    let app = spawn_app_with(
        webhook_mode()
            .arg("redis-wait-replicas", 1)
            .arg("redis-wait-timeout", "20ms"),
    )
    .await;
    let store = app.create_store().await;
    let product = app.create_product(store, 250, 10, None).await;
    let (_, token) = app.create_customer().await;
    let (order, total) = lock(&app, &token, product, 4).await;
    let events = outbox_len(&app, store).await;

    let paid = event("evt-1", &order, total);
    for _ in 0..3 {
        let answer = pay(&app, &paid).await;
        assert_eq!(answer.0, 503, "{answer:?}");
        assert_eq!(code(&answer), "NOT_REPLICATED", "{answer:?}");
    }
    // The confirmation stands on the master, made once.
    assert_eq!(
        (
            app.available(store, product).await,
            app.held(store, product).await,
            app.sold(store, product).await
        ),
        (6, 0, 4)
    );
    assert_eq!(outbox_len(&app, store).await, events + 1);
}
