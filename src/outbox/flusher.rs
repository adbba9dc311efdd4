//! The loop every instance runs: read a batch from the outbox streams, write it to MySQL
//! in one transaction, acknowledge it after COMMIT. At least once delivery plus
//! idempotent writes (`apply`) make every event count exactly once in MySQL.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apply::apply;
use super::consumer::{Entry, OutboxConsumer, default_name};
use super::event::OutboxEvent;
use crate::context::AppContext;
use crate::db::Db;

/// Longest a blocking read waits before the loop looks for new stores and claims again.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// How often the set of stores is read again (stores are added while the service runs).
const STORES_REFRESH: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(10);

pub struct Flusher {
    consumer: OutboxConsumer,
    db: Db,
    batch: usize,
    claim_idle: Duration,
    /// Own entries delivered but not acknowledged come first: after a start (a previous
    /// life of this consumer name may have left some) and after every failed batch.
    recovering: bool,
    next_refresh: Instant,
    next_claim: Instant,
}

impl Flusher {
    pub fn new(app: &AppContext) -> Self {
        let name = app
            .config
            .flush_consumer
            .clone()
            .unwrap_or_else(default_name);
        let now = Instant::now();
        Self {
            consumer: OutboxConsumer::new(name, app.engine.clone(), app.redis_pool.clone()),
            db: app.db.clone(),
            batch: app.config.flush_batch.max(1),
            claim_idle: app.config.flush_claim_idle,
            recovering: true,
            next_refresh: now,
            next_claim: now,
        }
    }

    /// Runs until `stop`; every failure is retried with a growing pause, and nothing is
    /// acknowledged that MySQL has not committed.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(consumer = self.consumer.name(), "outbox flusher started");
        let mut retry = FIRST_RETRY;
        loop {
            let step = tokio::select! {
                () = stop.cancelled() => break,
                step = self.step() => step,
            };
            let pause = match step {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        ?retry,
                        "outbox flush failed; retrying"
                    );
                    self.recovering = true;
                    self.consumer.forget_streams();
                    self.next_refresh = Instant::now();
                    let pause = retry;
                    retry = (retry * 2).min(LAST_RETRY);
                    pause
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!("outbox flusher stopped");
    }

    async fn step(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        if now >= self.next_refresh {
            self.consumer.refresh_streams().await?;
            self.next_refresh = now + STORES_REFRESH;
        }
        if !self.consumer.has_streams() {
            tokio::time::sleep(READ_BLOCK).await;
            return Ok(());
        }
        if now >= self.next_claim {
            let claimed = self.consumer.claim(self.claim_idle, self.batch).await?;
            if !claimed.is_empty() {
                tracing::info!(
                    entries = claimed.len(),
                    "claimed outbox entries left by another consumer"
                );
            }
            self.flush(claimed).await?;
            self.next_claim = now + (self.claim_idle / 2).max(Duration::from_millis(100));
        }
        let entries = self
            .consumer
            .read(self.recovering, self.batch, READ_BLOCK)
            .await?;
        if self.recovering && entries.is_empty() {
            self.recovering = false;
        }
        self.flush(entries).await
    }

    /// Writes entries (grouped by stream, in stream order) batch by batch; each batch is
    /// acknowledged as soon as its transaction commits.
    async fn flush(&mut self, entries: Vec<Entry>) -> anyhow::Result<()> {
        let mut by_store: Vec<Vec<Entry>> = Vec::new();
        for entry in entries {
            match by_store.last_mut() {
                Some(group) if group[0].store == entry.store => group.push(entry),
                _ => by_store.push(vec![entry]),
            }
        }
        for group in by_store {
            for batch in group.chunks(self.batch) {
                self.flush_batch(batch).await?;
            }
        }
        Ok(())
    }

    async fn flush_batch(&mut self, batch: &[Entry]) -> anyhow::Result<()> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let mut events = Vec::with_capacity(batch.len());
        for entry in batch {
            match OutboxEvent::parse(entry.store, &entry.fields) {
                Some(event) => events.push(event),
                None => {
                    tracing::error!(store = %entry.store, id = entry.id, fields = ?entry.fields,
                        "outbox entry is not an event; moved to the dead-letter stream");
                    self.consumer.set_aside(entry).await?;
                }
            }
        }
        let started = Instant::now();
        apply(&self.db, &events).await?;
        let ids: Vec<&str> = batch.iter().map(|entry| entry.id.as_str()).collect();
        self.consumer.ack(first.store, &ids).await?;
        crate::metrics::flushed(batch.len(), started.elapsed());
        let oldest = batch.iter().filter_map(Entry::appended_ms).min();
        tracing::debug!(
            store = %first.store,
            events = batch.len(),
            took = ?started.elapsed(),
            lag_ms = oldest.map(|ms| chrono::Utc::now().timestamp_millis() - ms),
            "outbox batch committed"
        );
        Ok(())
    }
}
