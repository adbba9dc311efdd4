//! Runs the hold scripts and turns their replies into typed outcomes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::redis_conn::RedisConn;
use chrono::{DateTime, TimeZone, Utc};
use redis::AsyncCommands;
use tokio::time::Instant;

use super::keys::{KeySpace, LOCK_STORE_KEYS, STORE_KEYS};
use super::record::Hold;
use super::replication::{ReplicaWait, WaitSettings};
use super::scripts::SCRIPTS;
use crate::domain::{
    IdempotencyKey, OrderId, OrderStatus, PaymentReference, ProductId, StoreId, UserId,
};
use crate::metrics::{self, ReleaseCause};

/// One distinct product of an order, with what the catalog says about it.
#[derive(Debug, Clone)]
pub struct RequestedLine {
    pub product: ProductId,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone)]
pub struct LockRequest {
    pub order: OrderId,
    pub user: UserId,
    pub lines: Vec<RequestedLine>,
    pub idempotency_key: Option<IdempotencyKey>,
    /// The customer accepts a pre-order for what stock cannot fill.
    pub allow_backorder: bool,
}

impl LockRequest {
    /// What the customer asked for, normalised: `pid:qty` per line in product order.
    /// Stored with the idempotency key, so that the key cannot be reused for another
    /// request. Every order option that changes what is held belongs in it.
    pub fn fingerprint(&self) -> String {
        let mut lines: Vec<(u64, u32)> = self
            .lines
            .iter()
            .map(|l| (l.product.0, l.quantity))
            .collect();
        lines.sort_unstable();
        let lines = lines
            .iter()
            .map(|(product, quantity)| format!("{product}:{quantity}"))
            .collect::<Vec<_>>()
            .join(",");
        if self.allow_backorder {
            format!("{lines};backorder")
        } else {
            lines
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    Held {
        created_at: DateTime<Utc>,
        held_until: DateTime<Utc>,
        /// Units of each line taken as a pre-order (only lines that have some).
        backordered: HashMap<ProductId, u32>,
    },
    /// The idempotency key already names this order, made from the same request.
    Existing(OrderId),
    /// The idempotency key names this order, made from other lines or options.
    KeyReused(OrderId),
    /// The customer already has this many HELD holds in the store (MAX_HOLDS_PER_CUSTOMER).
    TooManyHolds(u32),
    /// Redis has no stock entry for these products yet.
    Uninitialised(Vec<ProductId>),
    /// (product, units the customer may still take)
    LimitExceeded(Vec<(ProductId, i64)>),
    /// (product, units available)
    Short(Vec<(ProductId, i64)>),
}

/// One confirmation: by a customer or an ADMIN (`confirmOrder`) or by a payment event.
#[derive(Debug, Clone, Copy)]
pub struct Confirmation<'a> {
    pub order: OrderId,
    /// The user who must own the hold; `None`: anyone's (an ADMIN's fix, a payment).
    pub owner: Option<UserId>,
    pub payment: &'a PaymentReference,
    /// Kept with the order and in the ledger: `payment:<event>` or `<ROLE>:<user id>`.
    pub confirmed_by: &'a str,
    /// The amount paid, which must equal the hold's total.
    pub amount_cents: Option<i64>,
    /// A payment event's id: its first answer is kept and returned to every replay.
    pub event: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed,
    AlreadyConfirmed,
    /// Past its deadline: expired by this call or before, its units back to the sale.
    Expired,
    NotFound,
    /// The amount paid differs from the hold's total; nothing changed.
    AmountMismatch {
        total_cents: i64,
    },
    /// Neither HELD nor (with this reference) CONFIRMED; nothing changed.
    InvalidState(OrderStatus),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    AlreadyCancelled,
    /// Past its deadline: expired (now, or before), its units back to the sale.
    Expired,
    NotFound,
    InvalidState,
}

/// What a restock did: units now available, and units that went to pre-orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restocked {
    pub available: i64,
    pub filled_backorders: i64,
}

/// A product's terms as Redis enforces them, seeded from MySQL.
#[derive(Debug, Clone, Copy)]
pub struct SeedProduct {
    pub product: ProductId,
    pub stock: i64,
    pub max_per_customer: Option<u32>,
    pub backorder_limit: i64,
    /// Confirmed pre-ordered units not yet filled.
    pub backordered: i64,
}

