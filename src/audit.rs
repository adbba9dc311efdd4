//! `flashstock audit`: once the outbox is drained, MySQL must say what Redis says. Per
//! product, MySQL's stock (units on hand) equals Redis available plus held units; Redis's
//! open pre-order units plus held and confirmed pre-ordered units equal the backorder
//! limit, which equals MySQL's; MySQL's `backordered` equals Redis's confirmed pre-ordered
//! units and the sum of its CONFIRMED lines' `backordered_quantity`; every
//! hold Redis still has is an order in MySQL with the same status. Every difference is
//! returned, none is repaired.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use sqlx::Row;

use crate::db::{self, Db};
use crate::domain::{OrderId, OrderStatus, ProductId, StoreId};
use crate::hold::HoldEngine;

/// Dead letters listed one by one per store; the rest are counted.
const DEAD_LETTERS_LISTED: usize = 100;
/// Holds compared per round trip.
const HOLDS_PER_ROUND: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Events not yet in MySQL: the other comparisons cannot be trusted until they are.
    OutboxNotDrained {
        store: StoreId,
        events: u64,
    },
    /// An entry MySQL could not take, kept in the dead-letter stream with the reason.
    DeadLetter {
        store: StoreId,
        entry: String,
        what: String,
        error: String,
    },
    /// Dead letters beyond the ones listed one by one.
    MoreDeadLetters {
        store: StoreId,
        more: u64,
    },
    Stock {
        store: StoreId,
        product: ProductId,
        mysql: i64,
        available: i64,
        held: i64,
    },
    /// Redis: open + held + confirmed pre-order units != the backorder limit, or MySQL
    /// disagrees with Redis about the limit or the confirmed pre-ordered units.
    Backorder {
        store: StoreId,
        product: ProductId,
        redis: crate::hold::BackorderFigures,
        mysql_limit: i64,
        mysql_backordered: i64,
    },
    /// MySQL: `products.backordered` != the sum of its CONFIRMED lines' pre-ordered units.
    BackorderLines {
        product: ProductId,
        backordered: i64,
        lines: i64,
    },
    OrderMissing {
        order: OrderId,
        redis: OrderStatus,
    },
    OrderStatus {
        order: OrderId,
        mysql: OrderStatus,
        redis: OrderStatus,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutboxNotDrained { store, events } => {
                write!(f, "store {store}: outbox still holds {events} events")
            }
            Self::DeadLetter {
                store,
                entry,
                what,
                error,
            } => write!(f, "store {store}: dead letter {entry} ({what}): {error}"),
            Self::MoreDeadLetters { store, more } => {
                write!(f, "store {store}: {more} more dead letters")
            }
            Self::Stock {
                store,
                product,
                mysql,
                available,
                held,
            } => write!(
                f,
                "store {store} product {product}: MySQL stock {mysql} != Redis available {available} + held {held}"
            ),
            Self::Backorder {
                store,
                product,
                redis,
                mysql_limit,
                mysql_backordered,
            } => write!(
                f,
                "store {store} product {product}: Redis pre-orders open {} + held {} + confirmed {} \
                 against limit {} (MySQL limit {mysql_limit}, MySQL backordered {mysql_backordered})",
                redis.open, redis.held, redis.confirmed, redis.limit
            ),
            Self::BackorderLines {
                product,
                backordered,
                lines,
            } => write!(
                f,
                "product {product}: MySQL backordered {backordered} != {lines} on its confirmed lines"
            ),
            Self::OrderMissing { order, redis } => {
                write!(
                    f,
                    "order {order}: {} in Redis, absent from MySQL",
                    redis.as_str()
                )
            }
            Self::OrderStatus {
                order,
                mysql,
                redis,
            } => write!(
                f,
                "order {order}: {} in MySQL, {} in Redis",
                mysql.as_str(),
                redis.as_str()
            ),
        }
    }
}

#[derive(Debug, Default)]
pub struct AuditReport {
    pub products: usize,
    pub holds: usize,
    pub mismatches: Vec<Mismatch>,
}

