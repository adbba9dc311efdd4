//! Attempt counters in Redis over fixed windows: the first attempt starts a key's window,
//! and every instance shares the count. Used by the login and registration limits.

use crate::redis_conn::RedisConn;

/// Counts one attempt against each key and returns the counts, this attempt included.
pub async fn count_attempts(
    redis: &RedisConn,
    keys: &[String],
    window_ms: u64,
) -> redis::RedisResult<Vec<u32>> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.incr(key, 1);
        pipe.cmd("PEXPIRE")
            .arg(key)
            .arg(window_ms)
            .arg("NX")
            .ignore();
    }
    pipe.query_async(&mut redis.clone()).await
}

/// A window as Redis wants it: whole milliseconds, at least one.
pub fn window_ms(window: std::time::Duration) -> u64 {
    window.as_millis().try_into().unwrap_or(u64::MAX).max(1)
}
