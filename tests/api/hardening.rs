//! Malformed and hostile requests: each gets a precise status and error code, and none of
//! them moves a unit of stock, a hold or an order.

use std::time::{Duration, Instant};

use flashstock::auth::ISSUER;
use flashstock::domain::{ProductId, StoreId};
use jsonwebtoken::Algorithm;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{sign, unpadded_base64url};
use crate::helpers::{
    JWT_SECRET, PASSWORD, TestApp, TestOptions, one_at_a_time, spawn_app, spawn_app_with,
};

pub const LOCK: &str = "mutation($items: [OrderLineInput!]!, $key: String) {
    lockOrder(input: { items: $items, idempotencyKey: $key }) {
        order { id status totalCents lines { quantity product { id } } }
        errors { code field productId } } }";
const CONFIRM: &str = "mutation($id: ID!, $ref: String!) {
    confirmOrder(input: { orderId: $id, paymentReference: $ref }) {
        order { id status paymentReference } errors { code } } }";
pub const CANCEL: &str =
    "mutation($id: ID!) { cancelOrder(orderId: $id) { order { id status } errors { code } } }";
const CREATE: &str = "mutation($store: ID!, $name: String!) {
    createProduct(input: { storeId: $store, name: $name, priceCents: 100, stock: 5 }) {
        product { id name available } errors { code } } }";
const RESTOCK: &str = "mutation($id: ID!, $reason: String) {
    restockProduct(productId: $id, quantity: 5, reason: $reason) {
        product { available } errors { code } } }";
pub const REGISTER: &str = "mutation($email: String!, $password: String!) {
    register(email: $email, password: $password) { user { email } errors { code } } }";
const LOGIN: &str = "mutation($email: String!, $password: String!) {
    login(email: $email, password: $password) { token errors { code } } }";

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub request_id: Option<String>,
}

impl Reply {
    /// The request's error code, or the first business error of the payload.
    pub fn code(&self) -> String {
        if let Some(code) = self.body["errors"][0]["extensions"]["code"].as_str() {
            return code.to_owned();
        }
        let payload = self.body["data"]
            .as_object()
            .and_then(|data| data.values().next())
            .cloned()
            .unwrap_or_default();
        payload["errors"][0]["code"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned()
    }
}

pub fn gql(query: &str, variables: Value) -> Vec<u8> {
    json!({ "query": query, "variables": variables })
        .to_string()
        .into_bytes()
}

pub async fn post(app: &TestApp, body: Vec<u8>, token: Option<&str>) -> Reply {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.address))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body read");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    Reply {
        status,
        body,
        request_id,
    }
}

async fn register(app: &TestApp, email: &str) -> Reply {
    let body = gql(REGISTER, json!({ "email": email, "password": PASSWORD }));
    post(app, body, None).await
}

pub fn lines(items: &[(&str, Value)]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(product, quantity)| json!({ "productId": product, "quantity": quantity }))
            .collect(),
    )
}

/// Everything a request could move: per product available/held/sold, the store's outbox
/// and the orders table.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    stock: Vec<(i64, i64, i64)>,
    outbox: u64,
    orders: i64,
}

pub async fn snapshot(app: &TestApp, store: StoreId, products: &[ProductId]) -> Snapshot {
    let mut stock = Vec::new();
    for product in products {
        stock.push((
            app.available(store, *product).await,
            app.held(store, *product).await,
            app.sold(store, *product).await,
        ));
    }
    let outbox: u64 = app
        .redis
        .clone()
        .xlen(app.keys.store(store).outbox)
        .await
        .unwrap();
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    Snapshot {
        stock,
        outbox,
        orders,
    }
}

/// `stores { products { edges { node { store { products ...` to `levels` fields.
fn nested_query(levels: usize) -> String {
    let cycle = ["products", "edges", "node", "store"];
    let mut fields = vec!["stores"];
    fields.extend(cycle.iter().cycle().take(levels.saturating_sub(2)));
    let mut query = String::from("{ ");
    for field in &fields {
        query.push_str(field);
        query.push_str(" { ");
    }
    // The innermost field must be a leaf of whatever type the chain ends on.
    query.push_str(match fields.last() {
        Some(&"edges") => "cursor",
        _ => "id",
    });
    query.push_str(&" }".repeat(fields.len() + 1));
    query
}

