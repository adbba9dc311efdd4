//! Registration limiting per client address: `register` costs a password hash and tells
//! whether an email is taken, so a client address gets REGISTER_MAX_PER_ADDRESS attempts
//! per REGISTER_WINDOW, counted in Redis before anything else runs.

use std::time::Duration;

use crate::redis_conn::RedisConn;
use async_graphql::Context;

use super::ClientAddr;
use super::attempts::{count_attempts, window_ms};
use crate::error::ApiError;
use crate::graphql::ContextExt;
use crate::hold::KeySpace;

#[derive(Clone)]
pub struct RegisterLimiter {
    redis: RedisConn,
    keys: KeySpace,
    max_per_address: u32,
    window_ms: u64,
}

impl RegisterLimiter {
    pub fn new(redis: RedisConn, keys: KeySpace, max_per_address: u32, window: Duration) -> Self {
        Self {
            redis,
            keys,
            max_per_address,
            window_ms: window_ms(window),
        }
    }

    /// Counts this attempt against the caller's address; RATE_LIMITED beyond the limit.
    pub async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let Some(addr) = ctx.data_opt::<ClientAddr>() else {
            return Ok(());
        };
        let key = self.keys.register_attempts(&addr.0.to_string());
        let counts = count_attempts(&self.redis, &[key], self.window_ms)
            .await
            .map_err(|e| ctx.fail(e))?;
        if counts.iter().any(|count| *count > self.max_per_address) {
            return Err(ctx.fail(ApiError::RateLimited));
        }
        Ok(())
    }
}
