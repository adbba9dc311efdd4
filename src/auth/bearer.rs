//! From the Authorization header to the caller of one request: the token's signature and
//! expiry, then whether it has been revoked (`TokenVersions`).

use async_graphql::BatchRequest;
use axum::http::{HeaderMap, header};

use super::{Caller, TokenKeys, TokenVersions, VerifiedToken};

/// Who is calling, and with which token (logout needs the token itself).
pub struct Authentication {
    pub caller: Caller,
    pub token: Option<VerifiedToken>,
}

impl Authentication {
    /// Puts the caller (and the token, when there is a good one) in the request's data.
    pub fn attach(self, batch: BatchRequest) -> BatchRequest {
        let batch = batch.data(self.caller);
        match self.token {
            Some(token) => batch.data(token),
            None => batch,
        }
    }

    /// No token to attach: anonymous, or refused as `caller` says.
    pub fn refused(caller: Caller) -> Self {
        Self {
            caller,
            token: None,
        }
    }
}

pub async fn authenticate(
    headers: &HeaderMap,
    tokens: &TokenKeys,
    versions: &TokenVersions,
) -> Authentication {
    match headers.get(header::AUTHORIZATION) {
        None => Authentication::refused(Caller::Anonymous),
        Some(value) => match value.to_str() {
            Ok(value) => authenticate_value(Some(value), tokens, versions).await,
            Err(_) => Authentication::refused(Caller::Rejected),
        },
    }
}

/// Who an Authorization value names: the HTTP header's, or the `authorization` entry of a
/// WebSocket's `connection_init` payload, checked alike.
pub async fn authenticate_value(
    value: Option<&str>,
    tokens: &TokenKeys,
    versions: &TokenVersions,
) -> Authentication {
    let refused = Authentication::refused;
    let Some(value) = value else {
        return refused(Caller::Anonymous);
    };
    // The scheme is case-insensitive (RFC 9110); anything but a valid Bearer token is refused.
    let token = Some(value)
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(Ok(token)) = token.map(|t| tokens.verify(t)) else {
        return refused(Caller::Rejected);
    };
    match versions.is_current(&token).await {
        Ok(true) => Authentication {
            caller: Caller::Authenticated(token.viewer),
            token: Some(token),
        },
        Ok(false) => refused(Caller::Rejected),
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "cannot check whether a token is revoked"
            );
            refused(Caller::Unverifiable)
        }
    }
}
