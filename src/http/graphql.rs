//! The GraphQL endpoint: who is calling comes from the Authorization header only.
//! Refusals made here (body too large, not JSON, batch too large) and those made by the
//! query limits answer with a 4xx status and a JSON error carrying `extensions.code`.

use std::net::SocketAddr;
use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use async_graphql::{BatchRequest, BatchResponse};
use async_graphql_axum::GraphQLResponse;
use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::body::read_limited;
use super::parsed_queries::ParsedQueries;
use super::{HttpState, REQUEST_ID};
use crate::auth::{Caller, ClientAddr, TokenKeys};
use crate::error::{Refusal, RequestId, codes, refusal_status};

pub async fn graphiql() -> impl IntoResponse {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}

fn caller(headers: &HeaderMap, tokens: &TokenKeys) -> Caller {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Caller::Anonymous;
    };
    // The scheme is case-insensitive (RFC 9110); anything but a valid Bearer token is refused.
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match token.map(|t| tokens.verify(t)) {
        Some(Ok(viewer)) => Caller::Authenticated(viewer),
        _ => Caller::Rejected,
    }
}

/// Parses the body as one operation or a batch, with the JSON parser's own words on failure.
fn parse_request(bytes: &[u8], max_batch: usize) -> Result<BatchRequest, Refusal> {
    // Straight into the request types: this runs for every request. A body that fails
    // takes the longer way through a JSON tree, which accepts what it always accepted
    // (a repeated key, say) and tells broken JSON from JSON of the wrong shape.
    let direct = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice(bytes).map(BatchRequest::Single).ok(),
        Some(b'[') => serde_json::from_slice(bytes).map(BatchRequest::Batch).ok(),
        _ => None,
    };
    let batch = match direct {
        Some(batch) => batch,
        None => parse_through_tree(bytes)?,
    };
    if let BatchRequest::Batch(requests) = &batch
        && !(1..=max_batch).contains(&requests.len())
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            codes::BATCH_TOO_LARGE,
            format!(
                "a batch holds 1 to {max_batch} operations; this one holds {}",
                requests.len()
            ),
        ));
    }
    Ok(batch)
}

fn parse_through_tree(bytes: &[u8]) -> Result<BatchRequest, Refusal> {
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message);
    let json: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("request body is not valid JSON: {e}")))?;
    let shape = || {
        bad("expected a GraphQL request object ({\"query\": ..., \"variables\": {...}}) or a list of them".into())
    };
    match json {
        serde_json::Value::Array(_) => serde_json::from_value(json)
            .map(BatchRequest::Batch)
            .map_err(|_| shape()),
        serde_json::Value::Object(_) => serde_json::from_value(json)
            .map(BatchRequest::Single)
            .map_err(|_| shape()),
        _ => Err(shape()),
    }
}

/// 400 or 429 when a single operation was refused before it produced any data.
fn status_of(response: &BatchResponse) -> StatusCode {
    let BatchResponse::Single(response) = response else {
        return StatusCode::OK;
    };
    if response.data != async_graphql::Value::Null {
        return StatusCode::OK;
    }
    response
        .errors
        .first()
        .and_then(|e| e.extensions.as_ref()?.get("code").cloned())
        .and_then(|code| match code {
            async_graphql::Value::String(code) => refusal_status(&code),
            _ => None,
        })
        .unwrap_or(StatusCode::OK)
}

/// The operation name (the client's, for logs only) and the user on the request's span.
fn record_on_span(batch: &BatchRequest, caller: Caller) {
    let span = tracing::Span::current();
    if let BatchRequest::Single(request) = batch
        && let Some(name) = &request.operation_name
    {
        span.record("operation", name.as_str());
    }
    if let Caller::Authenticated(viewer) = caller {
        span.record("user_id", viewer.id.0);
    }
}

pub async fn execute(
    State(state): State<HttpState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(parsed): Extension<Arc<ParsedQueries>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let config = &state.app.config;
    let batch = match read_limited(&headers, body, config.max_body_bytes).await {
        Ok(bytes) => parse_request(&bytes, config.graphql_max_batch),
        Err(refused) => Err(refused),
    };
    let mut batch = match batch {
        Ok(batch) => batch,
        Err(refused) => return refused.into_response(),
    };
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    parsed.attach(&mut batch);
    let caller = caller(&headers, &state.app.tokens);
    record_on_span(&batch, caller);
    let batch = batch
        .data(caller)
        .data(RequestId(request_id))
        .data(ClientAddr(addr.ip()));
    let response = state.schema.execute_batch(batch).await;
    (status_of(&response), GraphQLResponse::from(response)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> Refusal {
        parse_request(body.as_bytes(), 4).expect_err(body)
    }

    #[test]
    fn single_operations_and_batches_parse_directly() {
        let single = parse_request(br#" {"query": "{ me { id } }", "variables": {"a": 1}}"#, 4);
        assert!(matches!(single, Ok(BatchRequest::Single(r)) if r.query == "{ me { id } }"));
        let batch = parse_request(br#"[{"query": "{ a }"}, {"query": "{ b }"}]"#, 4);
        assert!(matches!(batch, Ok(BatchRequest::Batch(r)) if r.len() == 2));
    }

    #[test]
    fn a_repeated_key_is_still_accepted_its_last_value_winning() {
        let body = br#"{"query": "{ a }", "query": "{ me { id } }"}"#;
        let parsed = parse_request(body, 4);
        assert!(matches!(parsed, Ok(BatchRequest::Single(r)) if r.query == "{ me { id } }"));
    }

    #[test]
    fn a_refused_body_says_whether_it_was_json() {
        let broken = refused(r#"{"query": "{ me"#);
        assert_eq!(broken.code, codes::BAD_REQUEST);
        assert!(
            broken
                .message
                .starts_with("request body is not valid JSON: ")
        );
        for shape in ["[1, 2]", "42", r#""query""#, r#"{"query": 7}"#] {
            let refusal = refused(shape);
            assert_eq!(refusal.code, codes::BAD_REQUEST, "{shape}");
            assert!(
                refusal
                    .message
                    .starts_with("expected a GraphQL request object"),
                "{shape}: {}",
                refusal.message
            );
        }
        assert_eq!(refused("[]").code, codes::BATCH_TOO_LARGE);
        assert_eq!(
            refused(r#"[{"query":"{a}"},{"query":"{a}"},{"query":"{a}"},{"query":"{a}"},{"query":"{a}"}]"#).code,
            codes::BATCH_TOO_LARGE
        );
    }
}
