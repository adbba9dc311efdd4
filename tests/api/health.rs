//! /healthz and /readyz.

use crate::helpers::{PrivateRedis, TestOptions, one_at_a_time, spawn_app, spawn_app_with};
use serde_json::Value;

#[tokio::test]
async fn healthz_answers_while_the_process_is_up() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn readyz_is_ready_when_redis_and_mysql_answer() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["status"], "up");
    assert_eq!(body["checks"]["mysql"]["status"], "up");
}

#[tokio::test]
async fn readyz_names_mysql_when_it_is_gone() {
    let app = spawn_app().await;
    // The service's MySQL pool is closed under it: SELECT 1 can no longer be sent.
    app.db.close().await;
    let response = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["mysql"]["status"], "down");
    assert_eq!(body["checks"]["redis"]["status"], "up");
}

#[tokio::test]
async fn readyz_names_redis_when_it_is_unreachable() {
    let _serial = one_at_a_time().await;
    let redis = PrivateRedis::start();
    let app = spawn_app_with(TestOptions::default().arg("redis-url", redis.url())).await;
    drop(redis); // the server is killed
    let response = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert_eq!(body["checks"]["mysql"]["status"], "up");
}

#[tokio::test]
async fn graphiql_is_served_on_get() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/graphql", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );
}
