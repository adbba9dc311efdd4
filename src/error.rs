//! The one error type at the API edge. Clients see a code; internal faults are logged in
//! full with a request id and shown as a generic message carrying that id.

use async_graphql::ErrorExtensions;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("not allowed for this role")]
    Forbidden,
    #[error("{0}")]
    BadInput(String),
    #[error("too many failed logins; try again later")]
    RateLimited,
    /// Also said for what exists but is not the caller's, so nothing leaks about it.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Codes of requests refused before any resolver ran. Each has a fixed HTTP status, so
/// a client (or a proxy) sees the refusal without reading the body.
pub mod codes {
    /// The body is not JSON or not a GraphQL request.
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// The body is over MAX_BODY_BYTES.
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// More operations in one batch than GRAPHQL_MAX_BATCH, or none.
    pub const BATCH_TOO_LARGE: &str = "BATCH_TOO_LARGE";
    /// The Accept header names no format the endpoint answers in.
    pub const NOT_ACCEPTABLE: &str = "NOT_ACCEPTABLE";
    /// A POST body that is not declared as JSON.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    /// A mutation sent with GET, which must never change anything.
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    /// The request took longer than REQUEST_TIMEOUT.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// The query is not GraphQL.
    pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    /// The query or its variables do not fit the schema (unknown field, wrong type, a
    /// number beyond GraphQL's 32-bit Int).
    pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    /// Deeper than GRAPHQL_MAX_DEPTH.
    pub const TOO_DEEP: &str = "QUERY_TOO_DEEP";
    /// Costlier than GRAPHQL_MAX_COMPLEXITY.
    pub const TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
    /// Too many failed logins for this email or client address (see LOGIN_MAX_FAILURES).
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
}

/// The HTTP status of a response whose operation was refused with `code` and produced no
/// data; `None` keeps 200, as GraphQL does for errors met while executing.
pub fn refusal_status(code: &str) -> Option<axum::http::StatusCode> {
    use axum::http::StatusCode;
    match code {
        codes::PARSE_FAILED | codes::VALIDATION_FAILED | codes::TOO_DEEP | codes::TOO_COMPLEX => {
            Some(StatusCode::BAD_REQUEST)
        }
        codes::RATE_LIMITED => Some(StatusCode::TOO_MANY_REQUESTS),
        _ => None,
    }
}

/// A request refused before GraphQL runs (body, JSON, batch, timeout): its status and a
/// body in the shape of a GraphQL error response, so clients read one format.
#[derive(Debug)]
pub struct Refusal {
    pub status: axum::http::StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(
        status: axum::http::StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl axum::response::IntoResponse for Refusal {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({
            "errors": [{ "message": self.message, "extensions": { "code": self.code } }]
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Id of the HTTP request being served, put in the GraphQL request data by the handler.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::BadInput(_) => "BAD_USER_INPUT",
            Self::RateLimited => codes::RATE_LIMITED,
            Self::NotFound(_) => "NOT_FOUND",
            Self::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    /// The code in snake case, as metrics label it.
    pub fn snake_case(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::BadInput(_) => "bad_user_input",
            Self::RateLimited => "rate_limited",
            Self::NotFound(_) => "not_found",
            Self::Internal(_) => "internal_server_error",
        }
    }

    /// Converts for a resolver; `request_id` ties a generic message to the full log line.
    pub fn into_graphql(self, request_id: Option<&RequestId>) -> async_graphql::Error {
        let request_id = request_id.map(|r| r.0.clone()).unwrap_or_default();
        let code = self.code();
        let message = match &self {
            Self::Internal(error) => {
                tracing::error!(request_id, error = format!("{error:#}"), "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code);
            if !request_id.is_empty() {
                ext.set("requestId", request_id.as_str());
            }
        })
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> Self {
        Self::Internal(error.into())
    }
}
