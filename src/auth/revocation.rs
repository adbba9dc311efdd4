//! Token revocation. Each user has a token version; a token carries the version it was
//! issued under and is refused once the user's version is higher (revokeTokens,
//! logout(allDevices: true), a change of role). One token alone is revoked by a mark
//! under its id that lives until the token would have expired (logout).
//!
//! MySQL keeps the version for good; Redis keeps the copy the request path reads. A check
//! costs one MGET (the version and the token's mark share the `{user:<id>}` hash tag),
//! and its answer is reused for TOKEN_VERSION_CACHE (at most 1s) by this instance: that
//! is how long a revoked token may still pass here. Login and register put the user's
//! version in Redis; should Redis have lost it, it is read again from MySQL and raised
//! back, never lowered.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::redis_conn::RedisConn;
use redis::Script;

use super::VerifiedToken;
use crate::db::{self, Db};
use crate::domain::UserId;
use crate::hold::KeySpace;

static RAISE_VERSION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/token_version.lua")));

/// Beyond this many cached answers, stale ones are dropped (and all of them if need be):
/// the cache is a second's worth of traffic, never a record of every user.
const MAX_CACHED: usize = 100_000;

/// The token's own leeway (`token.rs`): a revocation mark outlives the token by it.
const LEEWAY_SECS: i64 = 5;

#[derive(Debug, Clone, Copy)]
struct Answer {
    current_version: u64,
    token_revoked: bool,
    read_at: Instant,
}

pub struct TokenVersions {
    redis: RedisConn,
    keys: KeySpace,
    db: Db,
    cache_for: Duration,
    cache: Mutex<HashMap<(UserId, Option<String>), Answer>>,
}

impl TokenVersions {
    pub fn new(redis: RedisConn, keys: KeySpace, db: Db, cache_for: Duration) -> Self {
        Self {
            redis,
            keys,
            db,
            cache_for,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// True while `token` has not been revoked. Errors when neither Redis nor MySQL could
    /// say: the caller refuses the token then rather than guess.
    pub async fn is_current(&self, token: &VerifiedToken) -> anyhow::Result<bool> {
        let user = token.viewer.id;
        let cache_key = (user, token.id.clone());
        let cached = self
            .cache
            .lock()
            .expect("cache lock")
            .get(&cache_key)
            .copied();
        let answer = match cached.filter(|a| a.read_at.elapsed() < self.cache_for) {
            Some(answer) => answer,
            None => {
                let answer = self.read(user, token.id.as_deref()).await?;
                if !self.cache_for.is_zero() {
                    self.remember(cache_key, answer);
                }
                answer
            }
        };
        Ok(!answer.token_revoked && token.version >= answer.current_version)
    }

    async fn read(&self, user: UserId, token_id: Option<&str>) -> anyhow::Result<Answer> {
        let read_at = Instant::now();
        let mut keys = vec![self.keys.token_version(user)];
        if let Some(id) = token_id {
            keys.push(self.keys.revoked_token(user, id));
        }
        let values: Vec<Option<u64>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.redis.clone())
            .await?;
        let token_revoked = values.get(1).copied().flatten().is_some();
        let current_version = match values.first().copied().flatten() {
            Some(version) => version,
            None => match db::users::token_version(&self.db, user).await? {
                Some(version) => self.raise(user, version).await?,
                // No such user (any more): no token of theirs is good.
                None => u64::MAX,
            },
        };
        Ok(Answer {
            current_version,
            token_revoked,
            read_at,
        })
    }

    fn remember(&self, key: (UserId, Option<String>), answer: Answer) {
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, a| a.read_at.elapsed() < self.cache_for);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, answer);
    }

    /// Raises Redis's copy of the user's version to `version` (never lowers it); returns
    /// the version Redis holds now.
    async fn raise(&self, user: UserId, version: u64) -> anyhow::Result<u64> {
        Ok(RAISE_VERSION
            .key(self.keys.token_version(user))
            .arg(version)
            .invoke_async(&mut self.redis.clone())
            .await?)
    }

    /// Makes sure Redis knows the version a token was just issued under (login, register),
    /// so that the token's first request finds it there and never needs MySQL.
    pub async fn issuing(&self, user: UserId, version: u64) -> anyhow::Result<()> {
        self.raise(user, version).await.map(drop)
    }

    /// Revokes every token `user` holds now (revokeTokens, logout of all devices); false
    /// when there is no such user.
    pub async fn revoke_all(&self, user: UserId) -> anyhow::Result<bool> {
        match db::users::bump_token_version(&self.db, user).await? {
            Some(version) => {
                self.revoked_all(user, version).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Every token of `user` issued before MySQL's version rose to `version` is refused
    /// from now on: at once on this instance, within TOKEN_VERSION_CACHE on the others.
    pub async fn revoked_all(&self, user: UserId, version: u64) -> anyhow::Result<()> {
        self.raise(user, version).await?;
        self.forget(|(cached_user, _)| *cached_user == user);
        Ok(())
    }

    /// Refuses this one token from now on (logout of one device).
    pub async fn revoke_one(&self, token: &VerifiedToken) -> anyhow::Result<()> {
        let Some(id) = token.id.as_deref() else {
            // A token without an id predates single-token logout: revoke all of the user's.
            anyhow::bail!("this token has no id; log out of all devices instead");
        };
        let left = token.expires_at - chrono::Utc::now().timestamp() + LEEWAY_SECS;
        if left > 0 {
            let user = token.viewer.id;
            redis::cmd("SET")
                .arg(self.keys.revoked_token(user, id))
                .arg(1)
                .arg("EX")
                .arg(left)
                .query_async::<()>(&mut self.redis.clone())
                .await?;
            self.forget(|(cached_user, cached_id)| {
                *cached_user == user && cached_id.as_deref() == Some(id)
            });
        }
        Ok(())
    }

    fn forget(&self, which: impl Fn(&(UserId, Option<String>)) -> bool) {
        self.cache
            .lock()
            .expect("cache lock")
            .retain(|key, _| !which(key));
    }
}
