//! Failed-login limiting: counters in Redis per email and per client address, each over a
//! fixed window that starts at the first failure. Shared by every instance.

use std::net::IpAddr;
use std::time::Duration;

use async_graphql::Context;
use redis::aio::ConnectionManager;

use crate::error::ApiError;
use crate::graphql::ContextExt;
use crate::hold::KeySpace;

/// The client's address, put in the GraphQL request data by the HTTP handler.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

#[derive(Clone)]
pub struct LoginLimiter {
    redis: ConnectionManager,
    keys: KeySpace,
    max_failures: u32,
    window_ms: u64,
}

/// Returned by `check`; report the login's result through it.
pub struct LoginAttempt<'a> {
    limiter: &'a LoginLimiter,
    email_key: String,
    addr_key: Option<String>,
}

impl LoginLimiter {
    pub fn new(
        redis: ConnectionManager,
        keys: KeySpace,
        max_failures: u32,
        window: Duration,
    ) -> Self {
        let window_ms = window.as_millis().try_into().unwrap_or(u64::MAX).max(1);
        Self {
            redis,
            keys,
            max_failures,
            window_ms,
        }
    }

    /// Refuses with RATE_LIMITED while the email or the address is over its limit.
    pub async fn check(
        &self,
        ctx: &Context<'_>,
        email: &str,
    ) -> async_graphql::Result<LoginAttempt<'_>> {
        let email_key = self
            .keys
            .login_failures("email", &email.trim().to_lowercase());
        let addr_key = ctx
            .data_opt::<ClientAddr>()
            .map(|a| self.keys.login_failures("addr", &a.0.to_string()));
        let mut keys = vec![email_key.clone()];
        keys.extend(addr_key.clone());
        let counts: Vec<Option<u32>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|e| ctx.fail(e))?;
        if counts
            .into_iter()
            .flatten()
            .any(|count| count >= self.max_failures)
        {
            return Err(ctx.fail(ApiError::RateLimited));
        }
        Ok(LoginAttempt {
            limiter: self,
            email_key,
            addr_key,
        })
    }
}

impl LoginAttempt<'_> {
    pub async fn failed(self) {
        let mut pipe = redis::pipe();
        for key in std::iter::once(&self.email_key).chain(self.addr_key.as_ref()) {
            pipe.incr(key, 1).ignore();
            pipe.cmd("PEXPIRE")
                .arg(key)
                .arg(self.limiter.window_ms)
                .arg("NX")
                .ignore();
        }
        if let Err(error) = pipe
            .query_async::<()>(&mut self.limiter.redis.clone())
            .await
        {
            tracing::warn!(%error, "could not count a failed login");
        }
    }

    /// A success clears the email's count; the address keeps its own.
    pub async fn succeeded(self) {
        let result: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(&self.email_key)
            .query_async(&mut self.limiter.redis.clone())
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "could not clear failed logins");
        }
    }
}