fn aliases(count: usize, field: &str) -> String {
    let selections: String = (0..count).map(|i| format!("a{i}: {field} ")).collect();
    format!("{{ {selections}}}")
}

struct Hostile {
    app: TestApp,
    store: StoreId,
    products: [ProductId; 2],
    alice: String,
    bob: String,
    alice_order: String,
    tokens: Vec<(&'static str, String)>,
}

/// A store with two products, two customers, and Alice's HELD order of 2 units.
async fn hostile_setup() -> Hostile {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let products = [
        app.create_product(store, 250, 10, None).await,
        app.create_product(store, 900, 10, None).await,
    ];
    let (alice_id, alice) = app.create_customer().await;
    let (_, bob) = app.create_customer().await;
    let held = post(
        &app,
        gql(
            LOCK,
            json!({ "items": lines(&[(&products[0].to_string(), json!(2))]) }),
        ),
        Some(&alice),
    )
    .await;
    let alice_order = held.body["data"]["lockOrder"]["order"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("Alice's order: {}", held.body))
        .to_owned();

    let now = chrono::Utc::now().timestamp();
    let claims = |iat: i64, exp: i64, iss: &str| json!({ "sub": alice_id.to_string(), "role": "CUSTOMER", "iat": iat, "exp": exp, "iss": iss });
    let tokens = vec![
        (
            "forged",
            sign(
                &claims(now, now + 3600, ISSUER),
                "not-the-secret-not-the-secret-not-the",
                Algorithm::HS256,
            ),
        ),
        (
            "expired",
            sign(
                &claims(now - 7200, now - 3600, ISSUER),
                JWT_SECRET,
                Algorithm::HS256,
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                unpadded_base64url::encode(br#"{"alg":"none","typ":"JWT"}"#),
                unpadded_base64url::encode(claims(now, now + 3600, ISSUER).to_string().as_bytes())
            ),
        ),
        (
            "other issuer",
            sign(
                &claims(now, now + 3600, "someone-else"),
                JWT_SECRET,
                Algorithm::HS256,
            ),
        ),
        (
            "no expiry",
            sign(
                &json!({ "sub": alice_id.to_string(), "role": "CUSTOMER", "iat": now, "iss": ISSUER }),
                JWT_SECRET,
                Algorithm::HS256,
            ),
        ),
    ];
    Hostile {
        app,
        store,
        products,
        alice,
        bob,
        alice_order,
        tokens,
    }
}

/// Name, bearer token, body, expected HTTP status, expected error code.
type Case<'a> = (String, Option<&'a str>, Vec<u8>, u16, &'static str);

#[tokio::test]
async fn every_bad_or_hostile_request_gets_a_clear_error_and_changes_nothing() {
    let h = hostile_setup().await;
    let app = &h.app;
    let p1 = h.products[0].to_string();
    let lock = |items: Value| gql(LOCK, json!({ "items": items }));
    let lock_one = |quantity: Value| lock(lines(&[(&p1, quantity)]));

    let ten_thousand_lines = lock(Value::Array(
        (0..10_000)
            .map(|i| json!({ "productId": (i + 1).to_string(), "quantity": 1 }))
            .collect(),
    ));
    let mut batch =
        vec![json!({ "query": LOCK, "variables": { "items": lines(&[(&p1, json!(1))]) } })];
    batch.extend((0..999).map(|_| json!({ "query": "{stores{id}}" })));
    let ten_mib = {
        let mut body = br#"{"query": "{ stores { id } }", "padding": ""#.to_vec();
        body.resize(10 * 1024 * 1024, b'x');
        body.extend_from_slice(b"\"}");
        body
    };

    #[rustfmt::skip]
    let mut cases: Vec<Case> = vec![
        ("malformed JSON".into(), Some(&h.alice), br#"{"query": "mutation { lockOrder("#.to_vec(), 400, "BAD_REQUEST"),
        ("JSON that is no request".into(), Some(&h.alice), b"[1, 2, 3]".to_vec(), 400, "BAD_REQUEST"),
        ("wrong variable type".into(), Some(&h.alice), gql(LOCK, json!({ "items": "two of product one" })), 400, "GRAPHQL_VALIDATION_FAILED"),
        ("quantity as a string".into(), Some(&h.alice), lock_one(json!("3")), 400, "GRAPHQL_VALIDATION_FAILED"),
        ("quantity 0".into(), Some(&h.alice), lock_one(json!(0)), 200, "INVALID_QUANTITY"),
        ("quantity -1".into(), Some(&h.alice), lock_one(json!(-1)), 200, "INVALID_QUANTITY"),
        ("quantity 2147483648".into(), Some(&h.alice), lock_one(json!(2_147_483_648_i64)), 400, "GRAPHQL_VALIDATION_FAILED"),
        ("quantity 10^12".into(), Some(&h.alice), lock_one(json!(1_000_000_000_000_i64)), 400, "GRAPHQL_VALIDATION_FAILED"),
        ("quantity 10^12 in the query text".into(), Some(&h.alice),
            gql(&format!("mutation {{ lockOrder(input: {{ items: [{{ productId: \"{p1}\", quantity: 1000000000000 }}] }}) {{ order {{ id }} }} }}"), json!({})),
            400, "GRAPHQL_VALIDATION_FAILED"),
        ("product id abc".into(), Some(&h.alice), lock(lines(&[("abc", json!(1))])), 200, "PRODUCT_NOT_FOUND"),
        ("product id 1 OR 1=1".into(), Some(&h.alice), lock(lines(&[("1 OR 1=1", json!(1))])), 200, "PRODUCT_NOT_FOUND"),
        ("10 000 lines".into(), Some(&h.alice), ten_thousand_lines, 413, "PAYLOAD_TOO_LARGE"),
        ("empty line list".into(), Some(&h.alice), lock(json!([])), 200, "EMPTY_ORDER"),
        ("confirm another customer's order".into(), Some(&h.bob),
            gql(CONFIRM, json!({ "id": h.alice_order, "ref": "pay-1" })), 200, "ORDER_NOT_FOUND"),
        ("cancel another customer's order".into(), Some(&h.bob),
            gql(CANCEL, json!({ "id": h.alice_order })), 200, "ORDER_NOT_FOUND"),
        ("cancel order abc".into(), Some(&h.bob), gql(CANCEL, json!({ "id": "abc" })), 200, "ORDER_NOT_FOUND"),
        ("no token".into(), None, lock_one(json!(1)), 200, "UNAUTHENTICATED"),
        ("customer calls createProduct".into(), Some(&h.alice),
            gql(CREATE, json!({ "store": h.store.to_string(), "name": "Sneaky" })), 200, "FORBIDDEN"),
        ("customer calls restockProduct".into(), Some(&h.alice),
            gql(RESTOCK, json!({ "id": p1 })), 200, "FORBIDDEN"),
        ("query 50 levels deep".into(), Some(&h.alice), gql(&nested_query(50), json!({})), 400, "QUERY_TOO_DEEP"),
        ("query 16 levels deep".into(), Some(&h.alice), gql(&nested_query(16), json!({})), 400, "QUERY_TOO_DEEP"),
        ("nested connections of 100".into(), Some(&h.alice),
            gql("{ products(first: 100) { edges { node { store { products(first: 100) { edges { node { id } } } } } } } }", json!({})),
            400, "QUERY_TOO_COMPLEX"),
        ("query with 10 000 aliases".into(), Some(&h.alice), gql(&aliases(10_000, "me { id }"), json!({})), 413, "PAYLOAD_TOO_LARGE"),
        ("10 MiB body".into(), Some(&h.alice), ten_mib, 413, "PAYLOAD_TOO_LARGE"),
        ("batch of 1000 operations".into(), Some(&h.alice), Value::Array(batch).to_string().into_bytes(), 400, "BATCH_TOO_LARGE"),
        ("empty batch".into(), Some(&h.alice), b"[]".to_vec(), 400, "BATCH_TOO_LARGE"),
        ("not GraphQL".into(), Some(&h.alice), gql("mutation { lockOrder(", json!({})), 400, "GRAPHQL_PARSE_FAILED"),
    ];
    for (name, token) in &h.tokens {
        cases.push((
            format!("{name} token"),
            Some(token),
            lock_one(json!(1)),
            200,
            "UNAUTHENTICATED",
        ));
        cases.push((
            format!("{name} token confirming"),
            Some(token),
            gql(CONFIRM, json!({ "id": h.alice_order, "ref": "pay-1" })),
            200,
            "UNAUTHENTICATED",
        ));
    }

    let before = snapshot(app, h.store, &h.products).await;
    assert_eq!(before.stock[0], (8, 2, 0), "Alice holds 2 units");
    for (name, token, body, status, code) in cases {
        let reply = post(app, body, token).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (status, code),
            "{name}: {}",
            reply.body.to_string().chars().take(500).collect::<String>()
        );
        if reply.status != 200 {
            assert!(
                reply.body["errors"][0]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{name}: a refusal says why"
            );
        }
        assert_eq!(
            snapshot(app, h.store, &h.products).await,
            before,
            "{name} changed stock, holds or orders"
        );
    }

    // The hold they tried to take over is still Alice's, and still hers to cancel.
    let cancelled = post(
        app,
        gql(CANCEL, json!({ "id": h.alice_order })),
        Some(&h.alice),
    )
    .await;
    assert_eq!(
        cancelled.body["data"]["cancelOrder"]["order"]["status"],
        "CANCELLED"
    );
    assert_eq!(app.available(h.store, h.products[0]).await, 10);
}

// Duplicate lines are summed into one line: `hold::duplicate_lines_are_summed_into_one`.

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413_before_it_is_read() {
    let app = spawn_app().await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    // Read the answer while still sending: the server answers as soon as the limit is passed.
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = read.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    });
    let head = "POST /graphql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let mut sent = 0usize;
    if write.write_all(head.as_bytes()).await.is_ok() {
        let chunk = vec![b' '; 64 * 1024];
        while sent < 10 * 1024 * 1024 {
            let frame = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            if write.write_all(&frame).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = write.write_all(b"0\r\n\r\n").await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the server answers")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"PAYLOAD_TOO_LARGE""#), "{answer}");
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_gets_408() {
    let app = spawn_app_with(TestOptions::default().arg("request-timeout", "1s")).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    // Promise 100 bytes, send 10, and stall.
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"query\":",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut answer))
        .await
        .expect("the server answers")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"TIMEOUT""#), "{answer}");
}

#[tokio::test]
async fn limits_hold_even_when_the_body_limit_is_raised() {
    let app = spawn_app_with(TestOptions::default().arg("max-body-bytes", 4 * 1024 * 1024)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 10, None).await;
    let (_, customer) = app.create_customer().await;
    let before = snapshot(&app, store, &[product]).await;

    for field in ["me { id }", "__typename"] {
        let started = Instant::now();
        let reply = post(
            &app,
            gql(&aliases(10_000, field), json!({})),
            Some(&customer),
        )
        .await;
        println!(
            "10 000 aliases of `{field}` refused in {:?}",
            started.elapsed()
        );
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (400, "QUERY_TOO_COMPLEX"),
            "{}",
            reply.body
        );
    }