/// Events still waiting in each store's outbox (the flusher deletes what it committed).
pub async fn backlog(engine: &HoldEngine) -> anyhow::Result<Vec<Mismatch>> {
    let mut redis = engine.redis();
    let mut found = Vec::new();
    for store in engine.stores().await? {
        let outbox = engine.keys().store(store).outbox;
        let events: u64 = redis::cmd("XLEN")
            .arg(&outbox)
            .query_async(&mut redis)
            .await?;
        if events > 0 {
            found.push(Mismatch::OutboxNotDrained { store, events });
        }
        let (letters, dead) =
            crate::outbox::dead_letters::list(engine, store, DEAD_LETTERS_LISTED).await?;
        let listed = letters.len() as u64;
        found.extend(letters.into_iter().map(|letter| Mismatch::DeadLetter {
            store,
            what: letter.summary(),
            entry: letter.entry,
            error: letter.error,
        }));
        if dead > listed {
            found.push(Mismatch::MoreDeadLetters {
                store,
                more: dead - listed,
            });
        }
    }
    Ok(found)
}

/// Waits up to `wait` for every outbox to be empty; returns what is left.
pub async fn wait_for_drain(engine: &HoldEngine, wait: Duration) -> anyhow::Result<Vec<Mismatch>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = backlog(engine).await?;
        let waiting = left
            .iter()
            .any(|m| matches!(m, Mismatch::OutboxNotDrained { .. }));
        if !waiting || tokio::time::Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn compare_stock(
    db: &Db,
    engine: &HoldEngine,
    found: &mut Vec<Mismatch>,
) -> anyhow::Result<usize> {
    let products = db::catalog::all_products(db).await?;
    let mut by_store: HashMap<StoreId, Vec<db::catalog::ProductRow>> = HashMap::new();
    for row in products {
        by_store.entry(row.store).or_default().push(row);
    }
    let mut compared = 0;
    for (store, rows) in by_store {
        let ids: Vec<u64> = rows.iter().map(|row| row.id.0).collect();
        let keys = engine.keys().store(store);
        let (available, held): (Vec<Option<i64>>, Vec<Option<i64>>) = redis::pipe()
            .cmd("HMGET")
            .arg(&keys.stock)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&keys.held)
            .arg(&ids)
            .query_async(&mut engine.redis())
            .await?;
        let product_ids: Vec<ProductId> = rows.iter().map(|row| row.id).collect();
        let backorders = engine.backorders(store, &product_ids).await?;
        for (((row, available), held), redis) in
            rows.iter().zip(available).zip(held).zip(backorders)
        {
            // Not in Redis: not on sale yet, MySQL alone knows its stock.
            let Some(available) = available else { continue };
            let held = held.unwrap_or(0);
            compared += 1;
            if redis.open + redis.held + redis.confirmed != redis.limit
                || redis.limit != row.backorder_limit
                || redis.confirmed != row.backordered
            {
                found.push(Mismatch::Backorder {
                    store,
                    product: row.id,
                    redis,
                    mysql_limit: row.backorder_limit,
                    mysql_backordered: row.backordered,
                });
            }
            if row.stock != available + held {
                found.push(Mismatch::Stock {
                    store,
                    product: row.id,
                    mysql: row.stock,
                    available,
                    held,
                });
            }
        }
    }
    Ok(compared)
}

/// MySQL alone: each product's `backordered` is what its CONFIRMED lines still wait for.
async fn compare_backorder_lines(db: &Db, found: &mut Vec<Mismatch>) -> anyhow::Result<()> {
    let rows = sqlx::query(
        "SELECT p.id, p.backordered, \
             CAST(COALESCE(SUM(CASE WHEN o.status = 'CONFIRMED' THEN i.backordered_quantity END), 0) AS SIGNED) AS line_units \
         FROM products p \
         LEFT JOIN order_items i ON i.product_id = p.id \
         LEFT JOIN orders o ON o.id = i.order_id \
         GROUP BY p.id, p.backordered",
    )
    .fetch_all(db)
    .await?;
    for row in rows {
        let backordered: i64 = row.try_get("backordered")?;
        let lines: i64 = row.try_get("line_units")?;
        if backordered != lines {
            found.push(Mismatch::BackorderLines {
                product: ProductId(row.try_get("id")?),
                backordered,
                lines,
            });
        }
    }
    Ok(())
}

