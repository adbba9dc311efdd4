//! Sale-day abuse: documents built to cost more than any server has, floods of them during
//! a sale, one customer cornering a product, registration probing and reused idempotency
//! keys. Each is refused with a clear code, and everyone else keeps buying.

use std::time::{Duration, Instant};

use flashstock::domain::{ProductId, StoreId};
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::hardening::{CANCEL, LOCK, REGISTER, Reply, gql, lines, post, snapshot};
use crate::helpers::{PASSWORD, TestApp, TestOptions, one_at_a_time, redis_url, spawn_app_with};
use crate::process::ServiceProcess;

/// `{ ...F0 } fragment F0 on QueryRoot { ...F1 ×spreads } … fragment F<levels> { leaf }`
fn fragment_chain(levels: usize, spreads: usize, leaf: &str) -> String {
    let mut query = String::from("{ ...F0 }");
    for level in 0..levels {
        let next = format!("...F{} ", level + 1).repeat(spreads);
        query.push_str(&format!(" fragment F{level} on QueryRoot {{ {next}}}"));
    }
    query.push_str(&format!(" fragment F{levels} on QueryRoot {{ {leaf} }}"));
    query
}

/// Every hostile document, with the code it must be refused with.
fn hostile_documents() -> Vec<(&'static str, String, &'static str)> {
    let aliases: String = (0..300).map(|i| format!("a{i}: __typename ")).collect();
    let inline_chain: String = {
        let mut query = String::from("{ ...I0 }");
        for level in 0..40 {
            query.push_str(&format!(
                " fragment I{level} on QueryRoot {{ ... on QueryRoot {{ ...I{} }} }}",
                level + 1
            ));
        }
        query.push_str(" fragment I40 on QueryRoot { __typename }");
        query
    };
    vec![
        (
            "fragment doubling, 31 levels",
            fragment_chain(31, 2, "__typename"),
            "QUERY_TOO_COMPLEX",
        ),
        (
            "fragment fan-out, 4 spreads x 12 levels",
            fragment_chain(12, 4, "__typename"),
            "QUERY_TOO_COMPLEX",
        ),
        (
            "fragment cycle with fan-out",
            "{ ...A } fragment A on QueryRoot { ...B ...B ...B } fragment B on QueryRoot { ...A ...A ...A }".into(),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "fragment spreading itself twice",
            "{ ...A } fragment A on QueryRoot { ...A ...A }".into(),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "3 000 repeated directives",
            format!("{{ me {} {{ id }} }}", "@include(if: true) ".repeat(3000)),
            "QUERY_TOO_COMPLEX",
        ),
        (
            "300 repeated directives",
            format!("{{ me {} {{ id }} }}", "@skip(if: false) ".repeat(300)),
            "QUERY_TOO_COMPLEX",
        ),
        (
            "2 000 nested inline fragments",
            format!(
                "{{ {}__typename{} }}",
                "... on QueryRoot { ".repeat(2000),
                " }".repeat(2000)
            ),
            "QUERY_TOO_DEEP",
        ),
        (
            "inline fragments nested through 40 fragments",
            inline_chain,
            "QUERY_TOO_DEEP",
        ),
        (
            "wide alias fan-out inside fragments",
            format!(
                "{{ ...A }} fragment A on QueryRoot {{ {} }} fragment B on QueryRoot {{ {aliases}}}",
                "...B ".repeat(10)
            ),
            "QUERY_TOO_COMPLEX",
        ),
    ]
}

/// A client that gives up long after any honest answer, so a stalled service fails the test.
fn patient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