    let items: Vec<Value> = (0..10_000)
        .map(|i| json!({ "productId": (i + 1).to_string(), "quantity": 1 }))
        .collect();
    let reply = post(&app, gql(LOCK, json!({ "items": items })), Some(&customer)).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (200, "TOO_MANY_LINES")
    );
    let same: Vec<Value> = (0..10_000)
        .map(|_| json!({ "productId": product.to_string(), "quantity": 1 }))
        .collect();
    let reply = post(&app, gql(LOCK, json!({ "items": same })), Some(&customer)).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (200, "INVALID_QUANTITY"),
        "10 000 units of one product, summed, are over MAX_LINE_QUANTITY"
    );
    assert_eq!(snapshot(&app, store, &[product]).await, before);
}

/// What a storefront asks for, at the largest page the API serves: the catalogue, and the
/// order history down to each line's product and its store.
#[tokio::test]
async fn the_deepest_storefront_queries_pass_the_default_limits() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 10, None).await;
    let (_, customer) = app.create_customer().await;
    let locked = post(
        &app,
        gql(
            LOCK,
            json!({ "items": lines(&[(&product.to_string(), json!(1))]) }),
        ),
        Some(&customer),
    )
    .await;
    let order = locked.body["data"]["lockOrder"]["order"]["id"].clone();

    let catalogue = "query($store: ID!) {
        me { id email role }
        stores { id name }
        store(id: $store) { id name products(first: 100) {
            totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
            edges { cursor node { id name priceCents available maxPerCustomer store { id name } } } } }
        products(first: 100) { totalCount pageInfo { hasNextPage endCursor }
            edges { cursor node { id name priceCents available maxPerCustomer store { id name } } } } }";
    let history = "query($order: ID!) {
        myOrders(first: 100) { totalCount pageInfo { hasNextPage endCursor }
            edges { cursor node { id status totalCents heldUntil createdAt confirmedAt paymentReference
                store { id name }
                lines { quantity unitPriceCents product { id name priceCents available store { id name } } } } } }
        order(id: $order) { id status totalCents heldUntil store { id name }
            lines { quantity unitPriceCents product { id name available store { id name } } } } }";
    for (query, variables) in [
        (catalogue, json!({ "store": store.to_string() })),
        (history, json!({ "order": order })),
    ] {
        let reply = post(&app, gql(query, variables), Some(&customer)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.body.get("errors").is_none(), "{}", reply.body);
    }
    let reply = post(
        &app,
        gql(history, json!({ "order": order })),
        Some(&customer),
    )
    .await;
    assert_eq!(
        reply.body["data"]["order"]["lines"][0]["product"]["store"]["id"],
        store.to_string()
    );
}