/// Every hold key of a store (not the TTL markers). SCAN, not KEYS: Redis keeps serving.
/// Every key of the store is in its slot, so one node's SCAN finds them all.
async fn hold_orders(engine: &HoldEngine, store: StoreId) -> anyhow::Result<Vec<OrderId>> {
    let prefix = engine.keys().hold(OrderId {
        store,
        uuid: uuid::Uuid::nil(),
    });
    let prefix = prefix
        .trim_end_matches(&uuid::Uuid::nil().to_string())
        .to_owned();
    let mut redis = engine.redis();
    let mut cursor: u64 = 0;
    let mut orders = Vec::new();
    loop {
        // On a cluster, the node owning the store's slot: the only one with its keys.
        let (next, keys): (u64, Vec<String>) = redis
            .query_at(
                &prefix,
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}*"))
                    .arg("COUNT")
                    .arg(1000),
            )
            .await?;
        orders.extend(keys.iter().filter_map(|key| {
            let uuid = key.strip_prefix(&prefix)?;
            Some(OrderId {
                store,
                uuid: uuid.parse().ok()?,
            })
        }));
        if next == 0 {
            return Ok(orders);
        }
        cursor = next;
    }
}

async fn compare_orders(
    db: &Db,
    engine: &HoldEngine,
    found: &mut Vec<Mismatch>,
) -> anyhow::Result<usize> {
    let mut compared = 0;
    for store in engine.stores().await? {
        let orders = hold_orders(engine, store).await?;
        for chunk in orders.chunks(HOLDS_PER_ROUND) {
            let mut pipe = redis::pipe();
            for order in chunk {
                pipe.hget(engine.keys().hold(*order), "status");
            }
            let in_redis: Vec<Option<String>> = pipe.query_async(&mut engine.redis()).await?;
            let sql = format!(
                "SELECT id, status FROM orders WHERE store_id = ? AND id IN ({})",
                vec!["?"; chunk.len()].join(",")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store.0);
            for order in chunk {
                query = query.bind(order.uuid.to_string());
            }
            let mut in_mysql = HashMap::new();
            for row in query.fetch_all(db).await? {
                let id: String = row.try_get("id")?;
                let status: String = row.try_get("status")?;
                in_mysql.insert(id, OrderStatus::parse(&status));
            }
            for (order, redis) in chunk.iter().zip(in_redis) {
                // Gone between SCAN and HGET: its retention ran out, nothing to compare.
                let Some(redis) = redis.as_deref().and_then(OrderStatus::parse) else {
                    continue;
                };
                compared += 1;
                match in_mysql.get(&order.uuid.to_string()).copied().flatten() {
                    None => found.push(Mismatch::OrderMissing {
                        order: *order,
                        redis,
                    }),
                    Some(mysql) if mysql != redis => found.push(Mismatch::OrderStatus {
                        order: *order,
                        mysql,
                        redis,
                    }),
                    Some(_) => {}
                }
            }
        }
    }
    Ok(compared)
}

/// Compares MySQL with Redis. Run it once the outbox is drained (see `wait_for_drain`):
/// while events are in flight the two legitimately differ.
pub async fn audit(db: &Db, engine: &HoldEngine) -> anyhow::Result<AuditReport> {
    let mut mismatches = backlog(engine).await?;
    let products = compare_stock(db, engine, &mut mismatches).await?;
    compare_backorder_lines(db, &mut mismatches).await?;
    let holds = compare_orders(db, engine, &mut mismatches).await?;
    Ok(AuditReport {
        products,
        holds,
        mismatches,
    })
}

/// The `audit` command: waits for the drain, compares, prints every mismatch, and fails
/// when there is one.
pub async fn run(config: &crate::config::Config, wait: Duration) -> anyhow::Result<()> {
    let (db, engine) = crate::context::connect_for_command(config).await?;
    wait_for_drain(&engine, wait).await?;
    let report = audit(&db, &engine).await?;
    for mismatch in &report.mismatches {
        println!("MISMATCH {mismatch}");
    }
    println!(
        "compared {} products and {} holds: {} mismatches",
        report.products,
        report.holds,
        report.mismatches.len()
    );
    anyhow::ensure!(report.mismatches.is_empty(), "MySQL and Redis disagree");
    Ok(())
}
