//! Tokens whose signature and claims were already checked, by their exact text. A sale's
//! customers send the same token with every request; checking it again (base64, HMAC-SHA256,
//! JSON) gives the same answer until it expires, so the answer is kept until then.
//!
//! Only what `TokenKeys::verify` accepted is kept, keyed by the whole token (signature
//! included): a token differing in any byte is checked from scratch. Expiry is checked on
//! every hit exactly as the first check did it (`exp` plus the leeway), and revocation is
//! not cached here at all: `TokenVersions` still answers for every request.

use std::collections::HashMap;
use std::sync::RwLock;

use super::VerifiedToken;

/// More distinct live tokens than this (a flood of freshly issued ones) empty the cache
/// rather than grow it: about 1 MiB of tokens at most.
const MAX_TOKENS: usize = 4096;

pub struct VerifiedTokens {
    leeway_secs: i64,
    tokens: RwLock<HashMap<Box<str>, VerifiedToken>>,
}

impl VerifiedTokens {
    pub fn new(leeway_secs: u64) -> Self {
        Self {
            leeway_secs: i64::try_from(leeway_secs).unwrap_or(i64::MAX),
            tokens: RwLock::default(),
        }
    }

    fn still_valid(&self, token: &VerifiedToken, now_secs: i64) -> bool {
        now_secs <= token.expires_at.saturating_add(self.leeway_secs)
    }

    /// The verified token for `text`, when it was verified before and has not expired.
    pub fn get(&self, text: &str, now_secs: i64) -> Option<VerifiedToken> {
        self.tokens
            .read()
            .expect("verified token cache lock poisoned")
            .get(text)
            .filter(|token| self.still_valid(token, now_secs))
            .cloned()
    }

    /// Keeps a token `TokenKeys::verify` accepted; expired ones leave when the cache fills.
    pub fn insert(&self, text: &str, token: &VerifiedToken, now_secs: i64) {
        let mut tokens = self
            .tokens
            .write()
            .expect("verified token cache lock poisoned");
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, kept| self.still_valid(kept, now_secs));
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(text.into(), token.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Viewer;
    use crate::domain::{Role, UserId};

    fn token(expires_at: i64) -> VerifiedToken {
        VerifiedToken {
            viewer: Viewer {
                id: UserId(7),
                role: Role::Customer,
            },
            version: 1,
            id: None,
            expires_at,
        }
    }

    #[test]
    fn a_kept_token_is_served_until_its_expiry_and_leeway() {
        let cache = VerifiedTokens::new(5);
        cache.insert("a.b.c", &token(1000), 900);
        assert_eq!(cache.get("a.b.c", 1000), Some(token(1000)));
        assert_eq!(cache.get("a.b.c", 1005), Some(token(1000)));
        assert_eq!(cache.get("a.b.c", 1006), None);
        assert_eq!(cache.get("a.b.d", 900), None);
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first_then_everything() {
        let cache = VerifiedTokens::new(0);
        for n in 0..MAX_TOKENS {
            cache.insert(&format!("t{n}"), &token(if n == 0 { 2000 } else { 10 }), 5);
        }
        cache.insert("fresh", &token(2000), 100);
        assert_eq!(cache.get("t0", 100), Some(token(2000)));
        assert_eq!(cache.get("fresh", 100), Some(token(2000)));
        assert_eq!(cache.tokens.read().unwrap().len(), 2);
    }
}
