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
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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
            Self::RateLimited => "RATE_LIMITED",
            Self::Internal(_) => "INTERNAL_SERVER_ERROR",
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
