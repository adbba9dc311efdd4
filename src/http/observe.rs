//! What every request leaves behind for operators: a request id (the client's
//! `X-Request-Id` when it is sane, else a new one, echoed in the response), a log span
//! carrying that id with the GraphQL operation and the user once they are known, and a
//! count in `flashstock_http_requests_total`.

use axum::extract::Request;
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen request id kept; anything longer (or with other characters
/// than these) is replaced, so log lines stay one line and searchable.
const MAX_REQUEST_ID: usize = 128;

fn acceptable_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
}

/// Drops a request id the service would not want in its logs; the id layer then makes one.
pub async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    if request
        .headers()
        .get(REQUEST_ID)
        .is_some_and(|id| !acceptable_id(id.as_bytes()))
    {
        request.headers_mut().remove(REQUEST_ID);
    }
    next.run(request).await
}

/// The span of one request: method, path and request id, then the GraphQL operation
/// name, its root field and the user id as the handler learns them. Never the query
/// string, the headers (Authorization) or the body (passwords).
pub fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id = id,
        operation = tracing::field::Empty,
        graphql_field = tracing::field::Empty,
        user_id = tracing::field::Empty,
    )
}

/// The router's paths as static labels; anything else is `other`.
fn route(path: &str) -> &'static str {
    match path {
        "/graphql" => "/graphql",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        p if p.starts_with("/graphiql/") => "/graphiql",
        _ => "other",
    }
}

pub async fn count_response(request: Request, next: Next) -> Response {
    let route = route(request.uri().path());
    let response = next.run(request).await;
    crate::metrics::http_response(route, response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        assert!(acceptable_id(b"0b6c1c5e-2f0a-4a6c-9a43-1f1c2d3e4f50"));
        assert!(acceptable_id(b"edge:abc/123+x="));
        assert!(!acceptable_id(b""));
        assert!(!acceptable_id(b"has space"));
        assert!(!acceptable_id(b"quote\"d"));
        assert!(!acceptable_id("x".repeat(129).as_bytes()));
    }
}
