//! Pre-orders (backorders) over real HTTP: a line that stock cannot fill takes the rest
//! from the product's backorder capacity, all or nothing; a restock fills confirmed
//! pre-orders oldest first before anything becomes available; an ADMIN changes the terms
//! and the lock script enforces them at once. After every test both equations hold per
//! product, in Redis and, once flushed, in MySQL:
//!   available + held + sold == every unit the product ever received
//!   backorderAvailable + held and confirmed pre-ordered units == backorderLimit

use std::time::{Duration, Instant};

use flashstock::audit;
use flashstock::domain::{ProductId, StoreId};
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestOptions, spawn_app_with};

const LOCK: &str = "mutation($items: [OrderLineInput!]!, $backorder: Boolean) {
    lockOrder(input: { items: $items, allowBackorder: $backorder }) {
        order { id status lines { quantity backorderedQuantity } }
        errors { code productId available } } }";

const CONFIRM: &str = "mutation($id: ID!, $ref: String!) {
    confirmOrder(input: { orderId: $id, paymentReference: $ref }) {
        order { id status } errors { code } } }";

const CANCEL: &str = "mutation($id: ID!) {
    cancelOrder(orderId: $id) { order { id status } errors { code } } }";

const ORDER: &str = "query($id: ID!) {
    order(id: $id) { id status lines { quantity backorderedQuantity } } }";

const RESTOCK: &str = "mutation($id: ID!, $quantity: Int!) {
    restockProduct(productId: $id, quantity: $quantity) {
        product { available backorderAvailable } errors { code } } }";

const PRODUCT: &str = "query($id: ID!) {
    product(id: $id) { name priceCents maxPerCustomer backorderLimit available backorderAvailable } }";

const UPDATE: &str = "mutation($input: UpdateProductInput!) {
    updateProduct(input: $input) {
        product { name priceCents maxPerCustomer backorderLimit backorderAvailable }
        errors { code field available } } }";

const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

fn flushing() -> TestOptions {
    TestOptions::default().arg("flush-enabled", "true")
}

fn data(body: Value, field: &str) -> Value {
    assert!(body["errors"].is_null(), "GraphQL errors: {body}");
    body["data"][field].clone()
}

async fn lock(
    app: &TestApp,
    token: &str,
    product: ProductId,
    quantity: i64,
    backorder: bool,
) -> Value {
    let variables = json!({
        "items": [{ "productId": product.to_string(), "quantity": quantity }],
        "backorder": backorder,
    });
    data(app.graphql(LOCK, variables, Some(token)).await, "lockOrder")
}

async fn confirm(app: &TestApp, token: &str, order: &str) {
    let variables = json!({ "id": order, "ref": format!("pay-{order}") });
    let payload = data(
        app.graphql(CONFIRM, variables, Some(token)).await,
        "confirmOrder",
    );
    assert_eq!(payload["order"]["status"], "CONFIRMED", "{payload}");
}

/// The line's pre-ordered units as `order(id)` shows them now.
async fn backordered(app: &TestApp, token: &str, order: &str) -> i64 {
    let body = app
        .graphql(ORDER, json!({ "id": order }), Some(token))
        .await;
    data(body, "order")["lines"][0]["backorderedQuantity"]
        .as_i64()
        .unwrap()
}

