//! The loop every instance runs: read a batch from the outbox streams, write it to MySQL
//! in one transaction, acknowledge it after COMMIT. At least once delivery plus
//! idempotent writes (`apply`) make every event count exactly once in MySQL.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apply::{apply, is_refusal};
use super::consumer::{Entry, OutboxConsumer, default_name};
use super::event::OutboxEvent;
use super::lease::Lease;
use crate::context::AppContext;
use crate::db::Db;

/// Longest a blocking read waits before the loop looks for new stores and claims again.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// How often the set of stores is read again (stores are added while the service runs),
/// and how often the group is checked for consumers whose lease lapsed.
const STORES_REFRESH: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(10);

pub struct Flusher {
    consumer: OutboxConsumer,
    lease: Lease,
    db: Db,
    batch: usize,
    claim_idle: Duration,
    /// Own entries delivered but not acknowledged come first: after a start (a previous
    /// life of this consumer name may have left some) and after every failed batch.
    recovering: bool,
    next_refresh: Instant,
    next_claim: Instant,
    next_departed: Instant,
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
            lease: Lease::new(
                app.redis.clone(),
                app.engine.keys().clone(),
                &name,
                app.config.flush_lease_ttl,
            ),
            consumer: OutboxConsumer::new(name, app.engine.clone(), app.redis_pool.clone()),
            db: app.db.clone(),
            batch: app.config.flush_batch.max(1),
            claim_idle: app.config.flush_claim_idle,
            recovering: true,
            next_refresh: now,
            next_claim: now,
            next_departed: now,
        }
    }

    /// Runs until `stop`; every failure is retried with a growing pause, and nothing is
    /// acknowledged that MySQL has not committed. A stop lets the read in flight (at most
    /// READ_BLOCK) and the batch it returned commit and be acknowledged, then the loop
    /// ends (the service bounds all of it by SHUTDOWN_TIMEOUT). The consumer then leaves
    /// the group and gives its lease up, so another one takes over anything left at once.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(consumer = self.consumer.name(), "outbox flusher started");
        if let Err(error) = self.lease.renew().await {
            tracing::warn!(%error, "cannot take the outbox consumer lease");
        }
        let renewing = CancellationToken::new();
        let renewal = self.lease.clone().keep_renewed(renewing.clone());
        let mut retry = FIRST_RETRY;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let step = self.step(&stop).await;
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
        renewing.cancel();
        let _ = renewal.await;
        if let Err(error) = self.consumer.leave().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot leave the outbox group"
            );
        }
        if let Err(error) = self.lease.release().await {
            tracing::warn!(%error, "cannot give up the outbox consumer lease");
        }
        tracing::info!("outbox flusher stopped");
    }

    async fn step(&mut self, stop: &CancellationToken) -> anyhow::Result<()> {
        let now = Instant::now();
        if now >= self.next_refresh {
            self.consumer.refresh_streams().await?;
            self.next_refresh = now + STORES_REFRESH;
        }
        if !self.consumer.has_streams() {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(READ_BLOCK) => {}
            }
            return Ok(());
        }
        if now >= self.next_departed {
            let taken = self
                .consumer
                .take_over_departed(&mut self.lease, self.batch)
                .await?;
            self.flush(taken).await?;
            self.next_departed = now + STORES_REFRESH;
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
        // Not cut short by a stop: Redis delivers what a read finds even if the reply is
        // never awaited, and those entries would stay pending here. The read blocks at
        // most READ_BLOCK, and what it returns is written before the loop stops.
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
    /// acknowledged as soon as its transaction commits. Entries read are delivered to this
    /// consumer: they are all written, stop or not (at most one batch per store).
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
        let mut sources = Vec::with_capacity(batch.len());
        for entry in batch {
            match OutboxEvent::parse(entry.store, &entry.fields) {
                Some(event) => {
                    events.push(event);
                    sources.push(entry);
                }
                None => self.dead_letter(entry, "not an outbox event").await?,
            }
        }
        let started = Instant::now();
        self.write(&events, &sources).await?;
        let ids: Vec<&str> = batch.iter().map(|entry| entry.id.as_str()).collect();
        self.consumer.ack(first.store, &ids).await?;
        crate::metrics::flushed(batch.len(), started.elapsed());
        // A hold a release script made for the head of a waitlist, seen here once: its
        // version-1 event (its later transitions are version 2).
        crate::metrics::waitlist_handovers(
            events
                .iter()
                .filter(|event| {
                    matches!(event, OutboxEvent::Order(hold) if hold.from_waitlist && hold.version == 1)
                })
                .count(),
        );
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

    /// Writes `events` (read from `sources`). When MySQL refuses the data (`is_refusal`),
    /// the batch is halved until each refused event is alone; those go to the dead-letter
    /// stream with MySQL's error and every other event is written. Any other error (MySQL
    /// unreachable) fails the whole call, to be retried.
    async fn write(&mut self, events: &[OutboxEvent], sources: &[&Entry]) -> anyhow::Result<()> {
        // Ranges still to write, the next one last; halves are pushed so stream order holds.
        let mut todo = Vec::new();
        todo.push(0..events.len());
        while let Some(range) = todo.pop() {
            if range.is_empty() {
                continue;
            }
            let sequence = sources[range.clone()]
                .iter()
                .filter_map(|entry| entry.sequence())
                .max()
                .map(|seq| (sources[range.start].store, seq));
            match apply(&self.db, &events[range.clone()], sequence).await {
                Ok(refused) => {
                    for refusal in refused {
                        let entry = sources[range.start + refusal.index];
                        self.dead_letter(entry, &refusal.reason).await?;
                    }
                }
                Err(error) if is_refusal(&error) => {
                    if range.len() == 1 {
                        self.dead_letter(sources[range.start], &format!("{error:#}"))
                            .await?;
                        continue;
                    }
                    tracing::warn!(
                        error = format!("{error:#}"),
                        events = range.len(),
                        "MySQL refused an outbox batch; splitting it to find the events at fault"
                    );
                    let middle = range.start + range.len() / 2;
                    todo.push(middle..range.end);
                    todo.push(range.start..middle);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Keeps an event MySQL cannot take in the store's dead-letter stream, with why, and
    /// lets the flush go on; `flashstock audit` lists it, `flashstock outbox replay-dead`
    /// writes it once the cause is fixed.
    async fn dead_letter(&mut self, entry: &Entry, reason: &str) -> anyhow::Result<()> {
        tracing::error!(store = %entry.store, id = entry.id, reason, fields = ?entry.fields,
            "outbox entry moved to the dead-letter stream");
        self.consumer.set_aside(entry, reason).await
    }
}