/// A change to a product's terms; `None` leaves a term as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct TermsChange {
    /// `Some(None)` removes the per-customer limit.
    pub max_per_customer: Option<Option<u32>>,
    pub backorder_limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermsOutcome {
    Updated,
    Uninitialised,
    /// This many units are pre-ordered already (held or confirmed).
    BelowBackordered(i64),
}

/// A product's pre-order figures in Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackorderFigures {
    pub open: i64,
    pub held: i64,
    pub confirmed: i64,
    pub limit: i64,
}

#[derive(Clone)]
pub struct HoldEngine {
    redis: RedisConn,
    keys: KeySpace,
    hold_ttl_ms: u64,
    idempotency_ttl_ms: u64,
    retention_ms: u64,
    max_holds_per_customer: u32,
    payment_event_retention_ms: u64,
    /// The scripts' own connection (the shared one unless `with_script_connection`): the
    /// first script call after the server behind it changed is sure to fail on it, and
    /// nothing else reconnects it first.
    scripts: RedisConn,
    /// Stores being checked or rebuilt from MySQL (`recovery`): no script runs on them.
    recovering: Arc<RwLock<HashSet<StoreId>>>,
    /// Connection failures seen by script calls, and how many of them the recovery
    /// watcher has since checked (same server, or every store checked against MySQL).
    /// While they differ, the server may be another one: no script runs on any store.
    failures: Arc<AtomicU64>,
    checked: Arc<AtomicU64>,
    waitlist_ttl_ms: u64,
    /// REDIS_WAIT_REPLICAS above 0: holds, confirms and cancels wait for replicas.
    replicas: Option<ReplicaWait>,
}

/// A transition's outcome, and whether REDIS_WAIT_REPLICAS replicas had it in time
/// (always true when nothing is waited for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicated<T> {
    pub outcome: T,
    pub replicated: bool,
}

/// The result of joining a waitlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined(u32),
    /// The customer already waits for this product, at this position.
    Already(u32),
    /// `available` units can be held right now: use lockOrder.
    NotSoldOut(i64),
    /// The per-customer limit allows only this many more units.
    Limit(i64),
    TooManyHolds(u32),
    Uninitialised,
}

/// One waitlist entry of a customer, as Redis has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitlistEntry {
    pub product: ProductId,
    pub quantity: u32,
    pub position: u32,
    /// Why a hand-over last passed this entry over (`LIMIT`, `HOLD_CAP`).
    pub skipped: Option<String>,
}

/// How long holds last and how many a customer may have; the engine's settings.
#[derive(Debug, Clone, Copy)]
pub struct HoldSettings {
    pub hold_ttl: Duration,
    pub idempotency_ttl: Duration,
    pub retention: Duration,
    /// Most HELD holds one customer may have in one store; 0: no cap.
    pub max_holds_per_customer: u32,
    /// How long a waitlist entry waits before it is dropped.
    pub waitlist_ttl: Duration,
    /// How long the answer to a payment event is kept (PAYMENT_EVENT_RETENTION).
    pub payment_event_retention: Duration,
}

/// Longest a script call that lost its connection waits for the server to be checked
/// before it is tried again.
const VERIFY_WAIT: Duration = Duration::from_secs(3);

fn lost_connection(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
}

fn ms(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

fn unexpected(reply: &[String]) -> anyhow::Error {
    anyhow::anyhow!("unexpected script reply {reply:?}")
}

/// Reads `pid, number, pid, number, ...` from a script reply.
fn pairs(rest: &[String]) -> anyhow::Result<Vec<(ProductId, i64)>> {
    rest.chunks(2)
        .map(|pair| match pair {
            [pid, n] => Ok((
                ProductId::parse(pid).ok_or_else(|| unexpected(rest))?,
                n.parse()?,
            )),
            _ => Err(unexpected(rest)),
        })
        .collect()
}

/// Runs one script call, timing it for `flashstock_redis_script_duration_seconds`.
async fn timed<T>(script: &'static str, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let reply = call.await;
    metrics::script(script, started.elapsed());
    reply
}

/// Whether a confirm or cancel reply says this call released an expired hold.
fn released_now(reply: &[String]) -> bool {
    reply.get(1).is_some_and(|flag| flag == "NOW")
}

fn timestamp(raw: &str) -> anyhow::Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(raw.parse()?)
        .single()
        .ok_or_else(|| anyhow::anyhow!("bad timestamp {raw}"))
}