async fn restock(app: &TestApp, admin: &str, product: ProductId, quantity: i64) -> Value {
    let variables = json!({ "id": product.to_string(), "quantity": quantity });
    let payload = data(
        app.graphql(RESTOCK, variables, Some(admin)).await,
        "restockProduct",
    );
    assert_eq!(payload["errors"], json!([]), "{payload}");
    payload["product"].clone()
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
async fn assert_redis_invariants(app: &TestApp, store: StoreId, product: ProductId, received: i64) {
    let (available, held, sold) = (
        app.available(store, product).await,
        app.held(store, product).await,
        app.sold(store, product).await,
    );
    assert!(available >= 0 && held >= 0 && sold >= 0);
    assert_eq!(available + held + sold, received, "stock equation");
    let keys = app.keys.store(store);
    let id = product.0.to_string();
    let open = redis_i64(app, keys.backorder, id.clone()).await;
    let bo_held = redis_i64(app, keys.backorder_held, id.clone()).await;
    let bo_sold = redis_i64(app, keys.backorder_sold, id.clone()).await;
    let limit = redis_i64(app, keys.terms, format!("{id}:bo")).await;
    assert!(open >= 0 && bo_held >= 0 && bo_sold >= 0);
    assert_eq!(open + bo_held + bo_sold, limit, "backorder equation");
}

/// Waits for the flusher, then checks MySQL against Redis with the audit (both equations).
async fn assert_flushed_and_audited(app: &TestApp) {
    let started = Instant::now();
    loop {
        let left = audit::backlog(&app.context.engine).await.unwrap();
        if left.is_empty() {
            break;
        }
        assert!(started.elapsed() < DRAIN_DEADLINE, "not drained: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = audit::audit(&app.db, &app.context.engine).await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert!(report.products > 0);
}

async fn mysql_i64(app: &TestApp, sql: &str, id: impl ToString) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id.to_string())
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn ten_racing_buyers_get_five_in_stock_three_preordered_and_two_refusals() {
    let app = spawn_app_with(flushing()).await;
    let store = app.create_store().await;
    let product = app
        .create_product_with_backorders(store, 1000, 5, None, 3)
        .await;
    let mut tokens = Vec::new();
    for _ in 0..10 {
        tokens.push(app.create_customer().await.1);
    }
    let payloads = join_all(
        tokens
            .iter()
            .map(|token| lock(&app, token, product, 1, true)),
    )
    .await;

    let (mut in_stock, mut preordered, mut refused) = (0, 0, 0);
    let mut preorders = Vec::new();
    for (payload, token) in payloads.iter().zip(&tokens) {
        if payload["order"].is_null() {
            assert_eq!(
                payload["errors"][0]["code"], "INSUFFICIENT_STOCK",
                "{payload}"
            );
            assert_eq!(payload["errors"][0]["available"], 0);
            refused += 1;
            continue;
        }
        match payload["order"]["lines"][0]["backorderedQuantity"].as_i64() {
            Some(0) => in_stock += 1,
            Some(1) => {
                preordered += 1;
                preorders.push((token, payload["order"]["id"].as_str().unwrap().to_owned()));
            }
            other => panic!("unexpected line {other:?}: {payload}"),
        }
    }
    assert_eq!((in_stock, preordered, refused), (5, 3, 2));
    assert_redis_invariants(&app, store, product, 5).await;
    let shown = data(
        app.graphql(PRODUCT, json!({ "id": product.to_string() }), None)
            .await,
        "product",
    );
    assert_eq!(
        (
            shown["available"].as_i64(),
            shown["backorderAvailable"].as_i64()
        ),
        (Some(0), Some(0))
    );

    // A cancelled pre-order gives its unit back to pre-order capacity, not to stock.
    let (token, order) = &preorders[0];
    let variables = json!({ "id": order });
    let cancelled = data(
        app.graphql(CANCEL, variables, Some(token)).await,
        "cancelOrder",
    );
    assert_eq!(cancelled["order"]["status"], "CANCELLED", "{cancelled}");
    assert_eq!(app.available(store, product).await, 0);
    assert_redis_invariants(&app, store, product, 5).await;

    // Without the flag a buyer never gets a pre-ordered line, even with capacity open.
    let (_, plain) = app.create_customer().await;
    let refused = lock(&app, &plain, product, 1, false).await;
    assert!(refused["order"].is_null());
    assert_eq!(refused["errors"][0]["code"], "INSUFFICIENT_STOCK");
    assert_eq!(refused["errors"][0]["available"], 0);
    let (_, willing) = app.create_customer().await;
    let taken = lock(&app, &willing, product, 1, true).await;
    assert_eq!(
        taken["order"]["lines"][0]["backorderedQuantity"], 1,
        "{taken}"
    );

    // Confirmed pre-orders reach MySQL's own column; products.stock never dips.
    for (token, order) in &preorders[1..] {
        confirm(&app, token, order).await;
    }
    assert_redis_invariants(&app, store, product, 5).await;
    assert_flushed_and_audited(&app).await;
    let backordered = mysql_i64(
        &app,
        "SELECT backordered FROM products WHERE id = ?",
        product,
    )
    .await;
    assert_eq!(backordered, 2);
}

#[tokio::test]
async fn a_restock_fills_confirmed_preorders_oldest_first_before_anything_is_available() {
    let app = spawn_app_with(flushing()).await;
    let store = app.create_store().await;
    let product = app
        .create_product_with_backorders(store, 500, 1, None, 5)
        .await;
    let (_, admin) = app.create_admin().await;

    // One unit in stock, then three pre-orders made in turn: B (1), C (1), D (2).
    let (_, first) = app.create_customer().await;
    let in_stock = lock(&app, &first, product, 1, true).await;
    assert_eq!(in_stock["order"]["lines"][0]["backorderedQuantity"], 0);
    let mut preorders = Vec::new();
    for quantity in [1, 1, 2] {
        let (_, token) = app.create_customer().await;
        let payload = lock(&app, &token, product, quantity, true).await;
        assert_eq!(
            payload["order"]["lines"][0]["backorderedQuantity"], quantity,
            "{payload}"
        );
        preorders.push((token, payload["order"]["id"].as_str().unwrap().to_owned()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Confirmed newest first: the queue still goes by when the order was made.
    for (token, order) in preorders.iter().rev() {
        confirm(&app, token, order).await;
    }
    assert_redis_invariants(&app, store, product, 1).await;

    // A restock of 2 fills B and C; nothing becomes available.
    let after = restock(&app, &admin, product, 2).await;
    assert_eq!(after["available"], 0);
    let [(b_token, b), (c_token, c), (d_token, d)] = &preorders[..] else {
        unreachable!()
    };
    assert_eq!(backordered(&app, b_token, b).await, 0);
    assert_eq!(backordered(&app, c_token, c).await, 0);
    assert_eq!(backordered(&app, d_token, d).await, 2);
    assert_redis_invariants(&app, store, product, 3).await;

    // One more unit fills D in part; five more finish D and the rest is available.
    restock(&app, &admin, product, 1).await;
    assert_eq!(backordered(&app, d_token, d).await, 1);
    let after = restock(&app, &admin, product, 5).await;
    assert_eq!(after["available"], 4);
    assert_eq!(after["backorderAvailable"], 5);
    assert_eq!(backordered(&app, d_token, d).await, 0);
    assert_redis_invariants(&app, store, product, 9).await;

    // MySQL and its ledgers say the same once flushed.
    assert_flushed_and_audited(&app).await;
    let stock = mysql_i64(&app, "SELECT stock FROM products WHERE id = ?", product).await;
    assert_eq!(stock, 4 + 1, "on hand: 4 available + 1 held in stock");
    let filled = mysql_i64(
        &app,
        "SELECT CAST(COALESCE(SUM(-delta), 0) AS SIGNED) FROM stock_movements \
         WHERE reason = 'BACKORDER_FILLED' AND product_id = ?",
        product,
    )
    .await;
    assert_eq!(filled, 4);
    let fills = mysql_i64(
        &app,
        "SELECT COUNT(*) FROM stock_movements WHERE reason = 'BACKORDER_FILLED' AND product_id = ?",
        product,
    )
    .await;
    assert_eq!(fills, 4, "B, C, and D twice");
    let open = mysql_i64(
        &app,
        "SELECT CAST(COALESCE(SUM(backordered_quantity), 0) AS SIGNED) FROM order_items WHERE product_id = ?",
        product,
    )
    .await;
    assert_eq!(open, 0);
    let ledger = mysql_i64(
        &app,
        "SELECT CAST(SUM(delta) AS SIGNED) FROM stock_movements WHERE product_id = ?",
        product,
    )
    .await;
    assert_eq!(ledger, stock, "the ledger explains the stock");
}

#[tokio::test]
async fn an_admin_changes_terms_partially_and_the_lock_script_enforces_them_at_once() {
    let app = spawn_app_with(flushing()).await;
    let store = app.create_store().await;
    let product = app
        .create_product_with_backorders(store, 700, 1, Some(5), 2)
        .await;
    let (admin_id, admin) = app.create_admin().await;
    let (_, buyer) = app.create_customer().await;
    let update = |input: Value| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let body = app
                .graphql(UPDATE, json!({ "input": input }), Some(&admin))
                .await;
            data(body, "updateProduct")
        }
    };

    // Only the limit changes; the name and price stay as they were.
    let before = data(
        app.graphql(PRODUCT, json!({ "id": product.to_string() }), None)
            .await,
        "product",
    );
    let changed = update(json!({ "productId": product.to_string(), "maxPerCustomer": 1 })).await;
    assert_eq!(changed["errors"], json!([]), "{changed}");
    assert_eq!(changed["product"]["maxPerCustomer"], 1);
    assert_eq!(changed["product"]["name"], before["name"]);
    assert_eq!(changed["product"]["priceCents"], 700);
    assert_eq!(changed["product"]["backorderLimit"], 2);

    // The script reads the limit from Redis: the next request is held to it.
    let over = lock(&app, &buyer, product, 2, true).await;
    assert_eq!(over["errors"][0]["code"], "LIMIT_EXCEEDED", "{over}");
    let removed = update(json!({ "productId": product.to_string(), "maxPerCustomer": null })).await;
    assert_eq!(removed["product"]["maxPerCustomer"], Value::Null);
    let held = lock(&app, &buyer, product, 3, true).await;
    assert_eq!(
        held["order"]["lines"][0]["backorderedQuantity"], 2,
        "{held}"
    );

    // The backorder limit cannot fall below what is pre-ordered; nothing changes then.
    let refused =
        update(json!({ "productId": product.to_string(), "backorderLimit": 1, "priceCents": 1 }))
            .await;
    assert!(refused["product"].is_null());
    assert_eq!(refused["errors"][0]["code"], "BACKORDER_LIMIT_TOO_LOW");
    assert_eq!(refused["errors"][0]["available"], 2);
    let raised = update(json!({ "productId": product.to_string(), "backorderLimit": 6 })).await;
    assert_eq!(raised["product"]["backorderLimit"], 6);
    assert_eq!(raised["product"]["backorderAvailable"], 4);
    assert_eq!(
        raised["product"]["priceCents"], 700,
        "the refused change left the price"
    );
    let bad = update(json!({ "productId": product.to_string(), "backorderLimit": -1 })).await;
    assert_eq!(bad["errors"][0]["code"], "INVALID_QUANTITY");
    assert_redis_invariants(&app, store, product, 1).await;

    // Every change is recorded with its author and its values before and after.
    let rows: Vec<(String, Option<String>, Option<String>, u64)> = sqlx::query_as(
        "SELECT field, old_value, new_value, user_id FROM product_changes WHERE product_id = ? ORDER BY id",
    )
    .bind(product.0)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                "maxPerCustomer".to_owned(),
                Some("5".to_owned()),
                Some("1".to_owned()),
                admin_id.0
            ),
            (
                "maxPerCustomer".to_owned(),
                Some("1".to_owned()),
                None,
                admin_id.0
            ),
            (
                "backorderLimit".to_owned(),
                Some("2".to_owned()),
                Some("6".to_owned()),
                admin_id.0
            ),
        ]
    );
    assert_flushed_and_audited(&app).await;
}

