//! Log lines an operator can follow: the request id comes back in the response and is on
//! every JSON log line of that request, with the operation and the user.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{one_at_a_time, spawn_app, unique_suffix};
use crate::process::ServiceProcess;

const LOCK: &str = "mutation Lock($input: LockOrderInput!) {
    lockOrder(input: $input) { order { id status } errors { code } }
}";

/// The JSON log lines whose request span carries `id`.
fn lines_of(log: &str, id: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .filter(|line| line["span"]["request_id"] == id)
        .collect()
}

#[tokio::test]
async fn the_request_id_comes_back_and_is_on_the_json_log_line_of_its_request() {
    let _serial = one_at_a_time().await;
    let mut app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(store, 1500, 5, None).await;
    let (user, token) = app.create_customer().await;
    app.stop().await;
    let service = ServiceProcess::start(
        &app,
        &crate::helpers::redis_url(),
        &[
            ("LOG_FORMAT", "json"),
            // Per-request lines (status and latency) are tower-http's, at debug.
            ("RUST_LOG", "info,sqlx=warn,tower_http=debug"),
        ],
    )
    .await;

    let id = format!("sale-{}", unique_suffix());
    let response = reqwest::Client::new()
        .post(format!("{}/graphql", service.address))
        .header("x-request-id", &id)
        .bearer_auth(&token)
        .json(&json!({
            "query": LOCK,
            "operationName": "Lock",
            "variables": { "input": { "items": [{ "productId": product.0.to_string(), "quantity": 1 }] } },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], id.as_str());
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"]["lockOrder"]["order"]["status"], "HELD",
        "{body}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = lines_of(&service.log_text(), &id);
        if lines
            .iter()
            .any(|l| l["message"] == "finished processing request")
        {
            break lines;
        }
        assert!(Instant::now() < deadline, "{}", service.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let finished = lines
        .iter()
        .find(|l| l["message"] == "finished processing request")
        .unwrap();
    assert_eq!(finished["span"]["operation"], "Lock", "{finished}");
    assert_eq!(finished["span"]["graphql_field"], "lockOrder", "{finished}");
    assert_eq!(finished["span"]["user_id"], user.0, "{finished}");
    assert_eq!(finished["status"], 200, "{finished}");
    assert!(finished["level"] == "DEBUG" && finished["timestamp"].is_string());
}

#[tokio::test]
async fn a_request_without_a_usable_id_gets_a_new_one() {
    let app = spawn_app().await;
    for sent in [None, Some("two words"), Some(&*"x".repeat(200))] {
        let mut request = app.http.get(format!("{}/healthz", app.address));
        if let Some(sent) = sent {
            request = request.header("x-request-id", sent);
        }
        let response = request.send().await.unwrap();
        let echoed = response.headers()["x-request-id"].to_str().unwrap();
        assert!(
            uuid::Uuid::parse_str(echoed).is_ok(),
            "{sent:?} -> {echoed}"
        );
    }
}
