//! The GraphQL endpoint: who is calling comes from the Authorization header only.

use std::net::SocketAddr;
use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::parsed_queries::ParsedQueries;
use super::{HttpState, REQUEST_ID};
use crate::auth::{Caller, ClientAddr, TokenKeys};
use crate::error::RequestId;

pub async fn graphiql() -> impl IntoResponse {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}

fn caller(headers: &HeaderMap, tokens: &TokenKeys) -> Caller {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Caller::Anonymous;
    };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer "));
    match token.map(|t| tokens.verify(t.trim())) {
        Some(Ok(viewer)) => Caller::Authenticated(viewer),
        _ => Caller::Rejected,
    }
}

pub async fn execute(
    State(state): State<HttpState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(parsed): Extension<Arc<ParsedQueries>>,
    headers: HeaderMap,
    request: GraphQLBatchRequest,
) -> Response {
    let mut batch = request.into_inner();
    let max_batch = state.app.config.graphql_max_batch;
    if let async_graphql::BatchRequest::Batch(requests) = &batch
        && requests.len() > max_batch
    {
        let body = serde_json::json!({
            "errors": [{
                "message": format!("a batch may hold at most {max_batch} operations"),
                "extensions": { "code": "BATCH_TOO_LARGE" }
            }]
        });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    parsed.attach(&mut batch);
    let batch = batch
        .data(caller(&headers, &state.app.tokens))
        .data(RequestId(request_id))
        .data(ClientAddr(addr.ip()));
    GraphQLResponse::from(state.schema.execute_batch(batch).await).into_response()
}
