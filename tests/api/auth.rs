//! register, login, me, and what a token must be to count.

use flashstock::auth::ISSUER;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, PASSWORD, TestApp, spawn_app};

const LOGIN: &str = "mutation($email: String!, $password: String!) {
    login(email: $email, password: $password) { token expiresAt user { id email role } errors { code field } } }";
const REGISTER: &str = "mutation($email: String!, $password: String!) {
    register(email: $email, password: $password) { token user { id email role } errors { code field message } } }";
const ME: &str = "{ me { id email role } }";

async fn register(app: &TestApp, email: &str, password: &str) -> Value {
    app.graphql(
        REGISTER,
        json!({ "email": email, "password": password }),
        None,
    )
    .await["data"]["register"]
        .clone()
}

async fn login(app: &TestApp, email: &str, password: &str) -> Value {
    app.graphql(LOGIN, json!({ "email": email, "password": password }), None)
        .await["data"]["login"]
        .clone()
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

pub fn sign(claims: &Value, secret: &str, algorithm: Algorithm) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_registered_customer_logs_in_and_me_knows_them() {
    let app = spawn_app().await;
    let registered = register(&app, "Carol@Example.com", "long enough secret").await;
    assert_eq!(registered["errors"], json!([]));
    assert_eq!(registered["user"]["email"], "carol@example.com");
    assert_eq!(registered["user"]["role"], "CUSTOMER");

    let logged_in = login(&app, "carol@example.com", "long enough secret").await;
    assert_eq!(logged_in["errors"], json!([]));
    let token = logged_in["token"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(logged_in["expiresAt"].as_str().unwrap()).is_ok());

    let me = app.graphql(ME, json!({}), Some(token)).await;
    assert_eq!(me["data"]["me"]["email"], "carol@example.com");
    assert_eq!(me["data"]["me"]["id"], registered["user"]["id"]);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let app = spawn_app().await;
    register(&app, "dave@example.com", PASSWORD).await;
    let wrong = login(&app, "dave@example.com", "not the password").await;
    let unknown = login(&app, "nobody@example.com", PASSWORD).await;
    assert_eq!(wrong["token"], Value::Null);
    assert_eq!(
        wrong["errors"],
        json!([{ "code": "INVALID_CREDENTIALS", "field": null }])
    );
    assert_eq!(unknown, wrong);
}

#[tokio::test]
async fn register_rejects_bad_emails_weak_passwords_and_duplicates() {
    let app = spawn_app().await;
    assert_eq!(
        register(&app, "not-an-email", PASSWORD).await["errors"][0]["code"],
        "INVALID_EMAIL"
    );
    assert_eq!(
        register(&app, "erin@example.com", "short").await["errors"][0]["code"],
        "WEAK_PASSWORD"
    );
    assert_eq!(
        register(&app, "erin@example.com", PASSWORD).await["errors"],
        json!([])
    );
    let again = register(&app, "ERIN@example.com", PASSWORD).await;
    assert_eq!(again["errors"][0]["code"], "EMAIL_TAKEN");
    assert_eq!(again["token"], Value::Null);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1, "only the valid registration wrote a row");
}

#[tokio::test]
async fn me_without_a_valid_token_is_unauthenticated() {
    let app = spawn_app().await;
    let (user, _) = app.create_customer().await;
    let now = chrono::Utc::now().timestamp();
    let claims = |iat: i64, exp: i64, iss: &str| json!({ "sub": user.to_string(), "role": "CUSTOMER", "iat": iat, "exp": exp, "iss": iss });
    let expired = sign(
        &claims(now - 7200, now - 3600, ISSUER),
        JWT_SECRET,
        Algorithm::HS256,
    );
    let forged = sign(
        &claims(now, now + 3600, ISSUER),
        "some-other-secret-some-other-secret!",
        Algorithm::HS256,
    );
    let other_issuer = sign(
        &claims(now, now + 3600, "someone-else"),
        JWT_SECRET,
        Algorithm::HS256,
    );
    let other_algorithm = sign(
        &claims(now, now + 3600, ISSUER),
        JWT_SECRET,
        Algorithm::HS512,
    );
    let no_expiry = sign(
        &json!({ "sub": user.to_string(), "role": "CUSTOMER", "iat": now, "iss": ISSUER }),
        JWT_SECRET,
        Algorithm::HS256,
    );
    // alg "none": header and claims, no signature.
    use unpadded_base64url::encode;
    let alg_none = format!(
        "{}.{}.",
        encode(br#"{"alg":"none","typ":"JWT"}"#),
        encode(claims(now, now + 3600, ISSUER).to_string().as_bytes())
    );
    for (name, token) in [
        ("missing", None),
        ("garbage", Some("garbage")),
        ("expired", Some(expired.as_str())),
        ("forged", Some(forged.as_str())),
        ("other issuer", Some(other_issuer.as_str())),
        ("other algorithm", Some(other_algorithm.as_str())),
        ("no expiry", Some(no_expiry.as_str())),
        ("alg none", Some(alg_none.as_str())),
    ] {
        let body = app.graphql(ME, json!({}), token).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{name}: {body}");
        assert_eq!(body["data"], Value::Null, "{name}");
    }
}

#[tokio::test]
async fn a_customer_cannot_use_admin_mutations() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(store, 100, 5, None).await;
    let (_, customer) = app.create_customer().await;
    let (_, admin) = app.create_admin().await;
    let restock = "mutation($id: ID!) { restockProduct(productId: $id, quantity: 5) { product { available } errors { code } } }";
    let create = "mutation($store: ID!) { createProduct(input: { storeId: $store, name: \"Cap\", priceCents: 900, stock: 3 }) { product { name available } errors { code } } }";

    let denied = app
        .graphql(
            restock,
            json!({ "id": product.to_string() }),
            Some(&customer),
        )
        .await;
    assert_eq!(error_code(&denied), "FORBIDDEN");
    let denied = app
        .graphql(
            create,
            json!({ "store": store.to_string() }),
            Some(&customer),
        )
        .await;
    assert_eq!(error_code(&denied), "FORBIDDEN");
    assert_eq!(app.available(store, product).await, 5, "nothing moved");

    let allowed = app
        .graphql(restock, json!({ "id": product.to_string() }), Some(&admin))
        .await;
    assert_eq!(
        allowed["data"]["restockProduct"]["product"]["available"],
        10
    );
    let created = app
        .graphql(create, json!({ "store": store.to_string() }), Some(&admin))
        .await;
    assert_eq!(
        created["data"]["createProduct"]["product"],
        json!({ "name": "Cap", "available": 3 })
    );
}

/// Base64url without padding, enough to hand-build an unsigned token.
pub mod unpadded_base64url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
