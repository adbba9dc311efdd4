//! The GraphQL endpoint, GraphQL over HTTP as its spec says (docs/HTTP.md): POST for
//! everything, GET for queries, `application/graphql-response+json` or
//! `application/json` as the client asks. Who is calling comes from the Authorization
//! header only. Refusals made here (body too large, not JSON, batch too large, wrong media
//! type) and those made by the query limits carry `extensions.code`.

use std::net::SocketAddr;

use async_graphql::{BatchRequest, BatchResponse};
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::body::read_limited;
use super::client_addr::client_addr;
use super::graphiql::graphiql_page;
use super::negotiate::{self, Answer};
use super::{HttpState, REQUEST_ID};
use crate::auth::{Caller, ClientAddr, authenticate};
use crate::error::{Refusal, RequestId, codes, refusal_status};

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

/// Whether a single operation failed before it produced any data (parse, validation,
/// limits, a rate limit), and the status that says so.
fn request_error(response: &BatchResponse) -> Option<StatusCode> {
    let BatchResponse::Single(response) = response else {
        return None;
    };
    if response.data != async_graphql::Value::Null {
        return None;
    }
    response
        .errors
        .first()
        .and_then(|e| e.extensions.as_ref()?.get("code").cloned())
        .and_then(|code| match code {
            async_graphql::Value::String(code) => refusal_status(&code),
            _ => None,
        })
}

/// The body of a request that failed before execution: no `data` entry, as the spec asks.
#[derive(serde::Serialize)]
struct RequestError<'a> {
    errors: &'a [async_graphql::ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}

fn respond(response: BatchResponse, answer: Answer) -> Response {
    let failed = request_error(&response);
    let status = match (failed, answer) {
        (Some(status), Answer::GraphqlResponse | Answer::Json) => status,
        _ => StatusCode::OK,
    };
    let body = match (&response, failed) {
        (BatchResponse::Single(single), Some(_)) => serde_json::to_vec(&RequestError {
            errors: &single.errors,
            extensions: &single.extensions,
        }),
        _ => serde_json::to_vec(&response),
    }
    .expect("a GraphQL response serialises");
    let mut reply = (
        status,
        [(header::CONTENT_TYPE, answer.content_type())],
        body,
    )
        .into_response();
    if response.is_ok()
        && let Some(cache_control) = response.cache_control().value()
        && let Ok(value) = HeaderValue::from_str(&cache_control)
    {
        reply.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    reply.headers_mut().extend(response.http_headers());
    reply
}

/// A refusal in the format the client asked for (JSON when it named none we answer in).
fn refuse(refusal: Refusal, answer: Option<Answer>) -> Response {
    let mut response = refusal.into_response();
    let content_type = answer.unwrap_or(Answer::Json).content_type();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
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

/// Executes a parsed request (or batch) as the caller the Authorization header names.
async fn run(
    state: &HttpState,
    addr: SocketAddr,
    headers: &HeaderMap,
    batch: BatchRequest,
    answer: Answer,
) -> Response {
    let app = &state.app;
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let authentication = authenticate(headers, &app.tokens, &app.token_versions).await;
    record_on_span(&batch, authentication.caller);
    let batch = authentication
        .attach(batch)
        .data(RequestId(request_id))
        .data(ClientAddr(client_addr(
            addr.ip(),
            headers,
            &app.config.trusted_proxies,
        )));
    let response = state.schema.execute_batch(batch).await;
    respond(response, answer)
}

/// `POST /graphql`: one operation or a batch, as JSON.
pub async fn post(
    State(state): State<HttpState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(answer) = negotiate::accepted(&headers).answer else {
        return refuse(negotiate::not_acceptable(), None);
    };
    if let Err(refused) = negotiate::require_json_body(&headers) {
        return refuse(refused, Some(answer));
    }
    let config = &state.app.config;
    let batch = match read_limited(&headers, body, config.max_body_bytes).await {
        Ok(bytes) => parse_request(&bytes, config.graphql_max_batch),
        Err(refused) => Err(refused),
    };
    match batch {
        Ok(batch) => run(&state, addr, &headers, batch, answer).await,
        Err(refused) => refuse(refused, Some(answer)),
    }
}

/// The parameters of a GET, URL-encoded; `variables` and `extensions` are JSON text.
#[derive(serde::Deserialize)]
struct GetParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
}

/// The request a GET describes, through the same JSON shape as a POST body.
fn get_request(params: GetParams, query: String) -> Result<async_graphql::Request, Refusal> {
    let json = |name: &str, text: Option<String>| -> Result<serde_json::Value, Refusal> {
        match text.as_deref().map(str::trim) {
            None | Some("") => Ok(serde_json::Value::Null),
            Some(text) => serde_json::from_str(text)
                .map_err(|e| bad_request(format!("the {name} parameter is not valid JSON: {e}"))),
        }
    };
    let body = serde_json::json!({
        "query": query,
        "operationName": params.operation_name,
        "variables": json("variables", params.variables)?,
        "extensions": json("extensions", params.extensions)?,
    });
    serde_json::from_value(body).map_err(|_| {
        bad_request("variables and extensions must be JSON objects; operationName a string")
    })
}

/// What a GET's operation is, when the document parses: GET must never change anything.
fn is_query(request: &async_graphql::Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    // Deeper documents are refused by the query limits before they are parsed.
    if crate::graphql::text_shape(&request.query).nesting > MAX_GET_NESTING {
        return true;
    }
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return true; // executing it reports the parse error
    };
    let operation = match (&document.operations, &request.operation_name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name.as_str()),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        (DocumentOperations::Multiple(_), None) => None,
    };
    operation.is_none_or(|operation| operation.node.ty == OperationType::Query)
}

/// Bracket nesting of a GET query that is parsed here to see its operation type.
const MAX_GET_NESTING: usize = 64;

/// `GET /graphql` serves three things: a WebSocket upgrade goes to subscriptions (the
/// `ws::upgrade` layer on the route takes it before this handler), a `query` parameter is
/// executed (queries only: a mutation gets 405), and a browser
/// (Accept: text/html, no query) gets GraphiQL.
pub async fn get(
    State(state): State<HttpState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let accepted = negotiate::accepted(&headers);
    let params = match Query::<GetParams>::try_from_uri(&uri) {
        Ok(Query(params)) => params,
        Err(error) => {
            return refuse(
                bad_request(format!("bad query string: {error}")),
                accepted.answer,
            );
        }
    };
    let Some(query) = params.query.clone().filter(|q| !q.trim().is_empty()) else {
        if accepted.html {
            return graphiql_page();
        }
        return refuse(
            bad_request("a GET needs a `query` parameter (or Accept: text/html for GraphiQL)"),
            accepted.answer,
        );
    };
    let Some(answer) = accepted.answer else {
        return refuse(negotiate::not_acceptable(), None);
    };
    let request = match get_request(params, query) {
        Ok(request) => request,
        Err(refused) => return refuse(refused, Some(answer)),
    };
    if !is_query(&request) {
        let mut response = refuse(
            Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                codes::METHOD_NOT_ALLOWED,
                "only queries may be sent with GET; send mutations with POST",
            ),
            Some(answer),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    run(
        &state,
        addr,
        &headers,
        BatchRequest::Single(request),
        answer,
    )
    .await
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