/// GraphiQL's schema query (the graphql-js introspection query, its type references nine
/// levels deep) passes the defaults; with introspection off it is refused.
#[tokio::test]
async fn introspection_is_on_by_default_and_can_be_switched_off() {
    let type_ref = format!(
        "kind name {}{}",
        "ofType { kind name ".repeat(9),
        "}".repeat(9)
    );
    let query = format!(
        "query IntrospectionQuery {{ __schema {{ queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }}
            types {{ ...FullType }} directives {{ name description locations args {{ ...InputValue }} }} }} }}
        fragment FullType on __Type {{ kind name description
            fields(includeDeprecated: true) {{ name description args {{ ...InputValue }} type {{ ...TypeRef }} isDeprecated deprecationReason }}
            inputFields {{ ...InputValue }} interfaces {{ ...TypeRef }}
            enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }}
            possibleTypes {{ ...TypeRef }} }}
        fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue }}
        fragment TypeRef on __Type {{ {type_ref} }}"
    );
    let on = spawn_app().await;
    let reply = post(&on, gql(&query, json!({})), None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body["data"]["__schema"]["queryType"]["name"],
        "QueryRoot"
    );

    let off = spawn_app_with(TestOptions::default().arg("graphql-introspection", "false")).await;
    let reply = post(&off, gql(&query, json!({})), None).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "GRAPHQL_VALIDATION_FAILED"),
        "{}",
        reply.body
    );
    let reply = post(&off, gql("{ stores { id } }", json!({})), None).await;
    assert_eq!(
        reply.body["data"]["stores"],
        json!([]),
        "queries still work"
    );
}

