//! Failed-login limiting: counters in Redis per email and per client address, each over a
//! fixed window that starts at the first attempt. Shared by every instance.
//!
//! An attempt is counted before its password is checked: counting only after the (slow)
//! check would let a burst of parallel guesses all pass the limit before any was counted.
//! A successful login takes its attempt back.

use std::net::IpAddr;
use std::time::Duration;

use crate::redis_conn::RedisConn;
use async_graphql::Context;

use super::attempts::{count_attempts, window_ms};
use crate::domain::Email;
use crate::error::ApiError;
use crate::graphql::ContextExt;
use crate::hold::KeySpace;

/// The client's address, put in the GraphQL request data by the HTTP handler: the TCP
/// peer's, or the one a trusted proxy forwarded (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

#[derive(Clone)]
pub struct LoginLimiter {
    redis: RedisConn,
    keys: KeySpace,
    max_failures: u32,
    window_ms: u64,
}

/// Returned by `check`; report the login's result through it.
pub struct LoginAttempt<'a> {
    limiter: &'a LoginLimiter,
    email_key: Option<String>,
    addr_key: Option<String>,
}

impl LoginLimiter {
    pub fn new(redis: RedisConn, keys: KeySpace, max_failures: u32, window: Duration) -> Self {
        Self {
            redis,
            keys,
            max_failures,
            window_ms: window_ms(window),
        }
    }

    /// Counts the attempt against the email and the address, and refuses with
    /// RATE_LIMITED when either has already used up its failures in this window.
    pub async fn check(
        &self,
        ctx: &Context<'_>,
        email: &str,
    ) -> async_graphql::Result<LoginAttempt<'_>> {
        // Only a well-formed email gets a counter of its own: its key is then bounded by the
        // 254-byte limit, and a malformed one can never log in anyway (the address counts it).
        let email_key = Email::parse(email).map(|e| self.keys.login_failures("email", e.as_str()));
        let addr_key = ctx
            .data_opt::<ClientAddr>()
            .map(|addr| self.keys.login_failures("addr", &addr.0.to_string()));
        let keys: Vec<String> = email_key.iter().chain(addr_key.iter()).cloned().collect();
        if keys.is_empty() {
            return Ok(LoginAttempt {
                limiter: self,
                email_key,
                addr_key,
            });
        }
        let counts = count_attempts(&self.redis, &keys, self.window_ms)
            .await
            .map_err(|e| ctx.fail(e))?;
        // This attempt is number `count`; the limit allows `max_failures` before it.
        if counts.iter().any(|count| *count > self.max_failures) {
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
    /// The attempt stays counted.
    pub async fn failed(self) {}

    /// A success clears the email's count and takes this attempt back from the address.
    pub async fn succeeded(self) {
        let mut pipe = redis::pipe();
        if let Some(email) = &self.email_key {
            pipe.del(email).ignore();
        }
        if let Some(addr) = &self.addr_key {
            // Should the window have ended meanwhile, DECR starts a new count at -1;
            // PEXPIRE NX still bounds it to one window.
            pipe.decr(addr, 1).ignore();
            pipe.cmd("PEXPIRE")
                .arg(addr)
                .arg(self.limiter.window_ms)
                .arg("NX")
                .ignore();
        }
        if let Err(error) = pipe
            .query_async::<()>(&mut self.limiter.redis.clone())
            .await
        {
            tracing::warn!(%error, "could not take back a successful login attempt");
        }
    }
}