#[tokio::test]
async fn accepting_a_preorder_is_part_of_the_idempotency_fingerprint() {
    let app = spawn_app_with(TestOptions::default()).await;
    let store = app.create_store().await;
    let product = app
        .create_product_with_backorders(store, 100, 0, None, 4)
        .await;
    let (_, buyer) = app.create_customer().await;
    let keyed = "mutation($items: [OrderLineInput!]!, $backorder: Boolean) {
        lockOrder(input: { items: $items, allowBackorder: $backorder, idempotencyKey: \"k-1\" }) {
            order { id lines { backorderedQuantity } } errors { code orderId } } }";
    let items = json!([{ "productId": product.to_string(), "quantity": 1 }]);
    let send = |backorder: bool| {
        let variables = json!({ "items": items.clone(), "backorder": backorder });
        let (app, buyer) = (&app, &buyer);
        async move {
            data(
                app.graphql(keyed, variables, Some(buyer)).await,
                "lockOrder",
            )
        }
    };
    let first = send(true).await;
    let order = first["order"]["id"].clone();
    assert_eq!(
        first["order"]["lines"][0]["backorderedQuantity"], 1,
        "{first}"
    );
    let retried = send(true).await;
    assert_eq!(retried["order"]["id"], order);
    let other = send(false).await;
    assert!(other["order"].is_null());
    assert_eq!(other["errors"][0]["code"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(other["errors"][0]["orderId"], order);
    assert_redis_invariants(&app, store, product, 0).await;
}

#[tokio::test]
async fn buyers_without_the_flag_never_get_a_preorder_and_expired_preorders_return_to_capacity() {
    let app = spawn_app_with(TestOptions::default().arg("hold-ttl", "1s")).await;
    let store = app.create_store().await;
    let product = app
        .create_product_with_backorders(store, 100, 3, None, 3)
        .await;
    let mut buyers = Vec::new();
    for i in 0..12 {
        buyers.push((app.create_customer().await.1, i % 2 == 0));
    }
    let payloads = join_all(
        buyers
            .iter()
            .map(|(token, flag)| lock(&app, token, product, 1, *flag)),
    )
    .await;
    let (mut in_stock, mut preordered) = (0, 0);
    for (payload, (_, flag)) in payloads.iter().zip(&buyers) {
        if payload["order"].is_null() {
            assert_eq!(
                payload["errors"][0]["code"], "INSUFFICIENT_STOCK",
                "{payload}"
            );
            continue;
        }
        match payload["order"]["lines"][0]["backorderedQuantity"].as_i64() {
            Some(0) => in_stock += 1,
            Some(1) => {
                assert!(
                    *flag,
                    "a buyer without allowBackorder got a pre-order: {payload}"
                );
                preordered += 1;
            }
            other => panic!("unexpected line {other:?}: {payload}"),
        }
    }
    assert_eq!(in_stock, 3);
    assert_eq!(preordered, 3, "six willing buyers, three pre-order units");
    assert_redis_invariants(&app, store, product, 3).await;

    // Unpaid, every hold expires: stock goes back to the sale, pre-orders to capacity.
    let started = Instant::now();
    while app.held(store, product).await > 0 || app.available(store, product).await < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "holds never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = data(
        app.graphql(PRODUCT, json!({ "id": product.to_string() }), None)
            .await,
        "product",
    );
    assert_eq!(shown["available"], 3);
    assert_eq!(shown["backorderAvailable"], 3);
    assert_redis_invariants(&app, store, product, 3).await;
}

#[tokio::test]
async fn create_product_takes_a_backorder_limit_and_refuses_a_negative_one() {
    let app = spawn_app_with(TestOptions::default()).await;
    let store = app.create_store().await;
    let (_, admin) = app.create_admin().await;
    let create = "mutation($input: CreateProductInput!) {
        createProduct(input: $input) {
            product { id available backorderLimit backorderAvailable } errors { code field } } }";
    let input = |name: &str, limit: i64| {
        json!({ "input": { "storeId": store.to_string(), "name": name, "priceCents": 100,
                           "stock": 2, "backorderLimit": limit } })
    };
    let made = data(
        app.graphql(create, input("Pre", 7), Some(&admin)).await,
        "createProduct",
    );
    assert_eq!(made["product"]["backorderLimit"], 7, "{made}");
    assert_eq!(made["product"]["backorderAvailable"], 7);
    assert_eq!(made["product"]["available"], 2);
    let refused = data(
        app.graphql(create, input("Bad", -1), Some(&admin)).await,
        "createProduct",
    );
    assert!(refused["product"].is_null());
    assert_eq!(refused["errors"][0]["field"], "backorderLimit");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE name = 'Bad'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing was written");
}

