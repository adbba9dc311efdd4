//! A consumer's proof of life: a Redis key with a short TTL that a live flusher keeps
//! renewing. When it is gone, the consumer is gone (killed, or cut off from Redis for
//! longer than the TTL), and its pending outbox entries are claimed at once instead of
//! waiting out FLUSH_CLAIM_IDLE. Each consumer name has its own key, so any number of
//! instances on one host (each named after its pid) prove their lives apart.

use std::time::Duration;

use crate::redis_conn::RedisConn;
use tokio_util::sync::CancellationToken;

use crate::hold::KeySpace;

#[derive(Clone)]
pub struct Lease {
    redis: RedisConn,
    keys: KeySpace,
    key: String,
    ttl: Duration,
}

impl Lease {
    pub fn new(redis: RedisConn, keys: KeySpace, consumer: &str, ttl: Duration) -> Self {
        Self {
            key: keys.flush_lease(consumer),
            redis,
            keys,
            ttl,
        }
    }

    /// Renewed three times per TTL: one late renewal never lets it lapse.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Entries a departed consumer left have waited at least this long since their last
    /// delivery: it renewed at most `renew_every` before it died, and the TTL ran out after.
    /// Claiming only entries this idle means two live flushers never both claim the same
    /// one (a claim resets the idle time).
    pub fn departed_idle(&self) -> Duration {
        self.ttl - self.renew_every()
    }

    pub async fn renew(&mut self) -> redis::RedisResult<()> {
        redis::cmd("SET")
            .arg(&self.key)
            .arg(1)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut self.redis)
            .await
    }

    /// Keeps renewing until `stop`, on a task of its own: a long MySQL transaction in the
    /// flush loop must not let the lease lapse.
    pub fn keep_renewed(mut self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.renew_every());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(error) = self.renew().await {
                    tracing::warn!(%error, "cannot renew the outbox consumer lease");
                }
            }
        })
    }

    /// Gives the lease up on a clean stop, so others take over at once.
    pub async fn release(&mut self) -> redis::RedisResult<()> {
        redis::cmd("DEL")
            .arg(&self.key)
            .query_async(&mut self.redis)
            .await
    }

    /// For each name, whether its consumer holds a lease now.
    pub async fn alive(&mut self, consumers: &[String]) -> redis::RedisResult<Vec<bool>> {
        if consumers.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in consumers {
            pipe.exists(self.keys.flush_lease(name));
        }
        pipe.query_async(&mut self.redis).await
    }
}