impl HoldEngine {
    pub fn new(redis: RedisConn, keys: KeySpace, settings: HoldSettings) -> Self {
        Self {
            scripts: redis.clone(),
            redis,
            keys,
            hold_ttl_ms: ms(settings.hold_ttl),
            idempotency_ttl_ms: ms(settings.idempotency_ttl),
            retention_ms: ms(settings.retention),
            max_holds_per_customer: settings.max_holds_per_customer,
            waitlist_ttl_ms: ms(settings.waitlist_ttl),
            payment_event_retention_ms: ms(settings.payment_event_retention),
            recovering: Arc::default(),
            failures: Arc::default(),
            checked: Arc::default(),
            replicas: None,
        }
    }

    /// Holds, confirms and cancels are answered once REDIS_WAIT_REPLICAS replicas have them,
    /// or REDIS_WAIT_TIMEOUT passed (then they say so: `Replicated::replicated` is false).
    pub fn waiting_for_replicas(mut self, config: &crate::config::Config) -> Self {
        self.replicas = (config.redis_wait_replicas > 0).then(|| {
            ReplicaWait::new(
                self.redis.clone(),
                WaitSettings {
                    replicas: config.redis_wait_replicas,
                    timeout: config.redis_wait_timeout,
                    response_timeout: config.redis_response_timeout,
                    max_connections_per_node: config.redis_wait_connections,
                    connection_name: format!("flashstock-wait-{}", config.redis_key_prefix),
                },
            )
        });
        self
    }

    /// An engine on a connection of its own, for the command-line tools (`audit`, `pay`).
    pub async fn connect(config: &crate::config::Config) -> anyhow::Result<Self> {
        let redis = RedisConn::connect(config).await?;
        Ok(Self::new(
            redis,
            KeySpace::new(config.redis_key_prefix.clone()),
            config.hold_settings(),
        )
        .waiting_for_replicas(config))
    }

    /// Runs the scripts on a connection of their own, so that a server change is seen
    /// by them first (see `scripts`).
    pub fn with_script_connection(mut self, scripts: RedisConn) -> Self {
        self.scripts = scripts;
        self
    }

