//! HS256 tokens with `sub`, `role`, `iat`, `exp`, `iss = "flashstock"`, the user's token
//! version `ver` and a token id `jti`; anything else (another algorithm, another issuer,
//! no expiry) is rejected. Whether a valid token has since been revoked is
//! `TokenVersions`'s question.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Viewer;
use super::verified_cache::VerifiedTokens;
use crate::domain::{Role, UserId};

pub const ISSUER: &str = "flashstock";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    /// The user's token version when it was issued (tokens from before versions: 0).
    #[serde(default)]
    pub ver: u64,
    /// This token's id, for revoking it alone (logout of one device).
    #[serde(default)]
    pub jti: Option<String>,
}

/// A token whose signature, issuer and expiry are good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub viewer: Viewer,
    pub version: u64,
    pub id: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid token")]
pub struct TokenError;

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    verified: VerifiedTokens,
}

impl TokenKeys {
    pub fn new(secret: &str, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            verified: VerifiedTokens::new(validation.leeway),
            validation,
            ttl,
        }
    }

    /// A token for `viewer` under the user's current token `version`.
    pub fn issue(&self, viewer: Viewer, version: u64) -> anyhow::Result<(String, DateTime<Utc>)> {
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(self.ttl)?;
        let claims = Claims {
            sub: viewer.id.to_string(),
            role: viewer.role,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.to_owned(),
            ver: version,
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, expires_at))
    }

    /// The token's claims when its signature, issuer and expiry are good. A token seen
    /// before is answered from `VerifiedTokens` until it expires (`verified_cache.rs`).
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let now = Utc::now().timestamp();
        if let Some(verified) = self.verified.get(token, now) {
            return Ok(verified);
        }
        let verified = self.verify_uncached(token)?;
        self.verified.insert(token, &verified, now);
        Ok(verified)
    }

    fn verify_uncached(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError)?;
        let claims = data.claims;
        let id = UserId::parse(&claims.sub).ok_or(TokenError)?;
        // The token id becomes part of a Redis key: only the shape we issue is accepted.
        let token_id = match claims.jti {
            Some(jti) if jti.len() == 32 && jti.bytes().all(|b| b.is_ascii_hexdigit()) => Some(jti),
            Some(_) => return Err(TokenError),
            None => None,
        };
        Ok(VerifiedToken {
            viewer: Viewer {
                id,
                role: claims.role,
            },
            version: claims.ver,
            id: token_id,
            expires_at: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let keys = TokenKeys::new(SECRET, Duration::from_secs(60));
        let viewer = Viewer {
            id: UserId(9),
            role: Role::Admin,
        };
        let (token, _) = keys.issue(viewer, 4).unwrap();
        let verified = keys.verify(&token).unwrap();
        assert_eq!(verified.viewer, viewer);
        assert_eq!(verified.version, 4);
        assert!(verified.id.is_some());
        assert_ne!(
            keys.verify(&keys.issue(viewer, 4).unwrap().0).unwrap().id,
            verified.id
        );
        let other = TokenKeys::new(
            "another secret that is long enough!!",
            Duration::from_secs(60),
        );
        assert!(other.verify(&token).is_err());
        assert!(keys.verify("not.a.token").is_err());
    }
}