/// Quotes, brackets, Lua and SQL syntax and multi-byte text are data: stored, returned
/// as sent, never run.
#[tokio::test]
async fn text_fields_keep_meta_characters_and_unicode_verbatim() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let (_, admin) = app.create_admin().await;
    let hostile = r#"x'); DROP TABLE orders; -- ]]..redis.call('FLUSHALL')--[[ %s \" 日本語 ü 😀 {store:1} $1"#;

    let email = r#"o'neil"--;]]{x}[[%s\ü日本😀@example.com"#;
    let registered = register(&app, email).await;
    assert_eq!(
        registered.body["data"]["register"]["user"]["email"], email,
        "{}",
        registered.body
    );
    let logged_in = post(
        &app,
        gql(LOGIN, json!({ "email": email, "password": PASSWORD })),
        None,
    )
    .await;
    let customer = logged_in.body["data"]["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", logged_in.body))
        .to_owned();

    let created = post(
        &app,
        gql(
            CREATE,
            json!({ "store": store.to_string(), "name": hostile }),
        ),
        Some(&admin),
    )
    .await;
    let product = &created.body["data"]["createProduct"]["product"];
    assert_eq!(product["name"], hostile, "{}", created.body);
    let product_id = product["id"].as_str().unwrap().to_owned();
    let stored: String = sqlx::query_scalar("SELECT name FROM products WHERE id = ?")
        .bind(product_id.parse::<u64>().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, hostile);

    let restocked = post(
        &app,
        gql(RESTOCK, json!({ "id": product_id, "reason": hostile })),
        Some(&admin),
    )
    .await;
    assert_eq!(
        restocked.body["data"]["restockProduct"]["product"]["available"],
        10
    );
    let outbox = app.keys.store(store).outbox;
    let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&outbox)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    let reason: String = last.ids[0].get("reason").unwrap();
    assert_eq!(
        reason, hostile,
        "the restock reason reaches the outbox as sent"
    );

    assert!(
        hostile.chars().count() <= 128,
        "fits an idempotency key and a reference"
    );
    let key = hostile;
    let items = lines(&[(&product_id, json!(1))]);
    let first = post(
        &app,
        gql(LOCK, json!({ "items": items, "key": key })),
        Some(&customer),
    )
    .await;
    let again = post(
        &app,
        gql(LOCK, json!({ "items": items, "key": key })),
        Some(&customer),
    )
    .await;
    let order = first.body["data"]["lockOrder"]["order"]["id"].clone();
    assert!(order.is_string(), "{}", first.body);
    assert_eq!(
        again.body["data"]["lockOrder"]["order"]["id"], order,
        "the key names its order"
    );

    let reference = format!("{hostile} paid");
    let confirmed = post(
        &app,
        gql(CONFIRM, json!({ "id": order, "ref": reference })),
        Some(&customer),
    )
    .await;
    assert_eq!(
        confirmed.body["data"]["confirmOrder"]["order"]["paymentReference"], reference,
        "{}",
        confirmed.body
    );

    // Nothing ran: the tables and this test's keys are all still there.
    let orders: Result<i64, _> = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&app.db)
        .await;
    assert!(orders.is_ok());
    assert_eq!(
        app.available(store, product_id.parse().map(ProductId).unwrap())
            .await,
        9
    );
}