#[tokio::test]
async fn a_rebuild_from_mysql_restores_terms_preorders_their_queue_and_held_parts() {
    // A rebuild scans and rewrites the store while its flusher runs: alone, like the
    // other recovery tests.
    let _serial = crate::helpers::one_at_a_time().await;
    let app = spawn_app_with(flushing()).await;
    let store = app.create_store().await;
    let product = app
        .create_product_with_backorders(store, 700, 2, Some(4), 5)
        .await;
    let (_, admin) = app.create_admin().await;

    // A takes both units in stock and one pre-ordered, and pays: queued for a restock.
    // B pre-orders two and holds them.
    let (_, a) = app.create_customer().await;
    let first = lock(&app, &a, product, 3, true).await;
    let first = first["order"]["id"].as_str().unwrap().to_owned();
    confirm(&app, &a, &first).await;
    let (_, b) = app.create_customer().await;
    let second = lock(&app, &b, product, 2, true).await;
    assert_eq!(second["order"]["lines"][0]["backorderedQuantity"], 2);
    let second = second["order"]["id"].as_str().unwrap().to_owned();
    assert_flushed_and_audited(&app).await;

    // The store's Redis rebuilt from MySQL alone.
    flashstock::recovery::rebuild(&app.db, &app.context.engine, store)
        .await
        .unwrap();
    assert_redis_invariants(&app, store, product, 2).await;
    let keys = app.keys.store(store);
    let id = product.0.to_string();
    assert_eq!(
        (
            redis_i64(&app, keys.backorder.clone(), id.clone()).await,
            redis_i64(&app, keys.backorder_held.clone(), id.clone()).await,
            redis_i64(&app, keys.backorder_sold.clone(), id.clone()).await,
            redis_i64(&app, keys.terms.clone(), format!("{id}:max")).await,
            redis_i64(&app, keys.terms.clone(), format!("{id}:bo")).await,
        ),
        (2, 2, 1, 4, 5)
    );
    assert_eq!(backordered(&app, &b, &second).await, 2);

    // The queue came back: a restock of one fills A's pre-order before anything is on sale.
    let after = restock(&app, &admin, product, 1).await;
    assert_eq!(after["available"], 0, "{after}");
    assert_eq!(after["backorderAvailable"], 3, "{after}");
    // A's order is read from MySQL now (the rebuild keeps HELD holds only in Redis):
    // the fill shows there once flushed.
    assert_flushed_and_audited(&app).await;
    assert_eq!(backordered(&app, &a, &first).await, 0);
    // B's held pre-order is still one: paid, it books its two units as pre-ordered.
    confirm(&app, &b, &second).await;
    assert_eq!(backordered(&app, &b, &second).await, 2);
    assert_redis_invariants(&app, store, product, 3).await;
    assert_flushed_and_audited(&app).await;
}

