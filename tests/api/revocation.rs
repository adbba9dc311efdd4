//! Revoked tokens: revokeTokens, logout and a change of role.

use std::time::{Duration, Instant};

use flashstock::domain::UserId;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, TestOptions, spawn_app, spawn_app_with};

const ME: &str = "{ me { id role } }";
const LOGIN: &str = "mutation($email: String!, $password: String!) {
    login(email: $email, password: $password) { token user { id role } errors { code } } }";
const REVOKE: &str = "mutation($id: ID!) { revokeTokens(userId: $id) }";
const LOGOUT: &str = "mutation($all: Boolean) { logout(allDevices: $all) }";
const SET_ROLE: &str =
    "mutation($id: ID!, $role: Role!) { setUserRole(userId: $id, role: $role) { id role } }";

fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

/// The user's email, for logging in through the API.
async fn email_of(app: &TestApp, user: UserId) -> String {
    sqlx::query_scalar("SELECT email FROM users WHERE id = ?")
        .bind(user.0)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn login(app: &TestApp, user: UserId) -> String {
    let email = email_of(app, user).await;
    let body = app
        .graphql(LOGIN, json!({ "email": email, "password": PASSWORD }), None)
        .await;
    body["data"]["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("login failed: {body}"))
        .to_owned()
}

async fn set_role(app: &TestApp, admin: &str, user: UserId, role: &str) -> Value {
    let variables = json!({ "id": user.to_string(), "role": role });
    app.graphql(SET_ROLE, variables, Some(admin)).await
}

async fn me(app: &TestApp, token: &str) -> Value {
    app.graphql(ME, json!({}), Some(token)).await
}

async fn assert_accepted(app: &TestApp, token: &str, user: UserId) {
    let body = me(app, token).await;
    assert_eq!(body["data"]["me"]["id"], user.to_string(), "{body}");
}

async fn assert_refused(app: &TestApp, token: &str) {
    let body = me(app, token).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
}

#[tokio::test]
async fn revoked_tokens_are_refused_on_the_next_request_and_a_new_login_works() {
    let app = spawn_app().await;
    let (customer, token) = app.create_customer().await;
    let (_, admin) = app.create_admin().await;
    let second_device = login(&app, customer).await;
    assert_accepted(&app, &token, customer).await;
    assert_accepted(&app, &second_device, customer).await;

    // Only an ADMIN revokes someone's tokens.
    let body = app
        .graphql(REVOKE, json!({ "id": customer.to_string() }), Some(&token))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    assert_accepted(&app, &token, customer).await;

    let body = app
        .graphql(REVOKE, json!({ "id": customer.to_string() }), Some(&admin))
        .await;
    assert_eq!(body["data"]["revokeTokens"], true, "{body}");
    assert_refused(&app, &token).await;
    assert_refused(&app, &second_device).await;
    // A refused token locks nothing either.
    let body = app
        .graphql(
            "mutation { lockOrder(input: { items: [{ productId: \"1\", quantity: 1 }] }) { errors { code } } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");

    let fresh = login(&app, customer).await;
    assert_accepted(&app, &fresh, customer).await;

    let body = app
        .graphql(REVOKE, json!({ "id": "999999999" }), Some(&admin))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
}

#[tokio::test]
async fn logout_revokes_this_token_and_all_devices_revokes_every_token() {
    let app = spawn_app().await;
    let (customer, _) = app.create_customer().await;
    let phone = login(&app, customer).await;
    let laptop = login(&app, customer).await;
    let tablet = login(&app, customer).await;

    let body = app.graphql(LOGOUT, json!({}), Some(&phone)).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    assert_refused(&app, &phone).await;
    assert_accepted(&app, &laptop, customer).await;

    let body = app
        .graphql(LOGOUT, json!({ "all": true }), Some(&laptop))
        .await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    assert_refused(&app, &laptop).await;
    assert_refused(&app, &tablet).await;

    let body = app.graphql(LOGOUT, json!({}), None).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");

    let fresh = login(&app, customer).await;
    assert_accepted(&app, &fresh, customer).await;
}

#[tokio::test]
async fn a_change_of_role_revokes_the_tokens_that_carry_the_old_one() {
    let app = spawn_app().await;
    let (demoted, demoted_token) = app.create_admin().await;
    let (_, admin) = app.create_admin().await;
    assert_eq!(
        me(&app, &demoted_token).await["data"]["me"]["role"],
        "ADMIN"
    );

    let body = set_role(&app, &admin, demoted, "CUSTOMER").await;
    assert_eq!(body["data"]["setUserRole"]["role"], "CUSTOMER", "{body}");
    assert_refused(&app, &demoted_token).await;

    let fresh = login(&app, demoted).await;
    assert_eq!(me(&app, &fresh).await["data"]["me"]["role"], "CUSTOMER");
    let body = app
        .graphql(REVOKE, json!({ "id": demoted.to_string() }), Some(&fresh))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");

    // Giving a user the role they have changes nothing and revokes nothing.
    let body = set_role(&app, &admin, demoted, "CUSTOMER").await;
    assert_eq!(body["data"]["setUserRole"]["role"], "CUSTOMER", "{body}");
    assert_accepted(&app, &fresh, demoted).await;
}

#[tokio::test]
async fn a_revoked_token_stops_working_within_a_second_on_every_instance() {
    let first = spawn_app().await;
    // A second instance of the same service: same MySQL database, same Redis keys.
    let second = spawn_app_with(
        TestOptions::default()
            .arg("database-url", &first.database_url)
            .arg("redis-key-prefix", first.keys.prefix()),
    )
    .await;
    let (customer, _) = first.create_customer().await;
    let (_, admin) = first.create_admin().await;
    let token = login(&first, customer).await;
    // The second instance has checked the token and caches that answer.
    assert_accepted(&second, &token, customer).await;

    let body = first
        .graphql(REVOKE, json!({ "id": customer.to_string() }), Some(&admin))
        .await;
    assert_eq!(body["data"]["revokeTokens"], true, "{body}");
    let revoked_at = Instant::now();
    assert_refused(&first, &token).await;
    loop {
        let body = me(&second, &token).await;
        if error_code(&body) == "UNAUTHENTICATED" {
            break;
        }
        assert_eq!(body["data"]["me"]["id"], customer.to_string(), "{body}");
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the second instance still accepts the token after {:?}",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_token_version_lost_from_redis_is_read_again_from_mysql() {
    let app = spawn_app_with(TestOptions::default().arg("token-version-cache", "0s")).await;
    let (customer, _) = app.create_customer().await;
    let (_, admin) = app.create_admin().await;
    let old = login(&app, customer).await;
    let body = app
        .graphql(REVOKE, json!({ "id": customer.to_string() }), Some(&admin))
        .await;
    assert_eq!(body["data"]["revokeTokens"], true, "{body}");
    let fresh = login(&app, customer).await;

    // As after a Redis restart without persistence: the version is gone from Redis.
    let _: () = redis::AsyncCommands::del(&mut app.redis.clone(), app.keys.token_version(customer))
        .await
        .unwrap();
    assert_refused(&app, &old).await;
    assert_accepted(&app, &fresh, customer).await;
}
