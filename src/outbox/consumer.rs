//! This process's seat in the `flusher` consumer group of every store's outbox stream:
//! creating the groups, reading new and own pending entries, claiming those a silent
//! consumer left behind, and acknowledging (then removing) what MySQL has committed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::redis_conn::RedisConn;
use redis::streams::{
    StreamAutoClaimReply, StreamClaimReply, StreamId, StreamInfoConsumersReply,
    StreamPendingCountReply, StreamReadReply,
};

use super::lease::Lease;

use crate::domain::StoreId;
use crate::hold::{HoldEngine, KeySpace};

pub const GROUP: &str = "flusher";
/// Fields a dead letter adds to the entry it keeps: the entry's id and why it was set aside.
pub const DEAD_ENTRY: &str = "entry";
pub const DEAD_ERROR: &str = "error";
/// A cluster's streams are polled (see `poll`): how long an idle flusher waits between
/// rounds, and so how late an event may reach MySQL beyond a single node's blocking read.
const IDLE_POLL: Duration = Duration::from_millis(20);

static FORGET_CONSUMER: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("../../lua/forget_consumer.lua")));
static ACK: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("../../lua/outbox_ack.lua")));

/// One outbox entry as read from its stream.
#[derive(Debug, Clone)]
pub struct Entry {
    pub store: StoreId,
    pub id: String,
    pub fields: HashMap<String, String>,
}

impl Entry {
    /// The store sequence number the script gave it (absent in entries older than the
    /// sequence).
    pub fn sequence(&self) -> Option<u64> {
        self.fields.get("seq")?.parse().ok()
    }

    /// When Redis appended it (the first half of a stream id is Redis's clock in ms).
    pub fn appended_ms(&self) -> Option<i64> {
        self.id.split_once('-')?.0.parse().ok()
    }
}

/// A stream id ("<ms>-<seq>") as numbers that sort as Redis orders ids; an id that is not
/// one sorts first.
fn stream_id_order(id: &str) -> (u64, u64) {
    id.split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)))
        .unwrap_or_default()
}

/// Where a store's unreadable outbox entries are kept, beside its outbox stream.
pub fn dead_letter_key(outbox: &str) -> String {
    format!("{outbox}:dead")
}

/// The default consumer name: host name and process id, stable for the process's life.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "flashstock".to_owned());
    format!("{host}-{}", std::process::id())
}

pub struct OutboxConsumer {
    name: String,
    keys: KeySpace,
    engine: HoldEngine,
    /// Shared connection for the short commands (group creation, claims, acks).
    redis: RedisConn,
    /// Blocking reads park a connection for up to BLOCK: they get one of their own.
    pool: deadpool_redis::Pool,
    reader: Option<MultiplexedConnection>,
    /// Outbox stream key -> its store, for every store whose group exists.
    streams: BTreeMap<String, StoreId>,
}

fn entry(store: StoreId, raw: StreamId) -> Entry {
    // Taken, not copied: the flusher reads every entry of a sale once.
    let fields = raw
        .map
        .into_iter()
        .filter_map(|(name, value)| {
            redis::from_redis_value::<String>(value)
                .ok()
                .map(|value| (name, value))
        })
        .collect();
    Entry {
        store,
        id: raw.id,
        fields,
    }
}