#[tokio::test]
async fn an_admin_change_to_the_terms_reaches_every_instance_within_a_second() {
    let first = spawn_app_with(flushing()).await;
    // A second instance of the same service: same MySQL database, same Redis keys.
    let second = spawn_app_with(
        TestOptions::default()
            .arg("database-url", &first.database_url)
            .arg("redis-key-prefix", first.keys.prefix()),
    )
    .await;
    let store = first.create_store().await;
    let product = first
        .create_product_with_backorders(store, 500, 4, Some(3), 2)
        .await;
    let (_, admin) = first.create_admin().await;
    let (_, buyer) = first.create_customer().await;
    let shown = async |app: &TestApp| {
        let variables = json!({ "id": product.to_string() });
        data(app.graphql(PRODUCT, variables, None).await, "product")
    };
    // The second instance has read the product and caches it.
    let before = shown(&second).await;
    assert_eq!(before["maxPerCustomer"], 3);
    assert_eq!(before["backorderAvailable"], 2);

    let input =
        json!({ "productId": product.to_string(), "maxPerCustomer": 1, "backorderLimit": 0 });
    let changed = data(
        first
            .graphql(UPDATE, json!({ "input": input }), Some(&admin))
            .await,
        "updateProduct",
    );
    assert_eq!(changed["errors"], json!([]), "{changed}");
    let changed_at = Instant::now();

    // The lock script reads the terms from Redis: the other instance enforces them at once.
    let over = lock(&second, &buyer, product, 2, true).await;
    assert_eq!(over["errors"][0]["code"], "LIMIT_EXCEEDED", "{over}");
    // And shows them within a second.
    loop {
        let now = shown(&second).await;
        if now["maxPerCustomer"] == 1 && now["backorderLimit"] == 0 {
            assert_eq!(now["backorderAvailable"], 0);
            break;
        }
        assert!(
            changed_at.elapsed() < Duration::from_secs(1),
            "the second instance still shows {now} after {:?}",
            changed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let one = lock(&second, &buyer, product, 1, true).await;
    assert_eq!(one["order"]["lines"][0]["backorderedQuantity"], 0, "{one}");
    assert_redis_invariants(&first, store, product, 4).await;
    assert_flushed_and_audited(&first).await;
}
