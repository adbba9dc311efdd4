//! GraphQL over HTTP as its spec says: content negotiation, GET for queries only, the
//! spec's status codes and `data` rules, checked directly and by graphql-http's audit;
//! and GraphiQL, served by the binary, working in a browser that can reach nothing else.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::helpers::{TestApp, one_at_a_time, spawn_app, unique_suffix};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// Runs a script of tests/node, installing Node, its packages and Chromium first when
/// they are missing (scripts/test-tools, once per test binary).
async fn node(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        static TOOLS: OnceLock<Result<(), String>> = OnceLock::new();
        let tools = TOOLS.get_or_init(|| {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/test-tools");
            let output = Command::new(script).output().map_err(|e| e.to_string())?;
            if output.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&output.stderr).into_owned())
            }
        });
        if let Err(error) = tools {
            panic!("scripts/test-tools failed:\n{error}");
        }
        let output = Command::new("node")
            .args(&args)
            .current_dir(node_dir())
            .output()
            .expect("node runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn graphql_http_audit_reports_no_error_and_no_warning() {
    let _serial = one_at_a_time().await;
    let app = spawn_app().await;
    let url = format!("{}/graphql", app.address);
    let (passed, report) = node(vec!["http-audit.mjs".into(), url]).await;
    assert!(passed, "{report}");
    assert!(
        !report.contains("\nwarn") && !report.contains("\nerror"),
        "{report}"
    );
    assert!(report.contains("audits: {\"ok\":"), "{report}");
}

#[tokio::test]
async fn graphiql_runs_a_typed_query_with_the_network_cut_off() {
    let _serial = one_at_a_time().await;
    let app = spawn_app().await;
    let name = format!("Offline store {}", unique_suffix());
    flashstock::db::catalog::upsert_store(&app.db, &name)
        .await
        .unwrap();
    let url = format!("{}/graphql", app.address);
    let (passed, report) = node(vec![
        "graphiql-offline.mjs".into(),
        url,
        "{ stores { name } }".into(),
        name,
    ])
    .await;
    assert!(passed, "{report}");
    assert!(report.contains("editor on the page"), "{report}");
    assert!(report.contains("GraphiQL works offline"), "{report}");
}

async fn get(app: &TestApp, query: &[(&str, &str)], accept: &str) -> reqwest::Response {
    let mut url = reqwest::Url::parse(&format!("{}/graphql", app.address)).unwrap();
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    app.http
        .get(url)
        .header("accept", accept)
        .send()
        .await
        .unwrap()
}

async fn post(
    app: &TestApp,
    content_type: Option<&str>,
    accept: &str,
    body: &str,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.address))
        .header("accept", accept)
        .body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

fn content_type(response: &reqwest::Response) -> String {
    response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn get_executes_queries_with_url_encoded_variables() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let response = get(
        &app,
        &[
            ("query", "query Store($id: ID!) { store(id: $id) { id } }"),
            (
                "variables",
                &json!({ "id": store.0.to_string() }).to_string(),
            ),
            ("operationName", "Store"),
        ],
        GRAPHQL_RESPONSE,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with(GRAPHQL_RESPONSE));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["store"]["id"], store.0.to_string(), "{body}");

    let broken = get(
        &app,
        &[("query", "{ stores { id } }"), ("variables", "{nope")],
        GRAPHQL_RESPONSE,
    )
    .await;
    assert_eq!(broken.status(), 400);
    let body: Value = broken.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{body}"
    );
}

#[tokio::test]
async fn a_mutation_sent_with_get_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let email = format!("get-{}@example.com", unique_suffix());
    let mutation = format!(
        r#"mutation {{ register(email: "{email}", password: "password123") {{ user {{ email }} }} }}"#
    );
    let response = get(&app, &[("query", &mutation)], "application/json").await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "METHOD_NOT_ALLOWED",
        "{body}"
    );
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = ?")
        .bind(&email)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

#[tokio::test]
async fn the_response_format_follows_accept_and_request_errors_have_no_data() {
    let app = spawn_app().await;
    let broken = r#"{"query": "{ stores { id "}"#;
    let invalid = r#"{"query": "{ noSuchField }"}"#;

    // The GraphQL response media type: 400 and no data entry for a request error.
    for body in [broken, invalid] {
        let response = post(&app, Some("application/json"), GRAPHQL_RESPONSE, body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert!(content_type(&response).starts_with(GRAPHQL_RESPONSE));
        let reply: Value = response.json().await.unwrap();
        assert!(reply.get("data").is_none(), "{reply}");
        assert!(reply["errors"][0]["message"].is_string(), "{reply}");
    }
    // application/json by name: what older clients expect, 200 with the errors.
    let response = post(&app, Some("application/json"), "application/json", invalid).await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("application/json"));
    let reply: Value = response.json().await.unwrap();
    assert!(reply.get("data").is_none(), "{reply}");
    assert_eq!(
        reply["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );

    // Anything accepted: JSON, with the status a proxy can read.
    let response = post(&app, Some("application/json"), "*/*", invalid).await;
    assert_eq!(response.status(), 400);
    assert!(content_type(&response).starts_with("application/json"));

    // A format the endpoint does not speak.
    let response = post(
        &app,
        Some("application/json"),
        "text/html",
        r#"{"query": "{ stores { id } }"}"#,
    )
    .await;
    assert_eq!(response.status(), 406);
}

#[tokio::test]
async fn a_post_body_must_be_declared_as_json() {
    let app = spawn_app().await;
    let body = r#"{"query": "{ stores { id } }"}"#;
    for content_type in [
        None,
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let response = post(&app, content_type, GRAPHQL_RESPONSE, body).await;
        assert_eq!(response.status(), 415, "{content_type:?}");
        let reply: Value = response.json().await.unwrap();
        assert_eq!(
            reply["errors"][0]["extensions"]["code"],
            "UNSUPPORTED_MEDIA_TYPE"
        );
    }
    let response = post(
        &app,
        Some("application/json; charset=utf-8"),
        GRAPHQL_RESPONSE,
        body,
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_browser_gets_graphiql_and_its_assets_from_the_service() {
    let app = spawn_app().await;
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let page = get(&app, &[], browser).await;
    assert_eq!(page.status(), 200);
    assert!(content_type(&page).starts_with("text/html"));
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    let scripts: Vec<&str> = html
        .split("<script src=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(scripts.len(), 4, "{html}");
    for path in scripts {
        let asset = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200, "{path}");
        assert!(
            content_type(&asset).starts_with("text/javascript"),
            "{path}"
        );
        assert!(
            asset.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable"),
            "{path}"
        );
    }
    let stale = app
        .http
        .get(format!("{}/graphiql/0.0.1/graphiql.min.js", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 404);

    // A GET that names no query and takes no HTML is a client mistake.
    let response = get(&app, &[], GRAPHQL_RESPONSE).await;
    assert_eq!(response.status(), 400);
}