impl OutboxConsumer {
    pub fn new(name: String, engine: HoldEngine, pool: deadpool_redis::Pool) -> Self {
        Self {
            name,
            keys: engine.keys().clone(),
            redis: engine.redis(),
            engine,
            pool,
            reader: None,
            streams: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn has_streams(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Finds stores added since the last call and joins their streams' group. The group
    /// starts at 0, so events appended before it existed are flushed too.
    pub async fn refresh_streams(&mut self) -> anyhow::Result<()> {
        for store in self.engine.stores().await? {
            let key = self.keys.store(store).outbox;
            if self.streams.contains_key(&key) {
                continue;
            }
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut self.redis)
                .await;
            match created {
                Ok(()) => {}
                Err(error) if error.code() == Some("BUSYGROUP") => {}
                Err(error) => return Err(error.into()),
            }
            self.streams.insert(key, store);
        }
        Ok(())
    }

    /// Forgets which groups exist (after an error: a stream may have been deleted with its
    /// group), so the next refresh creates them again.
    pub fn forget_streams(&mut self) {
        self.streams.clear();
        self.reader = None;
    }

    async fn reader(&mut self, block: Duration) -> anyhow::Result<&mut MultiplexedConnection> {
        if self.reader.is_none() {
            let mut conn = deadpool_redis::Connection::take(self.pool.get().await?);
            // The pool's default reply timeout is shorter than a blocking read.
            conn.set_response_timeout(block + Duration::from_secs(5));
            self.reader = Some(conn);
        }
        Ok(self.reader.as_mut().expect("reader was just set"))
    }

    /// Reads up to `count` entries per stream. `pending`: this consumer's own delivered
    /// but unacknowledged entries (after a restart or a failed batch), without blocking;
    /// otherwise entries never delivered, waiting up to `block` for the first one.
    pub async fn read(
        &mut self,
        pending: bool,
        count: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Entry>> {
        if self.redis.is_cluster() {
            self.poll(pending, count, block).await
        } else {
            self.read_blocking(pending, count, block).await
        }
    }

    /// A cluster's read: one `XREADGROUP` can name streams of one slot only, and each
    /// store's stream stays in its store's slot, so every stream is read on its own,
    /// all at once over the multiplexed connection, without blocking. While none has
    /// anything, they are polled again every IDLE_POLL, up to `block`.
    async fn poll(
        &mut self,
        pending: bool,
        count: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Entry>> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let reads = self.streams.iter().map(|(key, store)| {
                let mut redis = self.redis.clone();
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.name)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(key)
                    .arg(if pending { "0" } else { ">" });
                async move {
                    let reply: Option<StreamReadReply> = cmd.query_async(&mut redis).await?;
                    anyhow::Ok(
                        reply
                            .map(|reply| reply.keys)
                            .unwrap_or_default()
                            .into_iter()
                            .flat_map(|stream| stream.ids)
                            .map(|raw| entry(*store, raw))
                            .collect::<Vec<_>>(),
                    )
                }
            });
            let entries: Vec<Entry> = if pending {
                // Pending entries are re-read once, all stores together: a store skipped
                // here would keep its delivered entries unread until the next start.
                futures_util::future::try_join_all(reads)
                    .await?
                    .into_iter()
                    .flatten()
                    .collect()
            } else {
                // New entries: a store whose slot has no master (a failover under way)
                // must not stop the others; its entries wait in its stream for a later read.
                let mut entries = Vec::new();
                let mut failed = None;
                for read in futures_util::future::join_all(reads).await {
                    match read {
                        Ok(read) => entries.extend(read),
                        Err(error) => failed = Some(error),
                    }
                }
                if let Some(error) = failed {
                    if entries.is_empty() {
                        return Err(error);
                    }
                    tracing::warn!(%error, "an outbox stream could not be read; the others are flushed");
                }
                entries
            };
            if pending || !entries.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(entries);
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + IDLE_POLL)).await;
        }
    }

    /// A single node's read: one blocking `XREADGROUP` over every stream, on a
    /// connection of its own.
    async fn read_blocking(
        &mut self,
        pending: bool,
        count: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Entry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count);
        if !pending {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS");
        for key in self.streams.keys() {
            cmd.arg(key);
        }
        for _ in 0..self.streams.len() {
            cmd.arg(if pending { "0" } else { ">" });
        }
        let streams = self.streams.clone();
        let reply: Option<StreamReadReply> = cmd.query_async(self.reader(block).await?).await?;
        Ok(reply
            .map(|reply| reply.keys)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|stream| Some((*streams.get(&stream.key)?, stream.ids)))
            .flat_map(|(store, ids)| ids.into_iter().map(move |raw| entry(store, raw)))
            .collect())
    }

    /// Takes over up to `count` entries per stream that another consumer has left pending
    /// for at least `min_idle` (it crashed or hangs).
    pub async fn claim(&mut self, min_idle: Duration, count: usize) -> anyhow::Result<Vec<Entry>> {
        let mut claimed = Vec::new();
        for (key, store) in &self.streams {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(key)
                .arg(GROUP)
                .arg(&self.name)
                .arg(min_idle.as_millis() as u64)
                .arg("0")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut self.redis)
                .await?;
            claimed.extend(reply.claimed.into_iter().map(|raw| entry(*store, raw)));
        }
        Ok(claimed)
    }

    /// Takes over up to `count` pending entries per stream from every other consumer whose
    /// lease has lapsed (it is gone), without waiting out FLUSH_CLAIM_IDLE, and removes
    /// such consumers from the group once they own nothing.
    pub async fn take_over_departed(
        &mut self,
        lease: &mut Lease,
        count: usize,
    ) -> anyhow::Result<Vec<Entry>> {
        let min_idle = lease.departed_idle().as_millis() as u64;
        let mut claimed = Vec::new();
        for (key, store) in &self.streams {
            let info: StreamInfoConsumersReply = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(key)
                .arg(GROUP)
                .query_async(&mut self.redis)
                .await?;
            let others: Vec<_> = info
                .consumers
                .into_iter()
                .filter(|consumer| consumer.name != self.name)
                .collect();
            let names: Vec<String> = others.iter().map(|c| c.name.clone()).collect();
            let alive = lease.alive(&names).await?;
            for (consumer, alive) in others.iter().zip(alive) {
                if alive {
                    continue;
                }
                if consumer.pending == 0 {
                    let forgotten: i64 = FORGET_CONSUMER
                        .key(key)
                        .arg(GROUP)
                        .arg(&consumer.name)
                        .invoke_async(&mut self.redis)
                        .await?;
                    if forgotten == 1 {
                        tracing::info!(%store, consumer = consumer.name,
                            "removed a departed outbox consumer from the group");
                    }
                    continue;
                }
                let pending: StreamPendingCountReply = redis::cmd("XPENDING")
                    .arg(key)
                    .arg(GROUP)
                    .arg("-")
                    .arg("+")
                    .arg(count)
                    .arg(&consumer.name)
                    .query_async(&mut self.redis)
                    .await?;
                let ids: Vec<&str> = pending.ids.iter().map(|p| p.id.as_str()).collect();
                if ids.is_empty() {
                    continue;
                }
                // The idle floor makes the claim exclusive: another live flusher claiming
                // at the same moment finds them just delivered and leaves them.
                let reply: StreamClaimReply = redis::cmd("XCLAIM")
                    .arg(key)
                    .arg(GROUP)
                    .arg(&self.name)
                    .arg(min_idle)
                    .arg(&ids)
                    .query_async(&mut self.redis)
                    .await?;
                if !reply.ids.is_empty() {
                    tracing::info!(%store, consumer = consumer.name, entries = reply.ids.len(),
                        "took over the pending outbox entries of a departed consumer");
                }
                claimed.extend(reply.ids.into_iter().map(|raw| entry(*store, raw)));
            }
        }
        Ok(claimed)
    }

    /// Leaves the group on a clean stop when nothing is pending on this consumer.
    pub async fn leave(&mut self) -> anyhow::Result<()> {
        for key in self.streams.keys() {
            let _: i64 = FORGET_CONSUMER
                .key(key)
                .arg(GROUP)
                .arg(&self.name)
                .invoke_async(&mut self.redis)
                .await?;
        }
        Ok(())
    }

    /// Acknowledges entries MySQL has committed and removes them from the stream, in one
    /// script so an entry is never acknowledged yet kept (the stream would only grow).
    /// The stream is trimmed below the group's oldest pending entry rather than each id
    /// deleted (`lua/outbox_ack.lua` says why that removes only what MySQL has).
    pub async fn ack(&mut self, store: StoreId, ids: &[&str]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = self.keys.store(store).outbox;
        // In ascending order, as the script needs (claimed entries may come after new ones).
        let mut ids = ids.to_vec();
        ids.sort_by_key(|id| stream_id_order(id));
        let _: i64 = ACK
            .key(&key)
            .arg(GROUP)
            .arg(&ids)
            .invoke_async(&mut self.redis)
            .await?;
        Ok(())
    }

    /// Keeps an entry MySQL cannot take (not an event, or refused) in the store's
    /// dead-letter stream with the reason, for a person to look at, and lets the flush go on.
    pub async fn set_aside(&mut self, entry: &Entry, reason: &str) -> anyhow::Result<()> {
        super::dead_letters::add(&self.engine, entry, reason).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_sort_as_redis_orders_them() {
        let mut ids = vec![
            "1700000000010-0",
            "999-7",
            "1700000000009-12",
            "1700000000009-2",
        ];
        ids.sort_by_key(|id| stream_id_order(id));
        assert_eq!(
            ids,
            [
                "999-7",
                "1700000000009-2",
                "1700000000009-12",
                "1700000000010-0"
            ]
        );
    }
}