/// At most 3 failed logins per email and per address within `window`.
async fn login_limited_app(window: &str) -> TestApp {
    spawn_app_with(
        TestOptions::default()
            .arg("login-window", window)
            .arg("login-max-failures", 3),
    )
    .await
}

#[tokio::test]
async fn failed_logins_are_limited_per_email_and_address_and_the_limit_lifts() {
    let app = login_limited_app("2s").await;
    let registered = register(&app, "mallory@example.com").await;
    assert_eq!(registered.body["data"]["register"]["errors"], json!([]));
    let login =
        |email: &str, password: &str| gql(LOGIN, json!({ "email": email, "password": password }));

    // Spellings of one address share one count.
    for email in [
        "mallory@example.com",
        " Mallory@Example.COM",
        "MALLORY@EXAMPLE.COM\t",
    ] {
        let reply = post(&app, login(email, "wrong password"), None).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (200, "INVALID_CREDENTIALS")
        );
    }
    let limited = post(&app, login("mallory@example.com", PASSWORD), None).await;
    assert_eq!(
        (limited.status, limited.code().as_str()),
        (429, "RATE_LIMITED"),
        "even the right password waits out the window: {}",
        limited.body
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = post(&app, login("mallory@example.com", PASSWORD), None).await;
        if reply.body["data"]["login"]["token"].is_string() {
            break;
        }
        assert_eq!(reply.code(), "RATE_LIMITED", "{}", reply.body);
        assert!(Instant::now() < deadline, "the limit never lifted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_burst_of_parallel_guesses_gets_no_more_tries_than_the_limit() {
    let app = login_limited_app("1m").await;
    let guesses = (0..20).map(|i| {
        let app = &app;
        async move {
            // Another email each time: only the address counter can stop them.
            let body = gql(
                LOGIN,
                json!({ "email": format!("victim{i}@example.com"), "password": "guess" }),
            );
            post(app, body, None).await.code()
        }
    });
    let codes = futures_util::future::join_all(guesses).await;
    let tried = codes.iter().filter(|c| *c == "INVALID_CREDENTIALS").count();
    let limited = codes.iter().filter(|c| *c == "RATE_LIMITED").count();
    assert_eq!((tried, limited), (3, 17), "{codes:?}");
}

/// An attacker must not learn which emails have accounts from how long a login takes.
#[tokio::test]
async fn a_login_for_an_unknown_email_costs_about_what_a_known_one_costs() {
    // A timing comparison: alone on the cores, and over enough rounds that one stalled
    // login cannot move the median.
    let _alone = one_at_a_time().await;
    let app = spawn_app_with(TestOptions::default().arg("login-max-failures", 1000)).await;
    register(&app, "known@example.com").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for round in 0..15 {
        for (email, times) in [
            ("known@example.com", &mut known),
            ("nobody@example.com", &mut unknown),
        ] {
            let started = Instant::now();
            let reply = post(
                &app,
                gql(
                    LOGIN,
                    json!({ "email": email, "password": "wrong password" }),
                ),
                None,
            )
            .await;
            assert_eq!(reply.code(), "INVALID_CREDENTIALS", "round {round}");
            times.push(started.elapsed());
        }
    }
    known.sort();
    unknown.sort();
    let median = known.len() / 2;
    let ratio = unknown[median].as_secs_f64() / known[median].as_secs_f64();
    println!(
        "median login: known {:?}, unknown {:?}, ratio {ratio:.2}",
        known[median], unknown[median]
    );
    assert!(
        (0.5..=2.0).contains(&ratio),
        "known {known:?} unknown {unknown:?}"
    );
}

/// A fault inside the service is logged in full and shown as a generic message whose
/// request id matches the response header.
#[tokio::test]
async fn an_internal_error_shows_a_generic_message_and_the_request_id() {
    let app = spawn_app().await;
    sqlx::query("RENAME TABLE stores TO stores_moved_away")
        .execute(&app.db)
        .await
        .unwrap();
    let reply = post(&app, gql("{ stores { id name } }", json!({})), None).await;
    let error = &reply.body["errors"][0];
    assert_eq!(
        error["extensions"]["code"], "INTERNAL_SERVER_ERROR",
        "{}",
        reply.body
    );
    assert_eq!(error["message"], "internal error");
    let header = reply.request_id.expect("x-request-id header");
    assert!(!header.is_empty());
    assert_eq!(error["extensions"]["requestId"], header.as_str());
    let text = reply.body.to_string();
    for secret in ["stores_moved_away", "doesn't exist", "SELECT", JWT_SECRET] {
        assert!(!text.contains(secret), "{secret:?} leaked: {text}");
    }
}
