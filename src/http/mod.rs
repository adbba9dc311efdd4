//! HTTP surface: /graphql (POST, and GET for queries, WebSocket upgrades for
//! subscriptions and GraphiQL), GraphiQL's embedded assets, the storefront page at /,
//! /healthz, /readyz and, with PAYMENT_WEBHOOK_SECRET, the payment provider's
//! /webhooks/payment.

pub(crate) mod body;
mod client_addr;
mod graphiql;
mod graphql;
mod health;
mod negotiate;
mod observe;
mod storefront;
mod ws;
mod ws_stock;

pub use ws::Sockets;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
    /// Open WebSockets (subscriptions at GET /graphql).
    pub sockets: Arc<Sockets>,
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
    let mut routes = Router::new()
        .route(
            "/graphql",
            get(graphql::get)
                .post(graphql::post)
                .layer(from_fn_with_state(state.clone(), ws::upgrade)),
        )
        .route("/graphiql/{version}/{file}", get(graphiql::asset))
        .route("/", get(storefront::page))
        .route("/storefront.js", get(storefront::script))
        .route("/storefront.css", get(storefront::style))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    // Without a secret nothing could be verified: the endpoint does not exist.
    if state.app.config.payment_webhook_secret().is_some() {
        routes = routes.route("/webhooks/payment", post(crate::payments::receive));
    }
    routes
        .with_state(state)
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
