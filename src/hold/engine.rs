//! Runs the hold scripts and turns their replies into typed outcomes.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::keys::KeySpace;
use super::record::Hold;
use super::scripts::SCRIPTS;
use crate::domain::{IdempotencyKey, OrderId, PaymentReference, ProductId, StoreId, UserId};
use crate::metrics::{self, ReleaseCause};

/// One distinct product of an order, with what the catalog says about it.
#[derive(Debug, Clone)]
pub struct RequestedLine {
    pub product: ProductId,
    pub quantity: u32,
    pub unit_price_cents: i64,
    pub max_per_customer: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct LockRequest {
    pub order: OrderId,
    pub user: UserId,
    pub lines: Vec<RequestedLine>,
    pub idempotency_key: Option<IdempotencyKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    Held {
        created_at: DateTime<Utc>,
        held_until: DateTime<Utc>,
    },
    /// The idempotency key already names this order.
    Existing(OrderId),
    /// Redis has no stock entry for these products yet.
    Uninitialised(Vec<ProductId>),
    /// (product, units the customer may still take)
    LimitExceeded(Vec<(ProductId, i64)>),
    /// (product, units available)
    Short(Vec<(ProductId, i64)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed,
    AlreadyConfirmed,
    /// Past its deadline: expired by this call or before, its units back to the sale.
    Expired,
    NotFound,
    InvalidState,
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

#[derive(Clone)]
pub struct HoldEngine {
    redis: ConnectionManager,
    keys: KeySpace,
    hold_ttl_ms: u64,
    idempotency_ttl_ms: u64,
    retention_ms: u64,
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
    pub fn new(
        redis: ConnectionManager,
        keys: KeySpace,
        hold_ttl: Duration,
        idempotency_ttl: Duration,
        retention: Duration,
    ) -> Self {
        Self {
            redis,
            keys,
            hold_ttl_ms: ms(hold_ttl),
            idempotency_ttl_ms: ms(idempotency_ttl),
            retention_ms: ms(retention),
        }
    }

    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    pub fn redis(&self) -> ConnectionManager {
        self.redis.clone()
    }

    pub async fn lock(&self, request: &LockRequest) -> anyhow::Result<LockOutcome> {
        let store = request.order.store;
        let mut invocation = SCRIPTS.lock.prepare_invoke();
        self.store_keys(&mut invocation, store);
        invocation
            .key(self.keys.hold(request.order))
            .key(self.keys.hold_marker(request.order));
        if let Some(idem) = &request.idempotency_key {
            invocation.key(self.keys.idempotency(store, request.user, idem.as_str()));
        }
        invocation
            .arg(request.order.uuid.to_string())
            .arg(request.user.0)
            .arg(store.0)
            .arg(self.hold_ttl_ms)
            .arg(self.idempotency_ttl_ms)
            .arg(request.idempotency_key.as_ref().map_or("", |k| k.as_str()))
            .arg(request.lines.len());
        for line in &request.lines {
            invocation
                .arg(line.product.0)
                .arg(line.quantity)
                .arg(line.unit_price_cents)
                .arg(line.max_per_customer.unwrap_or(0));
        }
        let reply: Vec<String> =
            timed("lock", invocation.invoke_async(&mut self.redis.clone())).await?;
        Ok(match reply.split_first() {
            Some((tag, [created, until])) if tag == "HELD" => LockOutcome::Held {
                created_at: timestamp(created)?,
                held_until: timestamp(until)?,
            },
            Some((tag, [uuid])) if tag == "EXISTING" => LockOutcome::Existing(OrderId {
                store,
                uuid: uuid.parse()?,
            }),
            Some((tag, rest)) if tag == "UNKNOWN" => LockOutcome::Uninitialised(
                rest.iter().filter_map(|p| ProductId::parse(p)).collect(),
            ),
            Some((tag, rest)) if tag == "LIMIT" => LockOutcome::LimitExceeded(pairs(rest)?),
            Some((tag, rest)) if tag == "SHORT" => LockOutcome::Short(pairs(rest)?),
            _ => return Err(unexpected(&reply)),
        })
    }

    pub async fn confirm(
        &self,
        order: OrderId,
        user: UserId,
        payment: &PaymentReference,
    ) -> anyhow::Result<ConfirmOutcome> {
        let mut invocation = SCRIPTS.confirm.prepare_invoke();
        self.order_keys(&mut invocation, order);
        invocation
            .arg(order.uuid.to_string())
            .arg(user.0)
            .arg(payment.as_str())
            .arg(self.retention_ms);
        let reply: Vec<String> =
            timed("confirm", invocation.invoke_async(&mut self.redis.clone())).await?;
        Ok(match reply.first().map(String::as_str) {
            Some("CONFIRMED") => {
                metrics::confirmed();
                ConfirmOutcome::Confirmed
            }
            Some("ALREADY") => ConfirmOutcome::AlreadyConfirmed,
            Some("EXPIRED") => {
                if released_now(&reply) {
                    metrics::released(ReleaseCause::Lazy, 1);
                }
                ConfirmOutcome::Expired
            }
            Some("NOT_FOUND") => ConfirmOutcome::NotFound,
            Some("INVALID") => ConfirmOutcome::InvalidState,
            _ => return Err(unexpected(&reply)),
        })
    }

    pub async fn cancel(
        &self,
        order: OrderId,
        user: UserId,
        is_admin: bool,
    ) -> anyhow::Result<CancelOutcome> {
        let mut invocation = SCRIPTS.cancel.prepare_invoke();
        self.order_keys(&mut invocation, order);
        invocation
            .arg(order.uuid.to_string())
            .arg(user.0)
            .arg(if is_admin { "1" } else { "0" })
            .arg(self.retention_ms);
        let reply: Vec<String> =
            timed("cancel", invocation.invoke_async(&mut self.redis.clone())).await?;
        Ok(match reply.first().map(String::as_str) {
            Some("CANCELLED") => {
                metrics::released(ReleaseCause::Cancel, 1);
                CancelOutcome::Cancelled
            }
            Some("ALREADY") => CancelOutcome::AlreadyCancelled,
            Some("EXPIRED") => {
                if released_now(&reply) {
                    metrics::released(ReleaseCause::Lazy, 1);
                }
                CancelOutcome::Expired
            }
            Some("NOT_FOUND") => CancelOutcome::NotFound,
            Some("INVALID") => CancelOutcome::InvalidState,
            _ => return Err(unexpected(&reply)),
        })
    }

    /// The six store keys every hold script takes first (see `lua/hold_lib.lua`).
    fn store_keys(&self, invocation: &mut redis::ScriptInvocation<'_>, store: StoreId) {
        for key in self.keys.store(store).all() {
            invocation.key(key);
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
        if orders.is_empty() {
            return Ok(0);
        }
        let mut invocation = SCRIPTS.expire.prepare_invoke();
        self.store_keys(&mut invocation, store);
        invocation.arg(self.retention_ms);
        for order in orders {
            debug_assert_eq!(order.store, store);
            invocation
                .key(self.keys.hold(*order))
                .arg(order.uuid.to_string());
        }
        let released: u64 =
            timed("expire", invocation.invoke_async(&mut self.redis.clone())).await?;
        metrics::released(cause, released);
        Ok(released)
    }

    /// Adds units to a product's available stock; `None` when Redis has no entry for it yet.
    pub async fn restock(
        &self,
        store: StoreId,
        product: ProductId,
        units: u32,
        restock_id: &str,
        reason: &str,
    ) -> anyhow::Result<Option<i64>> {
        let mut invocation = SCRIPTS.restock.prepare_invoke();
        self.store_keys(&mut invocation, store);
        invocation
            .arg(product.0)
            .arg(units)
            .arg(restock_id)
            .arg(reason);
        let reply: Vec<String> =
            timed("restock", invocation.invoke_async(&mut self.redis.clone())).await?;
        match reply.as_slice() {
            [tag, available] if tag == "RESTOCKED" => Ok(Some(available.parse()?)),
            [tag] if tag == "UNKNOWN" => Ok(None),
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

    /// Seeds Redis stock from MySQL's on-hand count where Redis has none; never overwrites.
    pub async fn init_stock(
        &self,
        store: StoreId,
        products: &[(ProductId, i64)],
    ) -> anyhow::Result<()> {
        let stock_key = self.keys.store(store).stock;
        let mut pipe = redis::pipe();
        for (product, units) in products {
            pipe.hset_nx(&stock_key, product.0, *units).ignore();
        }
        pipe.sadd(self.keys.stores(), store.0).ignore();
        pipe.query_async::<()>(&mut self.redis.clone()).await?;
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

    /// Store ids that have stock in Redis.
    pub async fn stores(&self) -> anyhow::Result<Vec<StoreId>> {
        let ids: Vec<u64> = self.redis.clone().smembers(self.keys.stores()).await?;
        Ok(ids.into_iter().map(StoreId).collect())
    }
}
