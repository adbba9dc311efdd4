//! The start-up check of `notify-keyspace-events`. The listener only hears expiries when
//! Redis publishes keyevent (`E`) notifications for expired keys (`x`, or `A` which
//! includes it). Where they are off we switch them on if allowed; where CONFIG is refused
//! (managed Redis) we say so once and go on: the sweeper keeps release correct, only slower.

use redis::RedisError;
use redis::aio::ConnectionLike;

/// The flags to add to `current` so that expired-key events are published; empty when
/// nothing is missing.
pub fn missing_flags(current: &str) -> String {
    let mut missing = String::new();
    if !current.contains('E') {
        missing.push('E');
    }
    if !current.contains('x') && !current.contains('A') {
        missing.push('x');
    }
    missing
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notifications {
    /// Already published.
    On,
    /// Switched on by this check; the new setting.
    Enabled(String),
    /// Off, and REDIS_CONFIGURE_NOTIFICATIONS forbids changing it.
    Off,
    /// Off or unknown: Redis refused CONFIG.
    Refused(String),
}

/// Runs the check on every (re)connect of the listener, since a restarted Redis may have
/// forgotten a CONFIG SET, but warns only once per process.
pub struct NotificationCheck {
    configure: bool,
    warned: bool,
}

impl NotificationCheck {
    pub fn new(configure: bool) -> Self {
        Self {
            configure,
            warned: false,
        }
    }

    /// Err only when Redis could not be reached; a refusal is an outcome, not an error.
    pub async fn run(
        &mut self,
        redis: &mut impl ConnectionLike,
    ) -> Result<Notifications, RedisError> {
        let outcome = self.inspect(redis).await?;
        match &outcome {
            Notifications::On => tracing::debug!("Redis publishes expired-key events"),
            Notifications::Enabled(setting) => tracing::info!(
                notify_keyspace_events = %setting,
                "enabled expired-key events in Redis"
            ),
            Notifications::Off => self.warn_once(
                "Redis does not publish expired-key events and REDIS_CONFIGURE_NOTIFICATIONS is \
                 false: expired holds are released by the sweeper only, up to SWEEP_INTERVAL late",
                None,
            ),
            Notifications::Refused(error) => self.warn_once(
                "cannot read or set notify-keyspace-events (CONFIG refused): expired holds are \
                 released by the sweeper only, up to SWEEP_INTERVAL late, unless the Redis \
                 operator enables `Ex`",
                Some(error),
            ),
        }
        Ok(outcome)
    }

    fn warn_once(&mut self, message: &str, error: Option<&str>) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(error, "{message}");
        }
    }

    async fn inspect(&self, redis: &mut impl ConnectionLike) -> Result<Notifications, RedisError> {
        let current: Vec<String> = match redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(redis)
            .await
        {
            Ok(reply) => reply,
            Err(error) => return refused(error),
        };
        let current = current.get(1).map(String::as_str).unwrap_or_default();
        let missing = missing_flags(current);
        if missing.is_empty() {
            return Ok(Notifications::On);
        }
        if !self.configure {
            return Ok(Notifications::Off);
        }
        let setting = format!("{current}{missing}");
        match redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&setting)
            .query_async::<()>(redis)
            .await
        {
            Ok(()) => Ok(Notifications::Enabled(setting)),
            Err(error) => refused(error),
        }
    }
}

/// A reply with an error code is Redis saying no (unknown or renamed command, NOPERM);
/// anything else is a transport failure, for the caller to retry.
fn refused(error: RedisError) -> Result<Notifications, RedisError> {
    match error.code() {
        Some(_) => Ok(Notifications::Refused(error.to_string())),
        None => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::missing_flags;

    #[test]
    fn asks_only_for_what_is_missing() {
        assert_eq!(missing_flags(""), "Ex");
        assert_eq!(missing_flags("Kg"), "Ex");
        assert_eq!(missing_flags("xE"), "");
        assert_eq!(missing_flags("AE"), "");
        assert_eq!(missing_flags("AK"), "E");
        assert_eq!(missing_flags("Ex$"), "");
        assert_eq!(missing_flags("Eg"), "x");
    }
}