    /// Counts a lost connection under a script call: the server may have restarted.
    fn watched<T>(&self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(error) = &result
            && lost_connection(error)
        {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    /// Runs a script that changes nothing the second time (confirm, cancel); one that lost
    /// its connection runs again once the server was checked.
    async fn run_idempotent(
        &self,
        script: &'static str,
        store: StoreId,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<(Vec<String>, bool)> {
        match self.run_replicated(script, store, invocation).await {
            Err(error) if self.recovered_from(&error).await => {
                self.run_replicated(script, store, invocation).await
            }
            result => result,
        }
    }

    /// For an answer repeated from an earlier call (an idempotent retry): whether the
    /// master's writes so far, that call's included, are on enough replicas.
    async fn earlier_writes_replicated(
        &self,
        store: StoreId,
        replicated: bool,
    ) -> redis::RedisResult<bool> {
        match &self.replicas {
            Some(replicas) => {
                let sequence = self.keys.store(store).sequence();
                self.watched(replicas.earlier_writes(&sequence).await)
            }
            None => Ok(replicated),
        }
    }

    /// Runs a transition's script; with REDIS_WAIT_REPLICAS, on a connection of its own to
    /// the store's master, followed by `WAIT`. The flag: enough replicas had it in time.
    async fn run_replicated(
        &self,
        script: &'static str,
        store: StoreId,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<(Vec<String>, bool)> {
        let Some(replicas) = &self.replicas else {
            return Ok((self.run(script, invocation).await?, true));
        };
        let key = self.keys.store(store).stock;
        let waited = self.watched(timed(script, replicas.run(&key, invocation)).await)?;
        crate::metrics::replica_wait(script, waited.replicated);
        if !waited.replicated {
            tracing::warn!(%store, script, "not on REDIS_WAIT_REPLICAS replicas in time");
        }
        Ok((waited.reply, waited.replicated))
    }

    /// Runs a script on the scripts' connection, timed, and counts a lost connection.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        self.watched(timed(script, invocation.invoke_async(&mut self.scripts.clone())).await)
    }

    /// After a script call lost its connection: waits (at most VERIFY_WAIT) for the
    /// recovery watcher to check the server it reconnected to; true when the call may be
    /// made again.
    async fn recovered_from(&self, error: &redis::RedisError) -> bool {
        if !lost_connection(error) {
            return false;
        }
        let deadline = tokio::time::Instant::now() + VERIFY_WAIT;
        while self.server_unverified() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Connection failures seen so far; the watcher checks the server, then `checked_up_to`.
    pub fn connection_failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    pub fn checked_up_to(&self, failures: u64) {
        self.checked.fetch_max(failures, Ordering::SeqCst);
    }

    /// Another server answers behind the connection (restarted, or a replica promoted):
    /// every store waits, as after a lost connection, until the watcher has checked it,
    /// even when a check fails and must be tried again.
    pub fn server_changed(&self) {
        self.failures.fetch_add(1, Ordering::SeqCst);
    }

    /// True while a lost connection is not yet checked.
    pub fn server_unverified(&self) -> bool {
        self.failures.load(Ordering::SeqCst) > self.checked.load(Ordering::SeqCst)
    }

    /// True while the store is checked or rebuilt from MySQL: its orders wait.
    pub fn is_recovering(&self, store: StoreId) -> bool {
        self.server_unverified()
            || self
                .recovering
                .read()
                .expect("recovering lock poisoned")
                .contains(&store)
    }

    pub fn set_recovering(&self, store: StoreId, recovering: bool) {
        let mut stores = self.recovering.write().expect("recovering lock poisoned");
        if recovering {
            stores.insert(store);
        } else {
            stores.remove(&store);
        }
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_millis(self.idempotency_ttl_ms)
    }

    /// The waitlist hand-over's ARGV (see `read_waitlist` in `lua/release_lib.lua`): every
    /// script that may release units takes it. The one fresh order id is the first
    /// hand-over's; the script derives the others from it.
    fn waitlist_args(&self, invocation: &mut redis::ScriptInvocation<'_>, store: StoreId) {
        invocation
            .arg(self.hold_ttl_ms)
            .arg(self.max_holds_per_customer)
            .arg(self.keys.hold_prefix(store))
            .arg(uuid::Uuid::now_v7().to_string());
    }

    /// Puts the customer on the product's waitlist (at `unit_price_cents`).
    pub async fn join_waitlist(
        &self,
        store: StoreId,
        user: UserId,
        product: ProductId,
        quantity: u32,
        unit_price_cents: i64,
    ) -> anyhow::Result<JoinOutcome> {
        let mut invocation = SCRIPTS.waitlist.prepare_invoke();
        self.store_keys(&mut invocation, store);
        invocation
            .arg("JOIN")
            .arg(user.0)
            .arg(product.0)
            .arg(quantity)
            .arg(unit_price_cents)
            .arg(self.waitlist_ttl_ms)
            .arg(self.max_holds_per_customer);
        let reply: Vec<String> = self.run("waitlist", &invocation).await?;
        Ok(match reply.split_first() {
            Some((tag, [n])) if tag == "JOINED" => JoinOutcome::Joined(n.parse()?),
            Some((tag, [n])) if tag == "ALREADY" => JoinOutcome::Already(n.parse()?),
            Some((tag, [n])) if tag == "NOT_SOLD_OUT" => JoinOutcome::NotSoldOut(n.parse()?),
            Some((tag, [n])) if tag == "LIMIT" => JoinOutcome::Limit(n.parse()?),
            Some((tag, [n])) if tag == "TOO_MANY_HOLDS" => JoinOutcome::TooManyHolds(n.parse()?),
            Some((tag, [])) if tag == "UNKNOWN" => JoinOutcome::Uninitialised,
            _ => return Err(unexpected(&reply)),
        })
    }

    /// Takes the customer off the product's waitlist; false when there was no entry.
    pub async fn leave_waitlist(
        &self,
        store: StoreId,
        user: UserId,
        product: ProductId,
    ) -> anyhow::Result<bool> {
        let mut invocation = SCRIPTS.waitlist.prepare_invoke();
        self.store_keys(&mut invocation, store);
        invocation.arg("LEAVE").arg(user.0).arg(product.0);
        let reply: Vec<String> = self.run("waitlist", &invocation).await?;
        match reply.as_slice() {
            [tag] if tag == "LEFT" => Ok(true),
            [tag] if tag == "NOT_FOUND" => Ok(false),
            _ => Err(unexpected(&reply)),
        }
    }

    /// The customer's live waitlist entries in one store, with exact positions.
    pub async fn waitlist_of(
        &self,
        store: StoreId,
        user: UserId,
    ) -> anyhow::Result<Vec<WaitlistEntry>> {
        let mut invocation = SCRIPTS.waitlist.prepare_invoke();
        self.store_keys(&mut invocation, store);
        invocation.arg("MINE").arg(user.0);
        let reply: Vec<String> = self.run("waitlist", &invocation).await?;
        reply
            .chunks(4)
            .map(|group| match group {
                [product, quantity, position, skipped] => Ok(WaitlistEntry {
                    product: ProductId::parse(product).ok_or_else(|| unexpected(&reply))?,
                    quantity: quantity.parse()?,
                    position: position.parse()?,
                    skipped: Some(skipped.clone()).filter(|s| !s.is_empty()),
                }),
                _ => Err(unexpected(&reply)),
            })
            .collect()
    }

    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    pub fn redis(&self) -> RedisConn {
        self.redis.clone()
    }

    pub async fn lock(&self, request: &LockRequest) -> anyhow::Result<Replicated<LockOutcome>> {
        let store = request.order.store;
        let mut invocation = SCRIPTS.lock.prepare_invoke();
        self.first_store_keys(&mut invocation, store, LOCK_STORE_KEYS);
        invocation
            .key(self.keys.hold(request.order))
            .key(self.keys.hold_marker(request.order));
        if let Some(idem) = &request.idempotency_key {
            invocation.key(self.keys.idempotency(store, request.user, idem.as_str()));
        }
        invocation
            .arg(request.order.uuid.to_string())
            .arg(request.user.0)
            .arg(self.hold_ttl_ms)
            .arg(self.idempotency_ttl_ms)
            .arg(request.idempotency_key.as_ref().map_or("", |k| k.as_str()))
            .arg(self.max_holds_per_customer)
            // Only a key is bound to its request; without one the script never reads this.
            .arg(if request.idempotency_key.is_some() {
                request.fingerprint()
            } else {
                String::new()
            })
            .arg(if request.allow_backorder { "1" } else { "0" })
            .arg(request.lines.len());
        for line in &request.lines {
            invocation
                .arg(line.product.0)
                .arg(line.quantity)
                .arg(line.unit_price_cents);
        }
        let (reply, mut replicated) = match self.run_replicated("lock", store, &invocation).await {
            Ok(answer) => answer,
            Err(error) if self.recovered_from(&error).await => {
                // The script may have run before the connection went: never hold twice.
                if let Some(hold) = self.load(request.order).await? {
                    return Ok(Replicated {
                        outcome: LockOutcome::Held {
                            created_at: hold.created_at,
                            held_until: hold.held_until,
                            backordered: hold
                                .lines
                                .iter()
                                .filter(|line| line.backordered > 0)
                                .map(|line| (line.product, line.backordered))
                                .collect(),
                        },
                        // Made on a connection now lost: whether replicas have it is
                        // asked as for any answer repeated from an earlier call.
                        replicated: self.earlier_writes_replicated(store, true).await?,
                    });
                }
                self.run_replicated("lock", store, &invocation).await?
            }
            Err(error) => return Err(error.into()),
        };
        let outcome = match reply.split_first() {
            Some((tag, [created, until, rest @ ..])) if tag == "HELD" => LockOutcome::Held {
                created_at: timestamp(created)?,
                held_until: timestamp(until)?,
                backordered: pairs(rest)?
                    .into_iter()
                    .map(|(product, units)| Ok((product, u32::try_from(units)?)))
                    .collect::<anyhow::Result<_>>()?,
            },
            Some((tag, [uuid])) if tag == "EXISTING" => {
                // The hold was made by an earlier call, whose writes the WAIT above may not
                // cover: ask again about everything the master has done so far.
                replicated = self.earlier_writes_replicated(store, replicated).await?;
                LockOutcome::Existing(OrderId {
                    store,
                    uuid: uuid.parse()?,
                })
            }
            Some((tag, [uuid])) if tag == "REUSED" => LockOutcome::KeyReused(OrderId {
                store,
                uuid: uuid.parse()?,
            }),
            Some((tag, [cap])) if tag == "TOO_MANY_HOLDS" => {
                LockOutcome::TooManyHolds(cap.parse()?)
            }
            Some((tag, rest)) if tag == "UNKNOWN" => LockOutcome::Uninitialised(
                rest.iter().filter_map(|p| ProductId::parse(p)).collect(),
            ),
            Some((tag, rest)) if tag == "LIMIT" => LockOutcome::LimitExceeded(pairs(rest)?),
            Some((tag, rest)) if tag == "SHORT" => LockOutcome::Short(pairs(rest)?),
            _ => return Err(unexpected(&reply)),
        };
        Ok(Replicated {
            outcome,
            replicated,
        })
    }

    pub async fn confirm(
        &self,
        confirmation: Confirmation<'_>,
    ) -> anyhow::Result<Replicated<ConfirmOutcome>> {
        let order = confirmation.order;
        let mut invocation = SCRIPTS.confirm.prepare_invoke();
        self.order_keys(&mut invocation, order);
        if let Some(event) = confirmation.event {
            invocation.key(self.keys.payment_event(order.store, event));
        }
        invocation
            .arg(order.uuid.to_string())
            .arg(
                confirmation
                    .owner
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
            )
            .arg(confirmation.payment.as_str())
            .arg(self.retention_ms)
            .arg(confirmation.confirmed_by)
            .arg(
                confirmation
                    .amount_cents
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            )
            .arg(self.payment_event_retention_ms);
        // A hold found past its deadline is released here, and its units handed on.
        self.waitlist_args(&mut invocation, order.store);
        let (reply, mut replicated) = self
            .run_idempotent("confirm", order.store, &invocation)
            .await?;
        let outcome = match reply.as_slice() {
            [tag] if tag == "CONFIRMED" => {
                metrics::confirmed();
                ConfirmOutcome::Confirmed
            }
            [tag] if tag == "ALREADY" => {
                replicated = self
                    .earlier_writes_replicated(order.store, replicated)
                    .await?;
                ConfirmOutcome::AlreadyConfirmed
            }
            [tag, ..] if tag == "EXPIRED" => {
                if released_now(&reply) {
                    metrics::released(ReleaseCause::Lazy, 1);
                }
                ConfirmOutcome::Expired
            }
            [tag] if tag == "NOT_FOUND" => ConfirmOutcome::NotFound,
            [tag, total] if tag == "AMOUNT_MISMATCH" => ConfirmOutcome::AmountMismatch {
                total_cents: total.parse()?,
            },
            [tag, status] if tag == "INVALID" => ConfirmOutcome::InvalidState(
                OrderStatus::parse(status).ok_or_else(|| unexpected(&reply))?,
            ),
            _ => return Err(unexpected(&reply)),
        };
        Ok(Replicated {
            outcome,
            replicated,
        })
    }

    pub async fn cancel(
        &self,
        order: OrderId,
        user: UserId,
        is_admin: bool,
    ) -> anyhow::Result<Replicated<CancelOutcome>> {
        let mut invocation = SCRIPTS.cancel.prepare_invoke();
        self.order_keys(&mut invocation, order);
        invocation
            .arg(order.uuid.to_string())
            .arg(user.0)
            .arg(if is_admin { "1" } else { "0" })
            .arg(self.retention_ms);
        self.waitlist_args(&mut invocation, order.store);
        let (reply, mut replicated) = self
            .run_idempotent("cancel", order.store, &invocation)
            .await?;
        let outcome = match reply.first().map(String::as_str) {
            Some("CANCELLED") => {
                metrics::released(ReleaseCause::Cancel, 1);
                CancelOutcome::Cancelled
            }
            Some("ALREADY") => {
                replicated = self
                    .earlier_writes_replicated(order.store, replicated)
                    .await?;
                CancelOutcome::AlreadyCancelled
            }
            Some("EXPIRED") => {
                if released_now(&reply) {
                    metrics::released(ReleaseCause::Lazy, 1);
                }
                CancelOutcome::Expired
            }
            Some("NOT_FOUND") => CancelOutcome::NotFound,
            Some("INVALID") => CancelOutcome::InvalidState,
            _ => return Err(unexpected(&reply)),
        };
        Ok(Replicated {
            outcome,
            replicated,
        })
    }

    /// The store keys every hold script takes first (see `lua/hold_lib.lua`).
    fn store_keys(&self, invocation: &mut redis::ScriptInvocation<'_>, store: StoreId) {
        self.first_store_keys(invocation, store, STORE_KEYS);
    }

    /// The first `count` of them: the lock script takes only those it uses.
    fn first_store_keys(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        store: StoreId,
        count: usize,
    ) {
        for key in &self.keys.store(store).all()[..count] {
            invocation.key(*key);
        }
    }

    fn order_keys(&self, invocation: &mut redis::ScriptInvocation<'_>, order: OrderId) {
        self.store_keys(invocation, order.store);
        invocation
            .key(self.keys.hold(order))
            .key(self.keys.hold_marker(order));
    }

    /// Releases those of `orders` (all of one store) that are HELD and due; returns how
    /// many this call released, counted under `cause`. Safe to race with any other caller.
    pub async fn expire(
        &self,
        store: StoreId,
        orders: &[OrderId],
        cause: ReleaseCause,
    ) -> anyhow::Result<u64> {
        // A store being rebuilt may still hold the stale holds the rebuild replaces;
        // the sweeper comes back to whatever is due afterwards.
        if orders.is_empty() || self.is_recovering(store) {
            return Ok(0);
        }
        let mut invocation = SCRIPTS.expire.prepare_invoke();
        self.store_keys(&mut invocation, store);
        invocation.arg(self.retention_ms);
        self.waitlist_args(&mut invocation, store);
        for order in orders {
            debug_assert_eq!(order.store, store);
            invocation
                .key(self.keys.hold(*order))
                .arg(order.uuid.to_string());
        }
        let released: u64 = self.run("expire", &invocation).await?;
        metrics::released(cause, released);
        Ok(released)
    }

    /// Adds units to a product: confirmed pre-orders first, oldest first, then the sale.
    /// `None` when Redis has no entry for it yet.
    pub async fn restock(
        &self,
        store: StoreId,
        product: ProductId,
        units: u32,
        restock_id: &str,
        reason: &str,
    ) -> anyhow::Result<Option<Restocked>> {
        anyhow::ensure!(
            !self.is_recovering(store),
            "store {store} is being rebuilt from MySQL after a Redis failure; try again in a moment"
        );
        let mut invocation = SCRIPTS.restock.prepare_invoke();
        self.store_keys(&mut invocation, store);
        invocation
            .arg(product.0)
            .arg(units)
            .arg(restock_id)
            .arg(reason)
            .arg(self.keys.hold_prefix(store));
        self.waitlist_args(&mut invocation, store);
        let reply: Vec<String> = self.run("restock", &invocation).await?;
        match reply.as_slice() {
            [tag, available, filled] if tag == "RESTOCKED" => Ok(Some(Restocked {
                available: available.parse()?,
                filled_backorders: filled.parse()?,
            })),
            [tag] if tag == "UNKNOWN" => Ok(None),
            _ => Err(unexpected(&reply)),
        }
    }

    /// Changes what the lock script enforces for a product, atomically.
    pub async fn set_terms(
        &self,
        store: StoreId,
        product: ProductId,
        change: TermsChange,
    ) -> anyhow::Result<TermsOutcome> {
        let mut invocation = SCRIPTS.terms.prepare_invoke();
        self.store_keys(&mut invocation, store);
        invocation
            .arg(product.0)
            .arg(
                change
                    .max_per_customer
                    .map_or(String::new(), |limit| limit.unwrap_or(0).to_string()),
            )
            .arg(
                change
                    .backorder_limit
                    .map_or(String::new(), |l| l.to_string()),
            );
        let reply: Vec<String> = self.run("terms", &invocation).await?;
        match reply.as_slice() {
            [tag] if tag == "UPDATED" => Ok(TermsOutcome::Updated),
            [tag] if tag == "UNKNOWN" => Ok(TermsOutcome::Uninitialised),
            [tag, used] if tag == "BELOW_BACKORDERED" => {
                Ok(TermsOutcome::BelowBackordered(used.parse()?))
            }
            _ => Err(unexpected(&reply)),
        }
    }

    /// The hold as Redis has it now, if Redis still has it.
    pub async fn load(&self, order: OrderId) -> anyhow::Result<Option<Hold>> {
        let fields: HashMap<String, String> =
            self.redis.clone().hgetall(self.keys.hold(order)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Hold::from_fields(order, &fields)
            .map(Some)
            .ok_or_else(|| anyhow::anyhow!("hold {order} is damaged: {fields:?}"))
    }

    /// Seeds Redis stock and terms from MySQL where Redis has none; never overwrites.
    pub async fn init_stock(&self, store: StoreId, products: &[SeedProduct]) -> anyhow::Result<()> {
        let keys = self.keys.store(store);
        let mut pipe = redis::pipe();
        for seed in products {
            let id = seed.product.0;
            pipe.hset_nx(&keys.stock, id, seed.stock).ignore();
            let limit = seed.max_per_customer.unwrap_or(0);
            pipe.hset_nx(&keys.terms, format!("{id}:max"), limit)
                .ignore();
            pipe.hset_nx(&keys.terms, format!("{id}:bo"), seed.backorder_limit)
                .ignore();
            pipe.hset_nx(&keys.backorder, id, seed.backorder_limit - seed.backordered)
                .ignore();
            pipe.hset_nx(&keys.backorder_sold, id, seed.backordered)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.redis.clone()).await?;
        // Apart: the set of stores is in a slot of its own on a cluster.
        let _: () = self.redis.clone().sadd(self.keys.stores(), store.0).await?;
        Ok(())
    }

    /// Available units per product as Redis has them now (`None`: not initialised).
    pub async fn available(
        &self,
        store: StoreId,
        products: &[ProductId],
    ) -> anyhow::Result<Vec<Option<i64>>> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<u64> = products.iter().map(|p| p.0).collect();
        let stock_key = self.keys.store(store).stock;
        Ok(redis::cmd("HMGET")
            .arg(&stock_key)
            .arg(&ids)
            .query_async(&mut self.redis.clone())
            .await?)
    }

    /// Pre-order figures per product as Redis has them now.
    pub async fn backorders(
        &self,
        store: StoreId,
        products: &[ProductId],
    ) -> anyhow::Result<Vec<BackorderFigures>> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<u64> = products.iter().map(|p| p.0).collect();
        let limits: Vec<String> = ids.iter().map(|id| format!("{id}:bo")).collect();
        let keys = self.keys.store(store);
        #[allow(clippy::type_complexity)]
        let (open, held, confirmed, limit): (
            Vec<Option<i64>>,
            Vec<Option<i64>>,
            Vec<Option<i64>>,
            Vec<Option<i64>>,
        ) = redis::pipe()
            .cmd("HMGET")
            .arg(&keys.backorder)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&keys.backorder_held)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&keys.backorder_sold)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&keys.terms)
            .arg(&limits)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok((0..ids.len())
            .map(|i| BackorderFigures {
                open: open[i].unwrap_or(0),
                held: held[i].unwrap_or(0),
                confirmed: confirmed[i].unwrap_or(0),
                limit: limit[i].unwrap_or(0),
            })
            .collect())
    }

    /// Publishes the current availability of `products` on the store's live channel, in
    /// order with every change (`lua/live_snapshot.lua`).
    pub async fn publish_snapshot(
        &self,
        store: StoreId,
        products: &[ProductId],
    ) -> anyhow::Result<()> {
        if products.is_empty() {
            return Ok(());
        }
        let mut invocation = SCRIPTS.live_snapshot.prepare_invoke();
        self.store_keys(&mut invocation, store);
        for product in products {
            invocation.arg(product.0);
        }
        let _published: i64 = invocation.invoke_async(&mut self.redis.clone()).await?;
        Ok(())
    }

    /// Store ids that have stock in Redis.
    pub async fn stores(&self) -> anyhow::Result<Vec<StoreId>> {
        let ids: Vec<u64> = self.redis.clone().smembers(self.keys.stores()).await?;
        Ok(ids.into_iter().map(StoreId).collect())
    }
}
