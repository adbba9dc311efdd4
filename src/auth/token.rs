//! HS256 tokens with `sub`, `role`, `iat`, `exp` and `iss = "flashstock"`; anything
//! else (another algorithm, another issuer, no expiry) is rejected.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Viewer;
use crate::domain::{Role, UserId};

pub const ISSUER: &str = "flashstock";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid token")]
pub struct TokenError;

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
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
            validation,
            ttl,
        }
    }

    pub fn issue(&self, viewer: Viewer) -> anyhow::Result<(String, DateTime<Utc>)> {
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(self.ttl)?;
        let claims = Claims {
            sub: viewer.id.to_string(),
            role: viewer.role,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, expires_at))
    }

    pub fn verify(&self, token: &str) -> Result<Viewer, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError)?;
        let id = UserId::parse(&data.claims.sub).ok_or(TokenError)?;
        Ok(Viewer {
            id,
            role: data.claims.role,
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
        let (token, _) = keys.issue(viewer).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), viewer);
        let other = TokenKeys::new(
            "another secret that is long enough!!",
            Duration::from_secs(60),
        );
        assert!(other.verify(&token).is_err());
        assert!(keys.verify("not.a.token").is_err());
    }
}
