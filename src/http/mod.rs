//! HTTP surface: /graphql (POST, and GET for queries, WebSocket upgrades and GraphiQL),
//! GraphiQL's embedded assets, /healthz and /readyz.

mod body;
mod graphiql;
mod graphql;
mod health;
mod negotiate;
mod observe;
mod parsed_queries;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::middleware::{from_fn, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::context::AppContext;
use crate::error::{Refusal, codes};
use crate::graphql::AppSchema;

pub use observe::REQUEST_ID;

/// Cloned for every request by axum's `State`: one reference count, not the context's
/// dozen handles.
#[derive(Clone)]
pub struct HttpState {
    pub app: Arc<AppContext>,
    pub schema: AppSchema,
}

/// The timeout layer answers with an empty body; give it the JSON error every refusal has.
async fn explain_timeout(response: Response) -> Response {
    if response.status() == StatusCode::REQUEST_TIMEOUT
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        return Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            codes::TIMEOUT,
            "the request took longer than the server allows",
        )
        .into_response();
    }
    response
}

/// The body limit (MAX_BODY_BYTES) is applied where the body is read, `body::read_limited`,
/// so that a chunked body over it gets the same 413 as a declared one.
pub fn router(state: HttpState) -> Router {
    let timeout: Duration = state.app.config.request_timeout;
    Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphiql/{version}/{file}", get(graphiql::asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
        .layer(Extension(
            Arc::new(parsed_queries::ParsedQueries::default()),
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(map_response(explain_timeout))
        .layer(from_fn(observe::count_response))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(observe::request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(from_fn(observe::drop_unusable_request_id))
}