async fn send_document(http: &reqwest::Client, address: &str, query: &str) -> (u16, Value) {
    let response = http
        .post(format!("{address}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("the service answers a hostile document");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

async fn healthy(http: &reqwest::Client, address: &str) -> bool {
    http.get(format!("{address}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

#[tokio::test]
async fn hostile_documents_are_refused_quickly_and_the_service_stays_up() {
    let _serial = one_at_a_time().await;
    let app = spawn_app_with(TestOptions::default()).await;
    let service = ServiceProcess::start(&app, &redis_url(), &[]).await;
    let http = patient_client();
    for (name, query, expected) in hostile_documents() {
        let started = Instant::now();
        let (status, body) = send_document(&http, &service.address, &query).await;
        let took = started.elapsed();
        println!(
            "{name}: {} bytes refused with {} in {took:?}",
            query.len(),
            code(&body)
        );
        assert_eq!((status, code(&body)), (400, expected), "{name}: {body}");
        assert!(
            body.get("data").is_none_or(Value::is_null),
            "{name}: {body}"
        );
        assert!(
            healthy(&http, &service.address).await,
            "{name}: /healthz after"
        );
    }
}

/// `count` customers of their own, each with a token.
async fn customers(app: &TestApp, count: usize) -> Vec<String> {
    join_all((0..count).map(|_| app.create_customer()))
        .await
        .into_iter()
        .map(|(_, token)| token)
        .collect()
}

async fn lock_one(app: &TestApp, token: &str, product: ProductId, key: Option<&str>) -> Reply {
    let items = lines(&[(&product.to_string(), json!(1))]);
    post(
        app,
        gql(LOCK, json!({ "items": items, "key": key })),
        Some(token),
    )
    .await
}

fn order_status(reply: &Reply) -> Option<&str> {
    reply.body["data"]["lockOrder"]["order"]["status"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_hostile_documents_and_logins_during_a_sale_stalls_nothing() {
    let _serial = one_at_a_time().await;
    let mut app = spawn_app_with(TestOptions::default()).await;
    let store = app.create_store().await;
    let stock = 20;
    let product = app.create_product(store, 500, stock, None).await;
    let buyers = customers(&app, 60).await;
    // Every login of the flood is hashed: none is refused by the failed-login limit.
    let service =
        ServiceProcess::start(&app, &redis_url(), &[("LOGIN_MAX_FAILURES", "1000")]).await;
    app.address = service.address.clone();
    let http = patient_client();

    let documents = hostile_documents();
    let flood = join_all((0..48).map(|i| {
        let (http, address) = (&http, &service.address);
        let query = documents[i % documents.len()].1.clone();
        async move { send_document(http, address, &query).await.0 }
    }));
    let logins = join_all((0..16).map(|i| {
        let (http, address) = (&http, &service.address);
        async move {
            http.post(format!("{address}/graphql"))
                .json(&json!({
                    "query": "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
                    "variables": { "e": format!("nobody-{i}@example.com"), "p": PASSWORD },
                }))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    }));
    let sale = join_all(
        buyers
            .iter()
            .map(|token| lock_one(&app, token, product, None)),
    );
    let probes = async {
        let mut answered = Vec::new();
        for _ in 0..15 {
            let started = Instant::now();
            answered.push((healthy(&http, &service.address).await, started.elapsed()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        answered
    };
    let (flood, logins, sale, probes) = tokio::join!(flood, logins, sale, probes);

    assert!(flood.iter().all(|status| *status == 400), "{flood:?}");
    assert!(logins.iter().all(|status| *status == 200), "{logins:?}");
    let held = sale
        .iter()
        .filter(|reply| order_status(reply) == Some("HELD"))
        .count();
    let refused = sale
        .iter()
        .filter(|reply| reply.code() == "INSUFFICIENT_STOCK")
        .count();
    assert_eq!((held, refused), (stock as usize, 60 - stock as usize));
    assert_eq!(app.available(store, product).await, 0);
    assert_eq!(app.held(store, product).await, stock);
    let slowest = probes.iter().map(|(_, took)| *took).max().unwrap();
    println!("slowest /healthz during the flood: {slowest:?}");
    assert!(probes.iter().all(|(ok, _)| *ok), "{probes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_flood_of_hostile_documents_stops_within_the_shutdown_timeout() {
    let _serial = one_at_a_time().await;
    let app = spawn_app_with(TestOptions::default()).await;
    let mut service =
        ServiceProcess::start(&app, &redis_url(), &[("SHUTDOWN_TIMEOUT", "3s")]).await;
    let http = patient_client();
    let address = service.address.clone();
    let flooding = tokio::spawn(async move {
        let documents = hostile_documents();
        loop {
            let sent = join_all(documents.iter().map(|(_, query, _)| {
                http.post(format!("{address}/graphql"))
                    .json(&json!({ "query": query }))
                    .send()
            }))
            .await;
            if sent.iter().all(Result::is_err) {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled = Instant::now();
    service.terminate();
    let status = service.wait_for_exit(Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    println!("stopped {took:?} after SIGTERM during the flood: {status:?}");
    assert!(status.is_some(), "still running 5 s after SIGTERM");
    assert!(took <= Duration::from_millis(3500), "took {took:?}");
    flooding.abort();
}

async fn capped_sale(cap: u32) -> (TestApp, StoreId, ProductId) {
    let app = spawn_app_with(TestOptions::default().arg("max-holds-per-customer", cap)).await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 100, None).await;
    (app, store, product)
}

#[tokio::test]
async fn one_customer_racing_for_holds_gets_exactly_the_cap() {
    let (app, store, product) = capped_sale(3).await;
    let (_, token) = app.create_customer().await;

    // 12 at once, each with an idempotency key of its own: exactly 3 get through.
    let raced = join_all((0..12).map(|i| {
        let (app, token) = (&app, &token);
        async move { lock_one(app, token, product, Some(&format!("cart-{i}"))).await }
    }))
    .await;
    let held: Vec<&Reply> = raced
        .iter()
        .filter(|r| order_status(r) == Some("HELD"))
        .collect();
    let capped = raced
        .iter()
        .filter(|r| r.code() == "TOO_MANY_HOLDS")
        .count();
    assert_eq!((held.len(), capped), (3, 9));
    assert_eq!(app.held(store, product).await, 3);
    assert_eq!(app.available(store, product).await, 97);

    // Aliases in one request cannot get past it either.
    let aliased = format!(
        "mutation {{ {} }}",
        (0..4)
            .map(|i| format!(
                "l{i}: lockOrder(input: {{ items: [{{ productId: \"{product}\", quantity: 1 }}] }}) {{ order {{ id }} errors {{ code }} }}"
            ))
            .collect::<String>()
    );
    let reply = post(&app, gql(&aliased, json!({})), Some(&token)).await;
    for i in 0..4 {
        assert_eq!(
            reply.body["data"][format!("l{i}")]["errors"][0]["code"],
            "TOO_MANY_HOLDS",
            "{}",
            reply.body
        );
    }
    assert_eq!(app.held(store, product).await, 3);

    // A retry of a held request still answers its order, cap or no cap.
    for (i, reply) in raced.iter().enumerate() {
        if order_status(reply) == Some("HELD") {
            let retry = lock_one(&app, &token, product, Some(&format!("cart-{i}"))).await;
            assert_eq!(
                retry.body["data"]["lockOrder"]["order"]["id"],
                reply.body["data"]["lockOrder"]["order"]["id"]
            );
        }
    }
    assert_eq!(app.held(store, product).await, 3);

    // A hold that ends frees its slot: one more, and only one.
    let order = held[0].body["data"]["lockOrder"]["order"]["id"].clone();
    let cancelled = post(&app, gql(CANCEL, json!({ "id": order })), Some(&token)).await;
    assert_eq!(
        cancelled.body["data"]["cancelOrder"]["order"]["status"],
        "CANCELLED"
    );
    let again = join_all((0..3).map(|_| lock_one(&app, &token, product, None))).await;
    assert_eq!(
        again
            .iter()
            .filter(|r| order_status(r) == Some("HELD"))
            .count(),
        1
    );
    assert_eq!(app.held(store, product).await, 3);
    assert_eq!(app.available(store, product).await, 97);

    // Another customer is not affected.
    let (_, other) = app.create_customer().await;
    assert_eq!(
        order_status(&lock_one(&app, &other, product, None).await),
        Some("HELD")
    );
}

#[tokio::test]
async fn an_idempotency_key_reused_for_other_lines_is_refused_and_changes_nothing() {
    let app = spawn_app_with(TestOptions::default()).await;
    let store = app.create_store().await;
    let p1 = app.create_product(store, 100, 10, None).await;
    let p2 = app.create_product(store, 300, 10, None).await;
    let (_, token) = app.create_customer().await;
    let lock = |items: Value, key: &str| {
        let body = gql(LOCK, json!({ "items": items, "key": key }));
        post(&app, body, Some(&token))
    };
    let (p1s, p2s) = (p1.to_string(), p2.to_string());

    let first = lock(lines(&[(&p1s, json!(1))]), "K").await;
    let order = first.body["data"]["lockOrder"]["order"]["id"].clone();
    assert!(order.is_string(), "{}", first.body);
    let before = snapshot(&app, store, &[p1, p2]).await;

    let reused = lock(lines(&[(&p1s, json!(3))]), "K").await;
    let error = &reused.body["data"]["lockOrder"]["errors"][0];
    assert_eq!(error["code"], "IDEMPOTENCY_KEY_REUSED", "{}", reused.body);
    assert_eq!(
        reused.body["data"]["lockOrder"]["order"],
        Value::Null,
        "{}",
        reused.body
    );
    let named = post(
        &app,
        gql(
            "mutation($items: [OrderLineInput!]!) { lockOrder(input: { items: $items, idempotencyKey: \"K\" }) { errors { code orderId } } }",
            json!({ "items": lines(&[(&p2s, json!(1))]) }),
        ),
        Some(&token),
    )
    .await;
    assert_eq!(
        named.body["data"]["lockOrder"]["errors"][0]["orderId"], order,
        "{}",
        named.body
    );
    assert_eq!(snapshot(&app, store, &[p1, p2]).await, before);

    let retry = lock(lines(&[(&p1s, json!(1))]), "K").await;
    assert_eq!(retry.body["data"]["lockOrder"]["order"]["id"], order);

    // The fingerprint is of the normalised request: the same lines in another order, or
    // one product over two lines, are the same request.
    let multi = lock(lines(&[(&p1s, json!(1)), (&p2s, json!(2))]), "M").await;
    let multi_order = multi.body["data"]["lockOrder"]["order"]["id"].clone();
    assert!(multi_order.is_string(), "{}", multi.body);
    let reordered = lock(
        lines(&[(&p2s, json!(1)), (&p1s, json!(1)), (&p2s, json!(1))]),
        "M",
    )
    .await;
    assert_eq!(
        reordered.body["data"]["lockOrder"]["order"]["id"],
        multi_order
    );
    assert_eq!(app.held(store, p1).await, 2);
    assert_eq!(app.held(store, p2).await, 2);
}

async fn register_from(app: &TestApp, email: &str, forwarded_for: Option<&str>) -> u16 {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.address))
        .json(&json!({ "query": REGISTER, "variables": { "email": email, "password": PASSWORD } }));
    if let Some(forwarded) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    if status == 429 {
        assert_eq!(code(&body), "RATE_LIMITED", "{body}");
    }
    status
}

#[tokio::test]
async fn registrations_are_limited_per_client_address() {
    let app = spawn_app_with(TestOptions::default().arg("register-max-per-address", 5)).await;
    let taken = format!("taken-{}@example.com", crate::helpers::unique_suffix());
    let mut statuses = Vec::new();
    for i in 0..8 {
        // A client that makes up forwarded-for addresses is still one address.
        let forged = format!("203.0.113.{i}");
        statuses.push(register_from(&app, &taken, Some(&forged)).await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_address_has_its_own_limits() {
    let app = spawn_app_with(
        TestOptions::default()
            .arg("register-max-per-address", 2)
            .arg("login-max-failures", 2)
            .arg("trusted-proxies", "10.0.0.0/8,127.0.0.1"),
    )
    .await;
    let email = |n: &str| format!("{n}-{}@example.com", crate::helpers::unique_suffix());
    let one = "198.51.100.1";
    let statuses: Vec<u16> = join_all((0..3).map(|i| {
        let address = format!("{one}, 10.1.2.3");
        let email = email(&format!("one{i}"));
        let app = &app;
        async move { register_from(app, &email, Some(&address)).await }
    }))
    .await;
    let mut sorted = statuses.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [200, 200, 429]);
    assert_eq!(
        register_from(&app, &email("two"), Some("198.51.100.2")).await,
        200
    );

    // The login limit keys on the same address.
    let login = |email: String, forwarded: &'static str| {
        let request = app
            .http
            .post(format!("{}/graphql", app.address))
            .header("x-forwarded-for", forwarded)
            .json(&json!({
                "query": "mutation($e: String!) { login(email: $e, password: \"wrong-password\") { errors { code } } }",
                "variables": { "e": email },
            }));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let mut from_three = Vec::new();
    for i in 0..3 {
        from_three.push(login(email(&format!("l{i}")), "198.51.100.3").await);
    }
    assert_eq!(from_three, [200, 200, 429]);
    assert_eq!(login(email("l4"), "198.51.100.4").await, 200);
}
